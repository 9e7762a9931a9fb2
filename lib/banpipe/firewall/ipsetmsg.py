"""ipset messages: add/delete/test one address or network, list a set.

Pure builders and parsers for the ipset backend's netlink path (``nfnl.Channel``).
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Iterable, Sequence

from banpipe.address import entry, from_packed
from banpipe.netlink import pack_attr, parse_attrs

from .nfproto import (
    IPSET_ATTR_ADT,
    IPSET_ATTR_CIDR,
    IPSET_ATTR_DATA,
    IPSET_ATTR_FAMILY,
    IPSET_ATTR_IP,
    IPSET_ATTR_IPADDR_IPV4,
    IPSET_ATTR_IPADDR_IPV6,
    IPSET_ATTR_LINENO,
    IPSET_ATTR_PROTOCOL,
    IPSET_ATTR_SETNAME,
    IPSET_ATTR_TYPENAME,
    IPSET_PROTOCOL,
    NFGENMSG,
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    U32,
    attr_list,
    nfgen,
    str_attr,
)


def ipset_payload(setname: str, key: bytes, cidr: int | None = None) -> bytes:
    """IPSET_CMD_ADD/DEL payload for one address (or network with ``cidr``)."""
    return ipset_head(setname, len(key), cidr) + key


@functools.lru_cache(maxsize=64)
def ipset_head(setname: str, keylen: int, cidr: int | None) -> bytes:
    # Everything but the address is the same for every message to one set: the address
    # is the last attribute, so a message is this head plus its 4 or 16 bytes.
    v6 = keylen == 16
    kind = (IPSET_ATTR_IPADDR_IPV6 if v6 else IPSET_ATTR_IPADDR_IPV4) | NLA_F_NET_BYTEORDER
    cidr_attr = pack_attr(IPSET_ATTR_CIDR, bytes([cidr])) if cidr is not None else b""
    ip_len = 4 + 4 + keylen
    data_len = 4 + len(cidr_attr) + ip_len
    return (
        nfgen(socket.AF_INET6 if v6 else socket.AF_INET)
        + pack_attr(IPSET_ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
        + str_attr(IPSET_ATTR_SETNAME, setname)
        + struct.pack("=HH", data_len, IPSET_ATTR_DATA | NLA_F_NESTED)
        + cidr_attr
        + struct.pack("=HH", ip_len, IPSET_ATTR_IP | NLA_F_NESTED)
        + struct.pack("=HH", 4 + keylen, kind)
    )


def ipset_adt_payloads(setname: str, keys: Sequence[bytes]) -> list[bytes]:
    """IPSET_CMD_ADD/DEL payloads for many addresses of one family (``keys``: packed,
    all of one length), each carrying as many as its IPSET_ATTR_ADT attribute holds
    (its length is 16 bits: 4,095 IPv4 or 2,340 IPv6 addresses), one IPSET_ATTR_DATA
    per address, as ``ipset restore`` sends them. The kernel (ip_set_core.c, ip_set_ad)
    applies them in order and stops at the first it refuses, answering for the message:
    which address failed is not told, the caller asks again one message per address."""
    if not keys:
        return []
    n = len(keys[0])
    kind = (IPSET_ATTR_IPADDR_IPV6 if n == 16 else IPSET_ATTR_IPADDR_IPV4) | NLA_F_NET_BYTEORDER
    size = 12 + n
    # Every element is the same framing then its key: joined in C, not packed one by one.
    elem = struct.pack(
        "=HHHHHH", size, IPSET_ATTR_DATA | NLA_F_NESTED, 8 + n, IPSET_ATTR_IP | NLA_F_NESTED,
        4 + n, kind,
    )  # fmt: skip
    per = (0xFFFF - 4) // size
    head = (
        nfgen(socket.AF_INET6 if n == 16 else socket.AF_INET)
        + pack_attr(IPSET_ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
        + str_attr(IPSET_ATTR_SETNAME, setname)
        + pack_attr(IPSET_ATTR_LINENO, U32.pack(0))  # the kernel refuses ADT without it
    )
    out = []
    for i in range(0, len(keys), per):
        part = keys[i : i + per]
        adt = struct.pack("=HH", 4 + size * len(part), IPSET_ATTR_ADT | NLA_F_NESTED)
        out.append(b"".join((head, adt, elem, elem.join(part))))
    return out


def ipset_list_payload(setname: str) -> bytes:
    """IPSET_CMD_LIST (dump) payload for one set."""
    return (
        nfgen(socket.AF_INET)
        + pack_attr(IPSET_ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
        + str_attr(IPSET_ATTR_SETNAME, setname)
    )


def ipset_header(bodies: Sequence[bytes]) -> tuple[str, int]:
    """(type name, NFPROTO family) of a dumped set."""
    for body in bodies:
        attrs = parse_attrs(body, NFGENMSG.size)
        if IPSET_ATTR_TYPENAME in attrs:
            family = attrs.get(IPSET_ATTR_FAMILY, b"\0")[0]
            return attrs[IPSET_ATTR_TYPENAME].split(b"\0", 1)[0].decode(), family
    return "", 0


def ipset_entries(bodies: Iterable[bytes]) -> list[str | None]:
    """The members of a dumped ``hash:net`` set as canonical entries (None for a member
    that is not one). A set of ranges is small: read attribute by attribute."""
    out: list[str | None] = []
    for body in bodies:
        adt = parse_attrs(body, NFGENMSG.size).get(IPSET_ATTR_ADT)
        if not adt:
            continue
        for raw in attr_list(adt):
            attrs = parse_attrs(raw)
            ip = parse_attrs(attrs.get(IPSET_ATTR_IP, b""))
            key = ip.get(IPSET_ATTR_IPADDR_IPV4) or ip.get(IPSET_ATTR_IPADDR_IPV6) or b""
            addr = from_packed(key)
            cidr = attrs.get(IPSET_ATTR_CIDR, b"")
            if addr is None or len(cidr) != 1:
                out.append(None)
                continue
            out.append(entry(f"{addr}/{cidr[0]}"))
    return out
