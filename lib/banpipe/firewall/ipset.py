"""The ipset backend: offenders live in two ``hash:ip`` sets, matched by one rule per family.

``banpipe4`` (family inet) and ``banpipe6`` (family inet6) hold up to 1,048,576 addresses
each. Our iptables/ip6tables chain holds ``-m set --match-set SET src -j DROP`` (after an
optional rate-limited LOG rule) and is jumped to from the hooks. Blocking and releasing is
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

from . import (
    ConntrackFlusher,
    FirewallError,
    FirewallSettings,
    FirewallState,
    Runner,
    canonical,
    validate_addresses,
)
from .iptables import V4, Family, Xt, drop_rules, families
from .nfnl import (
    IPSET_ATTR_ADT,
    IPSET_ATTR_IP,
    IPSET_ATTR_IPADDR_IPV4,
    IPSET_ATTR_IPADDR_IPV6,
    IPSET_CMD_ADD,
    IPSET_CMD_DEL,
    IPSET_CMD_LIST,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    Channel,
    ChannelError,
    element_keys,
    ipset_header,
    ipset_list_payload,
    ipset_payload,
    ipset_type,
    key_text,
    packed,
)
from .runner import finish

# Start big enough that a 100,000-address restore does not spend its time rehashing
# (smaller when max_entries is smaller). maxelem is [firewall] max_entries.
HASHSIZE = 65_536
BATCH = 50_000  # messages per datagram on the netlink channel (about 3 MB)


class IpsetBackend:
    name = "ipset"

    def __init__(
        self, settings: FirewallSettings, runner: Runner, channel: Channel | None = None
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.xt = Xt(settings, runner)
        self.conntrack = ConntrackFlusher(runner)
        self.channel = channel

    def _set(self, fam: Family) -> str:
        return self.settings.set_v4 if fam is V4 else self.settings.set_v6

    def _sets(self) -> list[tuple[Family, str, str]]:
        return [(f, self._set(f), "inet" if f is V4 else "inet6") for f in families(self.settings)]

    def chain_rules(self, fam: Family) -> list[str]:
        """Our chain's exact contents for one family, spelled as ``iptables -S`` prints."""
        return drop_rules(f"-m set --match-set {self._set(fam)} src", self.settings)

    def _create(self, name: str, family: str) -> str:
        n = self.settings.max_entries
        hashsize = min(HASHSIZE, max(64, 1 << (n - 1).bit_length()))
        return f"{name} hash:ip family {family} hashsize {hashsize} maxelem {n}"

    def _creates(self) -> list[str]:
        return [f"create -exist {self._create(name, family)}" for _, name, family in self._sets()]

    def _resize(self) -> None:
        """A set made under another max_entries: ipset cannot change maxelem in place,
        so a new set is filled with the members and swapped in (rules referencing the
        set keep working: swap exchanges the contents under the names)."""
        for _, name, family in self._sets():
            members, problems = self._members(name, family)
            if members is None or problems:
                raise FirewallError(f"ipset: {name} cannot be resized: {'; '.join(problems)}")
            tmp = f"{name[:26]}-new"
            keep = sorted(members)[: self.settings.max_entries]
            self._restore(
                [
                    f"create -exist {tmp} hash:ip family {family}",
                    f"destroy {tmp}",
                    f"create {self._create(tmp, family)}",
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
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "add" and parts[1] == name:
                addr = canonical(parts[2])
                if addr is None:
                    problems.append(f"ipset: {name}: not a single address: {parts[2]}")
                else:
                    members.add(addr)
            elif parts[:2] == ["create", name]:
                header = parts[2:]
                if header[:1] != ["hash:ip"] or f"family {family}" not in " ".join(header):
                    problems.append(f"ipset: {name} is not hash:ip family {family}: {line}")
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
        if typename != "hash:ip" or nfproto != want:
            return set(), [f"ipset: {name} is not hash:ip family {family}: {typename}"]
        ip = IPSET_ATTR_IPADDR_IPV4 if family == "inet" else IPSET_ATTR_IPADDR_IPV6
        keys = element_keys(bodies, IPSET_ATTR_ADT, (IPSET_ATTR_IP, ip))
        return {t for t in map(key_text, keys) if t is not None}, []

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

    def _groups(self, addrs: Iterable[str]) -> list[tuple[str, str, list[str]]]:
        """(set name, ipset family, addresses) per family that has addresses."""
        v4, v6 = validate_addresses(addrs, ipv6=self.settings.ipv6)
        by_version = {4: v4, 6: v6}
        return [
            (n, f, by_version[fam.version]) for fam, n, f in self._sets() if by_version[fam.version]
        ]

    def block(self, addrs: Iterable[str]) -> None:
        groups = self._groups(addrs)
        new: list[str] = []
        if self.settings.conntrack_flush:
            # Only then is the set read first: conntrack flushes are for new offenders only.
            for name, family, group in groups:
                present, problems = self._members(name, family)
                if present is None:
                    raise FirewallError(problems[0])
                new += [a for a in group if a not in present]
        if not self._send(IPSET_CMD_ADD, groups):
            self._update([f"add -exist {name} {a}" for name, _, group in groups for a in group])
        if new:
            self.conntrack(new)

    def release(self, addrs: Iterable[str]) -> None:
        groups = self._groups(addrs)
        if not self._send(IPSET_CMD_DEL, groups):
            self._update([f"del -exist {name} {a}" for name, _, group in groups for a in group])

    def _send(self, cmd: int, groups: list[tuple[str, str, list[str]]]) -> bool:
        """Add or delete on the netlink channel, one message per address (without
        NLM_F_EXCL: what ``-exist`` means). False when the caller must use ``ipset
        restore``: no channel, or a set is missing (the restore path re-creates it)."""
        if self.channel is None or not groups or not self.channel.ready():
            return False
        verb = "add" if cmd == IPSET_CMD_ADD else "del"
        try:
            for name, _, group in groups:
                # Built a batch at a time: a million messages at once held 130 MiB.
                for i in range(0, len(group), BATCH):
                    items = [(ipset_payload(name, packed(a)), a) for a in group[i : i + BATCH]]
                    self.channel.each(ipset_type(cmd), items, f"ipset: {verb} {name}")
        except ChannelError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return False
        return True

    def flush(self) -> None:
        self._restore([f"flush {name}" for _, name, _ in self._sets()])

    def check(self) -> FirewallState:
        state = FirewallState(structure_ok=True)
        for fam, name, family in self._sets():
            members, problems = self._members(name, family)
            if problems:
                state.structure_ok = False
                state.problems += problems
            state.entries.update(members or ())
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
        self._restore([f"destroy {name}" for _, name, _ in self._sets() if name in existing])
