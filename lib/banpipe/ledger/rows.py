"""The ``hits`` rows of recorded violations (a part of :class:`banpipe.ledger.Ledger`):
texts interned, identical violations within BUCKET_S counted into one row, their growth
appended to ``hits_more`` and folded in bulk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from banpipe.ledger.reads import Reads
from banpipe.ledger.schema import BUCKET_S, MORE_BY_HIT
from banpipe.ledger.stamps import last_code, stamp_code

TEXTS_CACHED = 1 << 16  # text -> id entries a connection remembers (then starts over)
# Growth waits in hits_more until this many rows (a fold costs a pass over the rows it
# touches: in a flood one per FOLD_ROWS instead of one per commit) or FOLD_S seconds.
FOLD_ROWS = 50_000
FOLD_S = 60.0
_HIT_COLUMNS = "id, addr, count, sig, msg, priority, victim, reversed, reason, first, alert_first"
# A row of one alert has no last times: they are NULL by the statement, not bound as
# None (sqlite3 looks for an adapter for every None it binds, two failed attribute
# lookups: about a fifth of an insert's cost), so every new row goes in one statement
# with ascending ids (appended, pages filled). ?3 is the count, ?10 banctl's time.
_INSERT_HIT = (
    f"INSERT INTO hits ({_HIT_COLUMNS}, last, alert_last) "  # noqa: S608
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
    "CASE WHEN ?3 > 1 THEN ?10 END, CASE WHEN ?3 > 1 THEN ?12 END)"
)
# The fold in one statement: no Python tuple per grown row, nothing bound (issue 12).
# Growth of a row deleted meanwhile finds no row to join and goes with the DELETE.
_FOLD = (
    "UPDATE hits SET count = hits.count + x.count, last = x.last, "  # noqa: S608
    f"alert_last = x.alert_last FROM ({MORE_BY_HIT}) AS x WHERE hits.id = x.hit"
)


class HitRows(Reads):
    """Violation groups into ``hits`` rows (inside the caller's transaction)."""

    _text_ids: dict[str, int]
    _open: dict[tuple, tuple[int, int | str | None, float]]
    _open_swept: float
    _pending: int | None  # rows in hits_more (None: not counted since the last rollback)
    _grown: float | None  # banctl's clock at the oldest growth not folded (None: unknown)
    _version: int | None  # PRAGMA data_version when this connection last asked

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
        if self._others_committed():  # checked first: nothing below reads before it
            self._forget_deleted(groups, now)
        # Open rows are keyed by the group key itself (texts, not their ids): a
        # violation that repeats within BUCKET_S (most of a flood) costs one lookup;
        # only a new row's texts are interned (bench/README.md, issue 12). One pass,
        # each group straight to its statement's tuple: a group costs no other object.
        opened = self._open
        db = self.db
        n = db.execute("SELECT max(id) FROM hits").fetchone()[0] or 0
        ids, tid = self._text_ids.get, self._text_id
        more: list[tuple] = []
        rows: list[tuple] = []
        for k, g in groups.items():
            row = opened.get(k)
            if row is not None and 0 <= now - row[2] < BUCKET_S:
                more.append((row[0], g[1], now, last_code(row[1], g[3])))
                continue
            # (addr, sig, msg, priority, victim, reversed, reason), texts interned
            a, sig, msg, prio, victim, rev, why = k
            first = stamp_code(g[0])
            count = g[1]
            n += 1
            opened[k] = (n, first, now)
            rows.append((
                n, ids(a) or tid(a), count,
                None if sig is None else ids(sig) or tid(sig),
                None if msg is None else ids(msg) or tid(msg),
                prio,
                None if victim is None else ids(victim) or tid(victim),
                int(rev),
                None if why is None else ids(why) or tid(why),
                now, first,
                # alert_last: unused (0) for one alert, None when the last is the first
                0 if count == 1 else last_code(first, g[3]) if g[3] != g[0] else None,
            ))  # fmt: skip
        if more:
            db.executemany("INSERT INTO hits_more VALUES (?, ?, ?, ?)", more)
            self._pending = self.pending_growth() + len(more)
            if self._grown is None:
                self._grown = now
            if self._pending >= FOLD_ROWS or now - self._grown >= FOLD_S:
                self.fold(now)
        if rows:
            db.executemany(_INSERT_HIT, rows)

    def _forget_deleted(self, groups: Mapping[tuple, Sequence], now: float) -> None:
        """Another connection committed since our last look (or this is our first
        write): a prune or an unban with retention 0 may have deleted open rows that
        ``groups`` would grow. Their growth goes with them (the fold drops it: no later
        row takes their ids and their growth), and those groups start rows anew."""
        if self.pending_growth():
            self.fold(now)
        opened = self._open
        mine = {row[0]: k for k in groups if (row := opened.get(k)) is not None}
        there = set(self._column_in("SELECT id FROM hits WHERE id IN ", list(mine)))
        for row_id, k in mine.items():
            if row_id not in there:
                del opened[k]

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
        db.execute(_FOLD)
        db.execute("DELETE FROM hits_more")
        self._pending = 0
        self._grown = None

    def _addr_hits(self, addrs: Sequence[str]) -> list[int]:
        """Row ids in ``hits`` of the violations of ``addrs``."""
        ids = self._column_in("SELECT id FROM texts WHERE text IN ", list(addrs))
        return self._column_in("SELECT id FROM hits WHERE addr IN ", ids)
