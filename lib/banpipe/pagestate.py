"""What the pages under DIR were made from: ``DIR/.banpipe-pages.sqlite3``, ATTACHed to
the ledger's connection for a page run (:func:`banpipe.report.write_pages`).

It keeps, per offender, the ledger's values its files were written from (``seen``:
the offender's row; ``kept``: count and newest id of its violation records, by the
address's interned id; ``periods``: its ban periods); the list rows in list order
(``list``: each row's HTML, made once when its offender changed); per list page
("leaf"), the first key of its range and when a time left on it changes text next;
the index's summary and when it was read (``meta``). The changed offenders then
come out of three SQL joins against the ledger (each a scan of one index and a
primary-key probe per row), not 100,000 Python rows: about 0.3 s of CPU at 100,000
offenders with nothing changed, where the Python rows and JSON manifest they replace
took 1.5 s (bench/README.md).

The list pages are the leaves of a B-tree over the active bans' order (expiry, then
address; permanent bans last): a change touches the leaf it left and the one it
joined, not every page after it, as fixed pages of 500 would (a ban extended moves to
the end of the list and shifts every row between). A leaf grows to ``2 * rows`` and
then splits; an empty leaf goes. Nothing in it is precious: when it is missing,
unreadable or of another version, the next run writes every page again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from banpipe.ledger import Ledger

FILE = ".banpipe-pages.sqlite3"
VERSION = 2  # 2: a list row's head ends with its exact expiry
PERMANENT = 1e300  # the expiry key of a permanent ban: after every timed one
FIRST = (-1e300, "")  # the key the first leaf starts at, whatever its row says
LAST = (1e301, "")  # after every key

_SCHEMA = (
    "CREATE TABLE pg.seen (addr TEXT PRIMARY KEY, last_seen, active, expires, violations, "
    "bans, manual, origin, reason) WITHOUT ROWID",
    # The active bans' rows in list order, each as HTML before and after its expiry
    # cell: a page is one range read, in order (through an index of seen: 3x slower).
    "CREATE TABLE pg.list (k_exp REAL, addr TEXT, expires REAL, head TEXT, tail TEXT, "
    "PRIMARY KEY (k_exp, addr)) WITHOUT ROWID",
    "CREATE TABLE pg.meta (key TEXT PRIMARY KEY, at REAL, value TEXT)",
    "CREATE TABLE pg.kept (aid INTEGER PRIMARY KEY, n, newest)",
    "CREATE TABLE pg.periods (addr TEXT PRIMARY KEY, n) WITHOUT ROWID",
    "CREATE TABLE pg.leaves (id INTEGER PRIMARY KEY, lo_exp REAL NOT NULL, "
    "lo_addr TEXT NOT NULL, n INTEGER NOT NULL, fresh_until REAL, prev INTEGER, next INTEGER)",
)
_COLUMNS = ("last_seen", "active", "expires", "violations", "bans", "manual", "origin", "reason")
_DIFF_SEEN = (
    f"SELECT o.addr, {', '.join('o.' + c for c in _COLUMNS)}, s.active, s.expires "  # noqa: S608
    "FROM main.offenders o "
    "LEFT JOIN pg.seen s ON s.addr = o.addr WHERE s.addr IS NULL OR "
    + " OR ".join(f"s.{c} IS NOT o.{c}" for c in _COLUMNS)
)
_UPSERT_SEEN = (
    "INSERT INTO pg.seen VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (addr) DO UPDATE SET "  # noqa: S608
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS)
)
_LISTED = (
    "SELECT expires, head, tail, k_exp, addr FROM pg.list "
    "WHERE (k_exp, addr) >= (?, ?) AND (k_exp, addr) < (?, ?) ORDER BY k_exp, addr LIMIT ?"
)
_DIFF_KEPT = (
    "SELECT x.aid, x.n, x.newest FROM (SELECT addr AS aid, count(*) AS n, max(id) AS newest "
    "FROM main.hits GROUP BY addr) x LEFT JOIN pg.kept s ON s.aid = x.aid "
    "WHERE s.aid IS NULL OR s.n IS NOT x.n OR s.newest IS NOT x.newest"
)
_DIFF_PERIODS = (
    "SELECT x.addr, x.n FROM (SELECT addr, count(*) AS n FROM main.bans GROUP BY addr) x "
    "LEFT JOIN pg.periods s ON s.addr = x.addr WHERE s.addr IS NULL OR s.n IS NOT x.n"
)

# (ledger table, state column, what the state's rows add up to, the vanished ones:
# state key and address)
_VANISHED = (
    ("hits", "aid", "sum(n)", "SELECT k.aid, t.text FROM pg.kept k LEFT JOIN main.texts t "
     "ON t.id = k.aid WHERE NOT EXISTS (SELECT 1 FROM main.hits h WHERE h.addr = k.aid)"),
    ("bans", "addr", "sum(n)", "SELECT p.addr, p.addr FROM pg.periods p WHERE NOT EXISTS "
     "(SELECT 1 FROM main.bans b WHERE b.addr = p.addr)"),
)  # fmt: skip
_STATE = {"hits": "kept", "bans": "periods"}


def _count(db: sqlite3.Connection, table: str, what: str) -> int:
    return int(db.execute(f"SELECT coalesce({what}, 0) FROM {table}").fetchone()[0])  # noqa: S608


def _busy(exc: sqlite3.Error) -> bool:
    """True for "database is locked" (SQLITE_BUSY, SQLITE_LOCKED): another connection
    holds the file, which says nothing about what is in it."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def key(expires: float | None, addr: str) -> tuple[float, str]:
    """A ban's place in the list: by expiry (permanent last), then address."""
    return (PERMANENT if expires is None else expires, addr)


