"""The iptables backend (default): one DROP rule per offender in our own chain.

Our chain (``BANPIPE``) lives in the filter table of iptables and ip6tables and is jumped
to from each configured hook (INPUT and FORWARD by default), inserted first. Each banned
address gets ``-s ADDR/32 -j DROP`` (``/128`` for IPv6), preceded by a rate-limited LOG
rule when logging is on. Every change is one ``iptables-restore -w --noflush`` per family,
computed from one ``-S`` listing so nothing is ever added twice.

The ``Xt`` helper (listing, restore, hook jumps, teardown) is shared with the ipset backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from banpipe.config import HOOKS, FirewallConfig

from . import ConntrackFlusher, FirewallState, Runner, canonical, validate_addresses


@dataclass(frozen=True)
class Family:
    version: int
    cmd: str
    restore: str
    hostlen: int


V4 = Family(4, "iptables", "iptables-restore", 32)
V6 = Family(6, "ip6tables", "ip6tables-restore", 128)

# How `iptables -S` prints a --limit rate; using the same spelling lets us compare rules.
_RATE_UNIT = {"second": "sec", "minute": "min", "hour": "hour", "day": "day"}


def short_rate(rate: str) -> str:
    n, unit = rate.split("/")
    return f"{n}/{_RATE_UNIT[unit]}"


def drop_rules(match: str, settings: FirewallConfig) -> list[str]:
    """The DROP rule for ``match`` (``-s ADDR/32``, ``-m set ...``), after its LOG rule
    when logging is on, spelled as ``iptables -S`` prints them."""
    rules = []
    if settings.log:
        rules.append(
            f"{match} -m limit --limit {short_rate(settings.log_rate)} -j LOG "
            f'--log-prefix "{settings.log_prefix}"'
        )
    rules.append(f"{match} -j DROP")
    return rules


def families(settings: FirewallConfig) -> tuple[Family, ...]:
    return (V4, V6) if settings.ipv6 else (V4,)


@dataclass
class Listing:
    """``iptables -S`` output: user chains and rule specs (text after ``-A CHAIN``)."""

    chains: set[str] = field(default_factory=set)
    rules: dict[str, list[str]] = field(default_factory=dict)


def parse_listing(text: str) -> Listing:
    out = Listing()
    for line in text.splitlines():
        if line.startswith("-N "):
            out.chains.add(line[3:].strip())
        elif line.startswith("-A "):
            chain, _, spec = line[3:].partition(" ")
            out.rules.setdefault(chain, []).append(spec.strip())
    return out


def _targets(spec: str, chain: str) -> bool:
    """True when a rule jumps (or goes) to ``chain``."""
    return re.search(rf"(?:^| )-[jg] {re.escape(chain)}(?: |$)", spec) is not None


class Xt:
    """iptables/ip6tables plumbing: our chain, the hook jumps, restore and teardown."""

    def __init__(self, settings: FirewallConfig, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        self.chain = settings.chain

    def list_table(self, fam: Family) -> Listing:
        return parse_listing(self.runner([fam.cmd, "-w", "-S"]).stdout)

    def list_chain(self, fam: Family) -> Listing:
        return parse_listing(self.runner([fam.cmd, "-w", "-S", self.chain]).stdout)

    def restore(self, fam: Family, lines: Sequence[str]) -> None:
        # --noflush: only our lines change; the rest of the table is left as it is.
        script = "*filter\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
        self.runner([fam.restore, "-w", "--noflush"], input=script)

    def structure_lines(self, listing: Listing, chain_rules: list[str] | None) -> list[str]:
        """Restore lines that bring our chain and hook jumps in line with the settings.

        ``chain_rules``: the exact rules our chain must hold (ipset backend), or None when
        its contents are per-address entries (iptables backend) and are left alone.
        """
        chain = self.chain
        jump = f"-j {chain}"
        lines: list[str] = []
        # Declaring an existing chain with --noflush would flush it: only when missing.
        if chain not in listing.chains:
            lines.append(f":{chain} - [0:0]")
        for hook in HOOKS:
            n = listing.rules.get(hook, []).count(jump)
            if hook in self.settings.hooks:
                if n == 0:
                    lines.append(f"-I {hook} 1 {jump}")
                lines.extend(f"-D {hook} {jump}" for _ in range(n - 1))
            else:
                # A hook dropped from the settings: its jump was ours, take it away.
                lines.extend(f"-D {hook} {jump}" for _ in range(n))
        if chain_rules is not None and listing.rules.get(chain, []) != chain_rules:
            if chain in listing.chains:
                lines.append(f"-F {chain}")
            lines.extend(f"-A {chain} {rule}" for rule in chain_rules)
        return lines

    def structure_problems(self, fam: Family, listing: Listing) -> list[str]:
        problems = []
        if self.chain not in listing.chains:
            problems.append(f"{fam.cmd}: chain {self.chain} missing")
        for hook in self.settings.hooks:
            if f"-j {self.chain}" not in listing.rules.get(hook, []):
                problems.append(f"{fam.cmd}: jump {hook} -> {self.chain} missing")
        return problems

    def teardown_lines(self, listing: Listing) -> list[str]:
        lines = [
            f"-D {chain} {spec}"
            for chain, specs in listing.rules.items()
            if chain != self.chain
            for spec in specs
            if _targets(spec, self.chain)
        ]
        if self.chain in listing.chains:
            lines += [f"-F {self.chain}", f"-X {self.chain}"]
        return lines

    def teardown(self) -> None:
        for fam in families(self.settings):
            lines = self.teardown_lines(self.list_table(fam))
            if lines:
                self.restore(fam, lines)


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

    def __init__(self, settings: FirewallConfig, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        self.xt = Xt(settings, runner)
        self.conntrack = ConntrackFlusher(runner)

    def _addr_rules(self, fam: Family, addr: str) -> list[str]:
        return drop_rules(f"-s {addr}/{fam.hostlen}", self.settings)

    def _by_family(self, addrs: Iterable[str]) -> list[tuple[Family, list[str]]]:
        v4, v6 = validate_addresses(addrs, ipv6=self.settings.ipv6)
        return [(fam, group) for fam, group in ((V4, v4), (V6, v6)) if group]

    def init(self) -> None:
        for fam in families(self.settings):
            lines = self.xt.structure_lines(self.xt.list_table(fam), None)
            if lines:
                self.xt.restore(fam, lines)

    def block(self, addrs: Iterable[str]) -> None:
        groups = self._by_family(addrs)
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
        for fam, group in self._by_family(addrs):
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


BACKEND = IptablesBackend
