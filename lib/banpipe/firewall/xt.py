"""iptables/ip6tables plumbing shared by the iptables and ipset backends.

The two families (:data:`V4`, :data:`V6`), ``iptables -S`` listings, the DROP (and LOG)
rule text as ``-S`` prints it, and :class:`Xt`: our chain, the hook jumps, restore
scripts and teardown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from banpipe.config import HOOKS, FirewallConfig

from .runner import Runner


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
