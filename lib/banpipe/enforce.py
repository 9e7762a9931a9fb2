"""``banctl apply``'s enforcing part: the firewall follows the ledger.

:class:`Enforcer` restores the firewall at start-up, applies each change after its
ledger commit, lifts bans when they expire, checks for drift every ``[banctl]
check_interval`` and repairs it at once when the kernel says our part of the firewall
changed (banpipe.fwevents), and on an orderly stop removes or keeps the automated
entries by ``[ban] on_stop``. A firewall that fails a change is reported and repaired
at the next check: the ledger already holds the truth.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from banpipe import cli
from banpipe.ctlenv import Env
from banpipe.escalate import Escalation
from banpipe.ledger import Ledger, LedgerError
from banpipe.reconcile import (
    Drift,
    firewall_error,
    lift,
    lift_wan_bans,
    reconcile,
    remove_automated,
)
from banpipe.reconcile import block as block_making_room
from banpipe.reconcile import restore as restore_firewall


class Enforcer:
    """The firewall side of the daemon; ``fw`` is the monitor-wrapped backend."""

    def __init__(
        self, env: Env, ledger: Ledger, fw: Any, monitor: Any, counts: Counter[str], ours: Any
    ) -> None:
        self.env = env
        self.ledger = ledger
        self.fw = fw
        self.monitor = monitor
        self.counts = counts
        self.ours = ours  # called after each of our own ledger commits
        self.report = env.report
        self.check_interval = max(1.0, float(env.config.banctl.check_interval))
        self.next_check = 0.0
        self.events: Any = None  # fwevents.FirewallEvents, when the kernel has them
        self.escalation: Escalation | None = None  # [ban] escalate_count > 0, after start

    def start(self) -> tuple[list[str], Drift]:
        """Create our structure, lift lapsed bans and our WAN addresses, restore the
        rest; returns (lapsed, drift before repair)."""
        lapsed, _wan, drift = restore_firewall(self.env, self.ledger, self.fw)
        # The restore's own notifications, forgotten before "started" is said: a wipe
        # after that line was discarded with them (bench_durability: not repaired).
        self.own_events()
        self.escalation = Escalation.from_env(self.env, self.ledger)
        return lapsed, drift

    def started(self) -> None:
        """After the start-up report: prune old history, schedule the first check."""
        self.prune()
        self.next_check = time.monotonic() + self.check_interval

    def stop(self, *, orderly: bool) -> str:
        """Remove or keep the firewall entries by ``[ban] on_stop``; says which."""
        if orderly and self.env.config.ban.on_stop == "remove":
            with self.ledger.locked():
                removed, manual = remove_automated(self.ledger, self.fw, thorough=False)
            kept = (
                f", {cli.plural(manual, 'manual ban')} kept"
                if manual
                else ", with banpipe's chain/sets/table (no manual ban left)"
            )
            return f"{cli.plural(removed, 'automated entry', 'automated entries')} removed{kept}"
        self.fw.close(teardown=False)
        if orderly:
            return 'firewall entries kept (on_stop = "keep")'
        return "firewall entries kept (no orderly stop)"

    def apply(self, action: Callable[[list[str]], None], addrs: list[str]) -> None:
        """A firewall change after its ledger commit. On failure the ledger already
        holds the truth: report it and let the periodic check repair within seconds."""
        try:
            action(addrs)
        except firewall_error() as exc:
            self.report.error("firewall", f"{exc}; repairing at the next check", "firewall")
            self.next_check = min(self.next_check, time.monotonic() + 2.0)
        self.own_events()

    def block(self, addrs: list[str]) -> None:
        """New bans into the firewall, after their commit (under the ledger's lock); then
        the ranges they make due (banpipe.escalate), banned and blocked the same way."""
        self.apply(self._block, addrs)
        if self.escalation is not None:
            ranges = self.escalation.consider(addrs, self.env.clock())
            if ranges:
                self.counts["escalated"] += len(ranges)
                self.apply(self._block, ranges)

    def _block(self, addrs: list[str]) -> None:
        """A full set makes room (reconcile.block)."""
        evicted = block_making_room(self.env, self.ledger, self.fw, addrs)
        self.counts["evicted"] += len(evicted)

    def guarded(self, action: Callable[[], None]) -> None:
        """Run a periodic action; a firewall hiccup is reported and retried soon."""
        try:
            action()
        except firewall_error() as exc:
            self.report.error("firewall", f"{exc}; retrying", "firewall")
            self.next_check = time.monotonic() + min(5.0, self.check_interval)

    def expire_due(self) -> None:
        now = self.env.clock()
        nxt = self.ledger.next_expiry()
        if nxt is None or nxt > now:
            return
        try:
            with self.ledger.locked():
                due = self.ledger.expire(now, retention=self.env.retention)
                if due:
                    self.apply(lambda due: lift(self.fw, due, self.ledger), due)
        except (LedgerError, sqlite3.Error):
            return  # cannot write: the bans stay, in the ledger and the firewall alike
        self.counts["expired"] += len(due)
        if 0 < len(due) <= 20:
            for a in due:
                self.report.say(a, "ban expired, lifted")
        elif due:
            self.report.say(None, f"{len(due)} bans expired, lifted")
        self.ours()

    def check_due(self) -> bool:
        """The periodic check, when it is due; True when it ran."""
        if time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + self.check_interval
        self.guarded(self.periodic)
        return True

    def periodic(self) -> None:
        """Drift check and repair (an external flush), then history pruning."""
        self.repair("firewall drift repaired")
        self.prune()

    def repair(self, said: str) -> None:
        with self.ledger.locked():
            drift = reconcile(self.ledger, self.fw, self.env)
        self.monitor.checked(drift)
        if self.events is not None and self.events.read():
            # Changes to our part while we repaired: our own, or a wipe by someone else
            # meanwhile (firewalld's reload rewrites ip, then ip6, with a repair of the
            # first in between), which cannot be told apart here. Look once more at
            # once: a clean look changes nothing, so this ends.
            self.next_check = time.monotonic()
        if not drift.clean:
            self.report.say(None, f"{said}: {drift.summary()}", level=cli.WARNING)

    def prune(self) -> None:
        ban = self.env.config.ban
        with contextlib.suppress(LedgerError, sqlite3.Error):  # a full disk: next time
            self.ledger.prune(
                self.env.clock(),
                retention=float(ban.retention),
                recidive_window=float(ban.recidive_window),
            )

    def lift_wan(self, added: Iterable[str]) -> None:
        """New WAN addresses of ours: lift any ban on them."""
        lift_wan_bans(self.env, self.ledger, self.fw, added)

    def deadlines(self, now: float, mono: float) -> list[float]:
        """Seconds until the periodic check and until the next expiry."""
        out = [self.next_check - mono]
        nxt = self.ledger.next_expiry()
        if nxt is not None:
            out.append(nxt - now)
        return out

    # -- firewall change events ----------------------------------------------------

    def open_events(self) -> None:
        """Listen for our part of the firewall being taken away (banpipe.fwevents)."""
        if self.fw.name not in ("iptables", "ipset", "nftables"):
            return
        from banpipe.fwevents import Concern, FirewallEvents, unannounced

        s = self.env.config.firewall
        why = None
        if self.fw.name != "nftables":
            try:
                version = self.fw.runner(["iptables", "-V"], check=False).stdout
            except firewall_error() as exc:
                version = str(exc)
            why = unannounced(self.fw.name, version)
        try:
            if why is None:
                self.events = FirewallEvents(Concern(self.fw.name, s.table, s.chain, s.hooks))
        except OSError as exc:
            why = str(exc.strerror or exc)
        if why is not None:
            self.report.say(
                None,
                f"no firewall change events ({why}); drift is repaired at the periodic "
                f"check only (every {self.check_interval:g} s)",
                level=cli.WARNING,
            )

    def own_events(self) -> None:
        """Forget the notifications of our own changes (they were queued before the
        change returned): only changes by others should trigger a repair."""
        if self.events is not None:
            self.events.read()

    def firewall_changed(self) -> None:
        """A notification: something of ours vanished (flush, reload). Repair now."""
        if self.events is not None and self.events.read():
            self.guarded(lambda: self.repair("firewall changed from outside; repaired"))

    def close_events(self) -> None:
        if self.events is not None:
            self.events.close()
