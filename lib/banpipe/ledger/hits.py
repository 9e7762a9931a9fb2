"""Recording violations (a part of :class:`banpipe.ledger.Ledger`): offenders banned or
extended by them, their ``hits`` rows, and the read positions they came with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from banpipe.bantime import BanPolicy, Rng, extended_expiry, initial_expiry
from banpipe.ledger.model import (
    _INSERT_DECISION,
    _UPSERT_OFFENDER,
    BatchOutcome,
    Offender,
    _offender_row,
)
from banpipe.ledger.reads import Reads
from banpipe.ledger.schema import BUCKET_S, MORE_BY_HIT
from banpipe.ledger.stamps import last_code, stamp_code

TEXTS_CACHED = 1 << 16  # text -> id entries a connection remembers (then starts over)
POSITIONS_KEPT = 16  # per path: the files read most recently (rotation siblings)
# Growth waits in hits_more until this many rows (a fold costs a pass over the rows it
# touches: in a flood one per FOLD_ROWS instead of one per commit) or FOLD_S seconds.
FOLD_ROWS = 50_000
FOLD_S = 60.0
# An extension is shared with the fleet (an ``extend`` decision, banshare) at once when
# this connection has written no decision for the address within SHARE_EVERY seconds;
# otherwise the address waits and the first commit SHARE_EVERY after its last decision
# shares its expiry as it then is (the daemon wakes for it: ``share_due_at``). A flood
# then makes one decision a minute per offender instead of one per commit (they were
# most of the whole pipe's extra ledger bytes, bench/README.md), and other gateways'
# copy of an extended ban lags ours by at most SHARE_EVERY seconds.
SHARE_EVERY = 60.0
SHARED_KEPT = 4096  # recent decisions remembered before the stale ones are swept
_HIT_COLUMNS = "id, addr, count, sig, msg, priority, victim, reversed, reason, first, alert_first"
_INSERT_HIT = f"INSERT INTO hits ({_HIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_INSERT_HIT_LAST = (
    f"INSERT INTO hits ({_HIT_COLUMNS}, last, alert_last) "  # noqa: S608
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FOLDED = "SELECT count, last, alert_last, hit FROM (" + MORE_BY_HIT + ") ORDER BY hit"  # noqa: S608


def _row_id(update: tuple) -> int:
    return update[3]


class Hits(Reads):
    """Violations into ``hits`` rows, with the bans and extensions they cause."""

    _text_ids: dict[str, int]
    _open: dict[tuple, tuple[int, int | str | None, float]]
    _open_swept: float
    _pending: int | None  # rows in hits_more (None: not counted since the last rollback)
    _grown: float | None  # banctl's clock at the oldest growth not folded (None: unknown)
    _version: int | None  # PRAGMA data_version when this connection last asked
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
        transaction; ban or extend as due.

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
        out = BatchOutcome()
        if not groups:
            return out
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
        with self.transaction() as db:
            rows = self._load(list(per_addr))
            offender_rows = []
            ban_rows = []
            decisions: list[tuple] = []  # one per address banned or extended (banshare)
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
                        previous = (
                            self.recent_bans(addr, now - policy.recidive_window) if o.bans else 0
                        )
                        o.active, o.manual, o.origin = True, False, None
                        o.expires = initial_expiry(policy, now, previous)
                        o.bans += 1
                        o.banned_at = now
                        ban_rows.append((addr, now, 0, first_reason))
                        out.new_bans.append(addr)
                        fresh = True
                        extensions = count - 1  # every violation after the banning one
                if extensions:
                    later = extended_expiry(policy, o.expires, now, rng, extensions)
                    if later != o.expires:
                        o.expires = later
                        out.extended.append(addr)
                        if not fresh and self._share_now(addr, now):
                            decisions.append((now, "extend", addr, later, 0, None, None, None))
                if fresh:
                    self._note_shared(addr, now)
                    decisions.append((now, "ban", addr, o.expires, 0, first_reason, None, None))
                offender_rows.append(_offender_row(o))
            db.executemany(_UPSERT_OFFENDER, offender_rows)
            self._add_hits(groups, now)
            db.executemany(
                "INSERT INTO bans (addr, start, manual, reason) VALUES (?, ?, ?, ?)", ban_rows
            )
            db.executemany(_INSERT_DECISION, decisions)
            out.recorded = recorded
        return out

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

    def _text_id(self, text: str) -> int:
        """The ``texts`` id of ``text``, added when new (inside a transaction)."""
        found = self._text_ids.get(text)
        if found is not None:
            return found
        row = self.db.execute("SELECT id FROM texts WHERE text = ?", (text,)).fetchone()
        if row is None:
            found = self.db.execute("INSERT INTO texts (text) VALUES (?)", (text,)).lastrowid
        else:
            found = row[0]
        if len(self._text_ids) >= TEXTS_CACHED:
            self._text_ids = {}
        self._text_ids[text] = found
        return found

    def _add_hits(self, groups: Mapping[tuple, Sequence], now: float) -> None:
        """Count ``groups`` into the rows of ``hits`` (inside a transaction): a new row
        per violation not seen within BUCKET_S, else its growth into ``hits_more``."""
        if now - self._open_swept >= BUCKET_S:  # forget rows that cannot grow any more
            self._open = {k: r for k, r in self._open.items() if now - r[2] < BUCKET_S}
            self._open_swept = now
        # Open rows are keyed by the group key itself (texts, not their ids): a
        # violation that repeats within BUCKET_S (most of a flood) costs one lookup;
        # only a new row's texts are interned (bench/README.md, issue 12).
        opened = self._open
        more: list[tuple] = []
        grown: dict[int, tuple[tuple, Sequence]] = {}  # row id -> (key, group)
        fresh: list[tuple[tuple, Sequence]] = []
        for k, g in groups.items():
            row = opened.get(k)
            if row is None or now - row[2] >= BUCKET_S or now < row[2]:
                fresh.append((k, g))
            else:
                more.append((row[0], g[1], now, last_code(row[1], g[3])))
                grown[row[0]] = (k, g)
        db = self.db
        if self._others_committed():
            # Another connection committed since our last look (or this is our first
            # write): a prune or an unban with retention 0 may have deleted rows we would
            # add to. Their growth goes with them (the fold drops it: no later row takes
            # their ids and their growth), and those that grow now start anew.
            if self.pending_growth():
                self.fold(now)
            there = set(self._column_in("SELECT id FROM hits WHERE id IN ", list(grown)))
            if len(there) != len(grown):
                more = [m for m in more if m[0] in there]
                for row_id, (k, g) in grown.items():
                    if row_id not in there:
                        del opened[k]
                        fresh.append((k, g))
        if more:
            db.executemany("INSERT INTO hits_more VALUES (?, ?, ?, ?)", more)
            self._pending = self.pending_growth() + len(more)
            if self._grown is None:
                self._grown = now
            if self._pending >= FOLD_ROWS or now - self._grown >= FOLD_S:
                self.fold(now)
        if not fresh:
            return
        top = db.execute("SELECT max(id) FROM hits").fetchone()[0] or 0
        text_ids, tid = self._text_ids, self._text_id
        once, rows = [], []  # rows of one alert whose texts are all there; the others
        for k, g in fresh:
            # (addr, sig, msg, priority, victim, reversed, reason), texts interned
            a, sig, msg, prio, victim, rev, why = k
            first = stamp_code(g[0])
            row = [
                k, text_ids.get(a) or tid(a), g[1],
                None if sig is None else text_ids.get(sig) or tid(sig),
                None if msg is None else text_ids.get(msg) or tid(msg),
                prio,
                None if victim is None else text_ids.get(victim) or tid(victim),
                int(rev),
                None if why is None else text_ids.get(why) or tid(why),
                now, first,
            ]  # fmt: skip
            if g[1] > 1:
                row += (now, last_code(first, g[3]) if g[3] != g[0] else None)
                rows.append(row)
            elif None in row:
                row += (None, None)
                rows.append(row)
            else:
                once.append(row)
        # sqlite3 looks for an adapter for every None it binds (two failed attribute
        # lookups, about a fifth of an insert's cost): a row of one alert leaves its
        # last times out instead of binding them as NULL. Ids stay ascending in each
        # statement (appended, pages filled), so those rows take the commit's first ids.
        n = top
        for batch in (once, rows):
            for row in batch:
                n += 1
                opened[row[0]] = (n, row[10], now)
                row[0] = n
        db.executemany(_INSERT_HIT, once)
        db.executemany(_INSERT_HIT_LAST, rows)

    def _others_committed(self) -> bool:
        """Whether another connection committed since this one last asked."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._version
        self._version = version
        return changed

    def pending_growth(self) -> int:
        """Rows of ``hits_more`` not yet folded into ``hits``."""
        if self._pending is None:
            self._pending = int(self.db.execute("SELECT count(*) FROM hits_more").fetchone()[0])
        return self._pending

    def fold(self, now: float) -> None:
        """Fold ``hits_more`` into ``hits`` (inside a transaction): one pass in row order,
        however many commits the growth came in. Before rows are deleted, and once
        FOLD_ROWS rows wait or the oldest has waited FOLD_S seconds."""
        db = self.db
        rows = db.execute(_FOLDED).fetchall()
        db.executemany(
            "UPDATE hits SET count = count + ?, last = ?, alert_last = ? WHERE id = ?", rows
        )
        db.execute("DELETE FROM hits_more")
        self._pending = 0
        self._grown = None

    def _addr_hits(self, addrs: Sequence[str]) -> list[int]:
        """Row ids in ``hits`` of the violations of ``addrs``."""
        ids = self._column_in("SELECT id FROM texts WHERE text IN ", list(addrs))
        return self._column_in("SELECT id FROM hits WHERE addr IN ", ids)

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
