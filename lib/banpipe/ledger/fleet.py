"""Other gateways' ban decisions applied to the ledger (banshare; a part of
:class:`banpipe.ledger.Ledger`)."""

from __future__ import annotations

from collections.abc import Iterable

from banpipe.ledger.bans import Bans
from banpipe.ledger.model import (
    _INSERT_DECISION,
    _UPSERT_OFFENDER,
    Decision,
    Offender,
    RemoteOutcome,
    _offender_row,
)


class Fleet(Bans):
    """Decisions of other gateways (banshare), applied in order and idempotently."""

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
