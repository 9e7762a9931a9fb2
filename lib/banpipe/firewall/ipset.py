"""The ipset backend: offenders live in ``hash:ip`` sets, ranges in ``hash:net`` sets.

``banpipe4`` (family inet) and ``banpipe6`` (family inet6) hold up to 1,048,576 addresses
each, ``banpipe4net`` and ``banpipe6net`` the banned ranges (``203.0.113.0/24``; a
``hash:net`` set takes nested ranges too). Our iptables/ip6tables chain holds ``-m set
--match-set SET src -j DROP`` per set (each after an optional rate-limited LOG rule) and
is jumped to from the hooks. Blocking and releasing is
sent on banctl's long-lived netlink channel (``nfnl.Channel``: many addresses per
message, no fork per ban, the kernel's answer read for each); without a channel it is one
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

from banpipe.address import Split, packed

from . import FirewallError, FirewallState, bulk_entries
from .base import XtBackend
from .ipsetmsg import ipset_adt_payloads, ipset_head, ipset_payload
from .ipsetsets import KIND, NET, IpsetSets
from .nfnl import ChannelError
from .nfproto import IPSET_CMD_ADD, IPSET_CMD_DEL, ipset_type
from .xt import V4, V6, families

BATCH = 50_000  # addresses per datagram on the netlink channel (about 3 MB one per message)
# (set name, ipset family, entries, their packed addresses: None for ranges)
Group = tuple[str, str, list[str], "list[bytes] | None"]


class IpsetBackend(IpsetSets, XtBackend):
    """The sets' elements (block, release, replace) and the backend's contract."""

    name = "ipset"

    def init(self) -> None:
        try:
            self._restore(self._creates())
        except FirewallError as exc:
            if "already exists" not in str(exc):
                raise
            self._resize()
        self._xt_init(self.chain_rules)

    def _groups(self, addrs: Iterable[str] | Split) -> list[Group]:
        """(set name, ipset family, entries, packed addresses or None for ranges) per set
        that has entries: addresses to a family's hash:ip set, ranges to its hash:net
        set."""
        e = bulk_entries(addrs, ipv6=self.settings.ipv6)
        by_set: dict[str, tuple[list[str], list[bytes] | None]] = {}
        kinds = ((V4, e.v4, e.keys4, e.v4nets), (V6, e.v6, e.keys6, e.v6nets))
        for fam, hosts, keys, nets in kinds:
            by_set[self._set(fam)], by_set[self._set(fam) + NET] = (hosts, keys), (nets, None)
        return [(n, f, *by_set[n]) for _, n, f in self._sets(("", NET)) if by_set.get(n, ([],))[0]]

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
        self._flows(new)

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
        if not groups or not self._online():
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
        if not self._online():
            return False
        by_set = {name: group for name, *group in self._groups(addrs)}
        for _, name, family in self._sets(("", NET)):
            tmp = f"{name[:26]}-new"
            kind = self._kind(name)
            group = by_set.get(name)
            self._restore(
                [
                    f"create -exist {tmp} {kind} family {family}",
                    f"destroy {tmp}",
                    f"create {self._create(tmp, family, kind, len(group[1]) if group else 0)}",
                ]
            )
            try:
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
