"""The ledger's queries (a part of :class:`banpipe.ledger.Ledger`), and reading the
recorded position of an alert file without opening the ledger for writing."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence

from banpipe.address import Split
from banpipe.ledger.model import (
    _SELECT_OFFENDERS,
    SELECT_RECORDS,
    Decision,
    LedgerError,
    Offender,
    ViolationRecord,
    _offender,
    violation_record,
)
from banpipe.ledger.schema import BUSY_TIMEOUT_S

# This gateway's own automated ban periods begun at or after a time (the spoof brake's).
_OWN_AUTOMATED_SINCE = "FROM bans WHERE start >= ? AND manual = 0 AND origin IS NULL"


class Reads:
    """What the ledger holds: offenders, bans, history, positions, local decisions."""

    db: sqlite3.Connection

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

    def active_split(self) -> Split:
        """The active bans split by kind (IPv4, IPv6 addresses, ranges): one scan, one
        string per kind (a restore of a million hands them to the firewall as they are,
        see ``firewall.bulk_entries``)."""
        row = self.db.execute(
            "SELECT group_concat(addr, ' ') FILTER (WHERE instr(addr, ':') = 0 "
            "AND instr(addr, '/') = 0), group_concat(addr, ' ') FILTER (WHERE "
            "instr(addr, ':') > 0 AND instr(addr, '/') = 0), group_concat(addr, ' ') "
            "FILTER (WHERE instr(addr, '/') > 0) FROM offenders WHERE active = 1"
        ).fetchone()
        return Split(*(text.split(" ") if text else [] for text in row))

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
        where = _OWN_AUTOMATED_SINCE if automated_only else "FROM bans WHERE start >= ?"
        return [r[0] for r in self.db.execute(f"SELECT start {where} ORDER BY start", (since,))]

    def bans_started_count(
        self, since: float, *, nth: int | None = None
    ) -> tuple[int, float | None]:
        """How many of this gateway's own automated ban periods began at or after
        ``since``, and the start of the ``nth`` of them (0 the oldest; None when there
        are not that many, or ``nth`` is None): the spoof brake's question, asked on
        each commit before a new ban, without reading every start."""
        where = _OWN_AUTOMATED_SINCE
        count = int(self.db.execute(f"SELECT count(*) {where}", (since,)).fetchone()[0])
        if nth is None or not 0 <= nth < count:
            return count, None
        row = self.db.execute(
            f"SELECT start {where} ORDER BY start LIMIT 1 OFFSET ?", (since, nth)
        ).fetchone()
        return count, row[0] if row else None

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

    def local_decisions(self, after: int, limit: int = 1000) -> list[Decision]:
        """This gateway's own decisions with an id above ``after``, oldest first."""
        rows = self.db.execute(
            "SELECT id, ts, kind, addr, expires, manual, reason FROM decisions "
            "WHERE id > ? AND origin IS NULL ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [Decision(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    def _column_in(self, head: str, values: Sequence[str], tail: str = "") -> list:
        """Rows of ``head (?, ?, ...) tail`` over ``values``, in chunks under SQLite's
        parameter limit (``head`` and ``tail`` are fixed SQL text of this module)."""
        found: list = []
        for i in range(0, len(values), 500):
            chunk = values[i : i + 500]
            sql = head + "(" + ",".join("?" * len(chunk)) + ") " + tail
            found += [r if len(r) > 1 else r[0] for r in self.db.execute(sql, chunk)]
        return found


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
