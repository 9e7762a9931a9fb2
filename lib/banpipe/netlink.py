"""A small rtnetlink reader: interfaces and their addresses, as the kernel reports them.

Why a raw NETLINK_ROUTE socket rather than ``ip monitor``: no subprocess to babysit, no
text format to scrape, the full IFA_FLAGS word (tentative, dadfailed, deprecated,
secondary) on every message, and an explicit overflow signal (ENOBUFS) after which a
fresh dump restores a correct picture instead of a silently stale one.

The parsing functions are pure (bytes in, dataclasses out); :class:`RouteTable` folds
messages into the current set of links and addresses; :class:`RouteSocket` is the only
part that touches the kernel.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# <linux/netlink.h>
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH

# <linux/rtnetlink.h>
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

# <linux/if_addr.h>
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_CACHEINFO = 6
IFA_FLAGS = 8
IFA_F_SECONDARY = 0x01  # also IFA_F_TEMPORARY for IPv6 privacy addresses
IFA_F_NODAD = 0x02
IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
IFA_F_HOMEADDRESS = 0x10
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
INFINITY_LIFE_TIME = 0xFFFFFFFF

# <linux/rtnetlink.h> rt_scope_t
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_SITE = 200
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254

# <linux/if_link.h>, <linux/if.h>
IFLA_IFNAME = 3
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTATTR = struct.Struct("=HH")  # len, type
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_CACHEINFO = struct.Struct("=IIII")  # preferred, valid, cstamp, tstamp
_NLMSGERR = struct.Struct("=i")

_FLAG_NAMES = (
    (IFA_F_SECONDARY, "secondary"),
    (IFA_F_NODAD, "nodad"),
    (IFA_F_OPTIMISTIC, "optimistic"),
    (IFA_F_DADFAILED, "dadfailed"),
    (IFA_F_HOMEADDRESS, "homeaddress"),
    (IFA_F_DEPRECATED, "deprecated"),
    (IFA_F_TENTATIVE, "tentative"),
    (IFA_F_PERMANENT, "permanent"),
)


def _align(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True)
class Link:
    """One network interface (RTM_NEWLINK/RTM_DELLINK with family AF_UNSPEC)."""

    index: int
    name: str
    flags: int = 0

    @property
    def state(self) -> str:
        """``down`` (administratively), ``no-carrier`` or ``up``."""
        if not self.flags & IFF_UP:
            return "down"
        if not self.flags & IFF_LOWER_UP:
            return "no-carrier"
        return "up"


@dataclass(frozen=True)
class Addr:
    """One interface address (RTM_NEWADDR/RTM_DELADDR).

    ``address`` is the local address in canonical text; ``peer`` the IFA_ADDRESS when it
    differs (point-to-point links). ``flags`` is the full IFA_FLAGS word when the kernel
    sent it, else the 8-bit ifa_flags. Lifetimes are seconds, None for "forever".
    """

    index: int
    family: int
    address: str
    prefixlen: int
    scope: int
    flags: int
    peer: str | None = None
    label: str | None = None
    preferred: int | None = None
    valid: int | None = None

    @property
    def key(self) -> tuple[int, int, str, int, str | None]:
        """Identity of the address on its interface, as the kernel matches deletions.

        IPv6 allows one entry per address and interface (its prefix length may change in
        place); IPv4 may hold the same address with several prefix lengths or peers.
        """
        if self.family == socket.AF_INET6:
            return (self.index, self.family, self.address, -1, None)
        return (self.index, self.family, self.address, self.prefixlen, self.peer)

    def flag_names(self) -> list[str]:
        return [name for bit, name in _FLAG_NAMES if self.flags & bit]


@dataclass(frozen=True)
class Message:
    """One netlink message: ``kind`` is new-link, del-link, new-addr, del-addr, done,
    error, overrun or other; ``item`` the Link or Addr; ``error`` a positive errno."""

    kind: str
    seq: int = 0
    flags: int = 0
    pid: int = 0
    item: Link | Addr | None = None
    error: int = 0


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Route attributes from ``offset`` on; the first occurrence of each type wins."""
    attrs: dict[int, bytes] = {}
    end = len(data)
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            break  # truncated: keep what was complete
        attrs.setdefault(kind & 0x3FFF, data[offset + _RTATTR.size : offset + length])
        offset += _align(length)
    return attrs


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _ip(family: int, raw: bytes) -> str | None:
    try:
        if family == socket.AF_INET and len(raw) == 4:
            return str(ipaddress.IPv4Address(raw))
        if family == socket.AF_INET6 and len(raw) == 16:
            ip6 = ipaddress.IPv6Address(raw)
            return str(ip6.ipv4_mapped or ip6)
    except ValueError:
        pass
    return None


