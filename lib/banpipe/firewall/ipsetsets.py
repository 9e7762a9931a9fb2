"""The ipset backend's sets (``ipset.IpsetBackend``): names, kinds, sizes, creation,
re-creation under another ``max_entries``, and reading a set's members (a netlink dump
on banctl's channel, else ``ipset save``).
"""

from __future__ import annotations

import errno

from banpipe.address import from_packed

from . import FirewallError, canonical
from .ipsetmsg import ipset_entries, ipset_header, ipset_list_payload
from .nfnl import ChannelError
from .nfproto import (
    IPSET_ATTR_ADT,
    IPSET_ATTR_IP,
    IPSET_ATTR_IPADDR_IPV4,
    IPSET_ATTR_IPADDR_IPV6,
    IPSET_CMD_LIST,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    element_keys,
    ipset_type,
)
from .runner import finish
from .xt import V4, Family, drop_rules, families

# Start big enough that a 100,000-address restore does not spend its time rehashing
# (smaller when max_entries is smaller). maxelem is [firewall] max_entries.
HASHSIZE = 65_536
NET_HASHSIZE = 1024
NET = "net"  # a family's ranges: the set named like its addresses' set, plus this
KIND = {"": "hash:ip", NET: "hash:net"}


class IpsetSets:
    """The ipset backend's sets: their names, kinds and sizes, their creation (and
    re-creation under another ``max_entries``), ``ipset restore`` scripts, and reading
    a set's members. A mixin of ``IpsetBackend`` (settings, runner, channel, xt)."""

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

    def _create(self, name: str, family: str, kind: str | None = None, fill: int = 0) -> str:
        """A ``create`` line's arguments; ``fill``: how many entries go in at once (a
        replace), whose hash table is made that big at once: a million grown from
        HASHSIZE cost 1.2 s of the kernel's time in rehashes, 0.7 s made big (load 11)."""
        n = self.settings.max_entries
        kind = kind or self._kind(name)
        # A ranges' set holds a handful: no room kept for a million.
        top = NET_HASHSIZE if kind == KIND[NET] else max(HASHSIZE, _power2(fill))
        hashsize = min(top, max(64, _power2(n)))
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
        if self._online():
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


def _power2(n: int) -> int:
    """The least power of two not below ``n`` (1 for 0)."""
    return 1 << (max(n, 1) - 1).bit_length()
