"""Kernel notifications of firewall changes that take our part of the firewall away.

``systemctl reload nftables`` (``flush ruleset``), ``iptables -F``, a restart of
netfilter-persistent or firewalld: our table, chain, set or hook jump vanishes, and
until banctl notices, banned hosts pass. Every change to nf_tables (nft, and iptables
and ip6tables in their nf_tables variant, Debian's default) is announced on the netlink
group NFNLGRP_NFTABLES; banctl listens there and repairs at once instead of at its next
periodic check. ipset sets and iptables-legacy announce nothing: there the periodic
check (``[banctl] check_interval``) remains the only way to notice.

``parse_deletions`` is pure (bytes in, deletions out); ``Concern`` says which deletions
are ours; ``FirewallEvents`` is the socket.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from banpipe.firewall.nfproto import (
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_NETFILTER,
    NFNL_SUBSYS_NFTABLES,
    NFNLGRP_NFTABLES,
    NFPROTO_INET,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    SOL_NETLINK,
)
from banpipe.netlink import _text, parse_attrs, raw_messages

# NFT_MSG_DEL* -> what went; attribute 1 is the table in each of these messages, and
# the second attribute named is the chain (chain, rule) or the set (set, set element).
_DELETIONS = {2: ("table", None), 5: ("chain", 3), 8: ("rule", 2), 11: ("set", 2), 14: ("elem", 2)}
_NFGENMSG = 4  # family (u8), version (u8), resource id (u16)


@dataclass(frozen=True)
class Deletion:
    """Something removed from nf_tables: ``kind`` table, chain, rule, set or elem;
    ``name`` the chain (chain, rule) or set (set, elem) concerned."""

    kind: str
    family: int
    table: str
    name: str | None = None


def parse_deletions(data: bytes) -> list[Deletion]:
    """The deletions announced in one netlink datagram (other messages are skipped)."""
    out = []
    for mtype, _flags, _seq, _pid, payload in raw_messages(data):
        if mtype >> 8 != NFNL_SUBSYS_NFTABLES or len(payload) < _NFGENMSG:
            continue
        what = _DELETIONS.get(mtype & 0xFF)
        if what is None:
            continue
        attrs = parse_attrs(payload, _NFGENMSG)
        name = attrs.get(what[1]) if what[1] is not None else None
        out.append(
            Deletion(
                what[0],
                payload[0],
                _text(attrs.get(1, b"")),
                _text(name) if name is not None else None,
            )
        )
    return out


def unannounced(backend: str, iptables_version: str) -> str | None:
    """Why the kernel will not announce our part going (None: it will), from the
    backend's name and ``iptables -V``: iptables-legacy's tables are not nf_tables.
    (ipset's sets announce nothing either, but cannot be destroyed while our rules,
    which do announce, use them.)"""
    if backend in ("iptables", "ipset") and "nf_tables" not in iptables_version:
        return "iptables-legacy announces no changes"
    return None


@dataclass(frozen=True)
class Concern:
    """Which deletions touch a backend's part of the firewall."""

    backend: str
    table: str = "banpipe"
    chain: str = "BANPIPE"
    hooks: tuple[str, ...] = ("INPUT", "FORWARD")

    def __call__(self, d: Deletion) -> bool:
        # Our own deletions (bans ending) are announced too; banctl discards the
        # notifications of its own changes right after making them (Daemon.own_events).
        if self.backend == "nftables":
            return d.family == NFPROTO_INET and d.table == self.table
        if d.family not in (NFPROTO_IPV4, NFPROTO_IPV6) or d.table != "filter":
            return False
        if d.kind in ("chain", "rule"):
            return d.name == self.chain or (d.kind == "rule" and d.name in self.hooks)
        return d.kind == "table"


class FirewallEvents:
    """A netlink socket on NFNLGRP_NFTABLES; ``read()`` tells whether ours went.

    Raises OSError when the kernel offers no such group (no nf_tables) or refuses it.
    """

    BUFSIZE = 1 << 16

    def __init__(self, concern: Concern) -> None:
        self.concern = concern
        self.sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
            # A flush of a big ruleset announces thousands of deletions at once.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> bool:
        """Empty the queue; True when one of the deletions was ours (or some were lost)."""
        ours = False
        while True:
            try:
                data = self.sock.recv(self.BUFSIZE)
            except BlockingIOError:
                return ours
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    ours = True  # overflowed: assume the worst, a check will tell
                    continue
                raise
            if not ours:
                ours = any(map(self.concern, parse_deletions(data)))

    def close(self) -> None:
        self.sock.close()
