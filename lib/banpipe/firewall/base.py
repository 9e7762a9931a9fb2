"""What the kernel backends (ipset, iptables, nftables) share.

``NetfilterBackend`` holds what each is built from: the settings, the command runner,
the conntrack flusher and banctl's long-lived netlink channel (``nfnl.Channel``, None
when none could be opened). ``XtBackend`` adds the iptables/ip6tables chain both ipset
and iptables hook in (``xt.Xt``): its creation, its structure check and its teardown.
Each backend module then keeps only its own nouns (sets, rules, elements), one mixin
per noun where a class would otherwise pass ~200 lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from banpipe import address
from banpipe.config import FirewallConfig

from .runner import CommandNotFound, Runner
from .xt import Family, Xt, families

if TYPE_CHECKING:  # nfnl (netlink) is imported only where a channel is opened
    from .nfnl import Channel

log = logging.getLogger("banpipe.firewall")


class NetfilterBackend:
    """The parts every kernel backend is made of (see the module doc)."""

    name = ""

    def __init__(
        self, settings: FirewallConfig, runner: Runner, channel: Channel | None = None
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.conntrack = ConntrackFlusher(runner)
        self.channel = channel

    def _online(self) -> bool:
        """True when the netlink channel can be used now (else the tools are run)."""
        return self.channel is not None and self.channel.ready()

    def _flows(self, added: list[str]) -> None:
        """End the established flows of newly blocked entries, when configured."""
        if added and self.settings.conntrack_flush:
            self.conntrack(added)


class XtBackend(NetfilterBackend):
    """A backend whose bans sit in our iptables/ip6tables chain (ipset's set matches,
    iptables' per-address rules)."""

    def __init__(
        self, settings: FirewallConfig, runner: Runner, channel: Channel | None = None
    ) -> None:
        super().__init__(settings, runner, channel)
        self.xt = Xt(settings, runner)

    def _xt_init(self, chain_rules: Callable[[Family], list[str] | None]) -> None:
        """Create or fix our chain and hook jumps per family, one restore each;
        ``chain_rules(fam)``: the exact rules the chain must hold, or None when its
        rules are the entries (left alone)."""
        for fam in families(self.settings):
            lines = self.xt.structure_lines(self.xt.list_table(fam), chain_rules(fam))
            if lines:
                self.xt.restore(fam, lines)

    def close(self, teardown: bool = True) -> None:
        if teardown:
            self.xt.teardown()


class ConntrackFlusher:
    """Delete conntrack entries of newly blocked sources, so established flows stop too.

    Each ``conntrack -D -s ADDR`` walks the whole conntrack table in the kernel (about
    10 ms even when empty), so the table is listed once first (``conntrack -L``) and only
    addresses that have flows get their ``-D``; a range's flows are those of the listed
    sources inside it (``-D`` takes one address). Exit 1 ("0 flow entries have been
    deleted") is fine; a missing conntrack binary is warned about once and never fails
    the block.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.missing = False

    def __call__(self, addrs: Iterable[str]) -> None:
        addrs = list(addrs)
        if self.missing or not addrs:
            return
        try:
            listing = self.runner(["conntrack", "-L"], check=False)
        except CommandNotFound:
            self.missing = True
            log.warning("conntrack not found; established flows of banned hosts are kept")
            return
        if listing.returncode != 0:
            log.warning("conntrack -L failed: %s", " ".join(listing.stderr.split()))
            return
        sources = conntrack_sources(listing.stdout)
        ranges = address.Ranges([a for a in addrs if "/" in a])
        hosts = {a for a in addrs if "/" not in a}
        failed: list[str] = []
        inside = sorted(s for s in sources if s not in hosts and ranges.covers(s))
        for a in [a for a in addrs if a in hosts and a in sources] + inside:
            proc = self.runner(["conntrack", "-D", "-s", a], check=False)
            if proc.returncode not in (0, 1):
                failed.append(f"{a}: {' '.join(proc.stderr.split())}")
        if failed:
            log.warning("conntrack -D failed for %d address(es), first %s", len(failed), failed[0])


def conntrack_sources(text: str) -> set[str]:
    """Original-direction source addresses in ``conntrack -L`` output."""
    out: set[str] = set()
    for line in text.splitlines():
        for token in line.split():
            if token.startswith("src="):
                addr = address.entry(token[4:])
                if addr is not None:
                    out.add(addr)
                break  # the first src= is the original direction's
    return out
