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

The message builders are pure (values in, bytes out), the parsers pure (bytes in,
values out); :class:`Channel` is the only part that touches the kernel. Netlink framing
(``pack_message``, ``pack_attr``, ``raw_messages``, ``parse_attrs``) is shared with
``banpipe.netlink``; the netfilter constants live here, ``banpipe.fwevents`` uses them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from banpipe.netlink import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    grow_buffer,
    pack_attr,
    pack_message,
    parse_attrs,
    raw_messages,
)

from .runner import FirewallError, FirewallFull

# <linux/netlink.h>
NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_ACK_TLVS = 0x200
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLMSGERR_ATTR_MSG = 1

# <linux/netfilter/nfnetlink.h>
NFNL_SUBSYS_IPSET = 6
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NFNL_BATCH_GENID = 1
ERESTART = 85
NFNLGRP_NFTABLES = 7
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10

# <linux/netfilter/nf_tables.h>
NFT_MSG_GETCHAIN = 4
NFT_MSG_NEWRULE, NFT_MSG_GETRULE, NFT_MSG_DELRULE = 6, 7, 8
NFT_MSG_GETSET = 10
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NFT_MSG_GETGEN = 16
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_FLAGS = 1, 3
NFT_SET_ELEM_INTERVAL_END = 1
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE = 1
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_GEN_ID = 1

# <linux/netfilter/ipset/ip_set.h>
IPSET_PROTOCOL = 7
IPSET_CMD_ADD, IPSET_CMD_DEL, IPSET_CMD_TEST = 9, 10, 11
IPSET_ATTR_PROTOCOL, IPSET_ATTR_SETNAME, IPSET_ATTR_DATA, IPSET_ATTR_ADT = 1, 2, 7, 8
IPSET_CMD_LIST = 7
IPSET_ATTR_TYPENAME, IPSET_ATTR_FAMILY = 3, 5
IPSET_ATTR_IP, IPSET_ATTR_CIDR = 1, 3
IPSET_ATTR_IPADDR_IPV4, IPSET_ATTR_IPADDR_IPV6 = 1, 2
# ipset's own error numbers (the kernel returns them negated, like errnos).
IPSET_ERRORS = {
    4103: "element already exists",  # IPSET_ERR_EXIST (only with NLM_F_EXCL)
    4104: "invalid CIDR",
    4107: "timeout given but the set has none",
    4352: "set is full (max_entries reached)",  # IPSET_ERR_HASH_FULL
    4353: "invalid element",
}

log = logging.getLogger("banpipe.firewall")

_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (network order)
_U32 = struct.Struct("!I")
_ERR = struct.Struct("=i")
_HDR = struct.Struct("=IHHII")
CLONE_NEWNET = 0x40000000


def _nested(kind: int, value: bytes) -> bytes:
    return pack_attr(kind | NLA_F_NESTED, value)


def _str(kind: int, text: str) -> bytes:
    return pack_attr(kind, text.encode() + b"\0")


def _nfgen(family: int, res_id: int = 0) -> bytes:
    return _NFGENMSG.pack(family, 0, socket.htons(res_id))


