"""The ledger's nouns as Python values: offenders, violations, history rows, fleet
decisions and what a write changed; the fixed SQL that reads and writes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


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
