"""The ban ledger: a durable SQLite record of every offender, ban and violation.

Promises:

* **Durable**: WAL journal with ``synchronous=FULL``; a method that changes bans
  returns only after its transaction is committed to disk. banctl commits first and
  touches the firewall second, so a crash can leave the firewall behind the ledger
  (repaired at the next start) but never a ban that the ledger forgot.
* **One row per offender** (``offenders``, keyed by the canonical address), however
  often it offends or is banned; ``violations`` keeps every violation for
  ``retention`` seconds (kept after unban, for recidive decisions and ``banctl
  show``; ``retention = 0`` deletes an address's violations when its ban ends);
  ``bans`` keeps one row per ban period, used to count recent bans (recidive).
* **Small**: identical violations (same offender, rule, message, priority, victim,
  direction and reason) recorded within ``BUCKET_S`` of the first (banctl's clock) are
  one row of ``hits`` with a ``count`` and the first and last time (banctl's and the
  alerts' own); addresses, rules and texts are stored once (``texts``) and rows refer
  to them by number. ``violations`` is a view with the columns of the old table
  (``ts`` is the first time) plus ``last_ts`` and ``alert_last``. Rows are appended
  in time order, so retention deletes a range of row ids: its cost is the rows that
  aged out since the last prune, not the size of the table.
* **Concurrent**: the daemon and admin commands each open their own connection;
  writers use ``BEGIN IMMEDIATE`` and a busy timeout, so they queue instead of
  failing. ``locked()`` is a cross-process lock that banctl holds from a ledger write
  until the matching firewall change is done, so two processes never apply their
  firewall changes in the opposite order of their commits.
* **Versioned**: ``PRAGMA user_version`` is the schema version; ``MIGRATIONS`` are
  applied in order, each in its own transaction together with the version bump.

Addresses given to this module must already be canonical (``ipaddress`` text form).
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from banpipe.bantime import BanPolicy, Rng, extended_expiry, initial_expiry

DEFAULT_PATH = "/var/lib/banpipe/ledger.sqlite3"
BUSY_TIMEOUT_S = 30.0

Migration = Callable[[sqlite3.Connection], None]


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE offenders (
            addr        TEXT PRIMARY KEY,
            first_seen  REAL NOT NULL,
            last_seen   REAL NOT NULL,
            expires     REAL,             -- NULL: permanent (while active)
            violations  INTEGER NOT NULL DEFAULT 0,
            bans        INTEGER NOT NULL DEFAULT 0,   -- times banned so far
            manual      INTEGER NOT NULL DEFAULT 0,
            active      INTEGER NOT NULL DEFAULT 0,
            reason      TEXT,             -- last reason (violation or admin)
            banned_at   REAL              -- start of the current/last ban
        ) WITHOUT ROWID"""
    )
    db.execute(
        "CREATE INDEX offenders_due ON offenders(expires) WHERE active = 1 AND expires IS NOT NULL"
    )
    db.execute("CREATE INDEX offenders_active ON offenders(active, addr)")
    db.execute(
        """CREATE TABLE violations (
            id        INTEGER PRIMARY KEY,
            addr      TEXT NOT NULL,
            ts        REAL NOT NULL,        -- when banctl recorded it
            alert_ts  TEXT,                 -- the alert's own timestamp, as given
            sig       TEXT,                 -- gid:sid:rev
            msg       TEXT,
            priority  INTEGER,
            victim    TEXT,
            reversed  INTEGER NOT NULL DEFAULT 0,
            reason    TEXT
        )"""
    )
    db.execute("CREATE INDEX violations_addr ON violations(addr, ts)")
    db.execute("CREATE INDEX violations_ts ON violations(ts)")
    db.execute(
        """CREATE TABLE bans (
            id      INTEGER PRIMARY KEY,
            addr    TEXT NOT NULL,
            start   REAL NOT NULL,
            end     REAL,                   -- NULL while the ban lasts
            manual  INTEGER NOT NULL DEFAULT 0,
            reason  TEXT
        )"""
    )
    db.execute("CREATE INDEX bans_addr ON bans(addr, start)")
    db.execute("CREATE INDEX bans_start ON bans(start)")


def _v2(db: sqlite3.Connection) -> None:
    # Identical violations recorded in one transaction (a flood: same source, rule and
    # victim) become one history row with a count; all of them stay accounted for.
    db.execute("ALTER TABLE violations ADD COLUMN count INTEGER NOT NULL DEFAULT 1")


def _v3(db: sqlite3.Connection) -> None:
    # Read positions in alert files (docs/pipe-format.md, "Positions"), recorded in the
    # transaction of the violations they cover: what fasttail resumes from.
    db.execute(
        """CREATE TABLE positions (
            path      TEXT NOT NULL,      -- the followed file name (absolute)
            ident     TEXT NOT NULL,      -- which file was read: inode:device:fp_len:fp
            offset    INTEGER NOT NULL,   -- first byte not yet recorded
            position  TEXT NOT NULL,      -- the position object as it crossed the pipe
            seq       INTEGER NOT NULL,   -- larger: recorded later
            PRIMARY KEY (path, ident)
        ) WITHOUT ROWID"""
    )


