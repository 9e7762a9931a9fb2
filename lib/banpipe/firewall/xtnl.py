"""Our iptables-nft chain and its hook jumps, read and rebuilt over netlink: no fork.

With iptables-nft (Debian's default) ``table ip filter`` / ``ip6 filter`` are nf_tables
tables: the iptables backend reads its chain, hook jumps and per-address rules with
two dumps per family on banctl's channel (``nfnl.Channel``) and puts back what a wipe
took (the table, our chain, a base chain, a ``-j BANPIPE`` jump) in one batch, message
for message what iptables-nft 1.8 writes (``-N BANPIPE``, ``-I INPUT 1 -j BANPIPE``),
so ``iptables -S`` lists them as its own. Why: a repair after ``iptables -F`` or
``systemctl restart netfilter-persistent`` was 4-6 ``iptables -S``/``iptables-restore``
processes of 8-20 ms each on a busy machine (medians 72-210 ms; the target is 100).

``read_table`` reads, ``structure_messages`` is pure (what is there in, messages out).
iptables-legacy hosts keep the tools' path (``xt.Xt``).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from banpipe.config import HOOKS
from banpipe.netlink import parse_attrs

from . import nfproto as p
from .nfnl import Channel, ChannelError, Message
from .nftmsg import _expr, delrule_payload, parse_rule
from .nftstruct import (
    _HOOKNUM,
    NF_ACCEPT,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWTABLE,
    NFTA_CHAIN_HOOK,
    NFTA_CHAIN_NAME,
    NFTA_CHAIN_POLICY,
    NFTA_CHAIN_TABLE,
    NFTA_CHAIN_TYPE,
    NFTA_HOOK_HOOKNUM,
    NFTA_HOOK_PRIORITY,
    NFTA_TABLE_NAME,
)

TABLE = "filter"
NFT_JUMP = -3 & 0xFFFFFFFF  # verdict code of `jump CHAIN`
NFTA_VERDICT_CHAIN = 2
FILTER_PRIORITY = 0  # NF_IP_PRI_FILTER: iptables-nft's base chains of table filter


@dataclass
class XtTable:
    """One family's ``filter`` table as far as it concerns us.

    ``entries``: our chain's per-address rules, entry -> [(handle, "drop" | "log")]
    (handle 0: present, handle not known); ``jumps``: hook chain -> handles of its
    ``-j CHAIN`` rules; ``foreign``: other rules in our chain (counted only)."""

    table: bool = False
    chains: set[str] = field(default_factory=set)
    jumps: dict[str, list[int]] = field(default_factory=dict)
    entries: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    foreign: int = 0


def read_table(channel: Channel, nfproto: int, chain: str, entry_of) -> XtTable:
    """Chains and rules of ``filter`` in family ``nfproto`` (two dumps). ``entry_of``
    maps a parsed Rule to its entry, or None when it is no per-address rule of ours."""
    out = XtTable()
    head = p.nfgen(nfproto) + p.str_attr(1, TABLE)  # NFTA_{CHAIN,RULE}_TABLE
    try:
        chains = channel.dump(p.nft_type(p.NFT_MSG_GETCHAIN), head)
        rules = channel.dump(p.nft_type(p.NFT_MSG_GETRULE), head)
    except ChannelError as exc:
        if exc.errno == errno.ENOENT:
            return out  # no table filter in this family
        raise
    for body in chains:
        a = parse_attrs(body, p.NFGENMSG.size)
        if p.cstr(a.get(NFTA_CHAIN_TABLE)) == TABLE:
            out.table = True
            out.chains.add(p.cstr(a.get(NFTA_CHAIN_NAME)))
    for body in rules:
        a = parse_attrs(body, p.NFGENMSG.size)
        if p.cstr(a.get(p.NFTA_RULE_TABLE)) != TABLE:
            continue
        where = p.cstr(a.get(p.NFTA_RULE_CHAIN))
        if where == chain:
            rule = parse_rule(body)
            entry = entry_of(rule) if rule is not None else None
            if rule is None or entry is None:
                out.foreign += 1
            else:
                out.entries.setdefault(entry, []).append((rule.handle, rule.action or ""))
        elif where in HOOKS and jump_target(a) == chain:
            raw = a.get(p.NFTA_RULE_HANDLE, b"")
            out.jumps.setdefault(where, []).append(int.from_bytes(raw, "big"))
    return out


def jump_target(rule: dict[int, bytes]) -> str | None:
    """The chain a rule jumps to when it is exactly ``-j CHAIN`` (iptables-nft: a
    counter, then the jump); None for any other rule."""
    names = []
    target = None
    for e in p.attr_list(rule.get(p.NFTA_RULE_EXPRESSIONS, b"")):
        ea = parse_attrs(e)
        name = p.cstr(ea.get(p.NFTA_EXPR_NAME))
        names.append(name)
        if name == "immediate":
            data = parse_attrs(ea.get(p.NFTA_EXPR_DATA, b""))
            verdict = parse_attrs(parse_attrs(data.get(2, b"")).get(p.NFTA_DATA_VERDICT, b""))
            if verdict.get(p.NFTA_VERDICT_CODE) == p.U32.pack(NFT_JUMP):
                target = p.cstr(verdict.get(NFTA_VERDICT_CHAIN))
    return target if names == ["counter", "immediate"] else None


def structure_problems(cmd: str, chain: str, hooks: tuple[str, ...], t: XtTable) -> list[str]:
    """What ``xt.Xt.structure_problems`` says of the same table, from a read one."""
    problems = [] if chain in t.chains else [f"{cmd}: chain {chain} missing"]
    problems += [f"{cmd}: jump {h} -> {chain} missing" for h in hooks if not t.jumps.get(h)]
    return problems


def structure_messages(
    nfproto: int, cmd: str, chain: str, hooks: tuple[str, ...], t: XtTable
) -> list[Message]:
    """The batch that brings one family's table ``t`` in line, as ``xt.Xt``'s restore
    lines do: the table and our chain when missing, a base chain (policy accept, as
    iptables-nft creates it) only when missing (an existing one keeps its policy), the
    jump inserted first in each configured hook, extra jumps and the jumps of hooks no
    longer configured deleted. Empty when nothing is to do."""
    out: list[Message] = []
    if not t.table:
        body = p.nfgen(nfproto) + p.str_attr(NFTA_TABLE_NAME, TABLE)
        out.append(Message(p.nft_type(NFT_MSG_NEWTABLE), body, p.NLM_F_CREATE, f"{cmd}: *filter"))
    if chain not in t.chains:
        out.append(
            Message(
                p.nft_type(NFT_MSG_NEWCHAIN),
                _chain(nfproto, chain),
                p.NLM_F_CREATE,
                f"{cmd}: -N {chain}",
            )
        )
    for hook in HOOKS:
        handles = t.jumps.get(hook, [])
        if hook in hooks:
            if not handles:
                if hook not in t.chains:
                    body = _chain(nfproto, hook) + _base(hook)
                    out.append(
                        Message(
                            p.nft_type(NFT_MSG_NEWCHAIN),
                            body,
                            p.NLM_F_CREATE,
                            f"{cmd}: :{hook} ACCEPT",
                        )
                    )
                out.append(
                    Message(
                        p.nft_type(p.NFT_MSG_NEWRULE),
                        jump_payload(nfproto, hook, chain),
                        p.NLM_F_CREATE | p.NLM_F_ECHO,
                        f"{cmd}: -I {hook} 1 -j {chain}",
                    )
                )
            gone = handles[1:]
        else:
            gone = handles
        out += [
            Message(
                p.nft_type(p.NFT_MSG_DELRULE),
                delrule_payload(nfproto, hook, h),
                0,
                f"{cmd}: -D {hook} -j {chain}",
            )
            for h in gone
        ]
    return out


def jump_payload(nfproto: int, hook: str, chain: str) -> bytes:
    """NEWRULE payload of ``-j CHAIN`` in ``hook``: what iptables-nft writes (a counter,
    then the jump). Without NLM_F_APPEND the kernel puts it first."""
    verdict = p.u32_attr(p.NFTA_VERDICT_CODE, NFT_JUMP) + p.str_attr(NFTA_VERDICT_CHAIN, chain)
    exprs = _expr("counter", p.u64_attr(1, 0) + p.u64_attr(2, 0)) + _expr(
        "immediate", p.u32_attr(1, 0) + p.nested(2, p.nested(p.NFTA_DATA_VERDICT, verdict))
    )
    return (
        p.nfgen(nfproto)
        + p.str_attr(p.NFTA_RULE_TABLE, TABLE)
        + p.str_attr(p.NFTA_RULE_CHAIN, hook)
        + p.nested(p.NFTA_RULE_EXPRESSIONS, exprs)
    )


def _chain(nfproto: int, name: str) -> bytes:
    return (
        p.nfgen(nfproto) + p.str_attr(NFTA_CHAIN_TABLE, TABLE) + p.str_attr(NFTA_CHAIN_NAME, name)
    )


def _base(hook: str) -> bytes:
    spec = p.u32_attr(NFTA_HOOK_HOOKNUM, _HOOKNUM[HOOKS[hook]]) + p.u32_attr(
        NFTA_HOOK_PRIORITY, FILTER_PRIORITY
    )
    return (
        p.nested(NFTA_CHAIN_HOOK, spec)
        + p.u32_attr(NFTA_CHAIN_POLICY, NF_ACCEPT)
        + p.str_attr(NFTA_CHAIN_TYPE, "filter")
    )
