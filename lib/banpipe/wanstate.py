"""The WAN state file that wanwatch writes and alertfilter and banctl watch.

Format (JSON, written atomically)::

    {"v": 1, "type": "wan", "interface": "eth0", "addresses": ["198.51.100.7"],
     "ts": "2026-11-28T10:00:00.123456+00:00"}

A missing file means "no dynamic WAN addresses known" (static ones come from the
config); an unreadable or malformed file is an error for the caller to report, so a
glitch never silently shrinks the set of addresses we protect.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from banpipe.address import canonical
from banpipe.statefile import read_json, write_json_atomic


class WanStateError(Exception):
    """The state file exists but cannot be used; message names the reason."""


def make_state(interface: str | None, addresses: list[str], now: datetime) -> dict[str, Any]:
    return {
        "v": 1,
        "type": "wan",
        "interface": interface,
        "addresses": sort_addresses(addresses),
        "ts": now.isoformat(),
    }


def write_wan_state(
    path: str | Path, interface: str | None, addresses: list[str], now: datetime | None = None
) -> dict[str, Any]:
    state = make_state(interface, addresses, now or datetime.now(timezone.utc))
    write_json_atomic(path, state)
    return state


def sort_addresses(addrs: Iterable[str]) -> list[str]:
    """IPv4 first, then IPv6: the order of the state file and of wanwatch's lines."""
    return sorted(set(addrs), key=_sort_key)


def diff(old: Iterable[str], new: Iterable[str]) -> tuple[list[str], list[str]]:
    """(added, removed), each sorted."""
    old_s, new_s = set(old), set(new)
    return sort_addresses(new_s - old_s), sort_addresses(old_s - new_s)


def make_event(interface: str, old: Iterable[str], new: Iterable[str], ts: str) -> dict[str, Any]:
    added, removed = diff(old, new)
    return {
        "v": 1,
        "type": "wan",
        "interface": interface,
        "added": added,
        "removed": removed,
        "addresses": sort_addresses(new),
        "ts": ts,
    }


def read_wan_state(path: str | Path) -> set[str]:
    """Addresses in the state file; empty set when the file does not exist."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as exc:
        raise WanStateError(f"cannot read: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("v") != 1
        or not isinstance(data.get("addresses"), list)
    ):
        raise WanStateError("not a version-1 WAN state object")
    out: set[str] = set()
    for item in data["addresses"]:
        addr = canonical(item) if isinstance(item, str) else None
        if addr is None:
            raise WanStateError(f"not an IP address: {item!r}")
        out.add(addr)
    return out


def _sort_key(addr: str) -> tuple[int, str]:
    return (6 if ":" in addr else 4, addr)
