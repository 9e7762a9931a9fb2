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
import logging
import socket
from collections.abc import Iterable
from itertools import repeat

from banpipe.address import Ranges, Split, from_packed
from banpipe.config import HOOKS, FirewallConfig

from . import (
    ConntrackFlusher,
    FirewallError,
    FirewallState,
    Runner,
    bulk_entries,
)
from .nfnl import (
    Channel,
    ChannelError,
    Message,
    SetFull,
)
from .nfproto import (
    NFPROTO_INET,
    NFT_MSG_DELSETELEM,
    NFT_MSG_GETSETELEM,
    NFT_MSG_NEWSETELEM,
    NFTA_DATA_VALUE,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NLM_F_CREATE,
    NLM_F_EXCL,
    element_keys,
    nft_type,
)
from .nftjson import json_elements, normalize_rule, rule_text
from .nftmsg import (
    interval_entries,
    interval_keys,
    nft_items,
    setelem_filter,
    setelem_payload,
)
from .nftstruct import recreate_messages, size_message, structure_messages
from .runner import finish

log = logging.getLogger("banpipe.firewall")

# Set name, element type, match protocol per family; its ranges' set is name + NET.
FAMILIES = (("v4", "ipv4_addr", "ip"), ("v6", "ipv6_addr", "ip6"))
NET = "net"
# Elements no ban is expected to be (_holds_exactly; one that is a ban is skipped).
SENTINELS = {"v4": ("0.0.0.0", "255.255.255.255", "0.0.0.1"), "v6": ("::", "::2", "::3")}  # noqa: S104
CHUNK = 1000  # elements per statement; all statements still form one transaction


BULK_RELEASE = 1000  # addresses: above this, release rebuilds the set instead
PER_ADDRESS = 64  # addresses: up to this, each has its own message (and answer)
BATCH = 200_000  # elements per netlink transaction (about 6 MB, one datagram)