@dataclass
class Leaf:
    """One list page: the bans from ``lo`` to the next leaf's ``lo``."""

    id: int
    lo: tuple[float, str]
    n: int = 0
    fresh_until: float | None = None
    prev: int | None = None
    next: int | None = None


@dataclass
class Changes:
    """What changed in the ledger since the pages were written."""

    first: bool  # no state: every offender counts as changed
    changed: set[str]
    gone: set[str]
    was_listed: list[tuple[float, str]]  # the keys the changed and gone ones were listed at


class PageState:
    """The state file of one pages directory, ATTACHed as ``pg`` while it is open."""

    def __init__(self, ledger: Ledger, root: str) -> None:
        self.ledger, self.db = ledger, ledger.db
        self.path = os.path.join(root, FILE)
        self.leaves: list[Leaf] = []
        self.fresh = False
        self.known = 0

    @classmethod
    @contextlib.contextmanager
    def attached(cls, ledger: Ledger, root: str) -> Iterator[PageState]:
        """The state ATTACHed (made anew when missing or unusable) until the block ends.

        Raises sqlite3.OperationalError ("database is locked") when another connection
        holds the state past the busy timeout: a locked state is never taken for a
        broken one and made anew under its holder."""
        st = cls(ledger, root)
        try:
            st._attach()
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                st.db.execute("DETACH DATABASE pg")
            raise
        try:
            yield st
        finally:
            if st.db.in_transaction:
                st.db.execute("ROLLBACK")
            st.db.execute("DETACH DATABASE pg")

    def _attach(self) -> None:
        for attempt in (1, 2):
            self.db.execute("ATTACH DATABASE ? AS pg", (self.path,))
            try:
                version = self.db.execute("PRAGMA pg.user_version").fetchone()[0]
                if version == VERSION:
                    rows = self.db.execute(
                        "SELECT id, lo_exp, lo_addr, n, fresh_until, prev, next FROM pg.leaves "
                        "ORDER BY lo_exp, lo_addr"
                    ).fetchall()
                    self.leaves = [Leaf(r[0], (r[1], r[2]), *r[3:]) for r in rows]
                    return
                if (
                    version == 0
                    and not self.db.execute("SELECT 1 FROM pg.sqlite_master").fetchone()
                ):
                    self.db.execute("PRAGMA pg.journal_mode = DELETE")
                    self.db.execute("BEGIN")
                    for sql in _SCHEMA:
                        self.db.execute(sql)
                    self.db.execute(f"PRAGMA pg.user_version = {VERSION}")
                    self.db.execute("COMMIT")
                    self.fresh = True
                    return
            except sqlite3.DatabaseError as exc:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if attempt == 2 or _busy(exc):
                    raise
            self.db.execute("DETACH DATABASE pg")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # another version or unreadable: start again

    def begin(self) -> None:
        """One transaction: the ledger read as one state, the state file written with it
        (committed by :meth:`commit` after the files are in place)."""
        self.db.execute("PRAGMA pg.synchronous = OFF")  # pages can be made again
        self.db.execute("BEGIN")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def changes(self) -> Changes:
        """The offenders whose files or rows may differ from what the pages show; records
        their new values (in the open transaction)."""
        db = self.db
        seen = db.execute(_DIFF_SEEN).fetchall()
        kept = db.execute(_DIFF_KEPT).fetchall()
        periods = db.execute(_DIFF_PERIODS).fetchall()
        was = [key(r[10], r[0]) for r in seen if r[9]]
        changed = {r[0] for r in seen} | {r[0] for r in periods}
        ids = [r[0] for r in kept]
        changed.update(self.ledger._column_in("SELECT text FROM main.texts WHERE id IN ", ids))
        db.executemany(_UPSERT_SEEN, (r[:9] for r in seen))
        db.executemany("INSERT OR REPLACE INTO pg.kept VALUES (?,?,?)", kept)
        db.executemany("INSERT OR REPLACE INTO pg.periods VALUES (?,?)", periods)
        # Rows pruned away altogether leave no group to compare: the totals tell.
        for table, col, counted, sql in _VANISHED:
            if _count(db, f"pg.{_STATE[table]}", counted) != _count(
                db, f"main.{table}", "count(*)"
            ):
                changed.update(self._vanished(table, col, sql))
        gone: set[str] = set()
        self.known = _count(db, "pg.seen", "count(*)")  # offenders the pages show
        if self.known != _count(db, "main.offenders", "count(*)"):
            rows = db.execute(
                "SELECT addr, active, expires FROM pg.seen s WHERE NOT EXISTS "
                "(SELECT 1 FROM main.offenders o WHERE o.addr = s.addr)"
            ).fetchall()
            gone = {r[0] for r in rows}
            was += [key(r[2], r[0]) for r in rows if r[1]]
            db.executemany("DELETE FROM pg.seen WHERE addr = ?", ((a,) for a in gone))
            self.known -= len(gone)
        return Changes(self.fresh, changed - gone, gone, was)

    def _vanished(self, table: str, col: str, sql: str) -> set[str]:
        rows = self.db.execute(sql).fetchall()
        self.db.executemany(
            f"DELETE FROM pg.{_STATE[table]} WHERE {col} = ?",  # noqa: S608 - fixed names
            ((r[0],) for r in rows),
        )
        return {r[1] for r in rows if r[1] is not None}

    def set_rows(self, was: Iterable[tuple[float, str]], rows: Iterable[Sequence]) -> None:
        """Take the rows at keys ``was`` off the list, put ``rows`` on it: (key,
        expires, :meth:`banpipe.board.Rows.parts`) of the changed offenders banned."""
        self.db.executemany("DELETE FROM pg.list WHERE k_exp = ? AND addr = ?", was)
        self.db.executemany(
            "INSERT OR REPLACE INTO pg.list VALUES (?, ?, ?, ?, ?)", (tuple(r) for r in rows)
        )

    def listed(
        self, lo: tuple[float, str] | None, hi: tuple[float, str] | None, limit: int = -1
    ) -> list[tuple[float | None, str, str, float, str]]:
        """The list rows (expires, head, tail, then their key) from key ``lo`` (None: the start) to
        ``hi`` (not included; None: the end), in list order."""
        lo, hi = lo or FIRST, hi or LAST
        return self.db.execute(_LISTED, (*lo, *hi, limit)).fetchall()

    def cached(self, name: str, since: float) -> str | None:
        """A text kept by :meth:`keep` at or after ``since``."""
        row = self.db.execute("SELECT at, value FROM pg.meta WHERE key = ?", (name,)).fetchone()
        return row[1] if row and row[0] >= since else None

    def keep(self, name: str, at: float, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO pg.meta VALUES (?, ?, ?)", (name, at, value))

    def find(self, k: tuple[float, str]) -> Leaf:
        """The leaf a key belongs on (the first one takes everything before the second)."""
        return self.leaves[max(0, bisect_right([lf.lo for lf in self.leaves], k) - 1)]

    def stale(self, now: float) -> set[int]:
        """Leaves with a time left whose text has changed by ``now``."""
        return {lf.id for lf in self.leaves if lf.fresh_until is not None and lf.fresh_until <= now}

    def new_leaf(self, lo: tuple[float, str]) -> Leaf:
        cur = self.db.execute(
            "INSERT INTO pg.leaves (lo_exp, lo_addr, n) VALUES (?, ?, 0)", (lo[0], lo[1])
        )
        leaf = Leaf(int(cur.lastrowid or 0), lo)
        self.leaves.append(leaf)
        return leaf

    def drop(self, leaf: Leaf) -> None:
        self.db.execute("DELETE FROM pg.leaves WHERE id = ?", (leaf.id,))
        self.leaves.remove(leaf)

    def order(self) -> None:
        """Sort the leaves by key and link them; the first one starts at :data:`FIRST`."""
        self.leaves.sort(key=lambda lf: lf.lo)
        for i, leaf in enumerate(self.leaves):
            leaf.prev = self.leaves[i - 1].id if i else None
            leaf.next = self.leaves[i + 1].id if i + 1 < len(self.leaves) else None

    def save(self, leaf: Leaf) -> None:
        """Record a leaf as written."""
        self.db.execute(
            "UPDATE pg.leaves SET lo_exp = ?, lo_addr = ?, n = ?, fresh_until = ?, prev = ?, "
            "next = ? WHERE id = ?",
            (*leaf.lo, leaf.n, leaf.fresh_until, leaf.prev, leaf.next, leaf.id),
        )
