"""Firewall backends: the interface banctl codes against, and the registry.

A backend owns one piece of the firewall (a chain, a pair of sets, a table) and changes
nothing else. Five calls after sshguard's ``fw_*``: ``init`` (create our structure and the
hook jumps, idempotent), ``block`` and ``release`` (bulk, idempotent), ``flush`` (drop all
entries, keep the structure), ``close`` (remove everything of ours); plus ``check``, which
reads the live firewall so banctl can compare it with its ledger and repair (fail2ban's
``actioncheck``). Entries are exactly one per address or range whatever arrives twice.

An entry is an address or a range (``203.0.113.0/24``, :func:`banpipe.address.entry`);
every backend holds both: nftables in a second, interval set per family, ipset in a
second, ``hash:net`` set per family, iptables as ``-s NET/LEN`` rules. Every entry is
re-validated before it goes into an argv, a restore script or a netlink message
(defence in depth: banctl validates too); anything that is not a canonical entry raises
FirewallError before any command runs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TextIO

from banpipe import address
from banpipe.config import BACKENDS, HOOKS, FirewallConfig

from .base import conntrack_sources
from .runner import (
    Call,
    CommandNotFound,
    FirewallError,
    FirewallFull,
    RecordingRunner,
    Runner,
    SubprocessRunner,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "Call",
    "Entries",
    "CommandNotFound",
    "FirewallError",
    "FirewallConfig",
    "FirewallFull",
    "FirewallState",
    "HOOKS",
    "RecordingRunner",
    "Runner",
    "SubprocessRunner",
    "bulk_entries",
    "canonical",
    "conntrack_sources",
    "make_backend",
    "validate_addresses",
    "validate_entries",
]


@dataclass
class FirewallState:
    """What the live firewall holds for us.

    ``entries``: canonical addresses present in our chain/sets/table; ``duplicates``:
    address -> count for addresses present more than once; ``structure_ok``: our
    chain/sets/table and every hook jump are present; ``problems``: one line each.
    """

    entries: set[str] = field(default_factory=set)
    duplicates: dict[str, int] = field(default_factory=dict)
    structure_ok: bool = False
    problems: list[str] = field(default_factory=list)


class Backend(Protocol):
    """One firewall backend. Every call raises FirewallError when a command fails.

    ``block``/``release``/``flush`` expect ``init()`` to have run: when our chain/sets/table
    is gone they raise FirewallError (ipset's block/release re-create a missing set, still
    unhooked), and ``check()`` shows ``structure_ok=False``; the repair is ``init()`` then
    ``block(missing)``.
    """

    name: str

    def init(self) -> None:
        """Create our chain/sets/table and hook jumps (or fix them to match the settings);
        idempotent; never touches anything not ours; keeps existing entries."""

    def block(self, addrs: Iterable[str]) -> None:
        """Add the addresses (any mix of IPv4/IPv6); one entry per address, ever."""

    def release(self, addrs: Iterable[str]) -> None:
        """Remove the addresses (every copy); absent addresses are fine."""

    def flush(self) -> None:
        """Remove all entries, keep the structure."""

    def check(self) -> FirewallState:
        """Read the live firewall; never raises for a missing structure, only reports it."""

    def close(self, teardown: bool = True) -> None:
        """teardown=True: remove the hook jumps and our chain/sets/table (idempotent);
        teardown=False: leave everything in place (bans survive a restart)."""


def validate_addresses(addrs: Iterable[str], *, ipv6: bool = True) -> tuple[list[str], list[str]]:
    """Return (IPv4, IPv6) entries (addresses and ranges), duplicates removed, order
    kept within addresses and within ranges.

    Raises FirewallError for anything that is not a canonical entry (no zone ids, no
    surrounding space, no uppercase hex, no host bits, no /32 or /128: that is the
    address), and for IPv6 entries when ``ipv6`` is False. Nothing partial: all are
    checked before any is used.
    """
    v4, v6, v4nets, v6nets = validate_entries(addrs, ipv6=ipv6)
    return v4 + v4nets, v6 + v6nets


def validate_entries(
    addrs: Iterable[str], *, ipv6: bool = True
) -> tuple[list[str], list[str], list[str], list[str]]:
    """``validate_addresses`` sorted for the backends: (IPv4 addresses, IPv6 addresses,
    IPv4 ranges, IPv6 ranges), in one pass over a million."""
    return bulk_entries(addrs, ipv6=ipv6)[:4]


class Entries(NamedTuple):
    """Checked entries sorted for a backend, with the addresses packed."""

    v4: list[str]
    v6: list[str]
    v4nets: list[str]
    v6nets: list[str]
    keys4: list[bytes]  # keys4[i] is v4[i] packed (what a netlink message carries)
    keys6: list[bytes]


def bulk_entries(addrs: Iterable[str] | address.Split, *, ipv6: bool = True) -> Entries:
    """``validate_entries`` plus the packed addresses, for the bulk paths. ``addrs`` may
    come split by kind already (an ``address.Split``, as ``Ledger.active_split`` reads
    the bans): then nothing sorts a million strings again, and the check is the packing
    itself (a million: about 0.5 s instead of 2.5 s of sorting, checking and packing
    at load 2). The ledger's keys are unique; other input loses its duplicates."""
    if isinstance(addrs, str):
        raise FirewallError("addresses must be an iterable of strings, not one string")
    if isinstance(addrs, address.Split):
        split: address.Split | None = addrs
        unique: Iterable[object] = (*addrs.v4, *addrs.v6, *addrs.nets)
        keys = address.pack_split(addrs)
    else:
        try:
            # A set is unique already: no second table of a million keys (40 MB).
            unique = addrs if isinstance(addrs, (set, frozenset)) else dict.fromkeys(addrs)
        except TypeError:
            raise FirewallError(f"not an address: {addrs!r}") from None
        split = address.split_entries(unique)
        keys = address.pack_split(split) if split is not None else None
    # A non-canonical spelling would make the firewall's entry differ from banctl's
    # ledger forever; refuse rather than guess.
    if split is None or keys is None:
        raise FirewallError(_refusal(addrs if isinstance(addrs, address.Split) else None, unique))
    v4, v6, nets = split
    v4nets = [n for n in nets if ":" not in n]
    v6nets = [n for n in nets if ":" in n]
    if (v6 or v6nets) and not ipv6:
        raise FirewallError(f"IPv6 is disabled, cannot handle {(v6 or v6nets)[0]}")
    return Entries(v4, v6, v4nets, v6nets, *keys)