def parse_addr(payload: bytes) -> Addr | None:
    """An ifaddrmsg and its attributes, or None for families other than IPv4/IPv6."""
    if len(payload) < _IFADDRMSG.size:
        return None
    family, prefixlen, flags8, scope, index = _IFADDRMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = parse_attrs(payload, _IFADDRMSG.size)
    local_raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
    if local_raw is None:
        return None
    local = _ip(family, local_raw)
    if local is None:
        return None
    peer = _ip(family, attrs[IFA_ADDRESS]) if IFA_ADDRESS in attrs else None
    flags = flags8
    if len(attrs.get(IFA_FLAGS, b"")) >= 4:
        (flags,) = struct.unpack_from("=I", attrs[IFA_FLAGS])
    preferred = valid = None
    if len(attrs.get(IFA_CACHEINFO, b"")) >= _CACHEINFO.size:
        pref, val, _c, _t = _CACHEINFO.unpack_from(attrs[IFA_CACHEINFO])
        preferred = None if pref == INFINITY_LIFE_TIME else pref
        valid = None if val == INFINITY_LIFE_TIME else val
    return Addr(
        index=index,
        family=family,
        address=local,
        prefixlen=prefixlen,
        scope=scope,
        flags=flags,
        peer=peer if peer != local else None,
        label=_text(attrs[IFA_LABEL]) if IFA_LABEL in attrs else None,
        preferred=preferred,
        valid=valid,
    )


def parse_link(payload: bytes) -> Link | None:
    """An ifinfomsg with its name, or None (other families: e.g. AF_BRIDGE port events,
    whose RTM_DELLINK means "left the bridge", not "interface gone")."""
    if len(payload) < _IFINFOMSG.size:
        return None
    family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    if family != socket.AF_UNSPEC:
        return None
    attrs = parse_attrs(payload, _IFINFOMSG.size)
    if IFLA_IFNAME not in attrs:
        return None
    return Link(index=index, name=_text(attrs[IFLA_IFNAME]), flags=flags)


_KINDS = {
    RTM_NEWLINK: "new-link",
    RTM_DELLINK: "del-link",
    RTM_NEWADDR: "new-addr",
    RTM_DELADDR: "del-addr",
}


def raw_messages(data: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
    """``(type, flags, seq, pid, payload)`` of every netlink message in one datagram;
    malformed trailing bytes are ignored. Any netlink family."""
    offset = 0
    end = len(data)
    while offset + _NLMSGHDR.size <= end:
        length, mtype, mflags, seq, pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > end:
            break
        yield mtype, mflags, seq, pid, data[offset + _NLMSGHDR.size : offset + length]
        offset += _align(length)


def parse_messages(data: bytes) -> Iterator[Message]:
    """Every rtnetlink message in one datagram; malformed trailing bytes are ignored."""
    for mtype, mflags, seq, pid, payload in raw_messages(data):
        if mtype == NLMSG_DONE:
            yield Message("done", seq, mflags, pid)
        elif mtype == NLMSG_ERROR:
            code = _NLMSGERR.unpack_from(payload)[0] if len(payload) >= 4 else -errno.EIO
            yield Message("error", seq, mflags, pid, error=-code)
        elif mtype == NLMSG_OVERRUN:
            yield Message("overrun", seq, mflags, pid)
        elif mtype in (RTM_NEWLINK, RTM_DELLINK):
            link = parse_link(payload)
            yield Message(_KINDS[mtype] if link else "other", seq, mflags, pid, link)
        elif mtype in (RTM_NEWADDR, RTM_DELADDR):
            addr = parse_addr(payload)
            yield Message(_KINDS[mtype] if addr else "other", seq, mflags, pid, addr)
        else:
            yield Message("other", seq, mflags, pid)


def pack_message(mtype: int, payload: bytes, flags: int = 0, seq: int = 0, pid: int = 0) -> bytes:
    """A netlink message (header + payload, padded), as requests are sent."""
    length = _NLMSGHDR.size + len(payload)
    body = _NLMSGHDR.pack(length, mtype, flags, seq, pid) + payload
    return body + b"\0" * (_align(length) - length)


def pack_attr(kind: int, value: bytes) -> bytes:
    length = _RTATTR.size + len(value)
    return _RTATTR.pack(length, kind) + value + b"\0" * (_align(length) - length)


@dataclass
class RouteTable:
    """The links and addresses of the network namespace, as folded from messages."""

    links: dict[int, Link] = field(default_factory=dict)
    addrs: dict[tuple[int, int, str, int, str | None], Addr] = field(default_factory=dict)

    def apply(self, msg: Message) -> None:
        item = msg.item
        if msg.kind == "new-link" and isinstance(item, Link):
            self.links[item.index] = item
        elif msg.kind == "del-link" and isinstance(item, Link):
            self.links.pop(item.index, None)
            # The kernel announces each address going away too; this covers a lost one.
            for key in [k for k in self.addrs if k[0] == item.index]:
                del self.addrs[key]
        elif msg.kind == "new-addr" and isinstance(item, Addr):
            self.addrs[item.key] = item
        elif msg.kind == "del-addr" and isinstance(item, Addr):
            self.addrs.pop(item.key, None)

    def find(self, name: str) -> Link | None:
        for link in self.links.values():
            if link.name == name:
                return link
        return None

    def addresses_of(self, index: int) -> list[Addr]:
        return [a for a in self.addrs.values() if a.index == index]


MAX_RCVBUF = 64 << 20


def grow_buffer(sock: socket.socket, opt: int, nbytes: int) -> int:
    """Ask for a send (SO_SNDBUF) or receive (SO_RCVBUF) buffer of ``nbytes``; returns
    what the kernel granted. The *FORCE variants pass the rmem_max/wmem_max cap as root,
    the plain option is the fallback."""
    force = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32}[opt]  # SO_RCVBUFFORCE/SNDBUFFORCE
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, nbytes)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, nbytes)
    # The kernel reports twice the requested size (bookkeeping overhead included).
    return sock.getsockopt(socket.SOL_SOCKET, opt) // 2