def _v4(db: sqlite3.Connection) -> None:
    # Fleet sharing (banshare): every ban decision gets an id in the transaction that
    # makes it, so banshare finds new local decisions with one indexed query after an
    # inotify event on the -wal file instead of polling; remote decisions are kept with
    # their origin and reference (origin:id) for idempotence and ordering.
    db.execute(
        """CREATE TABLE decisions (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            ts      REAL NOT NULL,          -- when decided (at the origin, for remote ones)
            kind    TEXT NOT NULL,          -- ban, extend, unban, pin
            addr    TEXT NOT NULL,
            expires REAL,                   -- ban/extend: NULL = permanent
            manual  INTEGER NOT NULL DEFAULT 0,
            reason  TEXT,
            origin  TEXT,                   -- NULL: this gateway; else the gateway's name
            ref     TEXT                    -- remote: "origin:id", unique
        )"""
    )
    db.execute("CREATE INDEX decisions_addr ON decisions(addr, ts)")
    db.execute("CREATE INDEX decisions_ts ON decisions(ts)")
    db.execute("CREATE UNIQUE INDEX decisions_ref ON decisions(ref) WHERE ref IS NOT NULL")
    db.execute("ALTER TABLE offenders ADD COLUMN origin TEXT")  # NULL: banned here
    # Remote ban periods do not count towards this gateway's spoof brake.
    db.execute("ALTER TABLE bans ADD COLUMN origin TEXT")


#: Identical violations recorded within this many seconds of the first of them (banctl's
#: clock) share a ``hits`` row. Five minutes keep what a person reads from the history
#: (when it began and ended, what, against whom, how often) while a flood from one
#: source costs a row per rule and victim every five minutes instead of a row per alert.
BUCKET_S = 300.0

# An alert's own time stamp in fasttail's form (naive ISO 8601 with microseconds) is
# stored as the integer microseconds of those fields read as UTC (8 bytes instead of 26,
# and exactly the same text back, whatever the time zone); any other text as it is.
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_STAMP_SQL = (
    "strftime('%Y-%m-%dT%H:%M:%S', {0} / 1000000, 'unixepoch') || printf('.%06d', {0} % 1000000)"
)
_days: dict[str, int | None] = {}  # "YYYY-MM-DD" -> its midnight in us, read as UTC


def _day(date: str) -> int | None:
    if len(_days) >= 4096:
        _days.clear()
    us = None
    if _DATE_RE.match(date):
        y, m, d = int(date[:4]), int(date[5:7]), int(date[8:])
        try:
            datetime(y, m, d)
        except ValueError:
            pass
        else:
            us = calendar.timegm((y, m, d, 0, 0, 0)) * 1_000_000
            if us < 0:
                us = None  # before 1970: SQLite's integer division rounds towards 0
    _days[date] = us
    return us


def _stamp_code(text: str | None) -> int | str | None:
    """``text`` as stored in ``hits.alert_first``: an integer for fasttail's form
    ``YYYY-MM-DDTHH:MM:SS.ffffff`` (a real date and time, ASCII digits, from 1970),
    else the text itself."""
    if (
        text is None
        or len(text) != 26
        or text[10] != "T"
        or text[13] != ":"
        or text[16] != ":"
        or text[19] != "."
    ):
        return text
    date = text[:10]
    day = _days.get(date, -1)
    if day == -1:
        day = _day(date)
    clock = text[11:13] + text[14:16] + text[17:19] + text[20:]
    if day is None or not (clock.isascii() and clock.isdigit()):
        return text
    h, m, sec = int(clock[:2]), int(clock[2:4]), int(clock[4:6])
    if h > 23 or m > 59 or sec > 59:
        return text
    return day + (h * 3600 + m * 60 + sec) * 1_000_000 + int(clock[6:])


def _last_code(first: int | str | None, text: str | None) -> int | str | None:
    """``hits.alert_last`` for the last one's stamp ``text`` in a row whose
    ``alert_first`` is ``first``: microseconds after it when both are integers."""
    if first.__class__ is int:
        code = _stamp_code(text)
        if code.__class__ is int:
            return code - first  # type: ignore[operator]
    return text


def _row_id(update: tuple) -> int:
    return update[3]


def _stamp_sql(col: str) -> str:
    return f"CASE typeof({col}) WHEN 'integer' THEN {_STAMP_SQL.format(col)} ELSE {col} END"


# The old violations table, over the interned form: readers (pages, status, tests)
# query it as before. ``ts`` and ``alert_ts`` are the first violation's. An integer
# ``alert_last`` is microseconds after an integer ``alert_first``.
_VIOLATIONS_VIEW = f"""CREATE VIEW violations AS SELECT
    h.id AS id, a.text AS addr, h.first AS ts, {_stamp_sql("h.alert_first")} AS alert_ts,
    s.text AS sig, m.text AS msg, h.priority AS priority, vi.text AS victim,
    h.reversed AS reversed, r.text AS reason, h.count AS count,
    coalesce(h.last, h.first) AS last_ts,
    CASE WHEN h.alert_last IS NULL THEN {_stamp_sql("h.alert_first")}
    WHEN typeof(h.alert_last) = 'integer' THEN {_STAMP_SQL.format("(h.alert_first + h.alert_last)")}
    ELSE h.alert_last END AS alert_last
    FROM hits h JOIN texts a ON a.id = h.addr
    LEFT JOIN texts s ON s.id = h.sig LEFT JOIN texts m ON m.id = h.msg
    LEFT JOIN texts vi ON vi.id = h.victim LEFT JOIN texts r ON r.id = h.reason"""  # noqa: S608 - fixed


