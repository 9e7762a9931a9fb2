"""Firewall backends: the interface banctl codes against, and the registry.

A backend owns one piece of the firewall (a chain, a pair of sets, a table) and changes
nothing else. Five calls after sshguard's ``fw_*``: ``init`` (create our structure and the
hook jumps, idempotent), ``block`` and ``release`` (bulk, idempotent), ``flush`` (drop all
entries, keep the structure), ``close`` (remove everything of ours); plus ``check``, which
reads the live firewall so banctl can compare it with its ledger and repair (fail2ban's
``actioncheck``). Entries are exactly one per address whatever arrives twice.

Every address is re-validated with ``ipaddress`` before it goes into an argv or a restore
script (defence in depth: banctl validates too); anything that is not a canonical IPv4 or
IPv6 address raises FirewallError before any command runs.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

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
    "CommandNotFound",
    "FirewallError",
    "FirewallFull",
    "FirewallSettings",
    "FirewallState",
    "RecordingRunner",
    "Runner",
    "SubprocessRunner",
    "canonical",
    "conntrack_sources",
    "make_backend",
    "validate_addresses",
]

log = logging.getLogger("banpipe.firewall")

BACKENDS = ("iptables", "ipset", "nftables", "null")

# iptables filter-table built-in chains we may hook, and their nftables hook names.
HOOKS = {"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output"}

MAX_ENTRIES = 1 << 28  # ipset's maxelem is 32 bits; 268 million is beyond any gateway
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,27}\Z")
_RATE = re.compile(r"[1-9][0-9]{0,5}/(second|minute|hour|day)\Z")
# iptables limits LOG prefixes to 29 characters; quotes, backslashes and control characters
# would break the restore/nft script quoting, so they are refused outright.
_PREFIX = re.compile(r"[A-Za-z0-9 _.:=+,/@#%-]{0,29}\Z")


@dataclass(frozen=True)
class FirewallSettings:
    """What the backends create. Invalid values raise ValueError (a config error)."""

    chain: str = "BANPIPE"
    hooks: tuple[str, ...] = ("INPUT", "FORWARD")
    set_v4: str = "banpipe4"
    set_v6: str = "banpipe6"
    table: str = "banpipe"
    log: bool = False
    log_prefix: str = "banpipe: "
    log_rate: str = "6/minute"
    conntrack_flush: bool = False
    ipv6: bool = True
    # Entries per set (per address family): ipset's maxelem, the nftables sets' size.
    max_entries: int = 1_048_576

    def __post_init__(self) -> None:
        # Accept a list from TOML but keep the frozen dataclass hashable.
        object.__setattr__(self, "hooks", tuple(self.hooks))
        for what in ("chain", "set_v4", "set_v6", "table"):
            value = getattr(self, what)
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValueError(f"firewall {what}: invalid name {value!r}")
        if self.chain in HOOKS or self.chain in ("PREROUTING", "POSTROUTING"):
            raise ValueError(f"firewall chain: {self.chain!r} is a built-in chain")
        if self.set_v4 == self.set_v6:
            raise ValueError("firewall set_v4 and set_v6 must differ")
        if not self.hooks:
            raise ValueError("firewall hooks: at least one hook is needed")
        for hook in self.hooks:
            if hook not in HOOKS:
                raise ValueError(f"firewall hooks: unknown hook {hook!r} (INPUT, FORWARD, OUTPUT)")
        if len(set(self.hooks)) != len(self.hooks):
            raise ValueError("firewall hooks: listed twice")
        if not isinstance(self.log_prefix, str) or not _PREFIX.match(self.log_prefix):
            raise ValueError(f"firewall log_prefix: invalid {self.log_prefix!r}")
        if (
            isinstance(self.max_entries, bool)
            or not isinstance(self.max_entries, int)
            or not 1 <= self.max_entries <= MAX_ENTRIES
        ):
            raise ValueError(f"firewall max_entries: {self.max_entries!r} (1 to {MAX_ENTRIES:,})")
        if not isinstance(self.log_rate, str) or not _RATE.match(self.log_rate):
            raise ValueError(f"firewall log_rate: invalid {self.log_rate!r} (e.g. 6/minute)")


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


def _canonical_str(text: str) -> str | None:
    """``text`` in canonical form when it is one IPv4/IPv6 address, else None.

    The canonical form is Python's ``str(ipaddress.ip_address(text))``. inet_pton/inet_ntop
    come first (about ten times faster than ipaddress, which matters at 100,000 addresses);
    ipaddress judges whenever the two spellings could differ.
    """
    fam = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        packed = socket.inet_pton(fam, text)
    except (OSError, ValueError):
        # Zone ids, prefixes, spaces, embedded NULs: never an address for us.
        return None
    # Dotted IPv6 forms (::ffff:1.2.3.4) are spelled differently by libc and by Python;
    # Python's spelling is the one banctl's ledger uses.
    if socket.inet_ntop(fam, packed) == text and (fam == socket.AF_INET or "." not in text):
        return text
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return None if getattr(ip, "scope_id", None) else str(ip)


def validate_addresses(addrs: Iterable[str], *, ipv6: bool = True) -> tuple[list[str], list[str]]:
    """Return (IPv4, IPv6) address strings, duplicates removed, order kept.

    Raises FirewallError for anything that is not a canonical IPv4/IPv6 address string
    (no prefixes, no zone ids, no surrounding space, no uppercase hex), and for IPv6
    addresses when ``ipv6`` is False. Nothing partial: all are checked before any is used.
    """
    if isinstance(addrs, str):
        raise FirewallError("addresses must be an iterable of strings, not one string")
    v4: dict[str, None] = {}
    v6: dict[str, None] = {}
    for a in addrs:
        if not isinstance(a, str):
            raise FirewallError(f"not an address: {a!r}")
        # A non-canonical spelling would make the firewall's entry differ from banctl's
        # ledger forever; refuse rather than guess.
        if _canonical_str(a) != a:
            raise FirewallError(f"not a canonical IPv4/IPv6 address: {a!r}")
        if ":" in a:
            if not ipv6:
                raise FirewallError(f"IPv6 is disabled, cannot handle {a}")
            v6[a] = None
        else:
            v4[a] = None
    return list(v4), list(v6)


def canonical(text: str) -> str | None:
    """Canonical form of an address as a firewall lists it ("203.0.113.7/32" and
    "2001:db8::7/128" allowed), or None when it is not a single address."""
    addr, slash, plen = text.partition("/")
    if slash and plen != ("128" if ":" in addr else "32"):
        return None
    return _canonical_str(addr)


class ConntrackFlusher:
    """Delete conntrack entries of newly blocked sources, so established flows stop too.

    Each ``conntrack -D -s ADDR`` walks the whole conntrack table in the kernel (about
    10 ms even when empty), so the table is listed once first (``conntrack -L``) and only
    addresses that have flows get their ``-D``. Exit 1 ("0 flow entries have been
    deleted") is fine; a missing conntrack binary is warned about once and never fails
    the block.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.missing = False

    def __call__(self, addrs: Iterable[str]) -> None:
        addrs = list(addrs)
        if self.missing or not addrs:
            return
        try:
            listing = self.runner(["conntrack", "-L"], check=False)
        except CommandNotFound:
            self.missing = True
            log.warning("conntrack not found; established flows of banned hosts are kept")
            return
        if listing.returncode != 0:
            log.warning("conntrack -L failed: %s", " ".join(listing.stderr.split()))
            return
        sources = conntrack_sources(listing.stdout)
        failed: list[str] = []
        for a in addrs:
            if a not in sources:
                continue
            proc = self.runner(["conntrack", "-D", "-s", a], check=False)
            if proc.returncode not in (0, 1):
                failed.append(f"{a}: {' '.join(proc.stderr.split())}")
        if failed:
            log.warning("conntrack -D failed for %d address(es), first %s", len(failed), failed[0])


def conntrack_sources(text: str) -> set[str]:
    """Original-direction source addresses in ``conntrack -L`` output."""
    out: set[str] = set()
    for line in text.splitlines():
        for token in line.split():
            if token.startswith("src="):
                addr = canonical(token[4:])
                if addr is not None:
                    out.add(addr)
                break  # the first src= is the original direction's
    return out


def make_backend(
    name: str,
    settings: FirewallSettings | None = None,
    runner: Runner | None = None,
    *,
    stream: TextIO | None = None,
) -> Backend:
    """Return the backend called ``name`` (one of BACKENDS).

    ``runner`` defaults to a plain SubprocessRunner; ``stream`` is where the null backend
    prints (default stderr). Unknown names raise FirewallError.
    """
    settings = settings if settings is not None else FirewallSettings()
    runner = runner if runner is not None else SubprocessRunner()
    from .nfnl import channel_for

    if name == "iptables":
        from .iptables import IptablesBackend

        return IptablesBackend(settings, runner, channel_for(runner))
    if name == "ipset":
        from .ipset import IpsetBackend

        return IpsetBackend(settings, runner, channel_for(runner))
    if name == "nftables":
        from .nftables import NftablesBackend

        return NftablesBackend(settings, runner, channel_for(runner))
    if name == "null":
        from .null import NullBackend

        return NullBackend(settings, runner, stream=stream if stream is not None else sys.stderr)
    raise FirewallError(f"unknown firewall backend {name!r} (one of {', '.join(BACKENDS)})")
