"""iptables-nft's rules on banctl's netlink channel (``iptables.IptablesBackend``).

Our chain's per-address rules are nf_tables rules in ``table ip filter``, written
expression for expression as iptables-nft writes them (``nftmsg.xt_rule_payload``) so
``iptables -S``/``-D``/``-C`` read them as their own. The index address -> rule handles
is read from the kernel and tied to the ruleset generation: every batch carries that
generation, the kernel refuses it (ERESTART) when anyone else changed any nf_tables
rule since, and the index is read again (``_transact``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from banpipe.address import entry, from_packed, packed
from banpipe.config import HOOKS
from banpipe.netlink import parse_attrs

from . import FirewallError
from .nfnl import ChannelError, Message
from .nfproto import (
    ERESTART,
    NFGENMSG,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    NFT_MSG_DELRULE,
    NFT_MSG_NEWRULE,
    NFTA_RULE_CHAIN,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_ECHO,
    cstr,
    nft_type,
)
from .nftmsg import Rule, XtLog, delrule_payload, rule_handle, xt_rule_payload
from .xt import V4, Family, families
from .xtnl import XtTable, read_table, structure_messages

_NEWRULE = nft_type(NFT_MSG_NEWRULE)
ECHO_MAX = 1000  # addresses: up to this, block learns the new rules' handles from echoes
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class NftRules:
    """iptables-nft's rules written and read on the netlink channel (the module doc):
    the index address -> rule handles, tied to the ruleset generation, and the
    transactions built from it. A mixin of ``IptablesBackend``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._nft: bool | None = None  # iptables is iptables-nft (asked once)
        self._gen: int | None = None  # generation the index below was read at
        self._index: dict[int, dict[str, list[tuple[int, str]]]] = {}
        self._tables: dict[int, XtTable] = {}  # at self._gen, with _index's entries

    def _native(self) -> bool:
        """True when block/release can use the netlink channel (iptables-nft)."""
        if self.channel is None:
            return False
        if self._nft is None:
            try:
                version = self.runner(["iptables", "-V"]).stdout
            except FirewallError:
                version = ""
            self._nft = "nf_tables" in version
        return self._nft and self.channel.ready()

    def _read_index(self) -> int:
        """(Re)read our part of each family's filter table from the kernel (chain, hook
        jumps, per-address rules); returns the generation it belongs to."""
        assert self.channel is not None
        for _ in range(5):
            gen = self.channel.generation()
            tables = {fam.version: self._read_table(fam) for fam in families(self.settings)}
            if self.channel.generation() == gen:
                self._tables, self._gen = tables, gen
                self._index = {v: t.entries for v, t in tables.items()}
                return gen
        raise FirewallError(f"{self.xt.chain}: the ruleset kept changing while it was read")

    def _read_table(self, fam: Family) -> XtTable:
        assert self.channel is not None
        width = fam.hostlen // 8
        return read_table(
            self.channel, proto_of(fam), self.xt.chain, lambda rule: rule_entry(rule, width)
        )

    def _current(self) -> dict[int, XtTable]:
        """Our part of the tables now: what was read or written last when the ruleset's
        generation has not moved since (nothing else changed it), else read again."""
        assert self.channel is not None
        if self._gen is None or self.channel.generation() != self._gen:
            self._read_index()
        return self._tables

    def _transact(self, build: Callable[[], list[Message]]) -> list[tuple[int, int, bytes]]:
        """Send what ``build`` makes from the index, at the index's generation; when the
        kernel says the ruleset moved on (ERESTART), read the index again and rebuild."""
        assert self.channel is not None
        for attempt in range(5):
            gen = self._gen
            if gen is None or self.channel.generation() != gen:
                gen = self._read_index()
            messages = build()
            if not messages:
                return []
            gen = self._gen if self._gen is not None else gen  # build may have re-read
            try:
                out = self.channel.transact(messages, nftables=True, genid=gen)
            except ChannelError as exc:
                if exc.errno == ERESTART and attempt < 4:
                    self._gen = None
                    continue
                self._gen = None
                raise
            self._gen = (gen + 1) & 0xFFFFFFFF or 1  # the kernel skips 0
            return out
        raise FirewallError("unreachable")  # pragma: no cover

    def _log(self) -> XtLog | None:
        s = self.settings
        if not s.log:
            return None
        n, unit = s.log_rate.split("/")
        return XtLog(int(n), _UNIT_SECONDS[unit], s.log_prefix)

    def _native_block(self, groups: list[tuple[Family, list[str]]]) -> list[str]:
        chain = self.xt.chain
        log = self._log()
        added: list[str] = []
        made: list[tuple[int, str, str]] = []  # per message: family, entry, action

        def build() -> list[Message]:
            added.clear()
            made.clear()
            messages = []
            for fam, group in groups:
                present = self._index.get(fam.version, {})
                nfproto = proto_of(fam)
                for a in group:
                    if any(act == "drop" for _, act in present.get(a, ())):
                        continue
                    added.append(a)
                    addr, _, plen_text = a.partition("/")
                    key, plen = packed(addr), int(plen_text or fam.hostlen)
                    where = f"{fam.cmd}: -A {chain} -s {src_of(fam, a)}"
                    for lg in (log, None) if log is not None else (None,):
                        made.append((fam.version, a, "log" if lg is not None else "drop"))
                        messages.append(
                            Message(
                                nft_type(NFT_MSG_NEWRULE),
                                xt_rule_payload(nfproto, chain, key, plen, lg),
                                NLM_F_CREATE | NLM_F_APPEND | (NLM_F_ECHO if echo else 0),
                                where,
                                [a],
                            )
                        )
            return messages

        # The echoes give the new rules' handles. A big restore does without (100,000
        # echoes would not fit the socket's receive queue): its rules are known present,
        # handle unknown (0), and a release of one of them reads the index again.
        echo = sum(len(g) for _, g in groups) <= ECHO_MAX
        echoes = self._transact(build)
        new = sorted((seq, body) for mtype, seq, body in echoes if mtype == _NEWRULE)
        if echo and len(new) == len(made):
            # One echo per message, in the batch's sequence order: only the handle is
            # read (a repair of 1,000 bans: 40 ms less than parsing each rule again).
            for (_seq, body), (version, entry, action) in zip(new, made, strict=True):
                item = (rule_handle(body) or 0, action)
                self._index.setdefault(version, {}).setdefault(entry, []).append(item)
        else:
            for fam, group in groups:
                present = self._index.setdefault(fam.version, {})
                for a in group:
                    present.setdefault(a, []).append((0, "drop"))
        return added

    def _native_release(self, groups: list[tuple[Family, list[str]]]) -> None:
        chain = self.xt.chain
        gone: list[tuple[int, str]] = []

        def build() -> list[Message]:
            gone.clear()
            messages = []
            if any(
                h == 0
                for fam, g in groups
                for a in g
                for h, _ in self._index.get(fam.version, {}).get(a, ())
            ):
                self._read_index()
            for fam, group in groups:
                present = self._index.get(fam.version, {})
                nfproto = proto_of(fam)
                for a in group:
                    for handle, _act in present.get(a, ()):
                        gone.append((fam.version, a))
                        messages.append(
                            Message(
                                nft_type(NFT_MSG_DELRULE),
                                delrule_payload(nfproto, chain, handle),
                                0,
                                f"{fam.cmd}: -D {chain} -s {src_of(fam, a)}",
                                [a],
                            )
                        )
            return messages

        self._transact(build)
        for version, a in gone:
            self._index.get(version, {}).pop(a, None)

    def _native_init(self) -> None:
        """Our chain and hook jumps in one batch on the channel (a repair after a wipe
        runs no process), then the read table updated to what the batch made."""
        chain, hooks = self.xt.chain, self.settings.hooks

        def build() -> list[Message]:
            return [
                m
                for fam in families(self.settings)
                for m in structure_messages(
                    proto_of(fam), fam.cmd, chain, hooks, self._tables[fam.version]
                )
            ]

        echoes = self._transact(build)
        new: dict[tuple[int, str], list[int]] = {}
        for mtype, _seq, body in echoes:
            if mtype == _NEWRULE:
                where = cstr(parse_attrs(body, NFGENMSG.size).get(NFTA_RULE_CHAIN))
                new.setdefault((body[0], where), []).append(rule_handle(body) or 0)
        for fam in families(self.settings):
            t = self._tables[fam.version]
            t.table = True
            t.chains.add(chain)
            for hook in HOOKS:
                made = new.get((proto_of(fam), hook), [])
                if made:
                    t.chains.add(hook)
                kept = t.jumps.get(hook, [])[:1] if hook in hooks else []
                t.jumps[hook] = kept + made


def drop_count(rules: list[tuple[int, str]]) -> int:
    return sum(action == "drop" for _, action in rules)


def proto_of(fam: Family) -> int:
    return NFPROTO_IPV4 if fam is V4 else NFPROTO_IPV6


def src_of(fam: Family, entry: str) -> str:
    """``-s``'s value for an entry, as ``iptables -S`` prints it: ``ADDR/32``, ``NET/LEN``."""
    return entry if "/" in entry else f"{entry}/{fam.hostlen}"


def rule_entry(rule: Rule, width: int) -> str | None:
    """The entry (address or range) one of our per-address rules matches, or None.
    A range's rule compares only its prefix's bytes: padded back to the address width."""
    if rule.key is None or not 0 < rule.plen <= 8 * width or len(rule.key) > width:
        return None
    addr = from_packed(rule.key + bytes(width - len(rule.key)))
    if addr is None:
        return None
    return addr if rule.plen == 8 * width else entry(f"{addr}/{rule.plen}")