# -- nf_tables --------------------------------------------------------------------------
def nft_type(msg: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | msg


def batch(messages: Sequence[bytes], seq: int, genid: int | None = None) -> bytes:
    """``messages`` (already packed, own seqs) between BATCH_BEGIN and BATCH_END: one
    nf_tables transaction, all or nothing. With ``genid`` the kernel refuses the batch
    (ERESTART) unless the ruleset is still at that generation."""
    res = NFNL_SUBSYS_NFTABLES
    head = _nfgen(socket.AF_UNSPEC, res)
    if genid is not None:
        head += _u32(NFNL_BATCH_GENID, genid)
    begin = pack_message(NFNL_MSG_BATCH_BEGIN, head, NLM_F_REQUEST, seq)
    end = pack_message(NFNL_MSG_BATCH_END, _nfgen(socket.AF_UNSPEC, res), NLM_F_REQUEST, seq)
    return b"".join((begin, *messages, end))


def setelem_payload(
    family: int, table: str, setname: str, keys: Iterable[bytes], interval: bool = False
) -> bytes:
    """NEWSETELEM/DELSETELEM payload: ``keys`` are packed addresses. With ``interval``
    each key is a (start, end-exclusive) pair flattened: the end carries the
    INTERVAL_END flag, as nft writes ranges into an interval set."""
    # Every element has the same framing: built once per key length, not per element
    # (100,000 elements: 0.05 s instead of 2 s of pack_attr calls).
    keys = list(keys)
    end_flag = pack_attr(NFTA_SET_ELEM_FLAGS, _U32.pack(NFT_SET_ELEM_INTERVAL_END))
    heads = {
        (n, f): _ELEM_HEAD.pack(
            12 + n + len(f),
            NFTA_LIST_ELEM | NLA_F_NESTED,
            8 + n,
            NFTA_SET_ELEM_KEY | NLA_F_NESTED,
            4 + n,
            NFTA_DATA_VALUE,
        )
        for n in {len(k) for k in keys}
        for f in (b"", end_flag)
    }
    if interval:
        elems = []
        for i, key in enumerate(keys):
            flags = end_flag if i % 2 else b""
            elems += (heads[len(key), flags], key, flags)
        body = b"".join(elems)
    elif len(heads) == 2:
        head = heads[len(keys[0]), b""]
        body = head + head.join(keys)
    else:
        body = b"".join(heads[len(k), b""] + k for k in keys)
    if len(body) > 0xFFFF - 4:
        raise ValueError("too many set elements for one message")
    return (
        _nfgen(family)
        + _str(NFTA_SET_ELEM_LIST_TABLE, table)
        + _str(NFTA_SET_ELEM_LIST_SET, setname)
        + _nested(NFTA_SET_ELEM_LIST_ELEMENTS, body)
    )


_ELEM_HEAD = struct.Struct("=HHHHHH")


def _expr(name: str, data: bytes) -> bytes:
    return _nested(NFTA_LIST_ELEM, _str(NFTA_EXPR_NAME, name) + _nested(NFTA_EXPR_DATA, data))


def _u32(kind: int, value: int) -> bytes:
    return pack_attr(kind, _U32.pack(value))


def _u64(kind: int, value: int) -> bytes:
    return pack_attr(kind, struct.pack("!Q", value))


@dataclass(frozen=True)
class XtLog:
    """``-m limit --limit RATE -j LOG --log-prefix P`` as iptables-nft stores it: a
    native limit expression and the xtables LOG target (struct xt_log_info)."""

    rate: int
    unit: int  # seconds
    prefix: str
    burst: int = 5
    level: int = 4  # iptables' default, "warning"


def xt_rule_payload(
    family: int, chain: str, key: bytes, plen: int, log: XtLog | None = None
) -> bytes:
    """NEWRULE payload for ``-s ADDR/PLEN -j DROP`` (or its LOG rule) in ``filter``,
    expression for expression what iptables-nft 1.8 writes, so ``iptables -S`` and
    iptables-nft's own -D/-C read it as their own rule."""
    if plen == 8 * len(key):
        # A host rule is the same bytes around its address every time: built once
        # (100,000 rules: 0.1 s instead of 3 s).
        head, tail = _host_rule(family, chain, len(key), log)
        return head + key + tail
    return _rule_payload(family, chain, key, plen, log)


@functools.lru_cache(maxsize=16)
def _host_rule(family: int, chain: str, n: int, log: XtLog | None) -> tuple[bytes, bytes]:
    marker = bytes(range(0xE0, 0xE0 + n))
    whole = _rule_payload(family, chain, marker, 8 * n, log)
    at = whole.find(marker)
    assert at >= 0 and whole.rfind(marker) == at
    return whole[:at], whole[at + n :]


def _rule_payload(family: int, chain: str, key: bytes, plen: int, log: XtLog | None) -> bytes:
    if not 0 < plen <= 8 * len(key):
        raise ValueError(f"prefix length {plen} for a {8 * len(key)}-bit address")
    full = len(key)
    nbytes = (plen + 7) // 8
    offset = 12 if full == 4 else 8
    exprs = [
        _expr(
            "payload",
            _u32(1, 1) + _u32(2, 1) + _u32(3, offset) + _u32(4, nbytes),  # dreg 1, network hdr
        )
    ]
    value = key[:nbytes]
    if plen % 8:
        mask = (0xFF << (8 - plen % 8)) & 0xFF
        exprs.append(
            _expr(
                "bitwise",
                _u32(1, 1)  # sreg
                + _u32(2, 1)  # dreg
                + _u32(3, nbytes)  # len
                + _nested(4, pack_attr(NFTA_DATA_VALUE, b"\xff" * (nbytes - 1) + bytes([mask])))
                + _nested(5, pack_attr(NFTA_DATA_VALUE, b"\0" * nbytes)),
            )
        )
        value = value[:-1] + bytes([value[-1] & mask])
    exprs.append(_expr("cmp", _u32(1, 1) + _u32(2, 0) + _nested(3, pack_attr(1, value))))
    if log is not None:
        exprs.append(
            _expr(
                "limit",
                _u64(1, log.rate)
                + _u64(2, log.unit)
                + _u32(3, log.burst)
                + _u32(4, 0)
                + _u32(5, 0),
            )
        )
    exprs.append(_expr("counter", _u64(1, 0) + _u64(2, 0)))
    if log is None:
        verdict = _nested(NFTA_DATA_VERDICT, _u32(NFTA_VERDICT_CODE, 0))  # NF_DROP
        exprs.append(_expr("immediate", _u32(1, 0) + _nested(2, verdict)))
    else:
        info = struct.pack("=BB30s", log.level, 0, log.prefix.encode())
        exprs.append(_expr("target", _str(1, "LOG") + _u32(2, 0) + pack_attr(3, info)))
    return (
        _nfgen(family)
        + _str(NFTA_RULE_TABLE, "filter")
        + _str(NFTA_RULE_CHAIN, chain)
        + _nested(NFTA_RULE_EXPRESSIONS, b"".join(exprs))
    )


def rule_filter(family: int, table: str, chain: str) -> bytes:
    """GETRULE dump payload: only the rules of one chain."""
    return _nfgen(family) + _str(NFTA_RULE_TABLE, table) + _str(NFTA_RULE_CHAIN, chain)


def delrule_payload(family: int, chain: str, handle: int) -> bytes:
    return (
        _nfgen(family)
        + _str(NFTA_RULE_TABLE, "filter")
        + _str(NFTA_RULE_CHAIN, chain)
        + _u64(NFTA_RULE_HANDLE, handle)
    )


@dataclass(frozen=True)
class Rule:
    """One rule of an nf_tables chain, as far as we read it: its handle, and when it is
    one of our per-address rules, the address/prefix matched and ``drop`` or ``log``."""

    handle: int
    key: bytes | None = None
    plen: int = 0
    action: str | None = None


def rule_handle(payload: bytes) -> int | None:
    """The handle of a NEWRULE message (dump or echo); None without one."""
    raw = parse_attrs(payload, _NFGENMSG.size).get(NFTA_RULE_HANDLE)
    return struct.unpack("!Q", raw)[0] if raw is not None and len(raw) == 8 else None


def parse_rule(payload: bytes) -> Rule | None:
    """A NEWRULE message (dump or echo) -> Rule; None without a handle."""
    handle = rule_handle(payload)
    if handle is None:
        return None
    attrs = parse_attrs(payload, _NFGENMSG.size)
    names: list[str] = []
    key = mask = b""
    for e in _list(attrs.get(NFTA_RULE_EXPRESSIONS, b"")):
        ea = parse_attrs(e)
        name = ea.get(NFTA_EXPR_NAME, b"").split(b"\0", 1)[0].decode(errors="replace")
        data = parse_attrs(ea.get(NFTA_EXPR_DATA, b""))
        names.append(name)
        if name == "bitwise":
            mask = parse_attrs(data.get(4, b"")).get(NFTA_DATA_VALUE, b"")
        elif name == "cmp":
            key = parse_attrs(data.get(3, b"")).get(NFTA_DATA_VALUE, b"")
        elif name == "immediate":
            verdict = parse_attrs(parse_attrs(data.get(2, b"")).get(NFTA_DATA_VERDICT, b""))
            code = verdict.get(NFTA_VERDICT_CODE, b"")
            names[-1] = "drop" if code == _U32.pack(0) else "verdict"
        elif name == "target":
            names[-1] = "log" if data.get(1, b"").startswith(b"LOG\0") else "target"
    shape = [n for n in names if n != "bitwise"]
    if shape in (["payload", "cmp", "counter", "drop"], _LOG_SHAPE) and key:
        plen = sum(bin(b).count("1") for b in mask) if mask else 8 * len(key)
        return Rule(handle, key, plen, shape[-1])
    return Rule(handle)


_LOG_SHAPE = ["payload", "cmp", "limit", "counter", "log"]


def _list(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset + 4 <= len(data):
        length, _kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            return
        yield data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


_HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
_KEY_TYPES = {7: "ipv4_addr", 8: "ipv6_addr"}
_UNITS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
_PAYLOAD_FIELDS = {(12, 4): "ip", (8, 16): "ip6"}


def _name(raw: bytes | None) -> str:
    return (raw or b"").split(b"\0", 1)[0].decode(errors="replace")


def nft_items(channel: Channel, table: str) -> list[dict]:
    """Sets (without elements), chains and rules of ``inet table``, read by netlink
    dumps, as the items ``nft -j list table`` prints (the parts banpipe writes; any
    other expression reads as ``{"?": name}``). nft itself fetches every set element
    for any listing of the table: 3.4 s at 100,000 elements. Raises ChannelError
    (ENOENT) when the table is missing."""
    head = _nfgen(NFPROTO_INET) + _str(1, table)  # NFTA_{SET,CHAIN,RULE}_TABLE
    items: list[dict] = []
    for body in channel.dump(nft_type(NFT_MSG_GETSET), head):
        a = parse_attrs(body, _NFGENMSG.size)
        key = a.get(4, b"")
        typ = _KEY_TYPES.get(_U32.unpack(key)[0], "?") if len(key) == 4 else "?"
        items.append({"set": {"name": _name(a.get(2)), "table": table, "type": typ}})
    for body in channel.dump(nft_type(NFT_MSG_GETCHAIN), head):
        a = parse_attrs(body, _NFGENMSG.size)
        if _name(a.get(1)) != table:
            continue  # the kernel dumps the chains of every table of the family
        chain: dict = {"name": _name(a.get(3)), "table": table}
        if 4 in a:
            hook = parse_attrs(a[4]).get(1, b"")
            chain["hook"] = _HOOKS.get(_U32.unpack(hook)[0], "?") if len(hook) == 4 else "?"
            chain["type"] = _name(a.get(7))
        items.append({"chain": chain})
    for body in channel.dump(nft_type(NFT_MSG_GETRULE), head):
        a = parse_attrs(body, _NFGENMSG.size)
        items.append({"rule": {"chain": _name(a.get(NFTA_RULE_CHAIN)), "expr": _exprs(a)}})
    return items


def _exprs(rule: dict[int, bytes]) -> list[dict]:
    out: list[dict] = []
    payload: dict | None = None
    for e in _list(rule.get(NFTA_RULE_EXPRESSIONS, b"")):
        ea = parse_attrs(e)
        name = _name(ea.get(NFTA_EXPR_NAME))
        d = parse_attrs(ea.get(NFTA_EXPR_DATA, b""))
        u32 = {k: _U32.unpack(v)[0] for k, v in d.items() if len(v) == 4}
        u64 = {k: struct.unpack("!Q", v)[0] for k, v in d.items() if len(v) == 8}
        if name in ("meta", "cmp") and payload is None and (name == "cmp" or u32.get(2) == 15):
            continue  # `meta nfproto ipv4`: the dependency nft adds and hides itself
        if name == "payload" and u32.get(2) == 1:
            proto = _PAYLOAD_FIELDS.get((u32.get(3), u32.get(4)))
            payload = {"payload": {"protocol": proto, "field": "saddr"}} if proto else None
            if payload is None:
                out.append({"?": name})
        elif name == "lookup" and payload is not None:
            op = "!=" if u32.get(5, 0) & 1 else "=="
            right = "@" + _name(d.get(1))
            out.append({"match": {"op": op, "left": payload, "right": right}})
            payload = None
        elif name == "limit":
            out.append({"limit": {"rate": u64.get(1), "per": _UNITS.get(u64.get(2, 0), "?")}})
        elif name == "log":
            out.append({"log": {"prefix": _name(d[2])} if 2 in d else None})
        elif name == "immediate":
            code = parse_attrs(parse_attrs(d.get(2, b"")).get(NFTA_DATA_VERDICT, b"")).get(1)
            out.append({"drop": None} if code == _U32.pack(0) else {"?": "verdict"})
        else:
            out.append({"?": name})
    return out


def setelem_filter(family: int, table: str, setname: str) -> bytes:
    """GETSETELEM dump payload: the elements of one set."""
    return (
        _nfgen(family)
        + _str(NFTA_SET_ELEM_LIST_TABLE, table)
        + _str(NFTA_SET_ELEM_LIST_SET, setname)
    )


def element_keys(bodies: Iterable[bytes], list_attr: int, key_path: tuple[int, ...]) -> list[bytes]:
    """The keys in dumped set messages: ``list_attr`` is the attribute holding the
    elements (nf_tables NFTA_SET_ELEM_LIST_ELEMENTS, ipset IPSET_ATTR_ADT), each element
    a nested attribute in which ``key_path`` leads to the key's bytes.

    A million elements: the common layout (the key path first in each element) is read
    at fixed offsets, anything else through parse_attrs.
    """
    out: list[bytes] = []
    unpack = struct.unpack_from
    for body in bodies:
        blob = parse_attrs(body, _NFGENMSG.size).get(list_attr)
        if not blob:
            continue
        off, end = 0, len(blob)
        while off + 4 <= end:
            length = unpack("=H", blob, off)[0]
            if length < 4 or off + length > end:
                break
            elem = off + 4
            ok = True
            pos = elem
            last_len = 4
            for kind in key_path:
                alen, akind = unpack("=HH", blob, pos)
                if akind & 0x3FFF != kind:
                    ok = False
                    break
                last_len = alen
                pos += 4
            if ok:
                out.append(blob[pos : pos + last_len - 4])
            else:
                attrs = parse_attrs(blob[elem : off + length])
                for kind in key_path:
                    raw = attrs.get(kind)
                    if raw is None:
                        break
                    attrs = parse_attrs(raw) if kind != key_path[-1] else {kind: raw}
                else:
                    out.append(attrs[key_path[-1]])
            off += (length + 3) & ~3
    return out


# -- ipset ------------------------------------------------------------------------------
def ipset_payload(setname: str, key: bytes, cidr: int | None = None) -> bytes:
    """IPSET_CMD_ADD/DEL payload for one address (or network with ``cidr``)."""
    return _ipset_head(setname, len(key), cidr) + key


@functools.lru_cache(maxsize=64)
def _ipset_head(setname: str, keylen: int, cidr: int | None) -> bytes:
    # Everything but the address is the same for every message to one set: the address
    # is the last attribute, so a message is this head plus its 4 or 16 bytes.
    v6 = keylen == 16
    kind = (IPSET_ATTR_IPADDR_IPV6 if v6 else IPSET_ATTR_IPADDR_IPV4) | NLA_F_NET_BYTEORDER
    cidr_attr = pack_attr(IPSET_ATTR_CIDR, bytes([cidr])) if cidr is not None else b""
    ip_len = 4 + 4 + keylen
    data_len = 4 + len(cidr_attr) + ip_len
    return (
        _nfgen(socket.AF_INET6 if v6 else socket.AF_INET)
        + pack_attr(IPSET_ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
        + _str(IPSET_ATTR_SETNAME, setname)
        + struct.pack("=HH", data_len, IPSET_ATTR_DATA | NLA_F_NESTED)
        + cidr_attr
        + struct.pack("=HH", ip_len, IPSET_ATTR_IP | NLA_F_NESTED)
        + struct.pack("=HH", 4 + keylen, kind)
    )


def ipset_list_payload(setname: str) -> bytes:
    """IPSET_CMD_LIST (dump) payload for one set."""
    return (
        _nfgen(socket.AF_INET)
        + pack_attr(IPSET_ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
        + _str(IPSET_ATTR_SETNAME, setname)
    )


def ipset_header(bodies: Sequence[bytes]) -> tuple[str, int]:
    """(type name, NFPROTO family) of a dumped set."""
    for body in bodies:
        attrs = parse_attrs(body, _NFGENMSG.size)
        if IPSET_ATTR_TYPENAME in attrs:
            family = attrs.get(IPSET_ATTR_FAMILY, b"\0")[0]
            return attrs[IPSET_ATTR_TYPENAME].split(b"\0", 1)[0].decode(), family
    return "", 0


def ipset_type(cmd: int) -> int:
    return NFNL_SUBSYS_IPSET << 8 | cmd


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
        if mtype == NLMSG_ERROR and len(payload) >= _ERR.size:
            code = -_ERR.unpack_from(payload)[0]
            text = ""
            if mflags & NLM_F_ACK_TLVS and len(payload) >= _ERR.size + _HDR.size:
                # With NETLINK_CAP_ACK the request is not echoed: its header only.
                tlv = parse_attrs(payload, _ERR.size + _HDR.size)
                text = tlv.get(NLMSGERR_ATTR_MSG, b"").split(b"\0", 1)[0].decode(errors="replace")
            yield Answer(seq, code, text)
        elif mtype != NLMSG_DONE:
            yield mtype, seq, payload


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


class Channel:
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
        if errors:
            failed = [items[e.seq - first][1] for e in errors if 0 <= e.seq - first < n]
            what = describe(errors[0].error, errors[0].text)
            shown = ", ".join(failed[:3]) + (
                f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
            )
            raise _refused(f"{where}: {shown}: {what}", errors[0].error, failed)

    def dump(self, mtype: int, payload: bytes) -> list[bytes]:
        """The payloads of a dump request's answers."""
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
        finally:
            sock.setblocking(False)

    def generation(self) -> int:
        """The nf_tables ruleset generation (it changes with every transaction)."""
        seq = self.seq()
        self._send(
            pack_message(nft_type(NFT_MSG_GETGEN), _nfgen(socket.AF_UNSPEC), NLM_F_REQUEST, seq)
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
                    gen = parse_attrs(body, _NFGENMSG.size).get(NFTA_GEN_ID, b"")
                    return _U32.unpack(gen)[0] if len(gen) == 4 else 0
        finally:
            sock.setblocking(False)


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
