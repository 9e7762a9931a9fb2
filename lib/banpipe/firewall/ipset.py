"""The ipset backend: offenders live in ``hash:ip`` sets, ranges in ``hash:net`` sets.

``banpipe4`` (family inet) and ``banpipe6`` (family inet6) hold up to 1,048,576 addresses
each, ``banpipe4net`` and ``banpipe6net`` the banned ranges (``203.0.113.0/24``; a
``hash:net`` set takes nested ranges too). Our iptables/ip6tables chain holds ``-m set
--match-set SET src -j DROP`` per set (each after an optional rate-limited LOG rule) and
is jumped to from the hooks. Blocking and releasing is
sent on banctl's long-lived netlink channel (``nfnl.Channel``: one message per address,
no fork per ban, the kernel's answer read for each); without a channel it is one
``ipset restore`` with ``add -exist`` / ``del -exist`` lines. Either way repeats are
harmless. Those restores start with the sets' own ``create -exist`` lines (twice as
fast, see ``_update``): unlike the other backends, block/release re-create a missing set
instead of failing (on the channel: the kernel's "no such set" answer sends the call
down the restore path); check() still reports the structure as broken until init() puts
the rules back.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from banpipe.address import Split, from_packed, packed
from banpipe.config import FirewallConfig

from . import (
    ConntrackFlusher,
    FirewallError,
    FirewallState,
    Runner,
    bulk_entries,
    canonical,
)
from .ipsetmsg import (
    ipset_adt_payloads,
    ipset_entries,
    ipset_head,
    ipset_header,
    ipset_list_payload,
    ipset_payload,
)
from .nfnl import (
    Channel,
    ChannelError,
)
from .nfproto import (
    IPSET_ATTR_ADT,
    IPSET_ATTR_IP,
    IPSET_ATTR_IPADDR_IPV4,
    IPSET_ATTR_IPADDR_IPV6,
    IPSET_CMD_ADD,
    IPSET_CMD_DEL,
    IPSET_CMD_LIST,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    element_keys,
    ipset_type,
)
from .runner import finish
from .xt import V4, V6, Family, Xt, drop_rules, families

# Start big enough that a 100,000-address restore does not spend its time rehashing
# (smaller when max_entries is smaller). maxelem is [firewall] max_entries.
HASHSIZE = 65_536
NET_HASHSIZE = 1024
BATCH = 50_000  # messages per datagram on the netlink channel (about 3 MB)
NET = "net"  # a family's ranges: the set named like its addresses' set, plus this
KIND = {"": "hash:ip", NET: "hash:net"}
# (set name, ipset family, entries, their packed addresses: None for ranges)
Group = tuple[str, str, list[str], "list[bytes] | None"]


class IpsetBackend:
    name = "ipset"

    def __init__(
        self, settings: FirewallConfig, runner: Runner, channel: Channel | None = None
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.xt = Xt(settings, runner)
        self.conntrack = ConntrackFlusher(runner)
        self.channel = channel

    def _set(self, fam: Family) -> str:
        return self.settings.set_v4 if fam is V4 else self.settings.set_v6

    def _sets(self, suffixes: tuple[str, ...] = ("",)) -> list[tuple[Family, str, str]]:
        """(family, set name, ipset family) of the addresses' sets (``suffixes`` ("",
        NET): and of the ranges' sets)."""
        return [
            (f, self._set(f) + x, "inet" if f is V4 else "inet6")
            for f in families(self.settings)
            for x in suffixes
        ]

    def chain_rules(self, fam: Family) -> list[str]:
        """Our chain's exact contents for one family, spelled as ``iptables -S`` prints."""
        name = self._set(fam)
        return [
            rule
            for x in ("", NET)
            for rule in drop_rules(f"-m set --match-set {name}{x} src", self.settings)
        ]

    def _kind(self, name: str) -> str:
        """hash:net for a ranges' set, hash:ip for an addresses' set."""
        nets = (self.settings.set_v4 + NET, self.settings.set_v6 + NET)
        return KIND[NET] if name in nets else KIND[""]

    def _create(self, name: str, family: str, kind: str | None = None) -> str:
        n = self.settings.max_entries
        kind = kind or self._kind(name)
        # A ranges' set holds a handful: no room kept for a million.
        top = NET_HASHSIZE if kind == KIND[NET] else HASHSIZE
        hashsize = min(top, max(64, 1 << (n - 1).bit_length()))
        return f"{name} {kind} family {family} hashsize {hashsize} maxelem {n}"

    def _creates(self) -> list[str]:
        return [
            f"create -exist {self._create(name, family)}"
            for _, name, family in self._sets(("", NET))
        ]

    def _resize(self) -> None:
        """A set made under another max_entries: ipset cannot change maxelem in place,
        so a new set is filled with the members and swapped in (rules referencing the
        set keep working: swap exchanges the contents under the names)."""
        for _, name, family in self._sets(("", NET)):
            members, problems = self._members(name, family)
            if members is None or problems:
                raise FirewallError(f"ipset: {name} cannot be resized: {'; '.join(problems)}")
            tmp = f"{name[:26]}-new"
            kind = self._kind(name)
            keep = sorted(members)[: self.settings.max_entries]
            self._restore(
                [
                    f"create -exist {tmp} {kind} family {family}",
                    f"destroy {tmp}",
                    f"create {self._create(tmp, family, kind)}",
                    *(f"add {tmp} {a}" for a in keep),
                    f"swap {tmp} {name}",
                    f"destroy {tmp}",
                ]
            )

    def _restore(self, lines: list[str]) -> None:
        if lines:
            self.runner(["ipset", "restore"], input="".join(f"{line}\n" for line in lines))

    def _update(self, lines: list[str]) -> None:
        # Leading `create -exist` lines make ipset restore take the set's type from the
        # session instead of asking the kernel: 100,000 adds run twice as fast. A missing
        # set is thereby re-created, but stays unreferenced until init() (check() says so).
        if lines:
            self._restore(self._creates() + lines)

    def _members(self, name: str, family: str) -> tuple[set[str] | None, list[str]]:
        """Members of one set (a netlink dump, else ``ipset save``); None when the set
        is missing."""
        if self.channel is not None and self.channel.ready():
            return self._dump_members(name, family)
        argv = ["ipset", "save", name]
        proc = self.runner(argv, check=False)
        if proc.returncode != 0:
            if "does not exist" not in proc.stderr:
                finish(argv, proc, check=True)  # raises, with ipset's message
            return None, [f"ipset: set {name} missing"]
        members: set[str] = set()
        problems: list[str] = []
        kind = self._kind(name)
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "add" and parts[1] == name:
                addr = canonical(parts[2])
                if addr is None:
                    problems.append(f"ipset: {name}: not an address or network: {parts[2]}")
                else:
                    members.add(addr)
            elif parts[:2] == ["create", name]:
                header = parts[2:]
                if header[:1] != [kind] or f"family {family}" not in " ".join(header):
                    problems.append(f"ipset: {name} is not {kind} family {family}: {line}")
        return members, problems

    def _dump_members(self, name: str, family: str) -> tuple[set[str] | None, list[str]]:
        # `ipset save` of 100,000 members took 0.4 s plus the parsing; the dump 0.1 s.
        assert self.channel is not None
        try:
            bodies = self.channel.dump(ipset_type(IPSET_CMD_LIST), ipset_list_payload(name))
        except ChannelError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return None, [f"ipset: set {name} missing"]
        typename, nfproto = ipset_header(bodies)
        want = NFPROTO_IPV4 if family == "inet" else NFPROTO_IPV6
        kind = self._kind(name)
        if typename != kind or nfproto != want:
            return set(), [f"ipset: {name} is not {kind} family {family}: {typename}"]
        if kind == KIND[NET]:
            return {n for n in ipset_entries(bodies) if n is not None}, []
        ip = IPSET_ATTR_IPADDR_IPV4 if family == "inet" else IPSET_ATTR_IPADDR_IPV6
        keys = element_keys(bodies, IPSET_ATTR_ADT, (IPSET_ATTR_IP, ip))
        return {t for t in map(from_packed, keys) if t is not None}, []

    def init(self) -> None:
        try:
            self._restore(self._creates())
        except FirewallError as exc:
            if "already exists" not in str(exc):
                raise
            self._resize()
        for fam in families(self.settings):
            lines = self.xt.structure_lines(self.xt.list_table(fam), self.chain_rules(fam))
            if lines:
                self.xt.restore(fam, lines)

    def _groups(self, addrs: Iterable[str] | Split) -> list[Group]:
        """(set name, ipset family, entries, packed addresses or None for ranges) per set
        that has entries: addresses to a family's hash:ip set, ranges to its hash:net
        set."""
        e = bulk_entries(addrs, ipv6=self.settings.ipv6)
        by_set: dict[str, tuple[list[str], list[bytes] | None]] = {}
        for fam, hosts, keys, nets in (
            (V4, e.v4, e.keys4, e.v4nets),
            (V6, e.v6, e.keys6, e.v6nets),
        ):
            by_set[self._set(fam)], by_set[self._set(fam) + NET] = (hosts, keys), (nets, None)
        return [(n, f, *by_set[n]) for _, n, f in self._sets(("", NET)) if by_set.get(n, ((),))[0]]

    def block(self, addrs: Iterable[str]) -> None:
        groups = self._groups(addrs)
        new: list[str] = []
        if self.settings.conntrack_flush:
            # Only then is the set read first: conntrack flushes are for new offenders only.
            for name, family, group, _ in groups:
                if self._kind(name) == KIND[NET]:
                    new += group  # few: flows of all of them
                    continue
                present, problems = self._members(name, family)
                if present is None:
                    raise FirewallError(problems[0])
                new += [a for a in group if a not in present]
        if not self._send(IPSET_CMD_ADD, groups):
            self._update([f"add -exist {name} {a}" for name, _, group, _ in groups for a in group])
        if new:
            self.conntrack(new)

    def release(self, addrs: Iterable[str]) -> None:
        groups = self._groups(addrs)
        if not self._send(IPSET_CMD_DEL, groups):
            self._update([f"del -exist {name} {a}" for name, _, group, _ in groups for a in group])

    def _send(self, cmd: int, groups: list[Group], into: str | None = None) -> bool:
        """Add or delete on the netlink channel (without NLM_F_EXCL: what ``-exist``
        means); ``into``: another set of the same kind to send the (one) group to. False
        when the caller must use ``ipset restore``: no channel, or a set is missing (the
        restore path re-creates it).

        Addresses go many to a message (``ipset_adt_payloads``): a million in about 300
        messages instead of a million. The kernel answers a refused one for the message
        as a whole, so then the group is sent again one message per address (adding or
        deleting twice is harmless) and the error names exactly the addresses refused
        (a full set: the ones that did not fit). Ranges (few) go one per message."""
        if self.channel is None or not groups or not self.channel.ready():
            return False
        verb = "add" if cmd == IPSET_CMD_ADD else "del"
        mtype = ipset_type(cmd)
        try:
            for name, _, group, keys in groups:
                target = into or name
                where = f"ipset: {verb} {target}"
                if keys is None:
                    for i in range(0, len(group), BATCH):
                        items = [(_payload(target, a), a) for a in group[i : i + BATCH]]
                        self.channel.each(mtype, items, where)
                    continue
                try:
                    # A datagram a batch at a time: a million at once held 130 MiB.
                    for i in range(0, len(keys), BATCH):
                        part = keys[i : i + BATCH]
                        items = [(p, where) for p in ipset_adt_payloads(target, part)]
                        self.channel.each(mtype, items, where)
                except ChannelError as exc:
                    if exc.errno == errno.ENOENT:
                        raise
                    head = ipset_head(target, len(keys[0]), None)
                    for i in range(0, len(keys), BATCH):
                        part, named = keys[i : i + BATCH], group[i : i + BATCH]
                        self.channel.each_key(mtype, head, part, named, where)
        except ChannelError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return False
        return True

    def replace(self, addrs: Iterable[str] | Split) -> bool:
        """Make the sets hold exactly ``addrs`` without reading them and without a moment
        without the bans: each set's contents are filled into a fresh set, which is then
        swapped in (``swap`` exchanges contents under the names: the rules keep working)
        and the old contents destroyed. False without a channel. A full set raises
        FirewallFull, the sets unchanged."""
        if self.channel is None or not self.channel.ready():
            return False
        by_set = {name: group for name, *group in self._groups(addrs)}
        for _, name, family in self._sets(("", NET)):
            tmp = f"{name[:26]}-new"
            kind = self._kind(name)
            self._restore(
                [
                    f"create -exist {tmp} {kind} family {family}",
                    f"destroy {tmp}",
                    f"create {self._create(tmp, family, kind)}",
                ]
            )
            try:
                group = by_set.get(name)
                if group and not self._send(IPSET_CMD_ADD, [(name, *group)], into=tmp):
                    raise FirewallError(f"ipset: {tmp} vanished while it was filled")
                self._restore([f"swap {tmp} {name}"])
            finally:
                self._restore([f"destroy {tmp}"])
        return True

    def flush(self) -> None:
        self._restore([f"flush {name}" for _, name, _ in self._sets(("", NET))])

    def check(self) -> FirewallState:
        state = FirewallState(structure_ok=True)
        for _, name, family in self._sets(("", NET)):
            members, problems = self._members(name, family)
            if problems:
                state.structure_ok = False
                state.problems += problems
            state.entries.update(members or ())
        for fam in families(self.settings):
            listing = self.xt.list_table(fam)
            problems = self.xt.structure_problems(fam, listing)
            want = self.chain_rules(fam)
            have = listing.rules.get(self.xt.chain, [])
            if self.xt.chain in listing.chains and have != want:
                problems.append(f"{fam.cmd}: chain {self.xt.chain} holds {have}, expected {want}")
            if problems:
                state.structure_ok = False
                state.problems += problems
        return state

    def close(self, teardown: bool = True) -> None:
        if not teardown:
            return
        # Rules first: a set still referenced by a rule cannot be destroyed.
        self.xt.teardown()
        existing = set(self.runner(["ipset", "list", "-n"]).stdout.split())
        self._restore(
            [f"destroy {name}" for _, name, _ in self._sets(("", NET)) if name in existing]
        )


def _payload(name: str, entry: str) -> bytes:
    """One ADD/DEL message's payload: an address, or a range with its prefix length."""
    addr, _, plen = entry.partition("/")
    return ipset_payload(name, packed(addr), int(plen) if plen else None)


BACKEND = IpsetBackend
