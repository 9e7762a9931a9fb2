"""Ban periods changed by hand or by time (a part of :class:`banpipe.ledger.Ledger`): ban,
unban, expire, pin, prune."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from banpipe.ledger.model import _INSERT_DECISION, _UPSERT_OFFENDER, Offender, _offender_row
from banpipe.ledger.reads import Reads


class Bans(Reads):
    """Bans by hand, by time and by retention."""

    fold: Callable[[float], None]  # banpipe.ledger.rows.HitRows.fold

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
            self.fold(now)  # no growth left behind for rows about to go
            self.db.executemany(
                "DELETE FROM hits WHERE id = ?", [(i,) for i in self._addr_hits(addrs)]
            )

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
            self.fold(now)  # no growth left behind for rows about to go
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