def _v5(db: sqlite3.Connection) -> None:
    # Issue 12: a realistic mix cost about 200 bytes per alert (one row each, every text
    # repeated). Texts are stored once, identical violations within BUCKET_S share a row,
    # and the old table becomes a view of the same name and columns.
    db.execute("CREATE TABLE texts (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE)")
    db.execute(
        """CREATE TABLE hits (
            id          INTEGER PRIMARY KEY,  -- grows with time: retention cuts a range
            addr        INTEGER NOT NULL,     -- texts.id of the offender's address
            first       REAL NOT NULL,        -- when banctl recorded the first of them
            last        REAL,                 -- ... the last; NULL: same as first
            count       INTEGER NOT NULL,
            sig         INTEGER,              -- texts.id of gid:sid:rev
            msg         INTEGER,              -- texts.id
            priority    INTEGER,
            victim      INTEGER,              -- texts.id
            reversed    INTEGER NOT NULL,
            reason      INTEGER,              -- texts.id
            alert_first,                      -- the first alert's own time stamp (_stamp_code)
            alert_last                        -- the last one's (NULL: the same; integer:
                                              -- microseconds after alert_first)
        )"""
    )
    db.execute(
        "INSERT OR IGNORE INTO texts (text) SELECT addr FROM violations UNION "
        "SELECT sig FROM violations UNION SELECT msg FROM violations UNION "
        "SELECT victim FROM violations UNION SELECT reason FROM violations"
    )
    db.execute("DELETE FROM texts WHERE text IS NULL")
    db.create_function("bp_stamp", 1, _stamp_code, deterministic=True)
    db.execute(
        "INSERT INTO hits (addr, first, count, sig, msg, priority, victim, reversed, reason, "
        "alert_first) SELECT a.id, v.ts, v.count, s.id, m.id, v.priority, vi.id, v.reversed, "
        "r.id, bp_stamp(v.alert_ts) FROM violations v JOIN texts a ON a.text = v.addr "
        "LEFT JOIN texts s ON s.text = v.sig LEFT JOIN texts m ON m.text = v.msg "
        "LEFT JOIN texts vi ON vi.text = v.victim LEFT JOIN texts r ON r.text = v.reason "
        "ORDER BY v.ts, v.id"
    )
    db.execute("DROP TABLE violations")
    db.execute("CREATE INDEX hits_addr ON hits(addr)")  # rows of an address in time order
    db.execute(_VIOLATIONS_VIEW)


def _v6(db: sqlite3.Connection) -> None:
    # "Is any ban from another gateway?" (banctl list's ORIGIN column) without reading
    # every offender: a million bans took 1.6 s (issue 12); outside a fleet this index
    # is empty.
    db.execute("CREATE INDEX offenders_origin ON offenders(origin) WHERE origin IS NOT NULL")


#: Ordered schema migrations; entry i moves the schema from version i to i + 1.
MIGRATIONS: tuple[Migration, ...] = (_v1, _v2, _v3, _v4, _v5, _v6)
TEXTS_CACHED = 1 << 16  # text -> id entries a connection remembers (then starts over)
POSITIONS_KEPT = 16  # per path: the files read most recently (rotation siblings)


class LedgerError(Exception):
    """The ledger cannot be opened, migrated or written (banctl exits 73)."""


@dataclass
class Offender:
    addr: str
    first_seen: float
    last_seen: float
    expires: float | None
    violations: int
    bans: int
    manual: bool
    active: bool
    reason: str | None
    banned_at: float | None
    origin: str | None = None  # the gateway whose decision banned it; None: this one

    def as_dict(self) -> dict[str, object]:
        return {
            "addr": self.addr,
            "active": self.active,
            "manual": self.manual,
            "expires": self.expires,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "banned_at": self.banned_at,
            "violations": self.violations,
            "bans": self.bans,
            "reason": self.reason,
            "origin": self.origin,
        }


