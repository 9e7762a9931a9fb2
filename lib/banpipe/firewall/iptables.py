"""The iptables backend (default): one DROP rule per offender in our own chain.

Our chain (``BANPIPE``) lives in the filter table of iptables and ip6tables and is jumped
to from each configured hook (INPUT and FORWARD by default), inserted first. Each banned
address gets ``-s ADDR/32 -j DROP`` (``/128`` for IPv6), each banned range ``-s NET/LEN
-j DROP``, preceded by a rate-limited LOG rule when logging is on.
``init``/``flush``/``close`` are one ``iptables-restore -w --noflush`` per family,
computed from one ``-S`` listing.

``block``/``release`` take one of two paths:

- **iptables-nft** (Debian's default, and what ``iptables -V`` says here): the rules are
  nf_tables rules in ``table ip filter``, so they are written in process on banctl's
  netlink channel (``nfnl.Channel``), expression for expression what iptables-nft
  writes, so ``iptables -S``/``-D``/``-C`` read them as their own. No fork per ban. An
  index address -> rule handles, read from the kernel, saves re-listing the chain; it is
  tied to the ruleset generation: every batch carries that generation, so the kernel
  refuses it (ERESTART) if anyone else changed any nf_tables rule since, and the index
  is read again. Chosen over a persistent ``iptables-restore`` session because that tool
  acknowledges nothing: a failed line ends the process with a message on stderr, a
  successful one says nothing, so "in the firewall" could not be confirmed per ban.
- **iptables-legacy** (or no channel): one ``iptables-restore`` per family, computed
  from one ``-S`` listing so nothing is ever added twice.

The ``Xt`` helper (listing, restore, hook jumps, teardown, in ``xt``) is shared with the
ipset backend.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from banpipe.address import entry, from_packed, packed
from banpipe.config import HOOKS, FirewallConfig
from banpipe.netlink import parse_attrs

from . import ConntrackFlusher, FirewallError, FirewallState, Runner, canonical, validate_addresses
from .nfnl import (
    Channel,
    ChannelError,
    Message,
)
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
from .nftmsg import (
    Rule,
    XtLog,
    delrule_payload,
    rule_handle,
    xt_rule_payload,
)
from .xt import V4, V6, Family, Xt, drop_rules, families
from .xtnl import XtTable, read_table, structure_messages
from .xtnl import structure_problems as xt_problems

_NEWRULE = nft_type(NFT_MSG_NEWRULE)
ECHO_MAX = 1000  # addresses: up to this, block learns the new rules' handles from echoes
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


# A per-address rule as `iptables -S` prints the ones we write.
_ENTRY = re.compile(
    r"-s (?P<src>\S+) (?:-m limit --limit \S+ )?-j (?P<target>DROP|LOG)"
    r'(?: --log-prefix "[^"]*")?\Z'
)


@dataclass
class Entries:
    drops: dict[str, int] = field(default_factory=dict)  # address -> DROP rule count
    rules: dict[str, list[str]] = field(default_factory=dict)  # address -> its rule specs
    foreign: list[str] = field(default_factory=list)


BULK_DELETE = 64  # rules: above this, release rebuilds the chain instead of deleting


def _entry_address(spec: str) -> str | None:
    """The address a per-address rule is for, or None for any other rule."""
    m = _ENTRY.match(spec)
    return canonical(m["src"]) if m else None


def parse_entries(specs: Iterable[str]) -> Entries:
    out = Entries()
    for spec in specs:
        m = _ENTRY.match(spec)
        addr = canonical(m["src"]) if m else None  # as _entry_address, keeping m
        if addr is None:
            out.foreign.append(spec)
            continue
        out.rules.setdefault(addr, []).append(spec)
        if m["target"] == "DROP":
            out.drops[addr] = out.drops.get(addr, 0) + 1
    return out


class IptablesBackend:
    name = "iptables"

    def __init__(
        self, settings: FirewallConfig, runner: Runner, channel: Channel | None = None
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.xt = Xt(settings, runner)
        self.conntrack = ConntrackFlusher(runner)
        self.channel = channel
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
            self.channel, _nfproto(fam), self.xt.chain, lambda rule: _rule_entry(rule, width)
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
                nfproto = _nfproto(fam)
                for a in group:
                    if any(act == "drop" for _, act in present.get(a, ())):
                        continue
                    added.append(a)
                    addr, _, plen_text = a.partition("/")
                    key, plen = packed(addr), int(plen_text or fam.hostlen)
                    where = f"{fam.cmd}: -A {chain} -s {_src(fam, a)}"
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
                nfproto = _nfproto(fam)
                for a in group:
                    for handle, _act in present.get(a, ()):
                        gone.append((fam.version, a))
                        messages.append(
                            Message(
                                nft_type(NFT_MSG_DELRULE),
                                delrule_payload(nfproto, chain, handle),
                                0,
                                f"{fam.cmd}: -D {chain} -s {_src(fam, a)}",
                                [a],
                            )
                        )
            return messages

        self._transact(build)
        for version, a in gone:
            self._index.get(version, {}).pop(a, None)

    def _addr_rules(self, fam: Family, addr: str) -> list[str]:
        return drop_rules(f"-s {_src(fam, addr)}", self.settings)

    def _by_family(self, addrs: Iterable[str]) -> list[tuple[Family, list[str]]]:
        v4, v6 = validate_addresses(addrs, ipv6=self.settings.ipv6)
        return [(fam, group) for fam, group in ((V4, v4), (V6, v6)) if group]

    def init(self) -> None:
        if self._native():
            self._native_init()
            return
        for fam in families(self.settings):
            lines = self.xt.structure_lines(self.xt.list_table(fam), None)
            if lines:
                self.xt.restore(fam, lines)

    def block(self, addrs: Iterable[str]) -> None:
        groups = self._by_family(addrs)
        if groups and self._native():
            added = self._native_block(groups)
            if added and self.settings.conntrack_flush:
                self.conntrack(added)
            return
        added: list[str] = []
        for fam, group in groups:
            present = parse_entries(self.xt.list_chain(fam).rules.get(self.xt.chain, [])).drops
            new = [a for a in group if a not in present]
            if new:
                chain = self.xt.chain
                self.xt.restore(
                    fam, [f"-A {chain} {r}" for a in new for r in self._addr_rules(fam, a)]
                )
                added += new
        if added and self.settings.conntrack_flush:
            self.conntrack(added)

    def release(self, addrs: Iterable[str]) -> None:
        chain = self.xt.chain
        groups = self._by_family(addrs)
        # The kernel finds a rule to delete by walking the chain: 100,000 deletions by
        # handle from a 100,000-rule chain took 109 s (an orderly stop, beyond systemd's
        # 90 s stop timeout). Many go by rebuilding the chain (below: 10,000 in 0.7 s).
        if groups and sum(len(g) for _, g in groups) <= BULK_DELETE and self._native():
            self._native_release(groups)
            return
        for fam, group in groups:
            specs = self.xt.list_chain(fam).rules.get(chain, [])
            entries = parse_entries(specs)
            # Delete every rule of the address exactly as listed: duplicates and LOG rules
            # written under other settings go too.
            gone = [spec for a in group for spec in entries.rules.get(a, [])]
            if len(gone) > BULK_DELETE:
                # Each -D searches the chain: 10,000 of them took 13.5 s with manual bans
                # left in the chain. Flushing the chain and adding back what stays is one
                # transaction of the same atomicity (bench/README.md).
                drop = set(group)
                stay = [s for s in specs if _entry_address(s) not in drop]
                self.xt.restore(fam, [f"-F {chain}", *(f"-A {chain} {s}" for s in stay)])
            elif gone:
                self.xt.restore(fam, [f"-D {chain} {spec}" for spec in gone])

    def flush(self) -> None:
        for fam in families(self.settings):
            self.runner([fam.cmd, "-w", "-F", self.xt.chain])

    def check(self) -> FirewallState:
        native = self._native_check() if self._native() else None
        return native if native is not None else self._tool_check()

    def _native_init(self) -> None:
        """Our chain and hook jumps in one batch on the channel (a repair after a wipe
        runs no process), then the read table updated to what the batch made."""
        chain, hooks = self.xt.chain, self.settings.hooks

        def build() -> list[Message]:
            return [
                m
                for fam in families(self.settings)
                for m in structure_messages(
                    _nfproto(fam), fam.cmd, chain, hooks, self._tables[fam.version]
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
                made = new.get((_nfproto(fam), hook), [])
                if made:
                    t.chains.add(hook)
                kept = t.jumps.get(hook, [])[:1] if hook in hooks else []
                t.jumps[hook] = kept + made

    def _native_check(self) -> FirewallState | None:
        """check() from the kernel's tables; None when our chain holds a rule that is no
        entry of ours (rare: the tool's listing names it in the problem)."""
        tables = self._current()
        state = FirewallState(structure_ok=True)
        for fam in families(self.settings):
            t = tables[fam.version]
            if t.foreign:
                return None
            problems = xt_problems(fam.cmd, self.xt.chain, self.settings.hooks, t)
            if problems:
                state.structure_ok = False
                state.problems += problems
            drops = {a: n for a, rs in t.entries.items() if (n := _drops(rs))}
            state.entries.update(drops)
            state.duplicates.update({a: n for a, n in drops.items() if n > 1})
            state.problems += [
                f"{fam.cmd}: {a} has a LOG rule but no DROP" for a in t.entries if a not in drops
            ]
        return state

    def _tool_check(self) -> FirewallState:
        state = FirewallState(structure_ok=True)
        for fam in families(self.settings):
            listing = self.xt.list_table(fam)
            problems = self.xt.structure_problems(fam, listing)
            if problems:
                state.structure_ok = False
                state.problems += problems
            entries = parse_entries(listing.rules.get(self.xt.chain, []))
            state.entries.update(entries.drops)
            state.duplicates.update({a: n for a, n in entries.drops.items() if n > 1})
            state.problems += [
                f"{fam.cmd}: foreign rule in {self.xt.chain}: {spec}" for spec in entries.foreign
            ]
            state.problems += [
                f"{fam.cmd}: {a} has a LOG rule but no DROP"
                for a in entries.rules
                if a not in entries.drops
            ]
        return state

    def close(self, teardown: bool = True) -> None:
        if teardown:
            self.xt.teardown()


def _drops(rules: list[tuple[int, str]]) -> int:
    return sum(action == "drop" for _, action in rules)


def _nfproto(fam: Family) -> int:
    return NFPROTO_IPV4 if fam is V4 else NFPROTO_IPV6


def _src(fam: Family, entry: str) -> str:
    """``-s``'s value for an entry, as ``iptables -S`` prints it: ``ADDR/32``, ``NET/LEN``."""
    return entry if "/" in entry else f"{entry}/{fam.hostlen}"


def _rule_entry(rule: Rule, width: int) -> str | None:
    """The entry (address or range) one of our per-address rules matches, or None.
    A range's rule compares only its prefix's bytes: padded back to the address width."""
    if rule.key is None or not 0 < rule.plen <= 8 * width or len(rule.key) > width:
        return None
    addr = from_packed(rule.key + bytes(width - len(rule.key)))
    if addr is None:
        return None
    return addr if rule.plen == 8 * width else entry(f"{addr}/{rule.plen}")


BACKEND = IptablesBackend
