"""One NETLINK_NETFILTER socket in a network namespace, and the kernel's answers on it.

:class:`NetfilterSocket` opens the socket on first use (in an ``ip netns`` namespace if
asked), hands out sequence numbers, sends one datagram and collects what the kernel
queued in answer before ``send`` returned (:func:`parse_answers`). What the requests
are, and what a refusal means, is banpipe.firewall.nfnl's :class:`~.nfnl.Channel`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from banpipe.netlink import NLMSG_DONE, NLMSG_ERROR, grow_buffer, parse_attrs, raw_messages

from .nfproto import (
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_NETFILTER,
    NLM_F_ACK_TLVS,
    NLMSGERR_ATTR_MSG,
    SOL_NETLINK,
)
from .runner import FirewallError

log = logging.getLogger("banpipe.firewall")

NLMSGERR = struct.Struct("=i")  # the error code that opens an NLMSG_ERROR payload
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
CLONE_NEWNET = 0x40000000


# -- answers ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """The kernel's reply to one message: ``error`` 0 (ACK) or a positive errno (or an
    ipset error number); ``text`` the extended-ACK message when the kernel sent one."""

    seq: int
    error: int
    text: str = ""


def parse_answers(data: bytes) -> Iterator[tuple[int, int, bytes] | Answer]:
    """ACK/error answers as Answer; any other message as (type, seq, payload)."""
    for mtype, mflags, seq, _pid, payload in raw_messages(data):
        if mtype == NLMSG_ERROR and len(payload) >= NLMSGERR.size:
            code = -NLMSGERR.unpack_from(payload)[0]
            text = ""
            if mflags & NLM_F_ACK_TLVS and len(payload) >= NLMSGERR.size + NLMSGHDR.size:
                # With NETLINK_CAP_ACK the request is not echoed: its header only.
                tlv = parse_attrs(payload, NLMSGERR.size + NLMSGHDR.size)
                text = tlv.get(NLMSGERR_ATTR_MSG, b"").split(b"\0", 1)[0].decode(errors="replace")
            yield Answer(seq, code, text)
        elif mtype != NLMSG_DONE:
            yield mtype, seq, payload


# -- the socket -------------------------------------------------------------------------
_libc = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def _in_netns(name: str | None) -> Iterator[None]:
    """Run the block in network namespace ``name`` (``ip netns`` name; None: stay)."""
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


class NetfilterSocket:
    """One NETLINK_NETFILTER socket in a network namespace, opened on first use.

    ``netns``: an ``ip netns`` name to open the socket in (tests and benchmarks), None for
    the process's own namespace. The socket belongs to the namespace it was created in
    for its whole life, whatever the thread does later.
    """

    RCVBUF = 8 << 20
    RECV = 1 << 20

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.sock: socket.socket | None = None
        self._seq = int.from_bytes(os.urandom(2), "big") << 8
        self._sndbuf = 0
        self.failed = False

    def open(self) -> socket.socket:
        if self.sock is None:
            with _in_netns(self.netns):
                sock = socket.socket(
                    socket.AF_NETLINK,
                    socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                    NETLINK_NETFILTER,
                )
            try:
                sock.bind((0, 0))
                # Answers carry the request's header only, plus the kernel's error text.
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
                grow_buffer(sock, socket.SO_RCVBUF, self.RCVBUF)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self.sock = sock
        return self.sock

    def ready(self) -> bool:
        """Open the socket if needed; False (logged once) when the kernel refuses it, and
        the caller falls back to the tool's command."""
        if self.sock is None and not self.failed:
            try:
                self.open()
            except OSError as exc:
                self.failed = True
                log.warning("netlink channel unavailable (%s); using commands", exc)
        return self.sock is not None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def seq(self, n: int = 1) -> int:
        """The first of ``n`` fresh consecutive sequence numbers."""
        first = self._seq
        self._seq = (self._seq + n) & 0x7FFFFFFF
        if self._seq < first:  # wrapped: start again so the n stay consecutive
            first, self._seq = 1, n + 1
        return first

    def _send(self, data: bytes) -> None:
        sock = self.open()
        if len(data) + 4096 > self._sndbuf:
            # A transaction must be one datagram; the kernel refuses one larger than the
            # send buffer.
            self._sndbuf = grow_buffer(sock, socket.SO_SNDBUF, max(len(data) + 65536, 1 << 20))
        try:
            sock.send(data)
        except BlockingIOError:
            sock.setblocking(True)
            try:
                sock.send(data)
            finally:
                sock.setblocking(False)

    def _drain(self) -> list[Answer | tuple[int, int, bytes]]:
        """Everything queued: the kernel answered before ``send`` returned."""
        out: list[Answer | tuple[int, int, bytes]] = []
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(self.RECV)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise FirewallError("netlink: answers lost (receive queue overflowed)")
                raise
            out.extend(parse_answers(data))

    def request(self, data: bytes, last: int) -> tuple[list[Answer], list[tuple[int, int, bytes]]]:
        """Send ``data`` (one datagram of messages); returns (errors, other messages).

        ``last``: the seq of the final message, which asked for an ACK; messages before
        it ask for none, so only failures answer (netlink always reports those), and the
        ACK of the last message says everything before it was handled.
        """
        self._send(data)
        errors: list[Answer] = []
        others: list[tuple[int, int, bytes]] = []
        done = False
        for item in self._drain():
            if isinstance(item, Answer):
                if item.error:
                    errors.append(item)
                if item.seq == last:
                    done = True
            else:
                others.append(item)
        if not done and not errors:
            raise FirewallError("netlink: the kernel did not answer the request")
        return errors, others
