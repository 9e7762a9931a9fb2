"""Read-only summaries of the ledger, for people (pages, status) and monitoring (metrics).

Every function takes an open :class:`~banpipe.ledger.Ledger` and only reads; none of
them changes the ledger or needs its lock. They read the interned tables (``hits``,
``texts``) rather than the ``violations`` view where they can: the view joins five
texts and formats two stamps per row, two to three times the cost of a query at
100,000 offenders. A page run reads them all inside :func:`snapshot`, so the pages
show one state of the ledger (bench/bench_report.py).

Columns other work may add to the ledger (``origin``: which gateway banned, for fleet
sharing) are read when present; an absent or empty origin means "local".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from banpipe.ledger import SELECT_RECORDS, Ledger

LOCAL = "local"


def has_column(ledger: Ledger, table: str, column: str) -> bool:
    """True when ``table`` has ``column`` (the schema may be newer than this module)."""
    if table not in ("offenders", "bans", "violations"):
        raise ValueError(f"unknown table {table!r}")
    return any(r[1] == column for r in ledger.db.execute(f"PRAGMA table_info({table})"))


def _origin_sql(ledger: Ledger, table: str) -> str:
    return "coalesce(origin, '')" if has_column(ledger, table, "origin") else "''"


def family(addr: str) -> str:
    """``"v6"`` for an IPv6 address text, else ``"v4"``."""
    return "v6" if ":" in addr else "v4"


class OffenderRow(NamedTuple):
    """An offender as the pages show it, with what its files are made of: ``origin``
    (``"local"`` when not shared), its newest violation record's signature and msg, how
    many violation records and ban periods are kept and the newest record's id."""

    addr: str
    first_seen: float
    last_seen: float
    expires: float | None
    violations: int
    bans: int
    manual: int
    active: int
    reason: str | None
    banned_at: float | None
    origin: str = LOCAL
    last_sig: str | None = None
    last_msg: str | None = None
    kept: int = 0
    newest: int = 0
    periods: int = 0

    @property
    def kind(self) -> str:
        return "manual" if self.manual else "automated"


@contextlib.contextmanager
def snapshot(ledger: Ledger) -> Iterator[None]:
    """One read transaction: the queries inside see one state of the ledger, whatever
    another process commits meanwhile (WAL); nothing is locked against writers."""
    db = ledger.db
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")


# An offender's row with its newest violation record and its counts, each found by
# index (a few probes a row: 500 rows in about a millisecond).
_ROWS = (
    "SELECT o.addr, o.first_seen, o.last_seen, o.expires, o.violations, o.bans, o.manual, "
    "o.active, o.reason, o.banned_at, coalesce(nullif(o.origin, ''), 'local'), s.text, m.text, "
    "(SELECT count(*) FROM hits WHERE addr = t.id), coalesce(h.id, 0), "
    "(SELECT count(*) FROM bans b WHERE b.addr = o.addr) FROM offenders o {} "
    "LEFT JOIN texts t ON t.text = o.addr "
    "LEFT JOIN hits h ON h.id = (SELECT max(id) FROM hits WHERE addr = t.id) "
    "LEFT JOIN texts s ON s.id = h.sig LEFT JOIN texts m ON m.id = h.msg "
)


def _rows(ledger: Ledger, sql: str, params: Sequence = ()) -> list[OffenderRow]:
    make = tuple.__new__  # OffenderRow(*...) costs a Python call per row
    return [make(OffenderRow, r) for r in ledger.db.execute(sql, params)]


def offender_rows(ledger: Ledger, addrs: Sequence[str] | None = None) -> list[OffenderRow]:
    """Every offender (``addrs``: only these, in no order): the active ones first in
    list order (:func:`active_rows`), then the rest by address."""
    if addrs is not None:
        out = []
        for where, params in _addr_filters(addrs):
            out += _rows(ledger, _ROWS.format("") + where.replace("addr", "o.addr", 1), params)
        return out
    lifted = _rows(ledger, _ROWS.format("") + "WHERE o.active = 0 ORDER BY o.addr")
    return active_rows(ledger) + lifted