class NftablesBackend:
    name = "nftables"

    def __init__(
        self, settings: FirewallConfig, runner: Runner, channel: Channel | None = None
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.table = f"inet {settings.table}"
        self.conntrack = ConntrackFlusher(runner)
        self.channel = channel

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
        if self.channel is not None and self.channel.ready():
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

    def _elements(self, verb: str, name: str, addrs: list[str]) -> list[str]:
        return [
            f"{verb} element {self.table} {name} {{ {', '.join(addrs[i : i + CHUNK])} }}"
            for i in range(0, len(addrs), CHUNK)
        ]

    def _groups(
        self, addrs: Iterable[str] | Split
    ) -> tuple[list[tuple[str, list[str], list[bytes]]], list[tuple[str, list[str]]]]:
        """(set name, addresses, the addresses packed) and (range set name, ranges) per
        family that has any."""
        e = bulk_entries(addrs, ipv6=self.settings.ipv6)
        hosts: list[tuple[str, list[str], list[bytes]]] = []
        nets: list[tuple[str, list[str]]] = []
        for name, h, k, n in (("v4", e.v4, e.keys4, e.v4nets), ("v6", e.v6, e.keys6, e.v6nets)):
            if h:
                hosts.append((name, h, k))
            if n:
                nets.append((name + NET, n))
        return hosts, nets

    def _ranges(self, name: str) -> set[str]:
        """The ranges in one interval set (few: read whenever ranges change)."""
        if self.channel is not None and self.channel.ready():
            bodies = self.channel.dump(
                nft_type(NFT_MSG_GETSETELEM),
                setelem_filter(NFPROTO_INET, self.settings.table, name),
            )
            return {n for n in interval_entries(bodies) if n is not None}
        return self._set_members(name)

    def _change_ranges(self, name: str, add: list[str], delete: list[str]) -> None:
        """Delete then add ranges of one interval set, in one transaction."""
        if not add and not delete:
            return
        if self.channel is not None and self.channel.ready():
            messages = self._element_messages(name, delete, delete=True)
            messages += self._element_messages(name, add)
            self.channel.transact(messages, nftables=True)
            return
        self._apply(self._elements("delete", name, delete) + self._elements("add", name, add))

    def _block_ranges(self, name: str, nets: list[str]) -> None:
        present = self._ranges(name)
        have, asked = Ranges(present), Ranges(nets)
        add = [n for n in dict.fromkeys(nets) if not have.covers(n, strictly=False)]
        add = [n for n in add if not asked.covers(n)]
        wider = Ranges(add)
        self._change_ranges(name, add, sorted(p for p in present if wider.covers(p)))

    def _release_ranges(self, name: str, nets: list[str]) -> None:
        present = self._ranges(name)
        self._change_ranges(name, [], [n for n in dict.fromkeys(nets) if n in present])

    def _set_members(self, name: str) -> set[str]:
        if self.channel is not None and self.channel.ready():
            return self._dump_members(name)
        proc = self.runner(["nft", "-j", "list", "set", "inet", self.settings.table, name])
        members, _ = json_elements(json.loads(proc.stdout).get("nftables", []))
        return members

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
        if new:
            self.conntrack(new)

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

    def _send(
        self, groups: list[tuple[str, list[str], list[bytes]]], verbs: tuple[str, ...]
    ) -> bool:
        """Send the elements on the netlink channel: each verb's messages for every group,
        in order, as batches of at most BATCH elements (one transaction each). False when
        there is no channel (the caller then runs nft)."""
        if self.channel is None or not groups or not self.channel.ready():
            return False
        mtype = {"add": nft_type(NFT_MSG_NEWSETELEM), "delete": nft_type(NFT_MSG_DELSETELEM)}
        flags = {"add": NLM_F_CREATE, "delete": 0}
        # One address per message for everyday calls, so an error names its ban.
        per = 1 if sum(len(g) for _, g, _ in groups) <= PER_ADDRESS else CHUNK
        table = self.settings.table
        messages = [
            Message(
                mtype[verb],
                setelem_payload(NFPROTO_INET, table, name, keys[i : i + per]),
                flags[verb],
                f"nftables: {verb} element {self.table} {name}",
                group[i : i + per],
            )
            for name, group, keys in groups
            for i in range(0, len(group), per)
            for verb in verbs
        ]
        step = max(len(verbs), BATCH // per // len(verbs) * len(verbs))
        for i in range(0, len(messages), step):
            self.channel.transact(messages[i : i + step], nftables=True)
        return True

    def replace(self, addrs: Iterable[str] | Split) -> bool:
        """Make the sets hold exactly ``addrs`` without reading them first, never with
        a moment without the bans. False without a channel, or when a family holds more
        than ``max_entries`` (the caller then compares and makes room).

        Reading is what costs: the kernel walks a hash set from its start for every
        32 KiB chunk of a dump (a million elements: 10-40 s). Writing costs one
        transaction record per element, plus, while anyone on the machine listens to
        nf_tables events (banctl's own daemon does; netlink's listener check is not per
        namespace), a notification of a few KiB per element held until the commit: a
        million added in one transaction took 10 s of system time (load 7), in
        transactions of BATCH 3.5 s. So an address set whose dump's first chunk is
        empty (a cold start) is filled in transactions of BATCH, and one that holds
        anything is deleted and created anew, filled and referenced again in ONE
        transaction (``nftstruct.recreate_messages``): its old elements are freed after
        the commit, with no record each (a flush then adding a million was two million
        records). The ranges' sets (few) are flushed and refilled in one transaction.
        """
        if self.channel is None or not self.channel.ready():
            return False
        hosts, nets = self._groups(addrs)
        groups = {name: (group, keys) for name, group, keys in hosts}
        if any(len(g) > self.settings.max_entries for g, _ in groups.values()):
            return False
        names = [name for name, _, _ in self._families()]
        full: list[str] = []
        filled: set[str] = set()  # sets _holds_exactly() found (and left) holding every ban
        for n in names:
            if self._holds_any(n):
                (filled.add if self._holds_exactly(n, groups) else full.append)(n)
        messages = []
        for name in names:
            wide = next((g for n, g in nets if n == name + NET), [])
            messages.append(self._flush_message(name + NET))
            messages += self._element_messages(name + NET, sorted(Ranges(wide).collapse(wide)))
        for name in names:
            if name not in full and name not in filled and name in groups:
                self._send([(name, *groups[name])], ("add",))
        if full:
            fill = [m for n in full for m in self._element_messages(n, *groups.get(n, ([], [])))]
            try:
                self.channel.transact(
                    recreate_messages(self.settings, full) + messages + fill, nftables=True
                )
                return True
            except SetFull:
                raise
            except ChannelError as exc:
                # A set something else refers to cannot be deleted: flush it instead.
                log.warning("nftables: sets not re-created (%s); flushing them", exc)
                messages += [self._flush_message(n) for n in full] + fill
        self.channel.transact(messages, nftables=True)
        return True

    def _holds_any(self, name: str) -> bool:
        """Whether an address set holds any element: its dump's first chunk only."""
        assert self.channel is not None
        first = self.channel.first(
            nft_type(NFT_MSG_GETSETELEM), setelem_filter(NFPROTO_INET, self.settings.table, name)
        )
        return bool(
            element_keys(first, NFTA_SET_ELEM_LIST_ELEMENTS, (NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE))
        )

    def _holds_exactly(self, name: str, groups: dict[str, tuple[list[str], list[bytes]]]) -> bool:
        """Whether a set that holds something holds exactly ``groups[name]``, without
        reading it (a warm restart, the set as banctl left it). Every ban is added in
        transactions of BATCH (cheap for the elements present: no record, no
        notification; a million: about 1 s of system time), so the set holds at least
        them; then, with its size limit set to their number plus one, one more element
        (a sentinel, added and deleted in one transaction) fits only if the set holds
        no other element. The limit is put back either way."""
        assert self.channel is not None
        group, keys = groups.get(name, ([], []))
        if group:
            self._send([(name, group, keys)], ("add",))
        sentinel = next(a for a in SENTINELS[name] if a not in group)
        where = f"nftables: sentinel {sentinel} in {self.table} {name}"
        table = self.settings.table
        probe = [
            Message(
                nft_type(mtype),
                setelem_payload(NFPROTO_INET, table, name, _keys(name, [sentinel])),
                flags,
                where,
            )
            for mtype, flags in (
                (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL),
                (NFT_MSG_DELSETELEM, 0),
            )
        ]
        back = size_message(self.settings, name, self.settings.max_entries)
        self.channel.transact([size_message(self.settings, name, len(group) + 1)], nftables=True)
        try:
            self.channel.transact([*probe, back], nftables=True)
            return True
        except ChannelError as exc:
            if exc.errno not in (errno.ENFILE, errno.EEXIST):
                raise
            self.channel.transact([back], nftables=True)
            return False

    def _flush_message(self, name: str) -> Message:
        # DELSETELEM without elements flushes the set.
        flush = setelem_filter(NFPROTO_INET, self.settings.table, name)
        return Message(nft_type(NFT_MSG_DELSETELEM), flush, 0, f"flush {name}")

    def _element_messages(
        self,
        name: str,
        entries: list[str],
        keys: list[bytes] | None = None,
        *,
        delete: bool = False,
    ) -> list[Message]:
        """NEWSETELEM (``delete``: DELSETELEM) messages of CHUNK entries each (ranges
        for a ranges' set; ``keys``: the addresses packed, when they are)."""
        interval = name.endswith(NET)
        verb, mtype, flags = (
            ("delete", NFT_MSG_DELSETELEM, 0)
            if delete
            else ("add", NFT_MSG_NEWSETELEM, NLM_F_CREATE)
        )
        where = f"nftables: {verb} element {self.table} {name}"
        out = []
        for i in range(0, len(entries), CHUNK):
            part = entries[i : i + CHUNK]
            if interval:
                packed = interval_keys(part)
            else:
                packed = keys[i : i + CHUNK] if keys is not None else _keys(name, part)
            payload = setelem_payload(NFPROTO_INET, self.settings.table, name, packed, interval)
            out.append(Message(nft_type(mtype), payload, flags, where, part))
        return out

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
        if self.channel is not None and self.channel.ready():
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

    def _dump_members(self, name: str) -> set[str]:
        assert self.channel is not None
        bodies = self.channel.dump(
            nft_type(NFT_MSG_GETSETELEM), setelem_filter(NFPROTO_INET, self.settings.table, name)
        )
        keys = element_keys(
            bodies, NFTA_SET_ELEM_LIST_ELEMENTS, (NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE)
        )
        return {t for t in map(from_packed, keys) if t is not None}

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


def _keys(name: str, addrs: list[str]) -> map:
    """The packed addresses of one family's set, in a C loop (a million: 0.2 s)."""
    return map(socket.inet_pton, repeat(socket.AF_INET6 if name == "v6" else socket.AF_INET), addrs)


BACKEND = NftablesBackend
