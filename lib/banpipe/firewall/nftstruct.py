"""The nftables backend's structure as one nf_tables netlink batch: no ``nft`` process.

``NftablesBackend.init()`` creates ``table inet banpipe`` (sets, hooked chains, rules).
Its ``nft -f`` script is the readable form (the golden tests and the docs show it);
this module builds the same transaction, message for message what nft 1.0 sends for
that script (``nft --debug=netlink -f``), for banctl's long-lived channel. Why: a repair
after ``systemctl reload nftables`` is mostly this step, and an ``nft`` process costs
30-60 ms of it on a busy machine (a batch on the channel: under 1 ms).

``structure_messages`` is pure (settings in, messages out).
"""

from __future__ import annotations

import struct

from banpipe.config import HOOKS, FirewallConfig
from banpipe.netlink import pack_attr

from . import nfproto as p
from .nfnl import Message
from .nfproto import NFPROTO_INET, NFT_MSG_NEWRULE, NLM_F_APPEND, NLM_F_CREATE, nft_type
from .nftmsg import _expr

# <linux/netfilter/nf_tables.h>
NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 0, 3, 5
NFT_MSG_NEWSET, NFT_MSG_DELSET = 9, 11
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY = 1, 3, 4, 5
NFTA_CHAIN_TYPE = 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE = 1, 2, 3, 4
NFTA_SET_KEY_LEN, NFTA_SET_DESC, NFTA_SET_ID, NFTA_SET_USERDATA = 5, 9, 10, 13
NFTA_SET_DESC_SIZE = 1
NFT_SET_INTERVAL = 0x4
NET = "net"  # a family's set of ranges is its set's name + NET (flags interval)
NFT_META_NFPROTO = 15
NFT_PAYLOAD_NETWORK_HEADER = 1
NFT_REG_VERDICT, NFT_REG_1 = 0, 1
NF_DROP, NF_ACCEPT = 0, 1
PRIORITY = -10  # "priority filter - 10": before the usual filter chains
_HOOKNUM = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# nft's set user data: key byte order big endian (NFTNL_UDATA_SET_KEYBYTEORDER), as nft
# writes it for an address set, so that `nft list` shows what it would show for its own.
_KEY_BIG_ENDIAN = struct.pack("=BBI", 0, 4, 2)

# Set name, nft type id, key length, nfproto, saddr offset in the network header.
_FAMILIES = (
    ("v4", 7, 4, p.NFPROTO_IPV4, 12),
    ("v6", 8, 16, p.NFPROTO_IPV6, 8),
)


def structure_messages(settings: FirewallConfig) -> list[Message]:
    """``NftablesBackend.init()``'s script as one batch: table, sets (with their size),
    each hooked chain created and flushed and given its rules, a chain of a hook no
    longer wanted removed (add-then-delete, no listing first), and without IPv6 the
    ``v6`` set removed the same way."""
    t = settings.table
    families = _FAMILIES if settings.ipv6 else _FAMILIES[:1]
    sets = [(name + net, fam) for fam in families for name in fam[:1] for net in ("", NET)]
    set_ids = {name: i + 1 for i, (name, _) in enumerate(sets)}
    create = NLM_F_CREATE
    out = [Message(nft_type(NFT_MSG_NEWTABLE), _table(t), create, f"add table inet {t}")]
    for name, (_, ktype, klen, _, _) in sets:
        flags = NFT_SET_INTERVAL if name.endswith(NET) else 0
        body = _set(t, name, ktype, klen, settings.max_entries, set_ids[name], flags)
        out.append(Message(nft_type(NFT_MSG_NEWSET), body, create, f"add set inet {t} {name}"))
    wanted = {HOOKS[h] for h in settings.hooks}
    tail = _drop_tail(settings)
    for hook in HOOKS.values():
        where = f"inet {t} {hook}"
        out.append(
            Message(nft_type(NFT_MSG_NEWCHAIN), _chain(t, hook), create, f"add chain {where}")
        )
        named = _chain_name(t, hook)
        if hook not in wanted:
            out.append(Message(nft_type(NFT_MSG_DELCHAIN), named, 0, f"delete chain {where}"))
            continue
        out.append(_flush_chain(t, hook))
        for name, fam in sets:
            for exprs in tail:
                out.append(
                    Message(
                        nft_type(NFT_MSG_NEWRULE),
                        _rule(t, hook, name, fam, set_ids[name], exprs),
                        create | NLM_F_APPEND,
                        f"add rule {where}",
                    )
                )
    if not settings.ipv6:
        _, ktype, klen, _, _ = _FAMILIES[1]
        for name, flags in (("v6", 0), ("v6" + NET, NFT_SET_INTERVAL)):
            body = _set(t, name, ktype, klen, None, len(set_ids) + 1, flags)
            out.append(Message(nft_type(NFT_MSG_NEWSET), body, create, f"add set inet {t} {name}"))
            where = f"delete set inet {t} {name}"
            out.append(Message(nft_type(NFT_MSG_DELSET), _set_name(t, name), 0, where))
    return out


def recreate_messages(settings: FirewallConfig, names: list[str]) -> list[Message]:
    """The sets ``names`` deleted and created again, empty, in one transaction with
    ``structure_messages``: the hooked chains are flushed first (a set that a rule
    refers to cannot be deleted), then the structure's messages create the sets and
    put the rules back. What follows in the same batch (their elements) fills the new
    sets; the old sets' elements are freed by the kernel after the commit, one
    transaction record in all instead of one per element (``NftablesBackend.replace``)."""
    t = settings.table
    out = [_flush_chain(t, HOOKS[h]) for h in settings.hooks]
    out += [
        Message(nft_type(NFT_MSG_DELSET), _set_name(t, n), 0, f"delete set inet {t} {n}")
        for n in names
    ]
    return out + structure_messages(settings)