def active_rows(
    ledger: Ledger,
    lo: tuple[float, str] | None = None,
    hi: tuple[float, str] | None = None,
    limit: int = -1,
) -> list[OffenderRow]:
    """Active bans in list order: by expiry (permanent last), then address; from the
    key ``lo`` (included) to ``hi`` (not), keys as ``pagestate.key`` makes them."""
    perm = 1e300  # pagestate.PERMANENT
    out: list[OffenderRow] = []
    if lo is None or lo[0] < perm:
        where = ["o.active = 1", "o.expires IS NOT NULL"]
        params: list = []
        if lo is not None:
            where.append("o.expires >= ? AND (o.expires, o.addr) >= (?, ?)")
            params += [lo[0], *lo]
        if hi is not None and hi[0] < perm:
            where.append("o.expires <= ? AND (o.expires, o.addr) < (?, ?)")
            params += [hi[0], *hi]
        sql = _ROWS.format("INDEXED BY offenders_due") + "WHERE " + " AND ".join(where)
        out = _rows(ledger, sql + " ORDER BY o.expires, o.addr LIMIT ?", [*params, limit])
        if hi is not None and hi[0] < perm:
            return out
    where = ["o.active = 1", "o.expires IS NULL"]
    params = []
    if lo is not None and lo[0] >= perm:
        where.append("o.addr >= ?")
        params.append(lo[1])
    if hi is not None:
        where.append("o.addr < ?")
        params.append(hi[1])
    if limit >= 0 and len(out) >= limit:
        return out
    sql = _ROWS.format("INDEXED BY offenders_active") + "WHERE " + " AND ".join(where)
    more = max(-1, limit - len(out)) if limit >= 0 else -1
    return out + _rows(ledger, sql + " ORDER BY o.addr LIMIT ?", [*params, more])


def active_counts(ledger: Ledger) -> dict[tuple[str, str], int]:
    """Active bans by (family, kind): ``("v4", "manual")``... every pair present."""
    out = {(f, k): 0 for f in ("v4", "v6") for k in ("manual", "automated")}
    for v6, manual, n in ledger.db.execute(
        "SELECT instr(addr, ':') > 0, manual, count(*) FROM offenders WHERE active = 1 "
        "GROUP BY 1, 2"
    ):
        out[("v6" if v6 else "v4", "manual" if manual else "automated")] += n
    return out


def ban_events(ledger: Ledger, since: float) -> dict[str, int]:
    """Ban periods ``added`` and ``lifted`` since ``since``, and bans ``extended``.

    The ledger keeps no extension events; a ban counts as extended when a violation
    other than the one that banned was recorded during it (every such violation
    extends it, up to ``[ban] max``; a permanent ban stays permanent).
    """
    db = ledger.db
    added = db.execute("SELECT count(*) FROM bans WHERE start >= ?", (since,)).fetchone()[0]
    lifted = db.execute("SELECT count(*) FROM bans WHERE end >= ?", (since,)).fetchone()[0]
    # Violations recorded during a ban period (the banning one shares its start time;
    # any other, also in the same burst, extended it; a row's growth not yet folded is
    # in ``hits_more``). Read from the ``hits`` table, not
    # the ``violations`` view, as every query here: the view joins five texts and
    # formats two stamps per row (2-3x the time at 100,000 offenders).
    extended = db.execute(
        "SELECT count(*) FROM (SELECT b.id FROM hits h JOIN texts t ON t.id = h.addr "
        "JOIN bans b ON b.addr = t.text AND h.first >= b.start "
        "AND (b.end IS NULL OR h.first <= b.end) "
        "LEFT JOIN (SELECT hit, sum(count) AS n FROM hits_more GROUP BY hit) m "
        "ON m.hit = h.id WHERE h.first >= ? "
        "GROUP BY b.id HAVING sum(h.count + coalesce(m.n, 0)) > 1 "
        "OR min(h.first) > b.start)",
        (since,),
    ).fetchone()[0]
    return {"added": int(added), "extended": int(extended), "lifted": int(lifted)}


def last_violation(ledger: Ledger) -> float | None:
    """When banctl last recorded a violation (its own clock), or None (the last of a
    record of several identical ones counts, also its growth not yet folded into
    ``hits``: banpipe.ledger.hits)."""
    return ledger.db.execute(
        "SELECT max(t) FROM (SELECT max(coalesce(last, first)) AS t FROM hits "
        "UNION ALL SELECT max(last) FROM hits_more)"
    ).fetchone()[0]


def totals(ledger: Ledger) -> dict[str, int]:
    """Offenders known, active bans, ban periods and violations kept (counted)."""
    db = ledger.db
    return {
        "offenders": int(db.execute("SELECT count(*) FROM offenders").fetchone()[0]),
        "active": ledger.count_active(),
        "ban_periods": int(db.execute("SELECT count(*) FROM bans").fetchone()[0]),
        "violations": int(db.execute("SELECT coalesce(sum(count), 0) FROM hits").fetchone()[0]),
    }


def histogram(ledger: Ledger, now: float, step: float, buckets: int) -> list[tuple[int, int]]:
    """(bans started, alerts recorded) per ``step`` seconds, oldest bucket first,
    the last one ending at ``now``."""
    start = now - step * buckets
    out = [[0, 0] for _ in range(buckets)]
    # column -> (table, its time column, what one row counts)
    counted = (("bans", "start", "count(*)"), ("hits", "first", "sum(count)"))
    for col, (table, ts, amount) in enumerate(counted):
        within = f"{ts} >= ? AND {ts} < ? GROUP BY 1"
        sql = f"SELECT CAST(({ts} - ?) / ? AS INTEGER), {amount} FROM {table} WHERE {within}"  # noqa: S608 - fixed names
        for i, n in ledger.db.execute(sql, (start, step, start, now)):
            if 0 <= i < buckets:
                out[i][col] += n
    return [(b, a) for b, a in out]


