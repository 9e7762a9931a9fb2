"""The ledger's schema: its migrations, in order (``PRAGMA user_version``), and the
``violations`` view over the interned ``hits`` rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from banpipe.ledger.stamps import STAMP_SQL, stamp_code

#: Identical violations recorded within this many seconds of the first of them (banctl's
#: clock) share a ``hits`` row. Five minutes keep what a person reads from the history
#: (when it began and ended, what, against whom, how often) while a flood from one
#: source costs a row per rule and victim every five minutes instead of a row per alert.
BUCKET_S = 300.0

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


def _stamp_sql(col: str) -> str:
    return f"CASE typeof({col}) WHEN 'integer' THEN {STAMP_SQL.format(col)} ELSE {col} END"


# The old violations table, over the interned form: readers (pages, status, tests)
# query it as before. ``ts`` and ``alert_ts`` are the first violation's. An integer
# ``alert_last`` is microseconds after an integer ``alert_first``.
_VIOLATIONS_VIEW = f"""CREATE VIEW violations AS SELECT
    h.id AS id, a.text AS addr, h.first AS ts, {_stamp_sql("h.alert_first")} AS alert_ts,
    s.text AS sig, m.text AS msg, h.priority AS priority, vi.text AS victim,
    h.reversed AS reversed, r.text AS reason, h.count AS count,
    coalesce(h.last, h.first) AS last_ts,
    CASE WHEN h.alert_last IS NULL THEN {_stamp_sql("h.alert_first")}
    WHEN typeof(h.alert_last) = 'integer' THEN {STAMP_SQL.format("(h.alert_first + h.alert_last)")}
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
            alert_first,                      -- the first alert's own time stamp (stamp_code)
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
    db.create_function("bp_stamp", 1, stamp_code, deterministic=True)
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


# v7: a row's growth since the last fold waits in ``hits_more`` (appended: a commit
# writes pages in proportion to its batch, not to the rows still open). The view adds
# it: the count, and the last times of the latest growth (max(rowid) picks that row's
# bare columns in SQLite).
MORE_BY_HIT = (
    "SELECT hit, sum(count) AS count, max(rowid), last, alert_last FROM hits_more GROUP BY hit"
)
_ALERT_LAST = "CASE WHEN x.hit IS NULL THEN h.alert_last ELSE x.alert_last END"
_VIOLATIONS_VIEW_V7 = f"""CREATE VIEW violations AS SELECT
    h.id AS id, a.text AS addr, h.first AS ts, {_stamp_sql("h.alert_first")} AS alert_ts,
    s.text AS sig, m.text AS msg, h.priority AS priority, vi.text AS victim,
    h.reversed AS reversed, r.text AS reason, h.count + coalesce(x.count, 0) AS count,
    coalesce(x.last, h.last, h.first) AS last_ts,
    CASE WHEN {_ALERT_LAST} IS NULL THEN {_stamp_sql("h.alert_first")}
    WHEN typeof({_ALERT_LAST}) = 'integer'
    THEN {STAMP_SQL.format(f"(h.alert_first + {_ALERT_LAST})")}
    ELSE {_ALERT_LAST} END AS alert_last
    FROM hits h JOIN texts a ON a.id = h.addr
    LEFT JOIN ({MORE_BY_HIT}) x ON x.hit = h.id
    LEFT JOIN texts s ON s.id = h.sig LEFT JOIN texts m ON m.id = h.msg
    LEFT JOIN texts vi ON vi.id = h.victim LEFT JOIN texts r ON r.id = h.reason"""  # noqa: S608 - fixed


def _v7(db: sqlite3.Connection) -> None:
    # Issue 12: an UPDATE of a row's count at every commit dirtied one page per open row,
    # so in a flood each commit rewrote most of ``hits`` into the WAL (300,000 alerts in
    # 2,000-alert commits: 7 s CPU, 16 s wall). Growth is appended here instead and
    # folded into ``hits`` in bulk (banpipe.ledger.rows.FOLD_ROWS).
    db.execute(
        """CREATE TABLE hits_more (
            hit         INTEGER NOT NULL,     -- hits.id
            count       INTEGER NOT NULL,     -- violations added
            last        REAL NOT NULL,        -- when banctl recorded the last of them
            alert_last                        -- its own time stamp, as in hits.alert_last
        )"""
    )
    db.execute("DROP VIEW violations")
    db.execute(_VIOLATIONS_VIEW_V7)


#: Ordered schema migrations; entry i moves the schema from version i to i + 1.
MIGRATIONS: tuple[Migration, ...] = (_v1, _v2, _v3, _v4, _v5, _v6, _v7)