def size_message(settings: FirewallConfig, name: str, size: int) -> Message:
    """An address set's size limit changed to ``size``, its elements kept (NEWSET of the
    existing set; the kernel applies the new size at the commit)."""
    _, ktype, klen, _, _ = next(f for f in _FAMILIES if f[0] == name)
    body = _set(settings.table, name, ktype, klen, size, 1, 0)
    return Message(nft_type(NFT_MSG_NEWSET), body, NLM_F_CREATE, f"size of set {name}")


def _flush_chain(table: str, hook: str) -> Message:
    rules = (
        p.nfgen(NFPROTO_INET)
        + p.str_attr(p.NFTA_RULE_TABLE, table)
        + p.str_attr(p.NFTA_RULE_CHAIN, hook)
    )
    return Message(nft_type(p.NFT_MSG_DELRULE), rules, 0, f"flush chain inet {table} {hook}")


def _drop_tail(settings: FirewallConfig) -> list[list[bytes]]:
    """What follows the set lookup in each rule: the rate-limited log (when logging),
    then the drop (``NftablesBackend.chain_rules``)."""
    verdict = p.nested(p.NFTA_DATA_VERDICT, p.u32_attr(p.NFTA_VERDICT_CODE, NF_DROP))
    drop = [_expr("immediate", p.u32_attr(1, NFT_REG_VERDICT) + p.nested(2, verdict))]
    if not settings.log:
        return [drop]
    n, unit = settings.log_rate.split("/")
    limit = _expr(
        "limit",
        p.u64_attr(1, int(n))
        + p.u64_attr(2, _UNIT_SECONDS[unit])
        + p.u32_attr(3, 5)
        + p.u32_attr(4, 0)
        + p.u32_attr(5, 0),
    )
    log = _expr("log", p.str_attr(2, settings.log_prefix))
    return [[limit, log], drop]


def _table(name: str) -> bytes:
    return p.nfgen(NFPROTO_INET) + p.str_attr(NFTA_TABLE_NAME, name)


def _set(
    table: str, name: str, ktype: int, klen: int, size: int | None, set_id: int, flags: int
) -> bytes:
    body = (
        _set_name(table, name)
        + p.u32_attr(NFTA_SET_FLAGS, flags)
        + p.u32_attr(NFTA_SET_KEY_TYPE, ktype)
        + p.u32_attr(NFTA_SET_KEY_LEN, klen)
        + p.u32_attr(NFTA_SET_ID, set_id)
    )
    if size is not None:
        body += p.nested(NFTA_SET_DESC, p.u32_attr(NFTA_SET_DESC_SIZE, size))
    return body + pack_attr(NFTA_SET_USERDATA, _KEY_BIG_ENDIAN)


def _set_name(table: str, name: str) -> bytes:
    return (
        p.nfgen(NFPROTO_INET) + p.str_attr(NFTA_SET_TABLE, table) + p.str_attr(NFTA_SET_NAME, name)
    )


def _chain(table: str, hook: str) -> bytes:
    spec = p.u32_attr(NFTA_HOOK_HOOKNUM, _HOOKNUM[hook]) + p.u32_attr(
        NFTA_HOOK_PRIORITY, PRIORITY & 0xFFFFFFFF
    )
    return (
        _chain_name(table, hook)
        + p.nested(NFTA_CHAIN_HOOK, spec)
        + p.u32_attr(NFTA_CHAIN_POLICY, NF_ACCEPT)
        + p.str_attr(NFTA_CHAIN_TYPE, "filter")
    )


def _chain_name(table: str, hook: str) -> bytes:
    return (
        p.nfgen(NFPROTO_INET)
        + p.str_attr(NFTA_CHAIN_TABLE, table)
        + p.str_attr(NFTA_CHAIN_NAME, hook)
    )


def _rule(
    table: str, chain: str, setname: str, family: tuple, set_id: int, tail: list[bytes]
) -> bytes:
    """``ip saddr @v4 ...`` / ``ip6 saddr @v6 ...`` in an inet chain: nft's own
    expressions (the ``meta nfproto`` dependency, the address, the lookup), then ``tail``."""
    _name, _ktype, klen, nfproto, offset = family
    nfproto_value = p.nested(3, pack_attr(p.NFTA_DATA_VALUE, bytes([nfproto])))
    exprs = [
        _expr("meta", p.u32_attr(1, NFT_REG_1) + p.u32_attr(2, NFT_META_NFPROTO)),  # dreg, key
        _expr(
            "cmp", p.u32_attr(1, NFT_REG_1) + p.u32_attr(2, 0) + nfproto_value
        ),  # sreg, eq, value
        _expr(
            "payload",  # dreg, base, offset, len
            p.u32_attr(1, NFT_REG_1)
            + p.u32_attr(2, NFT_PAYLOAD_NETWORK_HEADER)
            + p.u32_attr(3, offset)
            + p.u32_attr(4, klen),
        ),
        _expr(
            "lookup", p.str_attr(1, setname) + p.u32_attr(2, NFT_REG_1) + p.u32_attr(4, set_id)
        ),  # set, sreg, id
        *tail,
    ]
    return (
        p.nfgen(NFPROTO_INET)
        + p.str_attr(p.NFTA_RULE_TABLE, table)
        + p.str_attr(p.NFTA_RULE_CHAIN, chain)
        + p.nested(p.NFTA_RULE_EXPRESSIONS, b"".join(exprs))
    )
