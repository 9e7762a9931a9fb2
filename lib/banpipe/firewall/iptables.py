"""The iptables backend (default): one DROP rule per offender in our own chain.

Our chain (``BANPIPE``) lives in the filter table of iptables and ip6tables and is jumped
to from each configured hook (INPUT and FORWARD by default), inserted first. Each banned
address gets ``-s ADDR/32 -j DROP`` (``/128`` for IPv6), each banned range ``-s NET/LEN
-j DROP``, preceded by a rate-limited LOG rule when logging is on.
``flush``/``close`` are one ``iptables-restore -w --noflush`` per family, computed from
one ``-S`` listing; so are ``init``/``check`` with iptables-legacy. With iptables-nft
they read and rebuild our chain and hook jumps on the netlink channel (``xtnl``): a
repair after a wipe runs no process.

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
ipset backend (``base.XtBackend``); the netlink path and its index are ``iptnft``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import FirewallState, canonical, validate_addresses
from .base import XtBackend
from .iptnft import NftRules, drop_count, src_of
from .xt import V4, V6, Family, drop_rules, families
from .xtnl import structure_problems as xt_problems

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


class IptablesBackend(NftRules, XtBackend):
    """Per-address rules in our chain: the contract, the tool path (``iptables -S``
    and ``iptables-restore``) and check(); the netlink path is ``NftRules``."""

    name = "iptables"

    def _addr_rules(self, fam: Family, addr: str) -> list[str]:
        return drop_rules(f"-s {src_of(fam, addr)}", self.settings)

    def _by_family(self, addrs: Iterable[str]) -> list[tuple[Family, list[str]]]:
        v4, v6 = validate_addresses(addrs, ipv6=self.settings.ipv6)
        return [(fam, group) for fam, group in ((V4, v4), (V6, v6)) if group]

    def init(self) -> None:
        if self._native():
            self._native_init()
            return
        self._xt_init(lambda fam: None)  # the chain's rules are the entries

    def block(self, addrs: Iterable[str]) -> None:
        groups = self._by_family(addrs)
        if groups and self._native():
            self._flows(self._native_block(groups))
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
        self._flows(added)

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
            drops = {a: n for a, rs in t.entries.items() if (n := drop_count(rs))}
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


BACKEND = IptablesBackend
