"""Recording violations (a part of :class:`banpipe.ledger.Ledger`): offenders banned or
extended by them, the fleet decisions they make, and the read positions they came with
(their ``hits`` rows: banpipe.ledger.rows)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from banpipe.bantime import BanPolicy, Rng, extended_expiry, initial_expiry
from banpipe.ledger.model import (
    _INSERT_DECISION,
    _UPSERT_OFFENDER,
    BatchOutcome,
    Offender,
    _offender_row,
)
from banpipe.ledger.rows import HitRows

POSITIONS_KEPT = 16  # per path: the files read most recently (rotation siblings)
# An extension is shared with the fleet (an ``extend`` decision, banshare) at once when
# this connection has written no decision for the address within SHARE_EVERY seconds;
# otherwise the address waits and the first commit SHARE_EVERY after its last decision
# shares its expiry as it then is (the daemon wakes for it: ``share_due_at``). A flood
# then makes one decision a minute per offender instead of one per commit (they were
# most of the whole pipe's extra ledger bytes, bench/README.md), and other gateways'
# copy of an extended ban lags ours by at most SHARE_EVERY seconds.
SHARE_EVERY = 60.0
SHARED_KEPT = 4096  # recent decisions remembered before the stale ones are swept
_INSERT_BAN = "INSERT INTO bans (addr, start, manual, reason) VALUES (?, ?, ?, ?)"


@dataclass
class Plan:
    """A burst's writes, worked out by ``Hits.plan_groups``."""

    out: BatchOutcome
    groups: Mapping[tuple, Sequence]
    now: float
    offenders: list[tuple] = field(default_factory=list)  # every offender as it ends up
    banned: list[tuple] = field(default_factory=list)  # new bans before the burst counts
    ban_rows: list[tuple] = field(default_factory=list)  # their ban periods
    ban_decisions: list[tuple] = field(default_factory=list)  # their ``ban`` decisions
    decisions: list[tuple] = field(default_factory=list)  # ``extend`` decisions


