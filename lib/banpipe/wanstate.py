"""The WAN state file that wanwatch writes and alertfilter and banctl watch.

Format (JSON, written atomically)::

    {"v": 1, "type": "wan", "interface": "eth0", "addresses": ["198.51.100.7"],
     "ts": "2026-11-28T10:00:00.123456+00:00"}

A missing file means "no dynamic WAN addresses known" (static ones come from the
config); an unreadable or malformed file is an error for the caller to report, so a
glitch never silently shrinks the set of addresses we protect.
"""

from __future__ import annotations

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
        "addresses": sorted(set(addresses), key=_sort_key),
        "ts": now.isoformat(),
    }


def write_wan_state(
    path: str | Path, interface: str | None, addresses: list[str], now: datetime | None = None
) -> dict[str, Any]:
    state = make_state(interface, addresses, now or datetime.now(timezone.utc))
    write_json_atomic(path, state)
    return state


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
