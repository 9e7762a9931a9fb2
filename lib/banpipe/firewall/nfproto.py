"""The nfnetlink wire format: netfilter constants, attribute helpers, dump parsing.

Shared by the message builders (``nftmsg`` for nf_tables, ``ipsetmsg`` for ipset), the
channel that carries them (``nfnl``) and ``banpipe.fwevents``. Netlink framing itself
(``pack_message``, ``pack_attr``, ``raw_messages``, ``parse_attrs``) is
``banpipe.netlink``'s.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator

from banpipe.netlink import pack_attr, parse_attrs

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
IPSET_ATTR_LINENO = 9  # required beside IPSET_ATTR_ADT (ip_set_core.c, ip_set_ad)
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

NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (network order)
U32 = struct.Struct("!I")


def nested(kind: int, value: bytes) -> bytes:
    return pack_attr(kind | NLA_F_NESTED, value)


def str_attr(kind: int, text: str) -> bytes:
    return pack_attr(kind, text.encode() + b"\0")


def nfgen(family: int, res_id: int = 0) -> bytes:
    return NFGENMSG.pack(family, 0, socket.htons(res_id))


def u32_attr(kind: int, value: int) -> bytes:
    return pack_attr(kind, U32.pack(value))


def u64_attr(kind: int, value: int) -> bytes:
    return pack_attr(kind, struct.pack("!Q", value))


def attr_list(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset + 4 <= len(data):
        length, _kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            return
        yield data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


def cstr(raw: bytes | None) -> str:
    return (raw or b"").split(b"\0", 1)[0].decode(errors="replace")


def nft_type(msg: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | msg


def ipset_type(cmd: int) -> int:
    return NFNL_SUBSYS_IPSET << 8 | cmd


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
        blob = parse_attrs(body, NFGENMSG.size).get(list_attr)
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