class Hits(HitRows):
    """Violations into ``hits`` rows, with the bans and extensions they cause."""

    _shared: dict[str, float]  # addr -> when this connection last wrote a decision on it
    _unshared: dict[str, float]  # addr -> when its extension not yet shared is due
    _shared_swept: float  # when _shared was last swept of decisions older than SHARE_EVERY

    def record_groups(
        self,
        groups: Mapping[tuple, Sequence],
        now: float,
        policy: BanPolicy,
        rng: Rng,
        *,
        new_ban_budget: int | None = None,
    ) -> BatchOutcome:
        """Record a burst of violations, grouped as banctl's intake gathers them, in one
        transaction; ban or extend as due (``plan_groups`` then ``write_all``).

        An address not yet banned gets a new automated ban while ``new_ban_budget``
        (None: unlimited) lasts; past it the violation is still recorded and the
        address is listed in ``held`` (the spoof brake). A banned address gets its
        expiry extended (permanent bans stay permanent).

        ``groups`` maps ``Violation[:7]`` (every field but ``alert_ts``) to ``(alert_ts
        of the first, count, position of the last, alert_ts of the last)``, in order of
        first occurrence; positions only need to grow along the input. A group joins
        the row of the same violation begun less than ``BUCKET_S`` earlier
        (its count and last times grow), or starts a new row. The result is the same as
        recording the violations one by one: an address is banned by its first
        violation (while the budget lasts) and every later violation of a banned
        address extends the expiry by one random draw (``extended_expiry`` applied once
        per violation), also within one burst: the outcome must not depend on how the
        pipe was chunked. Its reason is that of its last violation that has one.
        Draws are taken address by address (in order of first occurrence), and none
        once an expiry has reached the cap, so with a seeded rng the values can differ
        from a line-by-line loop; their distribution does not. ``extended`` lists the
        addresses in order of first occurrence.

        Every new ban is a ``ban`` decision at once; an extension an ``extend``
        decision at once or within SHARE_EVERY (``share_extensions``).
        """
        if not groups:
            return BatchOutcome()
        with self.transaction():
            plan = self.plan_groups(groups, now, policy, rng, new_ban_budget=new_ban_budget)
            self.write_all(plan)
        return plan.out

    def plan_groups(
        self,
        groups: Mapping[tuple, Sequence],
        now: float,
        policy: BanPolicy,
        rng: Rng,
        *,
        new_ban_budget: int | None = None,
    ) -> Plan:
        """What ``record_groups`` writes, worked out (inside the caller's transaction:
        it reads the offenders) and not yet written: ``write_all``, or ``write_bans``
        then ``write_rest`` in two transactions (banctl apply: the bans durable before
        the firewall call, the rest after it)."""
        plan = Plan(BatchOutcome(), groups, now)
        if not groups:
            return plan
        out = plan.out
        # Per address, in order of first occurrence: [violations, last reason given, its
        # position, the first violation's reason (the one that bans)].
        per_addr: dict[str, list] = {}
        for key, (_ts, count, last, _last_ts) in groups.items():
            a = per_addr.get(key[0])
            if a is None:
                per_addr[key[0]] = [count, key[6], last if key[6] else -1, key[6]]
            else:
                a[0] += count
                if key[6] and last > a[2]:
                    a[1], a[2] = key[6], last
        rows = self._load(list(per_addr))
        recorded = 0
        for addr, (count, reason, _pos, first_reason) in per_addr.items():
            recorded += count
            o = rows.get(addr)
            if o is None:
                o = Offender(addr, now, now, None, 0, 0, False, False, None, None)
            o.last_seen = max(o.last_seen, now)
            o.violations += count
            o.reason = reason or o.reason
            extensions = count
            fresh = False
            if not o.active:
                if new_ban_budget is not None and len(out.new_bans) >= new_ban_budget:
                    out.held.append(addr)
                    extensions = 0
                else:
                    previous = self.recent_bans(addr, now - policy.recidive_window) if o.bans else 0
                    o.active, o.manual, o.origin = True, False, None
                    o.expires = initial_expiry(policy, now, previous)
                    o.bans += 1
                    o.banned_at = now
                    plan.ban_rows.append((addr, now, 0, first_reason))
                    out.new_bans.append(addr)
                    fresh = True
                    extensions = count - 1  # every violation after the banning one
                    # The ban alone, before any of this burst's violations counts: what
                    # write_bans commits. Recording the burst again over it (after a
                    # crash before write_rest, from the recorded position) counts each
                    # violation once; the banning one then extends once more.
                    pre = replace(
                        o, violations=o.violations - count, reason=first_reason or o.reason
                    )
                    plan.banned.append(_offender_row(pre))
            if extensions:
                later = extended_expiry(policy, o.expires, now, rng, extensions)
                if later != o.expires:
                    o.expires = later
                    out.extended.append(addr)
                    if not fresh and self._share_now(addr, now):
                        plan.decisions.append((now, "extend", addr, later, 0, None, None, None))
            if fresh:
                self._note_shared(addr, now)
                plan.ban_decisions.append(
                    (now, "ban", addr, o.expires, 0, first_reason, None, None)
                )
            plan.offenders.append(_offender_row(o))
        out.recorded = recorded
        return plan

    def write_all(self, plan: Plan) -> None:
        """Write a plan in one transaction (the caller's)."""
        self.write_bans(plan)
        self.write_rest(plan)

    def write_bans(self, plan: Plan) -> None:
        """The plan's new bans (offender rows before the burst's violations count, ban
        periods, ``ban`` decisions), in the caller's transaction: what must be durable
        before the firewall call. ``write_rest`` writes the rest."""
        if plan.banned:
            db = self.db
            db.executemany(_UPSERT_OFFENDER, plan.banned)
            db.executemany(_INSERT_BAN, plan.ban_rows)
            db.executemany(_INSERT_DECISION, plan.ban_decisions)

    def write_rest(self, plan: Plan) -> None:
        """What ``write_bans`` left: the offenders as the burst leaves them, its
        ``hits`` rows and its ``extend`` decisions."""
        if not plan.groups:
            return
        self.db.executemany(_UPSERT_OFFENDER, plan.offenders)
        self._add_hits(plan.groups, plan.now)
        if plan.decisions:
            self.db.executemany(_INSERT_DECISION, plan.decisions)

    def _share_now(self, addr: str, now: float) -> bool:
        """Whether an extension of ``addr`` at ``now`` is shared at once (else it waits)."""
        last = self._shared.get(addr)
        if last is not None and 0 <= now - last < SHARE_EVERY:
            self._unshared.setdefault(addr, last + SHARE_EVERY)
            return False
        self._note_shared(addr, now)
        return True

    def _note_shared(self, addr: str, now: float) -> None:
        """A decision on ``addr`` is written at ``now``: nothing of it waits any more."""
        shared = self._shared
        # An address not here is shared at once anyway; swept at most once per
        # SHARE_EVERY (100,000 new bans within a minute would otherwise sweep at each).
        if len(shared) >= SHARED_KEPT and now - self._shared_swept >= SHARE_EVERY:
            self._shared = shared = {a: t for a, t in shared.items() if now - t < SHARE_EVERY}
            self._shared_swept = now
        shared[addr] = now
        self._unshared.pop(addr, None)

    def share_due_at(self) -> float | None:
        """When the first waiting extension is due to be shared (None: none waits)."""
        return min(self._unshared.values()) if self._unshared else None

    def share_extensions(self, now: float, *, every: bool = False) -> int:
        """Write an ``extend`` decision with the current expiry for each address whose
        waiting extension is due (``every``: all of them, at a stop). Returns how many
        were written."""
        waiting = self._unshared
        due = [a for a, t in waiting.items() if every or t <= now]
        if not due:
            return 0
        rows = []
        with self.transaction() as db:
            for o in self._load(due).values():
                if o.active:  # lifted meanwhile: its unban or expiry says the rest
                    rows.append((now, "extend", o.addr, o.expires, 0, None, None, None))
            db.executemany(_INSERT_DECISION, rows)
        for a in due:
            self._note_shared(a, now)
        return len(rows)

    def record_positions(self, rows: Iterable[tuple[str, str, int, str]]) -> None:
        """Record read positions ``(path, ident, offset, position JSON)``, in order.

        Called inside the transaction that records the violations read before them,
        so both are durable together or not at all. Only the ``POSITIONS_KEPT`` most
        recent files per path are kept.
        """
        with self.transaction() as db:
            seq = int(db.execute("SELECT coalesce(max(seq), 0) FROM positions").fetchone()[0])
            paths = set()
            for path, ident, offset, position in rows:
                seq += 1
                paths.add(path)
                db.execute(
                    "INSERT OR REPLACE INTO positions (path, ident, offset, position, seq) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (path, ident, offset, position, seq),
                )
            for path in paths:
                db.execute(
                    "DELETE FROM positions WHERE path = ? AND seq NOT IN (SELECT seq FROM "
                    "positions WHERE path = ? ORDER BY seq DESC LIMIT ?)",
                    (path, path, POSITIONS_KEPT),
                )
