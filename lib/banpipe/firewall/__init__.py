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
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from .runner import (
    Call,
    CommandNotFound,
    FirewallError,
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
    "FirewallSettings",
    "FirewallState",
    "RecordingRunner",
    "Runner",
    "SubprocessRunner",
    "make_backend",
    "split_families",
    "validate_addresses",
]

log = logging.getLogger("banpipe.firewall")

BACKENDS = ("iptables", "ipset", "nftables", "null")

# iptables filter-table built-in chains we may hook, and their nftables hook names.
HOOKS = {"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output"}

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
    name: str

    def init(self) -> None: ...
    def block(self, addrs: Iterable[str]) -> None: ...
    def release(self, addrs: Iterable[str]) -> None: ...
    def flush(self) -> None: ...
    def check(self) -> FirewallState: ...
    def close(self, teardown: bool = True) -> None: ...


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def validate_addresses(addrs: Iterable[str], *, ipv6: bool = True) -> list[Address]:
    """Return the addresses parsed, duplicates removed, order kept.

    Raises FirewallError for anything that is not a canonical IPv4/IPv6 address string
    (no prefixes, no zone ids, no surrounding space, no uppercase hex), and for IPv6
    addresses when ``ipv6`` is False. Nothing partial: all are checked before any is used.
    """
    if isinstance(addrs, str):
        raise FirewallError("addresses must be an iterable of strings, not one string")
    out: dict[str, Address] = {}
    for a in addrs:
        if not isinstance(a, str):
            raise FirewallError(f"not an address: {a!r}")
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            raise FirewallError(f"not an address: {a!r}")
        # A zone id ("fe80::1%eth0") or a non-canonical spelling would make the firewall's
        # entry differ from banctl's ledger forever; refuse rather than guess.
        if str(ip) != a or getattr(ip, "scope_id", None):
            raise FirewallError(f"not a canonical address: {a!r}")
        if ip.version == 6 and not ipv6:
            raise FirewallError(f"IPv6 is disabled, cannot handle {a}")
        out.setdefault(a, ip)
    return list(out.values())


def split_families(addrs: Sequence[Address]) -> tuple[list[str], list[str]]:
    """Split parsed addresses into (IPv4 strings, IPv6 strings), order kept."""
    v4 = [str(a) for a in addrs if a.version == 4]
    v6 = [str(a) for a in addrs if a.version == 6]
    return v4, v6


def canonical(text: str) -> str | None:
    """Canonical form of an address as a firewall lists it ("203.0.113.7/32" allowed for
    host prefixes), or None when it is not a single address."""
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        return None
    if iface.network.prefixlen != iface.max_prefixlen:
        return None
    return str(iface.ip)


class ConntrackFlusher:
    """Delete conntrack entries of newly blocked sources, so established flows stop too.

    Exit 1 ("0 flow entries have been deleted") is fine; a missing conntrack binary is
    warned about once and never fails the block.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.missing = False

    def __call__(self, addrs: Iterable[str]) -> None:
        if self.missing:
            return
        failed: list[str] = []
        for a in addrs:
            try:
                proc = self.runner(["conntrack", "-D", "-s", a], check=False)
            except CommandNotFound:
                self.missing = True
                log.warning("conntrack not found; established flows of banned hosts are kept")
                return
            if proc.returncode not in (0, 1):
                failed.append(f"{a}: {' '.join(proc.stderr.split())}")
        if failed:
            log.warning("conntrack -D failed for %d address(es), first %s", len(failed), failed[0])


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
    if name == "iptables":
        from .iptables import IptablesBackend

        return IptablesBackend(settings, runner)
    if name == "ipset":
        from .ipset import IpsetBackend

        return IpsetBackend(settings, runner)
    if name == "nftables":
        from .nftables import NftablesBackend

        return NftablesBackend(settings, runner)
    if name == "null":
        from .null import NullBackend

        return NullBackend(settings, runner, stream=stream if stream is not None else sys.stderr)
    raise FirewallError(f"unknown firewall backend {name!r} (one of {', '.join(BACKENDS)})")
