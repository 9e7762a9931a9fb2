"""A long-lived nfnetlink channel to the kernel's firewall: no fork per ban.

One ``NETLINK_NETFILTER`` socket, opened once, carries every change banctl makes on its
hot path: nf_tables set elements (nftables backend), ipset elements (ipset backend) and
the per-address rules of our iptables-nft chain (iptables backend). A fork+exec of
``nft``/``ipset``/``iptables-restore`` costs 2-4 ms; a request on this socket about
30-100 us, and the kernel answers it synchronously: when ``sendmsg`` returns, every
answer is queued on the socket. The answers are read and acted on: a change is only
reported done when the kernel acknowledged its last message, and any error names the
address whose message failed (``ChannelError.addresses``).

Structure (tables, chains, hooks, sets) is still created with the tools' scripts at
``init()``: rare, and their text is what the golden tests and the docs show.

This module is the channel's requests and its errors; the socket and the kernel's
answers on it are ``nlsocket``; what it carries is built and parsed by pure functions
elsewhere: ``nftmsg`` (nf_tables set
elements, rules, listings), ``ipsetmsg`` (ipset), on ``nfproto`` (the netfilter
constants and attribute helpers, which ``banpipe.fwevents`` uses too).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat

from banpipe.netlink import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    pack_message,
    parse_attrs,
    raw_messages,
)

from .nfproto import (
    IPSET_ERRORS,
    NFGENMSG,
    NFNL_BATCH_GENID,
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES,
    NFT_MSG_GETGEN,
    NFTA_GEN_ID,
    NLM_F_ACK,
    U32,
    nfgen,
    nft_type,
    u32_attr,
)
from .nlsocket import NLMSGERR as _ERR
from .nlsocket import NLMSGHDR as _HDR
from .nlsocket import Answer, NetfilterSocket
from .runner import FirewallError, FirewallFull


def batch(messages: Sequence[bytes], seq: int, genid: int | None = None) -> bytes:
    """``messages`` (already packed, own seqs) between BATCH_BEGIN and BATCH_END: one
    nf_tables transaction, all or nothing. With ``genid`` the kernel refuses the batch
    (ERESTART) unless the ruleset is still at that generation."""
    res = NFNL_SUBSYS_NFTABLES
    head = nfgen(socket.AF_UNSPEC, res)
    if genid is not None:
        head += u32_attr(NFNL_BATCH_GENID, genid)
    begin = pack_message(NFNL_MSG_BATCH_BEGIN, head, NLM_F_REQUEST, seq)
    end = pack_message(NFNL_MSG_BATCH_END, nfgen(socket.AF_UNSPEC, res), NLM_F_REQUEST, seq)
    return b"".join((begin, *messages, end))


def describe(code: int, text: str = "") -> str:
    if code in IPSET_ERRORS:
        what = IPSET_ERRORS[code]
    elif code >= 4096:
        what = f"ipset error {code}"
    else:
        what = os.strerror(code)
    return f"{what} ({text})" if text else what


class ChannelError(FirewallError):
    """A request the kernel refused. ``addresses``: the addresses whose messages failed
    (empty when the failure was not tied to one), ``errno`` the first error number."""

    def __init__(self, message: str, errno_: int, addresses: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errno = errno_
        self.addresses = list(addresses)


class SetFull(ChannelError, FirewallFull):
    """The set is at its size (nf_tables: ENFILE; ipset: IPSET_ERR_HASH_FULL)."""


FULL = (errno.ENFILE, 4352)


def _refused(message: str, code: int, addresses: Sequence[str]) -> ChannelError:
    return (SetFull if code in FULL else ChannelError)(message, code, addresses)


@dataclass(frozen=True)
class Message:
    """One request: netlink type, payload, extra flags, what it is about (for errors)."""

    mtype: int
    payload: bytes
    flags: int = 0
    where: str = ""
    addresses: list[str] = field(default_factory=list)


class Channel(NetfilterSocket):
    """The requests banctl's backends make on a NETLINK_NETFILTER socket
    (banpipe.firewall.nlsocket): a change acted on only when the kernel acknowledged
    it, refusals raised naming the addresses whose messages failed.
    """

    def transact(
        self, messages: Sequence[Message], *, nftables: bool, genid: int | None = None
    ) -> list[tuple[int, int, bytes]]:
        """Send ``messages`` and act on every answer; returns the other messages the
        kernel sent back (echoes).

        nf_tables messages go in one batch (one transaction: one failure and none of
        them is applied); ipset messages each stand alone. Raises ChannelError naming
        every address whose message failed.
        """
        if not messages:
            return []
        first = self.seq(len(messages))
        seqs = range(first, first + len(messages))
        parts = []
        for i, (m, seq) in enumerate(zip(messages, seqs, strict=True)):
            flags = NLM_F_REQUEST | m.flags | (NLM_F_ACK if i == len(messages) - 1 else 0)
            parts.append(pack_message(m.mtype, m.payload, flags, seq))
        data = batch(parts, self.seq(), genid) if nftables else b"".join(parts)
        errors, others = self.request(data, seqs[-1])
        if errors:
            by_seq = dict(zip(seqs, messages, strict=True))
            failed: list[str] = []
            reasons: list[str] = []
            for e in errors:
                m = by_seq.get(e.seq)
                what = describe(e.error, e.text)
                if m is not None and m.addresses:
                    failed += m.addresses
                    reasons.append(f"{m.where}: {', '.join(m.addresses[:3])}: {what}")
                else:
                    reasons.append(f"{m.where if m else 'batch'}: {what}")
            more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
            raise _refused("; ".join(reasons[:3]) + more, errors[0].error, failed)
        return others

    def each(self, mtype: int, items: Sequence[tuple[bytes, str]], where: str) -> None:
        """One standalone message per ``(payload, address)``, all in one datagram, the
        last asking for an ACK; raises ChannelError naming the addresses that failed.
        (ipset's path: 100,000 messages cost 0.2 s, not 1 s of Message objects.)"""
        if not items:
            return
        n = len(items)
        first = self.seq(n)
        parts = []
        hdr = _HDR.pack
        for i, (payload, _addr) in enumerate(items):
            size = _HDR.size + len(payload)
            flags = NLM_F_REQUEST | (NLM_F_ACK if i == n - 1 else 0)
            parts.append(hdr(size, mtype, flags, first + i, 0))
            parts.append(payload)
            if size & 3:
                parts.append(b"\0" * (4 - (size & 3)))
        errors, _others = self.request(b"".join(parts), first + n - 1)
        _raise_for(errors, first, [addr for _, addr in items], where)

    def each_key(
        self, mtype: int, head: bytes, keys: Sequence[bytes], addrs: Sequence[str], where: str
    ) -> None:
        """``each`` for messages that are one ``head`` plus a key of one length each
        (ipset's add/del of addresses): the datagram is packed in C, one struct per
        message (a million: 0.3 s instead of 2 s of Python). ``addrs[i]`` names
        ``keys[i]`` in errors."""
        n = len(keys)
        if not n:
            return
        first = self.seq(n)
        size = _HDR.size + len(head) + len(keys[0])
        msg = struct.Struct(f"=IHHII{len(head)}s{len(keys[0])}s{-size & 3}x")
        last = n - 1
        body = b"".join(
            map(
                msg.pack,
                repeat(size, last),
                repeat(mtype),
                repeat(NLM_F_REQUEST),
                range(first, first + last),
                repeat(0),
                repeat(head),
                islice(keys, last),
            )
        )
        ack = msg.pack(size, mtype, NLM_F_REQUEST | NLM_F_ACK, first + last, 0, head, keys[last])
        errors, _others = self.request(body + ack, first + last)
        _raise_for(errors, first, addrs, where)

    def dump(self, mtype: int, payload: bytes, *, whole: bool = True) -> list[bytes]:
        """The payloads of a dump request's answers (not ``whole``: those of the first
        datagram that holds any)."""
        seq = self.seq()
        self._send(pack_message(mtype, payload, NLM_F_REQUEST | NLM_F_DUMP, seq))
        out: list[bytes] = []
        sock = self.sock
        assert sock is not None
        sock.setblocking(True)
        try:
            while True:
                data = sock.recv(self.RECV)
                for m, _flags, s, _pid, body in raw_messages(data):
                    if s != seq:
                        continue
                    if m == NLMSG_DONE:
                        return out
                    if m == NLMSG_ERROR:
                        code = -_ERR.unpack_from(body)[0]
                        if code:
                            raise ChannelError(f"netlink dump: {describe(code)}", code)
                        return out
                    out.append(body)
                if out and not whole:
                    return out
        finally:
            sock.setblocking(False)

    def first(self, mtype: int, payload: bytes) -> list[bytes]:
        """The payloads of a dump's first datagram only, asked on a socket of its own
        that is closed right after (the kernel then drops the rest of the dump): a look
        at whether a big set holds anything, at the cost of one chunk (a full dump of
        a million nf_tables elements costs 10-40 s, see NftablesBackend.replace)."""
        peek = Channel(self.netns)
        try:
            return peek.dump(mtype, payload, whole=False)
        finally:
            peek.close()

    def generation(self) -> int:
        """The nf_tables ruleset generation (it changes with every transaction)."""
        seq = self.seq()
        self._send(
            pack_message(nft_type(NFT_MSG_GETGEN), nfgen(socket.AF_UNSPEC), NLM_F_REQUEST, seq)
        )
        sock = self.sock
        assert sock is not None
        sock.setblocking(True)
        try:
            while True:
                for m, _f, s, _p, body in raw_messages(sock.recv(self.RECV)):
                    if s != seq:
                        continue
                    if m == NLMSG_ERROR:
                        code = -_ERR.unpack_from(body)[0]
                        raise ChannelError(f"netlink getgen: {describe(code)}", code)
                    gen = parse_attrs(body, NFGENMSG.size).get(NFTA_GEN_ID, b"")
                    return U32.unpack(gen)[0] if len(gen) == 4 else 0
        finally:
            sock.setblocking(False)


def _raise_for(errors: list[Answer], first: int, addrs: Sequence[str], where: str) -> None:
    """ChannelError naming the addresses of the failed messages (seq ``first + i`` was
    about ``addrs[i]``); nothing when there were no errors."""
    if not errors:
        return
    n = len(addrs)
    failed = [addrs[e.seq - first] for e in errors if 0 <= e.seq - first < n]
    what = describe(errors[0].error, errors[0].text)
    shown = ", ".join(failed[:3]) + (f" (and {len(failed) - 3} more)" if len(failed) > 3 else "")
    raise _refused(f"{where}: {shown}: {what}", errors[0].error, failed)


def channel_for(runner: object) -> Channel | None:
    """The channel matching where ``runner`` runs its commands, or None when that is not
    a place a socket can be opened in (a recording runner, an unknown prefix)."""
    from .runner import SubprocessRunner

    if not isinstance(runner, SubprocessRunner):
        return None
    prefix = runner.prefix
    if not prefix:
        return Channel()
    if len(prefix) == 4 and prefix[:3] == ("ip", "netns", "exec"):
        return Channel(prefix[3])
    return None