# Fixed SQL text (no outside input is ever pasted into a statement).
_SELECT_OFFENDERS = (
    "SELECT addr, first_seen, last_seen, expires, violations, bans, manual, active, reason, "
    "banned_at, origin FROM offenders "
)
_UPSERT_OFFENDER = (
    "INSERT OR REPLACE INTO offenders (addr, first_seen, last_seen, expires, violations, bans, "
    "manual, active, reason, banned_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DECISION = (
    "INSERT INTO decisions (ts, kind, addr, expires, manual, reason, origin, ref) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _offender(row: Sequence) -> Offender:
    return Offender(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        bool(row[6]),
        bool(row[7]),
        row[8],
        row[9],
        row[10],
    )


def _offender_row(o: Offender) -> tuple:
    return (
        o.addr,
        o.first_seen,
        o.last_seen,
        o.expires,
        o.violations,
        o.bans,
        int(o.manual),
        int(o.active),
        o.reason,
        o.banned_at,
        o.origin,
    )


class Violation(NamedTuple):
    """One alert against ``addr`` as banctl records it (a tuple: cheap on the hot path)."""

    addr: str
    sig: str | None = None
    msg: str | None = None
    priority: int | None = None
    victim: str | None = None
    reversed: bool = False
    reason: str | None = None
    alert_ts: str | None = None


@dataclass(frozen=True)
class ViolationRecord:
    """A history row: ``count`` identical violations recorded from ``ts`` to
    ``last_ts`` (within ``BUCKET_S`` of the first); ``alert_ts`` is the first one's own time
    stamp, ``alert_last`` the last one's (the same for a single violation)."""

    ts: float
    alert_ts: str | None
    sig: str | None
    msg: str | None
    priority: int | None
    victim: str | None
    reversed: bool
    reason: str | None
    count: int = 1
    last_ts: float | None = None  # None: as ts
    alert_last: str | None = None  # None: as alert_ts

    @property
    def alert_time(self) -> float | None:
        """``alert_ts`` as epoch seconds (a time without an offset is this machine's local
        time, as the IDS wrote it); None when there is none or it is not ISO 8601."""
        return _epoch(self.alert_ts)

    @property
    def last(self) -> float:
        """When banctl recorded the last of them."""
        return self.ts if self.last_ts is None else self.last_ts

    @property
    def alert_last_ts(self) -> str | None:
        """The last one's own time stamp (``alert_ts`` for a single violation)."""
        return self.alert_ts if self.alert_last is None else self.alert_last

    def as_dict(self) -> dict[str, object]:
        # Every time is epoch seconds, as in the other JSON output; alert_ts stays beside
        # alert_time as the text that came through the pipe.
        return {
            "ts": self.ts,
            "alert_time": self.alert_time,
            "alert_ts": self.alert_ts,
            "sig": self.sig,
            "msg": self.msg,
            "priority": self.priority,
            "victim": self.victim,
            "reversed": self.reversed,
            "reason": self.reason,
            "count": self.count,
            "last_ts": self.last,
            "alert_last_time": _epoch(self.alert_last_ts),
            "alert_last": self.alert_last_ts,
        }


def _epoch(alert_ts: str | None) -> float | None:
    if not alert_ts:
        return None
    try:
        return datetime.fromisoformat(alert_ts).timestamp()
    except ValueError:
        return None


#: A ViolationRecord's columns of the ``violations`` view (in its order), then ``addr``.
SELECT_RECORDS = (
    "SELECT ts, alert_ts, sig, msg, priority, victim, reversed, reason, count, last_ts, "
    "alert_last, addr FROM violations "
)


def violation_record(r: Sequence) -> ViolationRecord:
    """A ViolationRecord from a row of ``SELECT_RECORDS``."""
    return ViolationRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], r[9], r[10])


class Decision(NamedTuple):
    """One ban decision as the fleet shares it (see banpipe.fleet for the wire form).

    ``id`` is the decision's number in its origin's ledger; ``ts`` when it was made
    there; ``kind`` one of ``DECISION_KINDS``; ``expires`` None means permanent (ban,
    extend, pin) or does not apply (unban); ``origin`` None means this gateway.
    """

    id: int
    ts: float
    kind: str
    addr: str
    expires: float | None = None
    manual: bool = False
    reason: str | None = None
    origin: str | None = None


DECISION_KINDS = ("ban", "extend", "unban", "pin")


@dataclass
class RemoteOutcome:
    """What one ``apply_remote()`` call changed; banshare turns it into firewall calls."""

    block: list[str] = field(default_factory=list)  # newly banned here
    release: list[str] = field(default_factory=list)  # unbanned here
    changed: int = 0  # applied to an existing ban (expiry, manual)
    duplicate: int = 0  # seen before (same origin and id): nothing done
    stale: int = 0  # older than what this ledger decided since: nothing done


@dataclass
class BatchOutcome:
    """What one ``record()`` call changed; banctl turns it into firewall calls."""

    new_bans: list[str] = field(default_factory=list)  # block these
    extended: list[str] = field(default_factory=list)  # already blocked, later expiry
    held: list[str] = field(default_factory=list)  # would be new bans; budget exhausted
    recorded: int = 0


