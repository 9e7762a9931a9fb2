"""Read-only summaries of the ledger, for people (pages, status) and monitoring (metrics).

Every function takes an open :class:`~banpipe.ledger.Ledger` and the time ``now`` and
only reads; none of them changes the ledger or needs its lock. They are aggregate
queries (one statement each), so they stay well under a second on a ledger of
100,000 offenders (bench/bench_report.py).

Columns other work may add to the ledger (``origin``: which gateway banned, for fleet
sharing) are read when present; an absent or empty origin means "local".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from banpipe.ledger import Ledger, Offender

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


@dataclass
class OffenderRow(Offender):
    """An offender as the pages show it: ``origin`` (``"local"`` when not shared) and
    its last violation's signature and msg."""

    origin: str = LOCAL
    last_sig: str | None = None
    last_msg: str | None = None

    @property
    def kind(self) -> str:
        return "manual" if self.manual else "automated"


def offenders(
    ledger: Ledger,
    *,
    active_only: bool = False,
    kept: dict[str, tuple] | None = None,
) -> list[OffenderRow]:
    """Offenders with their last signature, active first by expiry, then the rest.

    ``kept`` is ``last_violations(ledger)`` when the caller has it already.
    """
    origin = _origin_sql(ledger, "offenders")
    where = "WHERE active = 1" if active_only else ""
    columns = "addr, first_seen, last_seen, expires, violations, bans, manual, active, reason"
    sql = f"SELECT {columns}, banned_at, {origin} FROM offenders {where}"  # noqa: S608 - fixed
    rows = ledger.db.execute(sql).fetchall()
    # Sorted here: SQLite's sort on these expressions took 4x the time of the query.
    rows.sort(key=lambda r: (-r[7], r[3] is None, r[3] or 0.0, r[0]))
    last = last_violations(ledger) if kept is None else kept
    none = (0, 0, None, None)
    return [
        OffenderRow(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            bool(r[6]),
            bool(r[7]),
            r[8],
            r[9],
            r[10] or LOCAL,
            *last.get(r[0], none)[2:4],
        )
        for r in rows
    ]


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
    # any other, also in the same burst, extended it).
    extended = db.execute(
        "SELECT count(*) FROM (SELECT b.id FROM violations v JOIN bans b ON b.addr = v.addr "
        "AND v.ts >= b.start AND (b.end IS NULL OR v.ts <= b.end) WHERE v.ts >= ? "
        "GROUP BY b.id HAVING sum(v.count) > 1 OR min(v.ts) > b.start)",
        (since,),
    ).fetchone()[0]
    return {"added": int(added), "extended": int(extended), "lifted": int(lifted)}


def last_violation(ledger: Ledger) -> float | None:
    """When banctl last recorded a violation (its own clock), or None."""
    return ledger.db.execute("SELECT max(ts) FROM violations").fetchone()[0]


def totals(ledger: Ledger) -> dict[str, int]:
    """Offenders known, active bans, ban periods and violations kept (counted)."""
    db = ledger.db
    return {
        "offenders": int(db.execute("SELECT count(*) FROM offenders").fetchone()[0]),
        "active": ledger.count_active(),
        "ban_periods": int(db.execute("SELECT count(*) FROM bans").fetchone()[0]),
        "violations": int(
            db.execute("SELECT coalesce(sum(count), 0) FROM violations").fetchone()[0]
        ),
    }


def histogram(ledger: Ledger, now: float, step: float, buckets: int) -> list[tuple[int, int]]:
    """(bans started, alerts recorded) per ``step`` seconds, oldest bucket first,
    the last one ending at ``now``."""
    start = now - step * buckets
    out = [[0, 0] for _ in range(buckets)]
    # column -> (table, its time column, what one row counts)
    counted = (("bans", "start", "count(*)"), ("violations", "ts", "sum(count)"))
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
        "SELECT coalesce(sig, '?'), max(msg), sum(count) FROM violations GROUP BY sig "
        "ORDER BY 3 DESC, 1 LIMIT ?",
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
        "SELECT victim, sum(count) FROM violations WHERE victim IS NOT NULL GROUP BY victim "
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
    """Every violation kept, per address, in order (``ledger.ViolationRecord``)."""
    from banpipe.ledger import SELECT_RECORDS, violation_record

    out: dict[str, list] = {}
    for where, params in _addr_filters(addrs):
        rows = ledger.db.execute(SELECT_RECORDS + where + "ORDER BY addr, ts, id", params)
        for r in rows:
            out.setdefault(r[11], []).append(violation_record(r))
    return out


def last_violations(ledger: Ledger) -> dict[str, tuple[int, int, str | None, str | None]]:
    """Per address with violations kept: (history rows, id of the newest row, its
    signature, its msg), in one statement."""
    rows = ledger.db.execute(
        "SELECT k.addr, k.n, k.last, v.sig, v.msg FROM (SELECT addr, count(*) AS n, "
        "max(id) AS last FROM violations GROUP BY addr) k JOIN violations v ON v.id = k.last"
    )
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def ledger_bytes(path: str) -> int:
    """Size on disk of the ledger with its WAL (0 for ``:memory:``)."""
    total = 0
    for p in (path, path + "-wal"):
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total
