"""``banctl apply``'s recording part: violations and positions into the ledger.

:class:`Recorder` records each burst, under the ledger's lock: its new bans alone in
one durable commit, then the enforcer blocks them in one firewall call, then the
burst's violations with the positions of the units they came in (and the fleet's
waiting extensions) in a second commit that does not wait for the disk
(``Recorder.write_rest``: what a crash between the two does). A burst without a new
ban is one durable commit. The spoof brake limits new bans per window; a ledger that
cannot be written (disk full, read-only) stalls the daemon's input without losing the
batch.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass

from banpipe import cli, positions
from banpipe.bantime import format_expiry
from banpipe.ctlenv import Env
from banpipe.enforce import Enforcer
from banpipe.intake import Groups
from banpipe.ledger import Ledger, LedgerError
from banpipe.ledger.hits import Plan
from banpipe.monitor import Monitor

POSITION_EVERY = 1.0  # s: positions of filtered-out alerts need no fsync each
STALL_RETRY = 1.0  # s: how often a ledger that cannot be written is tried again
# The WAL is checkpointed by the daemon when no input waits (Ledger.checkpoint): after
# this many of our commits, or this long after the first of them. 16 bans write about
# 220 WAL pages, well under SQLite's own mark of 1,000 (which would run in a COMMIT).
CHECKPOINT_COMMITS = 16
CHECKPOINT_AFTER = 1.0  # s


@dataclass
class SpoofBrake:
    """At most ``limit`` new automated bans per ``window`` seconds; ``limit <= 0``: off.

    The count comes from the ledger's ban periods, so a restart (or a crash loop) does
    not reset the brake.
    """

    limit: int
    window: float
    engaged: bool = False
    held: int = 0
    _clears: float | None = None

    def budget(self, ledger: Ledger, now: float) -> int | None:
        if self.limit <= 0:
            return None
        # A count, not every start (a query on each commit before its new bans: reading
        # up to ``limit`` starts into a list took 0.2 ms of a new ban's path, issue 12).
        # At the limit, the brake clears when the start of index ``count - limit``
        # leaves the window (the count then drops below the limit).
        count = ledger.bans_started_count(now - self.window)[0]
        room = self.limit - count
        if room > 0:
            self._clears = None
            return room
        start = ledger.bans_started_count(now - self.window, nth=-room)[1]
        self._clears = start + self.window if start is not None else None
        return 0

    def clears_at(self) -> float | None:
        """When the window frees room again (for the select timeout), if engaged."""
        return self._clears if self.engaged else None


class Commits:
    """Tells our own ledger commits from those of other processes (admin commands)."""

    def __init__(self, ledger: Ledger, monitor: Monitor) -> None:
        self.ledger = ledger
        self.monitor = monitor
        self.version = 0

    def ours(self) -> None:
        """After a commit of ours: remember the version, let the monitor know."""
        self.version = self.ledger.data_version()
        self.monitor.changed()

    def others(self) -> bool:
        """True when another process committed since we last looked."""
        version = self.ledger.data_version()
        changed = version != self.version
        self.version = version
        if changed:
            self.monitor.changed()
        return changed


def _ledger_reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if isinstance(exc, LedgerError) and ": " in text else text


class Recorder:
    """Gathered violations and their positions into the ledger, new bans to the firewall.

    When the ledger cannot be written (disk full, read-only), nothing is lost: the
    batch is kept in ``stalled`` and the reader reads no input until a retry succeeds;
    the firewall keeps enforcing what the ledger holds.
    """

    def __init__(
        self,
        env: Env,
        ledger: Ledger,
        enforce: Enforcer,
        brake: SpoofBrake,
        counts: Counter[str],
        monitor: Monitor,
        commits: Commits,
    ) -> None:
        self.env = env
        self.ledger = ledger
        self.enforce = enforce
        self.brake = brake
        self.counts = counts
        self.monitor = monitor
        self.commits = commits
        self.report = env.report
        self.policy = env.policy
        self.recorded = positions.Recorded(ledger.recorded_positions())
        self.last_pos_commit = time.monotonic()
        self.stalled: Groups | None = None  # a batch the ledger did not take
        self.took = 0.0  # seconds the last commit with violations took (the daemon's bursts)
        self.committed = 0.0  # monotonic time the last commit with violations ended
        self.retry_at = 0.0  # when to try the stalled batch again
        self.unchecked = 0  # our commits since the last checkpoint
        self.unchecked_since = 0.0  # monotonic time of the first of them

    def commit(self, groups: Groups, *, force: bool = False) -> bool:
        """Record gathered violations and the positions of their units in one durable
        transaction, then block the new bans in one firewall call.

        Positions without violations (every alert of their units was filtered out)
        are recorded at most every POSITION_EVERY seconds, unless ``force``. Returns
        False while stalled.
        """
        rows = self.recorded.rows() if self.recorded.pending else []
        now = self.env.clock()
        share = self.ledger.share_due_at()
        share = share is not None and (force or share <= now)  # extensions waiting (fleet)
        if (
            not groups
            and not share
            and (
                not rows
                or not (force or self.recorded.urgent)
                and time.monotonic() - self.last_pos_commit < POSITION_EVERY
            )
        ):
            return True
        counts = self.counts
        started = time.monotonic()
        try:
            budget = self.brake.budget(self.ledger, now)
            ledger = self.ledger
            with ledger.locked():
                with ledger.transaction():
                    plan = ledger.plan_groups(
                        groups, now, self.policy, self.env.rng, new_ban_budget=budget
                    )
                    out = plan.out
                    ledger.write_bans(plan)
                    if not out.new_bans:
                        self.write_rest(plan, rows, share, force)
                if out.new_bans:
                    # The bans went alone into a durable commit (a few pages) and are
                    # blocked now; the rest follows in a commit that does not wait for
                    # the disk (write_rest: what a crash between the two does).
                    self.enforce.block(out.new_bans)
                    with ledger.transaction(synced=False):
                        self.write_rest(plan, rows, share, force)
                self.recorded.pending.clear()
                self.recorded.urgent = False
                self.last_pos_commit = time.monotonic()
        except (LedgerError, sqlite3.Error) as exc:
            self.stall(groups, exc)
            return False
        if groups:
            self.committed = time.monotonic()
            self.took = self.committed - started
        if self.stalled is not None:
            self.stalled = None
            self.report.say(None, "the ledger is writable again; reading input again")
        counts["banned"] += len(out.new_bans)
        counts["extended"] += len(out.extended)
        counts["held"] += len(out.held)
        self.log_bans(out.new_bans, groups)
        if out.held and not self.brake.engaged:
            self.brake.engaged = True
            self.report.say(
                None,
                f"SPOOF BRAKE: more than {self.brake.limit} new bans within "
                f"{self.brake.window:g} s; not adding new bans (still recording violations "
                f"and extending existing bans); first held: {out.held[0]}",
                level=cli.WARNING,
            )
            self.monitor.brake_tripped()
        self.brake.held += len(out.held)
        self.commits.ours()
        if not self.unchecked:
            self.unchecked_since = time.monotonic()
        self.unchecked += 1
        return True

    def write_rest(self, plan: Plan, rows: list, share: bool, force: bool) -> None:
        """A burst's violations, the positions that close their units and the fleet's
        waiting extensions, after the burst's new bans (``Ledger.write_bans``).

        When the burst made new bans, this is a second commit after their firewall
        call, and does not wait for the disk. A crash before it (or a power cut
        before a later commit synced it) leaves the bans recorded and blocked and
        loses the rest: with positions (``fasttail --ledger``) the units come again
        from the recorded position and are recorded once (a new ban then counts its
        banning violation as one more extension); without them, as for any alert
        still in the pipe, they are not recorded.
        """
        self.ledger.write_rest(plan)
        if rows:
            self.ledger.record_positions(rows)
        if share:
            self.ledger.share_extensions(plan.now, every=force)

    def checkpoint_due(self, mono: float) -> bool:
        """Whether the WAL should be checkpointed now (the caller checks that no input
        waits: a checkpoint never delays a ban)."""
        if not self.unchecked or self.stalled is not None:
            return False
        return (
            self.unchecked >= CHECKPOINT_COMMITS or mono - self.unchecked_since >= CHECKPOINT_AFTER
        )

    def checkpoint(self) -> None:
        """Checkpoint the WAL; a failure (a full disk) is left to the next one."""
        self.unchecked = 0
        with contextlib.suppress(LedgerError, sqlite3.Error):
            self.ledger.checkpoint()

    def retry(self) -> None:
        """Try the stalled batch again, when its time has come. Not on every wake-up:
        a failed write touches the -wal file, whose inotify event would wake us again
        at once."""
        if self.stalled is not None and time.monotonic() >= self.retry_at:
            self.commit(self.stalled, force=True)

    def stall(self, groups: Groups, exc: Exception) -> None:
        """The ledger cannot be written: keep the batch, stop reading, say so once."""
        self.retry_at = time.monotonic() + STALL_RETRY
        if self.stalled is None:
            self.report.say(
                self.ledger.path,
                f"cannot write the ledger ({_ledger_reason(exc)}): not reading input "
                f"until it can; the firewall keeps enforcing {self.ledger.count_active()} "
                f"active bans; retrying every {STALL_RETRY:g} s",
                level=cli.ERR,
            )
        self.stalled = groups

    def log_bans(self, new: list[str], groups: Groups) -> None:
        if not new:
            return
        if len(new) > 20:
            self.report.say(None, f"banned {len(new)} new offenders (first {new[0]})")
            return
        first: dict[str, tuple] = {}
        for key in groups:
            first.setdefault(key[0], key)  # the violation that caused the ban
        for a in new:
            k = first.get(a)
            what = f"{k[1] or '?'} {k[2] or ''}".strip() if k else ""
            o = self.ledger.get(a)
            until = format_expiry(o.expires if o else None, self.env.clock())
            self.report.say(a, f"banned until {until}: {what}")

    def brake_tick(self, now: float) -> None:
        if self.brake.engaged and self.brake.budget(self.ledger, now):
            self.brake.engaged = False
            self.report.say(
                None,
                f"spoof brake released: {self.brake.held} new bans were held back",
                level=cli.NOTICE,
            )
            self.brake.held = 0

    def deadlines(self, now: float, mono: float) -> list[float]:
        """Seconds until the WAL's checkpoint, the brake may release and the stalled
        batch, the waiting positions or the waiting extensions (the fleet's) are due."""
        out = []
        if self.unchecked and self.stalled is None:
            out.append(self.unchecked_since + CHECKPOINT_AFTER - mono)
        clears = self.brake.clears_at()
        if clears is not None:
            out.append(clears - now)
        if self.stalled is not None:
            out.append(self.retry_at - mono)
        elif self.recorded.pending:
            out.append(self.last_pos_commit + POSITION_EVERY - mono)
        share = self.ledger.share_due_at()
        if share is not None and self.stalled is None:
            out.append(share - now)
        return out