def top_signatures(ledger: Ledger, limit: int = 10) -> list[tuple[str, str, int]]:
    """(gid:sid:rev, a msg, violations) for the rules that fired most (kept history)."""
    rows = ledger.db.execute(
        "SELECT coalesce(s.text, '?'), m.text, x.n FROM (SELECT sig, max(msg) AS msg, "
        "sum(count) AS n FROM hits GROUP BY sig) x LEFT JOIN texts s ON s.id = x.sig "
        "LEFT JOIN texts m ON m.id = x.msg ORDER BY 3 DESC, 1 LIMIT ?",
        (limit,),
    )
    return [(r[0], r[1] or "", int(r[2])) for r in rows]


def top_offenders(ledger: Ledger, limit: int = 10) -> list[tuple[str, int, int, bool]]:
    """(address, violations, bans, active now) for the worst offenders."""
    rows = ledger.db.execute(
        "SELECT addr, violations, bans, active FROM offenders ORDER BY violations DESC, addr "
        "LIMIT ?",
        (limit,),
    )
    return [(r[0], int(r[1]), int(r[2]), bool(r[3])) for r in rows]


def top_victims(ledger: Ledger, limit: int = 10) -> list[tuple[str, int]]:
    """(our address attacked, violations) over the kept history."""
    rows = ledger.db.execute(
        "SELECT v.text, x.n FROM (SELECT victim, sum(count) AS n FROM hits "
        "WHERE victim IS NOT NULL GROUP BY victim) x JOIN texts v ON v.id = x.victim "
        "ORDER BY 2 DESC, 1 LIMIT ?",
        (limit,),
    )
    return [(r[0], int(r[1])) for r in rows]


@dataclass(frozen=True)
class BanPeriod:
    addr: str
    start: float
    end: float | None
    manual: bool
    reason: str | None
    origin: str


def _ban_periods(ledger: Ledger, where: str, params: Sequence, tail: str) -> list[BanPeriod]:
    origin = _origin_sql(ledger, "bans")
    rows = ledger.db.execute(
        f"SELECT addr, start, end, manual, reason, {origin} FROM bans "  # noqa: S608 - fixed
        + where
        + tail,
        params,
    )
    return [BanPeriod(r[0], r[1], r[2], bool(r[3]), r[4], r[5] or LOCAL) for r in rows]


def _addr_filters(addrs: Sequence[str] | None) -> list[tuple[str, tuple]]:
    """WHERE clauses (with their parameters) covering ``addrs`` (None: every row), in
    chunks that stay under SQLite's parameter limit."""
    if addrs is None:
        return [("", ())]
    chunks = [tuple(addrs[i : i + 500]) for i in range(0, len(addrs), 500)]
    return [(f"WHERE addr IN ({','.join('?' * len(c))}) ", c) for c in chunks]


def recently_lifted(ledger: Ledger, limit: int = 50) -> list[BanPeriod]:
    """The ban periods that ended last, newest first."""
    return _ban_periods(ledger, "WHERE end IS NOT NULL ", (limit,), "ORDER BY end DESC LIMIT ?")


def ban_history(ledger: Ledger, addrs: Sequence[str] | None = None) -> dict[str, list[BanPeriod]]:
    """Every ban period kept, per address, oldest first (``addrs``: only these)."""
    out: dict[str, list[BanPeriod]] = {}
    for where, params in _addr_filters(addrs):
        for p in _ban_periods(ledger, where, params, "ORDER BY addr, start, id"):
            out.setdefault(p.addr, []).append(p)
    return out


def violation_history(ledger: Ledger, addrs: Sequence[str] | None = None) -> dict[str, list]:
    """Every violation kept, per address, in order: rows of ``ledger.SELECT_RECORDS``
    (``ledger.violation_record(row)`` makes one a ViolationRecord)."""
    out: dict[str, list] = {}
    for where, params in _addr_filters(addrs):
        rows = ledger.db.execute(SELECT_RECORDS + where + "ORDER BY addr, ts, id", params)
        for r in rows:
            found = out.get(r[11])
            if found is None:
                out[r[11]] = [r]
            else:
                found.append(r)
    return out


def ledger_bytes(path: str) -> int:
    """Size on disk of the ledger with its WAL (0 for ``:memory:``)."""
    total = 0
    for p in (path, path + "-wal"):
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total
