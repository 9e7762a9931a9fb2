"""Bans that aggregate: from several banned IPv6 addresses of one prefix to the prefix.

An IPv6 host can take a new address from its /64 for every connection, so banning its
addresses one by one never ends. With ``[ban] escalate_count = N`` (0, the default,
turns this off), when N distinct addresses of one ``escalate_prefix`` (64) network
have been banned within ``escalate_window``, banctl bans the whole network: an
automated ban that lasts as long as the longest of those addresses' bans (permanent
when one is), with the reason naming the count. The network is checked as a whole
first: a range that holds any protected address (ours, a gateway, the whitelist, a
special range; :meth:`banpipe.protect.Protection.range_reason`) is never banned, and
that is said once per network. IPv4 is never escalated (one IPv4 address is often
many hosts behind NAT, a range of them many customers).

:class:`Escalation` is fed the new bans after their commit (``Enforcer.block``) and
returns the ranges it banned; the addresses keep their own bans and entries (the range
covers them, :class:`banpipe.address.Ranges`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from banpipe import cli
from banpipe.address import prefix
from banpipe.bantime import format_remaining

Protection = Callable[[], Any]


class Escalation:
    """Counts recent bans per IPv6 prefix and bans a prefix at ``count`` addresses."""

    def __init__(
        self,
        ledger: Any,
        protection: Protection,
        report: Any,
        *,
        plen: int,
        count: int,
        window: float,
    ) -> None:
        self.ledger = ledger
        self.protection = protection  # called when a prefix is due (the WAN may change)
        self.report = report
        self.plen = plen
        self.count = count
        self.window = window
        self.recent: dict[str, dict[str, float]] = {}  # prefix -> address -> banned at
        self.refused: set[str] = set()  # prefixes said to be protected once already

    @classmethod
    def from_env(cls, env: Any, ledger: Any) -> Escalation | None:
        """The escalation ``[ban]`` asks for, seeded with the ledger's recent bans (a
        restart does not reset the count); None when it is off."""
        ban = env.config.ban
        if int(ban.escalate_count) <= 0:
            return None
        esc = cls(
            ledger,
            env.protection,
            env.report,
            plen=int(ban.escalate_prefix),
            count=int(ban.escalate_count),
            window=float(ban.escalate_window),
        )
        now = env.clock()
        esc.note(ledger.recent_bans_v6(now - esc.window), now)
        return esc

    def note(self, bans: Iterable[tuple[str, float]], now: float) -> list[str]:
        """Count ``(address, banned at)``; returns the prefixes that reached the count."""
        due: list[str] = []
        horizon = now - self.window
        for addr, at in bans:
            if ":" not in addr or "/" in addr or at < horizon:
                continue
            net = prefix(addr, self.plen)
            seen = self.recent.setdefault(net, {})
            seen[addr] = at
            for a in [a for a, t in seen.items() if t < horizon]:
                del seen[a]
            if len(seen) >= self.count and net not in due:
                due.append(net)
        # Forget prefixes whose bans all left the window (memory stays bounded).
        for net in [n for n, seen in self.recent.items() if max(seen.values()) < horizon]:
            del self.recent[net]
        return due

    def consider(self, new_bans: Iterable[str], now: float) -> list[str]:
        """After new bans were committed: ban the prefixes that reached the count (in
        the ledger, one transaction each); returns them for the firewall. The caller
        holds ``ledger.locked()``."""
        banned: list[str] = []
        for net in self.note(((a, now) for a in new_bans), now):
            current = self.ledger.get(net)
            if current is not None and current.active:
                continue
            why = self.protection().range_reason(net)
            if why is not None:
                if net not in self.refused:
                    self.refused.add(net)
                    self.report.say(net, f"not escalating to the range: {why}", level=cli.WARNING)
                continue
            members = sorted(self.recent[net])
            expires = self._expiry(members)
            reason = (
                f"escalated: {len(members)} addresses of {net} banned within "
                f"{format_remaining(self.window)}"
            )
            self.ledger.ban(net, now, expires=expires, reason=reason, manual=False)
            del self.recent[net]
            banned.append(net)
            self.report.say(net, f"range banned: {reason} (first {members[0]})")
        return banned

    def _expiry(self, members: list[str]) -> float | None:
        """The longest of the members' bans: None (permanent) when one is."""
        ends = []
        for a in members:
            o = self.ledger.get(a)
            if o is not None and o.active:
                if o.expires is None:
                    return None
                ends.append(o.expires)
        return max(ends) if ends else None
