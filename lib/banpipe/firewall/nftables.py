"""The nftables backend: our own ``table inet banpipe``, nothing outside it.

The table holds sets ``v4`` (ipv4_addr) and ``v6`` (ipv6_addr) for banned addresses,
``v4net`` and ``v6net`` (the same types, ``flags interval``) for banned ranges, and one
base chain per hook (``input``, ``forward``; priority filter - 10 so we drop before the
usual filter chains, policy accept so we never decide for anyone else) with ``ip saddr
@v4 drop``, ``ip saddr @v4net drop`` and the same for ``ip6``, each optionally preceded
by a rate-limited log rule. Ranges have sets of their own, so a million addresses stay
in hash sets (an interval set is a tree) and a set's flags never need to change in
place (the kernel cannot). An interval set cannot hold a range inside another: a range
inside one present is not added again, a range around present ones replaces them in
the same transaction. Every change is ONE transaction, so the firewall never shows a
half-applied state (one exception: ``replace()`` fills EMPTY sets in transactions of
BATCH): ``init()`` and the bulk paths are ``nft -f -`` scripts (``init()`` the same
transaction on the channel when there is one, banpipe.firewall.nftstruct), while
``block``/``release`` send their set elements as one nf_tables batch on banctl's
long-lived netlink channel (``nfnl.Channel``, no fork per ban; ``nft -f`` when no
channel can be opened). ``check()`` reads ``nft -j list table inet banpipe``.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterable

from banpipe.config import HOOKS, FirewallConfig

from . import FirewallError, FirewallState, Runner
from .base import NetfilterBackend
from .nfnl import Channel, ChannelError
from .nftjson import json_elements, normalize_rule, rule_text
from .nftmsg import nft_items
from .nftsets import NET, NftReplace
from .nftstruct import structure_messages
from .runner import finish

# Set name, element type, match protocol per family; its ranges' set is name + NET.
FAMILIES = (("v4", "ipv4_addr", "ip"), ("v6", "ipv6_addr", "ip6"))
BULK_RELEASE = 1000  # addresses: above this, release rebuilds the set instead


class NftablesBackend(NftReplace, NetfilterBackend):
    """Our table: its structure (``init``, the rules, ``check``) and the contract; the
    elements are ``NftElements``, the replace ``NftReplace`` (``nftsets``)."""

    name = "nftables"

    def __init__(
        self, settings: FirewallConfig, runner: Runner, channel: Channel | None = None
    ) -> None:
        super().__init__(settings, runner, channel)
        self.table = f"inet {settings.table}"

    def _families(self) -> tuple[tuple[str, str, str], ...]:
        return FAMILIES if self.settings.ipv6 else FAMILIES[:1]

    def _apply(self, lines: list[str]) -> None:
        if lines:
            self.runner(["nft", "-f", "-"], input="".join(f"{line}\n" for line in lines))

    def _chain_spec(self, hook: str) -> str:
        return f"{{ type filter hook {hook} priority filter - 10; policy accept; }}"

    def chain_rules(self) -> list[str]:
        s = self.settings
        rules = []
        for family, _, proto in self._families():
            for name in (family, family + NET):
                if s.log:
                    rules.append(
                        f'{proto} saddr @{name} limit rate {s.log_rate} log prefix "{s.log_prefix}"'
                    )
                rules.append(f"{proto} saddr @{name} drop")
        return rules

    def init(self) -> None:
        # On the channel: the same transaction as the script below, without an nft
        # process (a repair after a reload is mostly this step; banpipe.firewall.nftstruct).
        if self._online():
            self.channel.transact(structure_messages(self.settings), nftables=True)
            return
        self._apply(self.init_lines())

    def init_lines(self) -> list[str]:
        """``init()`` as an ``nft -f`` script (what it does without a channel)."""
        t = self.table
        lines = [f"add table {t}"]
        # `add set` of an existing set with another size changes the size (kernel 6.x),
        # keeping the elements.
        size = self.settings.max_entries
        for name, typ, _ in self._families():
            lines.append(f"add set {t} {name} {{ type {typ}; size {size}; }}")
            lines.append(f"add set {t} {name}{NET} {{ type {typ}; flags interval; size {size}; }}")
        for hook in HOOKS.values():
            lines += [f"add chain {t} {hook} {self._chain_spec(hook)}", f"flush chain {t} {hook}"]
            if hook in (HOOKS[h] for h in self.settings.hooks):
                lines += [f"add rule {t} {hook} {rule}" for rule in self.chain_rules()]
            else:
                # add-then-delete: removes a chain left by older settings, and is a no-op
                # otherwise, without a listing first.
                lines.append(f"delete chain {t} {hook}")
        if not self.settings.ipv6:
            lines += [f"add set {t} v6 {{ type ipv6_addr; }}", f"delete set {t} v6"]
            lines += [
                f"add set {t} v6{NET} {{ type ipv6_addr; flags interval; }}",
                f"delete set {t} v6{NET}",
            ]
        return lines

    def block(self, addrs: Iterable[str]) -> None:
        groups, nets = self._groups(addrs)
        for name, group in nets:
            self._block_ranges(name, group)
        new: list[str] = []
        if self.settings.conntrack_flush:
            # Only then is the set read first: conntrack flushes are for new offenders only.
            for name, group, _ in groups:
                present = self._set_members(name)
                new += [a for a in group if a not in present]
            new += [n for _, group in nets for n in group]  # few: flows of all of them
        # `add element` ignores elements already present: exactly one entry per address.
        if groups and not self._send(groups, ("add",)):
            self._apply([line for name, g, _ in groups for line in self._elements("add", name, g)])
        self._flows(new)

    def release(self, addrs: Iterable[str]) -> None:
        # `delete element` fails on an absent element and nft 1.0.6 has no `destroy`, so
        # each element is added first: the same transaction then always deletes it.
        groups, nets = self._groups(addrs)
        for name, group in nets:
            self._release_ranges(name, group)
        if not groups:
            return
        if all(len(g) <= BULK_RELEASE for _, g, _ in groups) and self._send(
            groups, ("add", "delete")
        ):
            return
        lines = []
        for name, group, _ in groups:
            if len(group) > BULK_RELEASE:
                # Adding and deleting 100,000 elements took 15 s (bench/README.md); one
                # listing, then flushing the set and adding back what stays, is one
                # transaction of the same atomicity.
                stay = sorted(self._set_members(name) - set(group))
                lines += [f"flush set {self.table} {name}", *self._elements("add", name, stay)]
            else:
                lines += self._elements("add", name, group)
                lines += self._elements("delete", name, group)
        self._apply(lines)

    def flush(self) -> None:
        self._apply(
            [
                f"flush set {self.table} {name}{suffix}"
                for name, _, _ in self._families()
                for suffix in ("", NET)
            ]
        )

    def check(self) -> FirewallState:
        # With the channel, the structure and the elements come from netlink dumps: nft
        # fetches every element for any listing of the table (100,000 elements: 3.4 s
        # per listing; the dumps: 0.1 s).
        if self._online():
            try:
                items = nft_items(self.channel, self.settings.table)
            except ChannelError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                return FirewallState(problems=[f"nftables: table {self.table} missing"])
            state = self.parse(items)
            have = {i["set"]["name"]: i["set"].get("type") for i in items if "set" in i}
            for name, typ, _ in self._families():
                if have.get(name) == typ:
                    state.entries |= self._dump_members(name)
                if have.get(name + NET) == typ:
                    state.entries |= self._ranges(name + NET)
            return state
        argv = ["nft", "-j", "list", "table", "inet", self.settings.table]
        proc = self.runner(argv, check=False)
        if proc.returncode != 0:
            if "No such file or directory" not in proc.stderr:
                finish(argv, proc, check=True)  # raises, with nft's message
            return FirewallState(problems=[f"nftables: table {self.table} missing"])
        try:
            items = json.loads(proc.stdout).get("nftables", [])
        except (ValueError, AttributeError):
            raise FirewallError(f"nft -j list table {self.table}: unreadable JSON")
        return self.parse(items)

    def parse(self, items: list[dict]) -> FirewallState:
        """The state from ``nft -j list table`` items (split out for the golden tests)."""
        state = FirewallState(structure_ok=True)
        problems = state.problems
        sets = {i["set"]["name"]: i["set"] for i in items if "set" in i}
        chains = {i["chain"]["name"]: i["chain"] for i in items if "chain" in i}
        rules: dict[str, list[str]] = {}
        for i in items:
            if "rule" in i:
                rules.setdefault(i["rule"].get("chain", ""), []).append(rule_text(i["rule"]))
        for name, typ in ((n + x, t) for n, t, _ in self._families() for x in ("", NET)):
            if name not in sets:
                problems.append(f"nftables: set {name} missing")
            elif sets[name].get("type") != typ:
                problems.append(f"nftables: set {name} has type {sets[name].get('type')}")
            else:
                members, bad = json_elements([{"set": sets[name]}])
                state.entries |= members
                problems += bad
        want = [normalize_rule(r) for r in self.chain_rules()]
        for hook in (HOOKS[h] for h in self.settings.hooks):
            chain = chains.get(hook)
            if chain is None:
                problems.append(f"nftables: chain {hook} missing")
            elif chain.get("hook") != hook or chain.get("type") != "filter":
                problems.append(f"nftables: chain {hook} is not hooked on {hook}")
            elif rules.get(hook, []) != want:
                problems.append(
                    f"nftables: chain {hook} holds {rules.get(hook, [])}, expected {want}"
                )
        state.structure_ok = not problems
        for name in chains:
            if name not in (HOOKS[h] for h in self.settings.hooks):
                problems.append(f"nftables: unexpected chain {name}")
        return state

    def close(self, teardown: bool = True) -> None:
        if teardown:
            # add-then-delete: idempotent without a listing first.
            self._apply([f"add table {self.table}", f"delete table {self.table}"])


BACKEND = NftablesBackend
