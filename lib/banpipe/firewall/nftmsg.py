"""nf_tables messages: set elements, iptables-nft rules and table listings.

Pure builders (values in, bytes out) and parsers (bytes in, values out) for what the
nftables and iptables backends send on the channel (``nfnl.Channel``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from banpipe.address import entry, from_packed, span
from banpipe.netlink import pack_attr, parse_attrs

from .nfproto import (
    NFGENMSG,
    NFPROTO_INET,
    NFT_MSG_GETCHAIN,
    NFT_MSG_GETRULE,
    NFT_MSG_GETSET,
    NFT_SET_ELEM_INTERVAL_END,
    NFTA_DATA_VALUE,
    NFTA_DATA_VERDICT,
    NFTA_EXPR_DATA,
    NFTA_EXPR_NAME,
    NFTA_LIST_ELEM,
    NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_HANDLE,
    NFTA_RULE_TABLE,
    NFTA_SET_ELEM_FLAGS,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE,
    NFTA_VERDICT_CODE,
    NLA_F_NESTED,
    U32,
    attr_list,
    cstr,
    nested,
    nfgen,
    nft_type,
    str_attr,
    u32_attr,
    u64_attr,
)

if TYPE_CHECKING:
    from .nfnl import Channel


def setelem_payload(
    family: int, table: str, setname: str, keys: Iterable[bytes], interval: bool = False
) -> bytes:
    """NEWSETELEM/DELSETELEM payload: ``keys`` are packed addresses. With ``interval``
    each key is a (start, end-exclusive) pair flattened: the end carries the
    INTERVAL_END flag, as nft writes ranges into an interval set."""
    keys = list(keys)
    if len(keys) == 1 and not interval and len(keys[0]) % 4 == 0:
        # An everyday new ban: a fixed head, then the key (issue 12).
        return _one_element_head(family, table, setname, len(keys[0])) + keys[0]
    return _elements_payload(family, table, setname, keys, interval)


@functools.lru_cache(maxsize=64)
def _one_element_head(family: int, table: str, setname: str, size: int) -> bytes:
    """The payload of one element of ``size`` bytes without its key, which ends it (a
    key of 4 or 16 bytes needs no padding)."""
    return _elements_payload(family, table, setname, [bytes(size)], False)[:-size]


def _elements_payload(
    family: int, table: str, setname: str, keys: list[bytes], interval: bool
) -> bytes:
    # Every element has the same framing: built once per key length, not per element
    # (100,000 elements: 0.05 s instead of 2 s of pack_attr calls).
    end_flag = pack_attr(NFTA_SET_ELEM_FLAGS, U32.pack(NFT_SET_ELEM_INTERVAL_END))
    heads = {
        (n, f): _ELEM_HEAD.pack(
            12 + n + len(f),
            NFTA_LIST_ELEM | NLA_F_NESTED,
            8 + n,
            NFTA_SET_ELEM_KEY | NLA_F_NESTED,
            4 + n,
            NFTA_DATA_VALUE,
        )
        for n in set(map(len, keys))  # a C loop: a comprehension cost 1 s a million
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
        nfgen(family)
        + str_attr(NFTA_SET_ELEM_LIST_TABLE, table)
        + str_attr(NFTA_SET_ELEM_LIST_SET, setname)
        + nested(NFTA_SET_ELEM_LIST_ELEMENTS, body)
    )


_ELEM_HEAD = struct.Struct("=HHHHHH")


def _expr(name: str, data: bytes) -> bytes:
    return nested(NFTA_LIST_ELEM, str_attr(NFTA_EXPR_NAME, name) + nested(NFTA_EXPR_DATA, data))


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
            # dreg 1, network header
            u32_attr(1, 1) + u32_attr(2, 1) + u32_attr(3, offset) + u32_attr(4, nbytes),
        )
    ]
    value = key[:nbytes]
    if plen % 8:
        mask = (0xFF << (8 - plen % 8)) & 0xFF
        exprs.append(
            _expr(
                "bitwise",
                u32_attr(1, 1)  # sreg
                + u32_attr(2, 1)  # dreg
                + u32_attr(3, nbytes)  # len
                + nested(4, pack_attr(NFTA_DATA_VALUE, b"\xff" * (nbytes - 1) + bytes([mask])))
                + nested(5, pack_attr(NFTA_DATA_VALUE, b"\0" * nbytes)),
            )
        )
        value = value[:-1] + bytes([value[-1] & mask])
    exprs.append(_expr("cmp", u32_attr(1, 1) + u32_attr(2, 0) + nested(3, pack_attr(1, value))))
    if log is not None:
        exprs.append(
            _expr(
                "limit",
                u64_attr(1, log.rate)
                + u64_attr(2, log.unit)
                + u32_attr(3, log.burst)
                + u32_attr(4, 0)
                + u32_attr(5, 0),
            )
        )
    exprs.append(_expr("counter", u64_attr(1, 0) + u64_attr(2, 0)))
    if log is None:
        verdict = nested(NFTA_DATA_VERDICT, u32_attr(NFTA_VERDICT_CODE, 0))  # NF_DROP
        exprs.append(_expr("immediate", u32_attr(1, 0) + nested(2, verdict)))
    else:
        info = struct.pack("=BB30s", log.level, 0, log.prefix.encode())
        exprs.append(_expr("target", str_attr(1, "LOG") + u32_attr(2, 0) + pack_attr(3, info)))
    return (
        nfgen(family)
        + str_attr(NFTA_RULE_TABLE, "filter")
        + str_attr(NFTA_RULE_CHAIN, chain)
        + nested(NFTA_RULE_EXPRESSIONS, b"".join(exprs))
    )


def rule_filter(family: int, table: str, chain: str) -> bytes:
    """GETRULE dump payload: only the rules of one chain."""
    return nfgen(family) + str_attr(NFTA_RULE_TABLE, table) + str_attr(NFTA_RULE_CHAIN, chain)


def delrule_payload(family: int, chain: str, handle: int) -> bytes:
    return (
        nfgen(family)
        + str_attr(NFTA_RULE_TABLE, "filter")
        + str_attr(NFTA_RULE_CHAIN, chain)
        + u64_attr(NFTA_RULE_HANDLE, handle)
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
    raw = parse_attrs(payload, NFGENMSG.size).get(NFTA_RULE_HANDLE)
    return struct.unpack("!Q", raw)[0] if raw is not None and len(raw) == 8 else None


def parse_rule(payload: bytes) -> Rule | None:
    """A NEWRULE message (dump or echo) -> Rule; None without a handle."""
    handle = rule_handle(payload)
    if handle is None:
        return None
    attrs = parse_attrs(payload, NFGENMSG.size)
    names: list[str] = []
    key = mask = b""
    for e in attr_list(attrs.get(NFTA_RULE_EXPRESSIONS, b"")):
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
            names[-1] = "drop" if code == U32.pack(0) else "verdict"
        elif name == "target":
            names[-1] = "log" if data.get(1, b"").startswith(b"LOG\0") else "target"
    shape = [n for n in names if n != "bitwise"]
    if shape in (["payload", "cmp", "counter", "drop"], _LOG_SHAPE) and key:
        plen = sum(bin(b).count("1") for b in mask) if mask else 8 * len(key)
        return Rule(handle, key, plen, shape[-1])
    return Rule(handle)


_LOG_SHAPE = ["payload", "cmp", "limit", "counter", "log"]


_HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
_KEY_TYPES = {7: "ipv4_addr", 8: "ipv6_addr"}
_UNITS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
_PAYLOAD_FIELDS = {(12, 4): "ip", (8, 16): "ip6"}


def nft_items(channel: Channel, table: str) -> list[dict]:
    """Sets (without elements), chains and rules of ``inet table``, read by netlink
    dumps, as the items ``nft -j list table`` prints (the parts banpipe writes; any
    other expression reads as ``{"?": name}``). nft itself fetches every set element
    for any listing of the table: 3.4 s at 100,000 elements. Raises ChannelError
    (ENOENT) when the table is missing."""
    head = nfgen(NFPROTO_INET) + str_attr(1, table)  # NFTA_{SET,CHAIN,RULE}_TABLE
    items: list[dict] = []
    for body in channel.dump(nft_type(NFT_MSG_GETSET), head):
        a = parse_attrs(body, NFGENMSG.size)
        key = a.get(4, b"")
        typ = _KEY_TYPES.get(U32.unpack(key)[0], "?") if len(key) == 4 else "?"
        items.append({"set": {"name": cstr(a.get(2)), "table": table, "type": typ}})
    for body in channel.dump(nft_type(NFT_MSG_GETCHAIN), head):
        a = parse_attrs(body, NFGENMSG.size)
        if cstr(a.get(1)) != table:
            continue  # the kernel dumps the chains of every table of the family
        chain: dict = {"name": cstr(a.get(3)), "table": table}
        if 4 in a:
            hook = parse_attrs(a[4]).get(1, b"")
            chain["hook"] = _HOOKS.get(U32.unpack(hook)[0], "?") if len(hook) == 4 else "?"
            chain["type"] = cstr(a.get(7))
        items.append({"chain": chain})
    for body in channel.dump(nft_type(NFT_MSG_GETRULE), head):
        a = parse_attrs(body, NFGENMSG.size)
        items.append({"rule": {"chain": cstr(a.get(NFTA_RULE_CHAIN)), "expr": _exprs(a)}})
    return items


def _exprs(rule: dict[int, bytes]) -> list[dict]:
    out: list[dict] = []
    payload: dict | None = None
    for e in attr_list(rule.get(NFTA_RULE_EXPRESSIONS, b"")):
        ea = parse_attrs(e)
        name = cstr(ea.get(NFTA_EXPR_NAME))
        d = parse_attrs(ea.get(NFTA_EXPR_DATA, b""))
        u32 = {k: U32.unpack(v)[0] for k, v in d.items() if len(v) == 4}
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
            right = "@" + cstr(d.get(1))
            out.append({"match": {"op": op, "left": payload, "right": right}})
            payload = None
        elif name == "limit":
            out.append({"limit": {"rate": u64.get(1), "per": _UNITS.get(u64.get(2, 0), "?")}})
        elif name == "log":
            out.append({"log": {"prefix": cstr(d[2])} if 2 in d else None})
        elif name == "immediate":
            code = parse_attrs(parse_attrs(d.get(2, b"")).get(NFTA_DATA_VERDICT, b"")).get(1)
            out.append({"drop": None} if code == U32.pack(0) else {"?": "verdict"})
        else:
            out.append({"?": name})
    return out


def setelem_filter(family: int, table: str, setname: str) -> bytes:
    """GETSETELEM dump payload: the elements of one set."""
    return (
        nfgen(family)
        + str_attr(NFTA_SET_ELEM_LIST_TABLE, table)
        + str_attr(NFTA_SET_ELEM_LIST_SET, setname)
    )


def interval_keys(nets: Iterable[str]) -> list[bytes]:
    """The keys of ranges in an interval set, flattened for ``setelem_payload(...,
    interval=True)``: each network's first address and the address after its last (the
    end is exclusive, as nft writes ranges). A range that ends at the top of the address
    space has no such end: ValueError (protection never lets one be banned)."""
    keys: list[bytes] = []
    for net in nets:
        version, first, last = span(net)
        n = 4 if version == 4 else 16
        if last + 1 >= 1 << (8 * n):
            raise ValueError(f"{net}: a range up to the last address has no interval end")
        keys += (first.to_bytes(n, "big"), (last + 1).to_bytes(n, "big"))
    return keys


def interval_entries(bodies: Iterable[bytes]) -> list[str | None]:
    """The ranges in a dumped interval set as canonical networks (None for an interval
    that is no CIDR network: not one we wrote). A start and its end element pair up in
    address order (the kernel's tree walks them backwards)."""
    elems: list[tuple[int, int, int]] = []  # (value, 0 end / 1 start, width in bytes)
    for body in bodies:
        blob = parse_attrs(body, NFGENMSG.size).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
        for raw in attr_list(blob):
            attrs = parse_attrs(raw)
            key = parse_attrs(attrs.get(NFTA_SET_ELEM_KEY, b"")).get(NFTA_DATA_VALUE)
            if key is None:
                continue
            flags = attrs.get(NFTA_SET_ELEM_FLAGS, b"\0\0\0\0")
            end = len(flags) == 4 and U32.unpack(flags)[0] & NFT_SET_ELEM_INTERVAL_END
            elems.append((int.from_bytes(key, "big"), 0 if end else 1, len(key)))
    out: list[str | None] = []
    start: tuple[int, int] | None = None
    for value, is_start, width in sorted(elems):
        if is_start:
            if start is not None:  # an open interval before this one: to this start
                out.append(_cidr(start[0], value, width))
            start = (value, width)
        elif start is not None:
            out.append(_cidr(start[0], value, width))
            start = None
    if start is not None:
        out.append(_cidr(start[0], 1 << (8 * start[1]), start[1]))
    return out


def _cidr(first: int, end: int, width: int) -> str | None:
    size = end - first
    if size < 2 or size & (size - 1) or first % size:
        return None
    plen = 8 * width - (size.bit_length() - 1)
    return entry(f"{from_packed(first.to_bytes(width, 'big'))}/{plen}")