class NetlinkOverflow(Exception):
    """Notifications were lost (ENOBUFS or a truncated datagram): dump again.

    ``messages`` are those read before the loss was noticed, in order.
    """

    def __init__(self, reason: str, messages: list[Message] | None = None) -> None:
        super().__init__(reason)
        self.messages = messages or []


class RouteSocket:
    """A NETLINK_ROUTE socket subscribed to link and address changes.

    Subscribe first, dump second: a change racing the dump then shows up as a
    notification after it, never falls between the two.
    """

    GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
    RCVBUF = 4 << 20
    BUFSIZE = 1 << 17

    def __init__(self, groups: int = GROUPS) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            self._grow_buffer()
            self.sock.bind((0, groups))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self._seq = int(time.time()) & 0x7FFFFFFF

    def _grow_buffer(self) -> None:
        self.set_buffer(self.RCVBUF)

    def set_buffer(self, nbytes: int) -> int:
        """Ask for a receive queue of ``nbytes``; returns what the kernel granted.

        A burst (hundreds of addresses flushed at once) must not overflow the queue;
        SO_RCVBUFFORCE passes the rmem_max cap as root, plain SO_RCVBUF otherwise.
        """
        grow_buffer(self.sock, socket.SO_RCVBUF, nbytes)
        return self.buffer_size()

    def buffer_size(self) -> int:
        # The kernel reports twice the requested size (bookkeeping overhead included).
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2

    def grow(self, limit: int = MAX_RCVBUF) -> bool:
        """Double the receive queue after an overflow; False when already at ``limit``."""
        current = self.buffer_size()
        if current >= limit:
            return False
        return self.set_buffer(min(limit, max(current * 2, self.RCVBUF))) > current

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RouteSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def read_available(self, limit: int = 512) -> list[Message]:
        """The messages queued now, from at most ``limit`` datagrams (so a flood cannot
        starve the caller's other work); never blocks. Raises NetlinkOverflow."""
        out: list[Message] = []
        for _ in range(limit):
            try:
                data, _anc, mflags, addr = self.sock.recvmsg(self.BUFSIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise NetlinkOverflow("netlink receive queue overflowed", out) from None
                raise
            if mflags & socket.MSG_TRUNC:
                raise NetlinkOverflow("netlink message truncated", out)
            if addr and addr[0] != 0:
                continue  # only the kernel speaks for the kernel
            out.extend(parse_messages(data))
        return out

    def dump(self, table: RouteTable, timeout: float = 10.0) -> bool:
        """Fill ``table`` with every link, then every address; notifications that
        arrive meanwhile are applied in order.

        Returns False when notifications may have been lost during the dump (the
        table may then hold something already gone): dump again into a new table.
        A dump is always read to its end, even after a loss, because the kernel
        refuses a new dump on this socket while one is still running.
        """
        intact = True
        for mtype, payload in (
            (RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)),
            (RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)),
        ):
            self._seq = (self._seq + 1) & 0x7FFFFFFF
            seq = self._seq
            self.sock.send(pack_message(mtype, payload, NLM_F_REQUEST | NLM_F_DUMP, seq))
            intact = self._collect(table, seq, time.monotonic() + timeout) and intact
        return intact

    def _collect(self, table: RouteTable, seq: int, deadline: float) -> bool:
        intact = True
        while True:
            try:
                messages = self.read_available()
            except NetlinkOverflow as exc:
                # Dump parts are never dropped (the kernel waits for room); only
                # notifications are. Finish this dump, then let the caller redo it.
                messages, intact = exc.messages, False
            for msg in messages:
                if msg.seq == seq and msg.flags & NLM_F_DUMP_INTR:
                    intact = False  # the kernel saw the table change mid-dump
                if msg.seq == seq and msg.kind == "done":
                    return intact
                if msg.seq == seq and msg.kind == "error":
                    if msg.error == 0:
                        return intact
                    raise OSError(msg.error, f"netlink dump: {os.strerror(msg.error)}")
                table.apply(msg)
            if messages:
                continue  # more may be queued
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("netlink dump did not finish")
            select.select([self.sock], [], [], left)