class Ledger:
    """A connection to the ledger; not shared between threads or processes."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self.db = db
        self.path = path
        self._lock_fd: int | None = None
        self._lock_depth = 0
        # What this connection wrote lately, to add to instead of asking the database:
        # text -> texts.id, and the hits rows that may still grow (interned violation
        # key -> row id). Forgotten on rollback; a row deleted meanwhile by another
        # connection (a prune) is noticed when the update changes nothing.
        self._text_ids: dict[str, int] = {}
        # interned key -> (row id, alert_first, when the row began)
        self._open: dict[tuple, tuple[int, int | str | None, float]] = {}
        self._open_swept = 0.0  # rows that began before this are no longer in _open

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str = DEFAULT_PATH,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        create: bool = True,
    ) -> Ledger:
        """Open (and create/migrate) the ledger at ``path``; ``":memory:"`` for tests."""
        if path != ":memory:":
            if not create and not os.path.exists(path):
                raise LedgerError(f"{path}: no such ledger")
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, mode=0o750, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"{directory}: {exc.strerror or exc}")
        try:
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if path != ":memory:" and str(mode).lower() != "wal":
                raise LedgerError(f"{path}: cannot switch to WAL journal (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            db.execute("PRAGMA foreign_keys=ON")
            ledger = cls(db, path)
            ledger.migrate(migrations)
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: {exc}")
        return ledger

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> int:
        """Bring the schema to ``len(migrations)``; returns the number applied."""
        applied = 0
        if self.version == len(migrations):
            return applied
        while True:
            with self.transaction():
                current = self.version
                if current > len(migrations):
                    raise LedgerError(
                        f"{self.path}: schema version {current} is newer than this "
                        f"banctl knows ({len(migrations)})"
                    )
                if current == len(migrations):
                    return applied
                migrations[current](self.db)
                self.db.execute(f"PRAGMA user_version={current + 1}")
            applied += 1

    # -- transactions and locking ------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (durable on return), rollback on error."""
        if self.db.in_transaction:  # nested: part of the outer transaction
            yield self.db
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: {exc}")
        try:
            yield self.db
        except BaseException:
            self._forget()
            self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._forget()
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise LedgerError(f"{self.path}: {exc}")

    def _forget(self) -> None:
        """Drop what this connection remembers of its writes (they were rolled back)."""
        self._text_ids = {}
        self._open = {}
        self._open_swept = 0.0

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process ledger+firewall lock (``<ledger>.lock``, flock).

        Held from a ledger write until the firewall reflects it, so that concurrent
        banctl processes apply firewall changes in commit order. Re-entrant within
        this object.
        """
        if self.path == ":memory:":
            yield
            return
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(
                    self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            except OSError as exc:
                raise LedgerError(f"{self.path}.lock: {exc.strerror or exc}")
        if self._lock_depth == 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (PRAGMA data_version)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    # -- queries -------------------------------------------------------------------

    def get(self, addr: str) -> Offender | None:
        row = self.db.execute(_SELECT_OFFENDERS + "WHERE addr = ?", (addr,)).fetchone()
        return _offender(row) if row else None

    def offenders(self, *, active_only: bool = True) -> list[Offender]:
        """Offenders ordered by expiry (soonest first, permanent last), then address."""
        return list(self.iter_offenders(active_only=active_only))

    def iter_offenders(self, *, active_only: bool = True) -> Iterator[Offender]:
        """``offenders()`` one at a time, the first at once: the timed bans come from
        the expiry index and the permanent ones from the (active, addr) index, so
        nothing is sorted before the first row (a million bans: the whole ORDER BY
        took 2 s before a row came out)."""
        # The planner picks offenders_active and sorts everything (0.45 s at 100,000
        # bans before the first row); offenders_due is already in (expires, addr) order.
        parts = [
            "INDEXED BY offenders_due "
            "WHERE active = 1 AND expires IS NOT NULL ORDER BY expires, addr",
            "INDEXED BY offenders_active WHERE active = 1 AND expires IS NULL ORDER BY addr",
        ]
        if not active_only:
            parts.append("WHERE active = 0 ORDER BY expires IS NULL, expires, addr")
        for part in parts:
            for row in self.db.execute(_SELECT_OFFENDERS + part):
                yield _offender(row)

    def any_origin(self, *, active_only: bool = True) -> bool:
        """Whether any offender's ban came from another gateway (banshare)."""
        where = "AND active = 1 " if active_only else ""
        sql = (
            "SELECT 1 FROM offenders INDEXED BY offenders_origin "  # noqa: S608
            f"WHERE origin IS NOT NULL {where}LIMIT 1"
        )
        return self.db.execute(sql).fetchone() is not None

    def active_addresses(self, *, automated_only: bool = False) -> set[str]:
        """The active bans' addresses (and ranges)."""
        # One string split in Python instead of a row object per ban: a million bans
        # 1.5 -> 0.95 s (canonical addresses hold no space).
        sql = "SELECT group_concat(addr, ' ') FROM offenders WHERE active = 1"
        if automated_only:
            sql += " AND manual = 0"
        text = self.db.execute(sql).fetchone()[0]
        return set(text.split(" ")) if text else set()

    def recent_bans_v6(self, since: float) -> list[tuple[str, float]]:
        """(address, banned at) of active bans of single IPv6 addresses begun at or
        after ``since`` (banpipe.escalate's count after a restart)."""
        rows = self.db.execute(
            "SELECT addr, banned_at FROM offenders WHERE active = 1 AND banned_at >= ? "
            "AND instr(addr, ':') > 0 AND instr(addr, '/') = 0",
            (since,),
        )
        return [(r[0], r[1]) for r in rows]

    def count_active(self, *, manual_only: bool = False) -> int:
        sql = "SELECT count(*) FROM offenders WHERE active = 1"
        if manual_only:
            sql += " AND manual = 1"
        return int(self.db.execute(sql).fetchone()[0])

    def evictable(self, n: int, *, ipv6: bool) -> list[str]:
        """Up to ``n`` active automated bans of one address family, in eviction order:
        the soonest to end first (permanent ones last), the oldest ban among equals."""
        rows = self.db.execute(
            "SELECT addr FROM offenders WHERE active = 1 AND manual = 0 "
            "AND (instr(addr, ':') > 0) = ? "
            "ORDER BY expires IS NULL, expires, banned_at, addr LIMIT ?",
            (int(ipv6), n),
        )
        return [r[0] for r in rows]

    def count_family(self, *, ipv6: bool) -> int:
        """Active bans of one address family."""
        sql = "SELECT count(*) FROM offenders WHERE active = 1 AND (instr(addr, ':') > 0) = ?"
        return int(self.db.execute(sql, (int(ipv6),)).fetchone()[0])

    def next_expiry(self) -> float | None:
        """Earliest expiry among active timed bans (None: nothing scheduled)."""
        # The planner would take offenders_active and read every ban (0.9 s at a
        # million, on every wake-up of the daemon); the expiry index has the answer first.
        row = self.db.execute(
            "SELECT min(expires) FROM offenders INDEXED BY offenders_due "
            "WHERE active = 1 AND expires IS NOT NULL"
        ).fetchone()
        return row[0]

    def history(self, addr: str) -> list[ViolationRecord]:
        rows = self.db.execute(
            SELECT_RECORDS + "WHERE addr = ? ORDER BY ts, id",
            (addr,),
        )
        return [violation_record(r) for r in rows]

    def recent_bans(self, addr: str, since: float) -> int:
        """Ban periods of ``addr`` that started at or after ``since``."""
        row = self.db.execute(
            "SELECT count(*) FROM bans WHERE addr = ? AND start >= ?", (addr, since)
        ).fetchone()
        return int(row[0])

    def bans_started_since(self, since: float, *, automated_only: bool = True) -> list[float]:
        """Start times (ascending) of ban periods begun at or after ``since``
        (``automated_only``: this gateway's own automated bans, not remote ones)."""
        sql = "SELECT start FROM bans WHERE start >= ?"
        if automated_only:
            sql += " AND manual = 0 AND origin IS NULL"
        return [r[0] for r in self.db.execute(sql + " ORDER BY start", (since,))]

    # -- changes -------------------------------------------------------------------

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
                        if not fresh:
                            decisions.append((now, "extend", addr, o.expires, 0, None, None, None))
                if fresh:
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
        """Count ``groups`` into the rows of ``hits`` (inside a transaction)."""
        if now - self._open_swept >= BUCKET_S:  # forget rows that cannot grow any more
            self._open = {k: r for k, r in self._open.items() if now - r[2] < BUCKET_S}
            self._open_swept = now
        opened, text_ids = self._open, self._text_ids
        tid = self._text_id
        updates: list[tuple] = []
        updated: dict[int, tuple[tuple, Sequence]] = {}  # row id -> (interned key, group)
        fresh: list[tuple[tuple, Sequence]] = []
        for k, g in groups.items():
            # (addr, sig, msg, priority, victim, reversed, reason), interned
            a, sig, msg, prio, victim, rev, why = k
            ik = (
                text_ids.get(a) or tid(a),
                None if sig is None else text_ids.get(sig) or tid(sig),
                None if msg is None else text_ids.get(msg) or tid(msg),
                prio,
                None if victim is None else text_ids.get(victim) or tid(victim),
                rev,
                None if why is None else text_ids.get(why) or tid(why),
            )
            row = opened.get(ik)
            if row is None or now - row[2] >= BUCKET_S or now < row[2]:
                fresh.append((ik, g))
            else:
                updates.append((g[1], now, _last_code(row[1], g[3]), row[0]))
                updated[row[0]] = (ik, g)
        db = self.db
        if updates:
            updates.sort(key=_row_id)  # in page order
            changed = db.executemany(
                "UPDATE hits SET count = count + ?, last = ?, alert_last = ? WHERE id = ?",
                updates,
            ).rowcount
            if changed != len(updates):  # rows pruned by another connection: new rows
                there = set(
                    self._column_in("SELECT id FROM hits WHERE id IN ", [u[3] for u in updates])
                )
                for row_id, (ik, g) in updated.items():
                    if row_id not in there:
                        del opened[ik]
                        fresh.append((ik, g))
        if not fresh:
            return
        top = db.execute("SELECT max(id) FROM hits").fetchone()[0] or 0
        rows = []
        for n, (ik, g) in enumerate(fresh, top + 1):
            first = _stamp_code(g[0])
            opened[ik] = (n, first, now)
            many = g[1] > 1
            last = _last_code(first, g[3]) if many and g[3] != g[0] else None
            rows.append(
                (n, ik[0], now, now if many else None, g[1], ik[1], ik[2], ik[3], ik[4],
                 int(ik[5]), ik[6], first, last)
            )  # fmt: skip
        db.executemany(
            "INSERT INTO hits (id, addr, first, last, count, sig, msg, priority, victim, "
            "reversed, reason, alert_first, alert_last) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

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

    def recorded_positions(self) -> dict[tuple[str, str], int]:
        """``(path, ident) -> offset`` of every recorded position."""
        rows = self.db.execute("SELECT path, ident, offset FROM positions")
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def _load(self, addrs: Sequence[str]) -> dict[str, Offender]:
        found: dict[str, Offender] = {}
        unique = list(dict.fromkeys(addrs))
        for i in range(0, len(unique), 500):  # stay under SQLite's parameter limit
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(_SELECT_OFFENDERS + "WHERE addr IN (" + marks + ")", chunk):
                o = _offender(row)
                found[o.addr] = o
        return found

    def ban(
        self,
        addr: str,
        now: float,
        *,
        expires: float | None,
        reason: str | None,
        manual: bool = True,
    ) -> bool:
        """Ban ``addr`` (manual by default) until ``expires`` (None: permanent).

        An active ban is converted in place (same ban period). Returns True when the
        address was not banned before.
        """
        with self.transaction() as db:
            o = self.get(addr)
            fresh = o is None or not o.active
            if o is None:
                o = Offender(addr, now, now, None, 0, 0, False, False, None, None)
            if fresh:
                o.bans += 1
                o.banned_at = now
                db.execute(
                    "INSERT INTO bans (addr, start, manual, reason) VALUES (?, ?, ?, ?)",
                    (addr, now, int(manual), reason),
                )
            else:
                db.execute(
                    "UPDATE bans SET manual = ?, reason = coalesce(?, reason) "
                    "WHERE addr = ? AND end IS NULL",
                    (int(manual), reason, addr),
                )
            o.active, o.manual, o.expires, o.origin = True, manual, expires, None
            o.reason = reason or o.reason
            db.execute(
                _UPSERT_OFFENDER,
                _offender_row(o),
            )
            db.execute(
                _INSERT_DECISION, (now, "ban", addr, expires, int(manual), reason, None, None)
            )
        return fresh

    def unban(
        self, addrs: Iterable[str], now: float, *, retention: float | None = None
    ) -> list[str]:
        """End the bans of ``addrs``; returns those that were active.

        With ``retention == 0`` the violations of each ended ban are deleted too.
        """
        ended: list[str] = []
        with self.transaction() as db:
            for addr in addrs:
                cur = db.execute(
                    "UPDATE offenders SET active = 0 WHERE addr = ? AND active = 1", (addr,)
                )
                if cur.rowcount:
                    ended.append(addr)
            self._close_bans(ended, now, retention)
            db.executemany(
                _INSERT_DECISION, [(now, "unban", a, None, 0, None, None, None) for a in ended]
            )
        return ended

    def expire(self, now: float, *, retention: float | None = None) -> list[str]:
        """End every timed ban due at ``now``; returns the addresses."""
        with self.transaction() as db:
            due = [
                r[0]
                for r in db.execute(
                    # As next_expiry: the expiry index, not every ban (1.6 s at a million).
                    "SELECT addr FROM offenders INDEXED BY offenders_due "
                    "WHERE active = 1 AND expires IS NOT NULL AND expires <= ?",
                    (now,),
                )
            ]
            db.executemany("UPDATE offenders SET active = 0 WHERE addr = ?", [(a,) for a in due])
            self._close_bans(due, now, retention)
        return due

    def _close_bans(self, addrs: Sequence[str], now: float, retention: float | None) -> None:
        pairs = [(now, a) for a in addrs]
        self.db.executemany("UPDATE bans SET end = ? WHERE addr = ? AND end IS NULL", pairs)
        if retention is not None and retention <= 0:
            self.db.executemany(
                "DELETE FROM hits WHERE id = ?", [(i,) for i in self._addr_hits(addrs)]
            )

    # -- fleet decisions (banshare) --------------------------------------------------

    def local_decisions(self, after: int, limit: int = 1000) -> list[Decision]:
        """This gateway's own decisions with an id above ``after``, oldest first."""
        rows = self.db.execute(
            "SELECT id, ts, kind, addr, expires, manual, reason FROM decisions "
            "WHERE id > ? AND origin IS NULL ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [Decision(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    def apply_remote(
        self, decisions: Iterable[Decision], now: float, *, retention: float | None = None
    ) -> RemoteOutcome:
        """Apply other gateways' decisions in one transaction; the caller has judged
        them already (protection, accepted kinds, expiry, cap).

        Promises: a decision already applied (same ``origin`` and ``id``) changes
        nothing; a decision older (``ts``) than the newest one this ledger holds for the
        address, local or remote, changes nothing (a late unban never lifts a newer
        ban, a late ban never revives an address unbanned since); a ban on an address
        banned already only lengthens it (permanent wins) and never shortens it. A new
        ban records its origin, shown by ``banctl list``. ``block`` and ``release`` give
        each address's final state after the whole burst.
        """
        out = RemoteOutcome()
        batch = list(decisions)
        if not batch:
            return out
        refs = [f"{d.origin}:{d.id}" for d in batch]
        addrs = list(dict.fromkeys(d.addr for d in batch))
        with self.transaction() as db:
            # Three bulk reads instead of three per decision (a catch-up brings 10,000).
            seen = set(self._column_in("SELECT ref FROM decisions WHERE ref IN ", refs))
            newest: dict[str, float] = dict(
                self._column_in(
                    "SELECT addr, max(ts) FROM decisions WHERE addr IN ", addrs, "GROUP BY addr"
                )
            )
            rows = self._load(addrs)
            dirty: dict[str, Offender] = {}
            decision_rows = []
            for d, ref in zip(batch, refs, strict=True):
                if ref in seen:
                    out.duplicate += 1
                    continue
                seen.add(ref)
                decision_rows.append(
                    (d.ts, d.kind, d.addr, d.expires, int(d.manual), d.reason, d.origin, ref)
                )
                last = newest.get(d.addr)
                if last is not None and last > d.ts:
                    out.stale += 1
                    continue
                newest[d.addr] = d.ts
                o = rows.get(d.addr)
                if o is None:
                    o = rows[d.addr] = Offender(
                        d.addr, now, now, None, 0, 0, False, False, None, None
                    )
                if self._apply_one(d, o, now, out, retention):
                    dirty[d.addr] = o
            db.executemany(_UPSERT_OFFENDER, [_offender_row(o) for o in dirty.values()])
            db.executemany(_INSERT_DECISION, decision_rows)
        out.block = [a for a in dict.fromkeys(out.block) if rows[a].active]
        out.release = [a for a in dict.fromkeys(out.release) if not rows[a].active]
        return out

    def _column_in(self, head: str, values: Sequence[str], tail: str = "") -> list:
        """Rows of ``head (?, ?, ...) tail`` over ``values``, in chunks under SQLite's
        parameter limit (``head`` and ``tail`` are fixed SQL text of this module)."""
        found: list = []
        for i in range(0, len(values), 500):
            chunk = values[i : i + 500]
            sql = head + "(" + ",".join("?" * len(chunk)) + ") " + tail
            found += [r if len(r) > 1 else r[0] for r in self.db.execute(sql, chunk)]
        return found

    def _apply_one(
        self, d: Decision, o: Offender, now: float, out: RemoteOutcome, retention: float | None
    ) -> bool:
        """One judged, new and newest decision on ``o`` (changed in place; ban periods
        written at once, in order). True when ``o`` changed."""
        db = self.db
        if d.kind == "unban":
            if not o.active:
                return False
            o.active = False
            self._close_bans([d.addr], now, retention)
            out.release.append(d.addr)
            return True
        manual = d.manual or d.kind == "pin"
        if o.active:
            # Permanent wins; otherwise the later expiry: order-insensitive, idempotent.
            expires = None if o.expires is None or d.expires is None else max(o.expires, d.expires)
            if expires == o.expires and (o.manual or not manual):
                return False
            o.expires, o.manual = expires, o.manual or manual
            if manual:
                db.execute("UPDATE bans SET manual = 1 WHERE addr = ? AND end IS NULL", (d.addr,))
            out.changed += 1
            return True
        o.active, o.manual, o.expires, o.origin = True, manual, d.expires, d.origin
        o.bans += 1
        o.banned_at = now
        o.reason = d.reason or o.reason
        db.execute(
            "INSERT INTO bans (addr, start, manual, reason, origin) VALUES (?, ?, ?, ?, ?)",
            (d.addr, now, int(manual), d.reason, d.origin),
        )
        out.block.append(d.addr)
        return True

    def pin(self, addr: str, now: float | None = None) -> bool:
        """Make an active ban manual and permanent; False when not banned."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE offenders SET manual = 1, expires = NULL WHERE addr = ? AND active = 1",
                (addr,),
            )
            if cur.rowcount:
                db.execute("UPDATE bans SET manual = 1 WHERE addr = ? AND end IS NULL", (addr,))
                ts = time.time() if now is None else now
                db.execute(_INSERT_DECISION, (ts, "pin", addr, None, 1, None, None, None))
            return bool(cur.rowcount)

    def prune(self, now: float, *, retention: float, recidive_window: float) -> dict[str, int]:
        """Forget what no rule needs any more; returns rows deleted per table.

        Violations older than ``retention`` (all of an unbanned address's when 0),
        ended ban periods older than both ``retention`` and ``recidive_window``, and
        offenders with no active ban, nothing seen since that horizon and no ban
        period left.
        """
        horizon = now - max(retention, recidive_window)
        counts = {}
        with self.transaction() as db:
            if retention > 0:
                # Rows are appended in time order: the aged ones are a range of ids, found
                # by walking from the oldest (no index on time needed).
                keep = db.execute(
                    "SELECT id FROM hits WHERE first >= ? ORDER BY id LIMIT 1", (now - retention,)
                ).fetchone()
                if keep is None:
                    cur = db.execute("DELETE FROM hits")
                else:
                    cur = db.execute("DELETE FROM hits WHERE id < ?", (keep[0],))
            else:
                cur = db.execute(
                    "DELETE FROM hits WHERE addr IN (SELECT t.id FROM texts t JOIN offenders o "
                    "ON o.addr = t.text WHERE o.active = 0)"
                )
            counts["violations"] = cur.rowcount
            cur = db.execute("DELETE FROM bans WHERE end IS NOT NULL AND end < ?", (horizon,))
            counts["bans"] = cur.rowcount
            cur = db.execute("DELETE FROM decisions WHERE ts < ?", (horizon,))
            counts["decisions"] = cur.rowcount
            cur = db.execute(
                "DELETE FROM offenders WHERE active = 0 AND last_seen < ? "
                "AND coalesce(expires, 0) < ? "
                "AND NOT EXISTS (SELECT 1 FROM bans b WHERE b.addr = offenders.addr) "
                "AND NOT EXISTS (SELECT 1 FROM texts t JOIN hits h ON h.addr = t.id "
                "WHERE t.text = offenders.addr)",
                (horizon, horizon),
            )
            counts["offenders"] = cur.rowcount
        return counts


def resume_position(path: str, followed: str) -> str | None:
    """The position (JSON text) recorded last for the alert file ``followed`` in the
    ledger at ``path``, read without writing anything; None when there is none yet.

    Raises LedgerError when the ledger exists but cannot be read.
    """
    if not os.path.exists(path):
        return None
    try:
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: {exc}")
    try:
        if not db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'positions'"
        ).fetchone():
            return None
        row = db.execute(
            "SELECT position FROM positions WHERE path = ? ORDER BY seq DESC LIMIT 1",
            (followed,),
        ).fetchone()
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: {exc}")
    finally:
        db.close()
    return row[0] if row else None