def _refusal(split: address.Split | None, items: Iterable[object]) -> str:
    """Why ``bulk_entries`` refuses: the first item that is no canonical entry (given a
    Split, of the kind of its list)."""
    if split is not None:
        kinds = (
            (split.v4, "IPv4 address", lambda a: ":" not in a and "/" not in a),
            (split.v6, "IPv6 address", lambda a: ":" in a and "/" not in a),
            (split.nets, "network", lambda a: "/" in a),
        )
        for group, kind, fits in kinds:
            for a in group:
                if not (type(a) is str and fits(a) and address.entry(a) == a):
                    return f"not a canonical {kind}: {a!r}"
    bad = next(a for a in items if not address.all_entries((a,)))
    return f"not a canonical IPv4/IPv6 address or network: {bad!r}"


def canonical(text: str) -> str | None:
    """The canonical entry a firewall listing spells ("203.0.113.7/32" is the address
    203.0.113.7, "203.0.113.0/24" a range), or None when it is no entry."""
    return address.entry(text)


def make_backend(
    name: str,
    settings: FirewallConfig | None = None,
    runner: Runner | None = None,
    *,
    stream: TextIO | None = None,
) -> Backend:
    """Return the backend called ``name`` (one of BACKENDS: the module of that name here,
    whose ``BACKEND`` is the class).

    ``runner`` defaults to a plain SubprocessRunner; ``stream`` is where the null backend
    prints (default stderr). Unknown names raise FirewallError.
    """
    if name not in BACKENDS:
        raise FirewallError(f"unknown firewall backend {name!r} (one of {', '.join(BACKENDS)})")
    settings = settings if settings is not None else FirewallConfig()
    runner = runner if runner is not None else SubprocessRunner()
    cls = importlib.import_module(f"{__name__}.{name}").BACKEND
    if name == "null":
        return cls(settings, runner, stream=stream if stream is not None else sys.stderr)
    from .nfnl import channel_for

    return cls(settings, runner, channel_for(runner))
