"""``banctl apply``: the daemon that turns alertfilter's lines into bans.

It records every violation in the ledger, bans each offender once, extends its ban
on new violations and lifts it when it expires. How it stays consistent with the
admin commands (banpipe.banctl) and the firewall:

* Every change is committed to the ledger first, then applied to the firewall, both
  under the ledger's cross-process lock (``<ledger>.lock``, flock): whichever process
  changes a ban also changes the firewall, in commit order (banpipe.reconcile).
* Controlling the running daemon needs no pidfile and no signal. The daemon keeps no
  ban state of its own: it asks the ledger for the next due expiry whenever it wakes.
  It wakes on input, at the next expiry, at the periodic check, and on inotify events
  for the ledger's ``-wal`` file (every commit by an admin command writes it) and the
  WAN state file; ``PRAGMA data_version`` tells it whether another process committed.
  So ``banctl ban --for 1m`` or ``unban`` takes effect at once (the command touches
  the firewall itself) and the daemon's schedule follows within milliseconds.
* The daemon runs ``check`` every ``[banctl] check_interval`` and repairs (an
  external ``iptables -F`` or ``nft flush ruleset``), as does ``banctl check --repair``.
* Start: firewall ``init()``, lapsed bans lifted, bans of our own WAN addresses lifted,
  then one bulk ``block()`` of everything missing. Orderly stop (SIGTERM, SIGINT;
  idempotent): with ``[ban] on_stop = "remove"`` the automated entries leave the
  firewall (all of banpipe's structure when no manual ban is left), manual bans stay;
  ``banctl teardown`` does the same from outside. End of input (also what a crash
  upstream looks like), an error or a full disk never takes an entry out.
* Positions (``fasttail --ledger``): the alerts between two position records are
  recorded with the closing position in one transaction, or not at all; what the
  ledger already holds is ignored (banpipe.positions).
* The ledger cannot be written (disk full, read-only): the batch is kept, input is not
  read, the firewall stays as it is; retried every STALL_RETRY seconds.
* Firewall change events (banpipe.fwevents): our structure vanishing is repaired at
  once, not at the next periodic check.
* Spoof brake: more than ``[ban] spoof_max`` new automated bans within
  ``spoof_window`` (counted from the ledger, so a restart does not reset it) stops new
  bans; violations are still recorded and existing bans still extended.
  ``spoof_max = 0`` turns the brake off.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from banpipe import cli, pipe, positions
from banpipe.bantime import format_expiry
from banpipe.ctlenv import Env
from banpipe.ledger import Ledger, LedgerError
from banpipe.memo import Memo
from banpipe.monitor import Monitor
from banpipe.protect import canonical_addr
from banpipe.reconcile import (
    block,
    firewall_error,
    lift_wan_bans,
    reconcile,
    remove_automated,
    restore,
)

BATCH_MAX_BYTES = 8 << 20  # one transaction per burst, but bounded
BATCH_MAX_LINES = 50_000
FLOOD_BYTES = 32 << 10  # a burst this big is a flood: batch harder (see _read_burst)
FLOOD_LINGER = 0.005
FLOOD_SPAN = 0.1
PIPE_BYTES = 1 << 20  # the input pipe's size; Linux's default limit for unprivileged users
CACHE_MAX = 100_000  # per-address memos of the hot path (canonical form, protection)
SIG_CACHE = 4096  # per generation: rules that fire at all are few
POSITION_EVERY = 1.0  # s: positions of filtered-out alerts need no fsync each
STALL_RETRY = 1.0  # s: how often a ledger that cannot be written is tried again
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


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
        starts = ledger.bans_started_since(now - self.window)
        room = self.limit - len(starts)
        # When the oldest ban that keeps us at the limit leaves the window.
        self._clears = starts[room] + self.window if room <= 0 and starts else None
        return max(0, room)

    def clears_at(self) -> float | None:
        """When the window frees room again (for the select timeout), if engaged."""
        return self._clears if self.engaged else None


def _ledger_reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if isinstance(exc, LedgerError) and ": " in text else text


def _not_an_address(raw: str) -> str:
    return f"offender is not an IP address: {raw[:64]!r}"


def _victim(text: str) -> str:
    return canonical_addr(text) or text[:64]


def _sig(ids: tuple[int, int, int]) -> str:
    return f"{ids[0]}:{ids[1]}:{ids[2]}"


def _alert_ts(ts: Any) -> str | None:
    if type(ts) is str:
        return ts[:64]
    return str(ts) if type(ts) in (int, float) else None


class Daemon:
    """``banctl apply``: the main loop and its handlers (all I/O wired in ``run``)."""

    def __init__(self, env: Env, ledger: Ledger, fw: Any) -> None:
        self.env = env
        self.ledger = ledger
        self.fw = fw
        self.policy = env.policy
        self.report = env.report
        self.wan = env.wan_addresses()
        self.protection = env.protection(self.wan)
        # Raw offender text -> (canonical address or None, why it is refused or None);
        # a new one whenever the protection changes. Raw victim text -> its stored form.
        self._offenders = Memo(CACHE_MAX // 2, self._judge)
        self._victims = Memo(CACHE_MAX // 2, _victim)
        self._sigs = Memo(SIG_CACHE, _sig)  # (gid, sid, rev) -> "gid:sid:rev"
        ban = env.config.ban
        self.brake = SpoofBrake(int(ban.spoof_max), float(ban.spoof_window))
        self.check_interval = max(1.0, float(env.config.banctl.check_interval))
        self.counts: Counter[str] = Counter()
        self.recorded = positions.Recorded(ledger.recorded_positions())
        self.positional = False  # the input carries position records
        self.unit: dict[tuple, list] = {}  # violations of the open unit
        self.last_pos_commit = time.monotonic()
        self.stalled: dict[tuple, list] | None = None  # a batch the ledger did not take
        self.retry_at = 0.0  # when to try the stalled batch again
        self.watcher: Any = None
        self.events: Any = None  # fwevents.FirewallEvents, when the kernel has them
        self.next_check = 0.0
        self.data_version = 0
        self.started = False
        self.stopped = False
        self.monitor = Monitor(env, ledger, self.counts, self.brake)
        self.fw = self.monitor.firewall(fw)

    # -- start and stop ----------------------------------------------------------

    def start(self) -> None:
        lapsed, _wan, drift = restore(self.env, self.ledger, self.fw)
        self.started = True
        active = self.ledger.count_active()
        self.report.say(
            None,
            f"started: {cli.plural(active, 'active ban')} in the firewall "
            f"({len(drift.missing)} restored), "
            f"{len(lapsed)} lapsed lifted, backend {self.fw.name}",
            level=cli.NOTICE,
        )
        self.monitor.started(self.fw.name, drift)
        self.prune()
        self.next_check = time.monotonic() + self.check_interval
        self.data_version = self.ledger.data_version()

    def stop(self, why: str, *, orderly: bool = False) -> None:
        """Idempotent: after an orderly stop (SIGTERM/SIGINT) remove automated entries
        or keep them by ``[ban] on_stop``; after anything else keep them.

        End of input is not an orderly stop: it is also what a crash of fasttail or
        alertfilter looks like from here, and the bans must outlive that.
        """
        if self.stopped or not self.started:
            return
        self.stopped = True
        if self.stalled is None:
            self.commit({}, force=True)  # positions still waiting
        if orderly and self.env.config.ban.on_stop == "remove":
            with self.ledger.locked():
                removed, manual = remove_automated(self.ledger, self.fw, thorough=False)
            kept = (
                f", {cli.plural(manual, 'manual ban')} kept"
                if manual
                else ", with banpipe's chain/sets/table (no manual ban left)"
            )
            firewall = (
                f"{cli.plural(removed, 'automated entry', 'automated entries')} removed{kept}"
            )
        else:
            self.fw.close(teardown=False)
            firewall = (
                'firewall entries kept (on_stop = "keep")'
                if orderly
                else "firewall entries kept (no orderly stop)"
            )
        c = self.counts
        self.report.say(
            None,
            f"stopped ({why}): {cli.plural(c['lines'], 'line')}, {cli.plural(c['banned'], 'ban')}, "
            f"{c['extended']} extended, {c['expired']} expired, {c['bad']} bad, "
            f"{c['refused']} refused, {c['held']} held by the spoof brake; {firewall}",
            level=cli.NOTICE,
        )
        self.monitor.stopped()

    # -- input ---------------------------------------------------------------------

    def _judge(self, raw: str) -> tuple[str | None, str | None]:
        """(canonical address, None) for an offender that may be banned; (address, why)
        for a protected one; (None, "") for text that is no address."""
        addr = canonical_addr(raw.strip())
        if addr is None:
            return None, ""
        return addr, self.protection.reason(addr)

    def handle(self, lines: list[bytes], first: int) -> int:
        """One burst: validate, record in one transaction, block new bans in one call.

        ``lines`` are raw pipe lines, ``first`` the number of lines before them. Returns
        the number of lines consumed.
        """
        groups: dict[tuple, list] = {}
        self.gather(lines, first, groups)
        self.commit(groups)
        return len(lines)

    def gather(self, lines: list[bytes], first: int, groups: dict[tuple, list]) -> None:
        """Decode and validate raw pipe lines (``first``: the number of lines before
        them) into ``groups`` (``Violation[:7]`` -> [alert_ts, count, last line, last
        alert_ts], what ``Ledger.record_groups`` takes); bad and refused lines are
        reported and counted.

        This is the hot path of a flood (the only place an alertfilter line becomes a
        violation). Each line is decoded here (no reader or generator between: about a
        microsecond a line) and reduced at once to its violation's group: no parsed
        object outlives its line (a list of them made the cyclic GC walk it again and
        again).
        """
        counts, report = self.counts, self.report
        offenders, victims = self._offenders, self._victims
        judged, victim_of = offenders.get, victims.get
        sigs = self._sigs
        sig_of = sigs.get
        loads, max_line, version = pipe.loads, pipe.MAX_LINE, pipe.VERSION
        # A positional stream's alerts wait in the open unit until its position arrives.
        target = self.unit if self.positional else groups
        lineno = first
        for line in lines:
            lineno += 1
            if len(line) > max_line:
                counts["bad"] += 1
                report.error(f"<stdin>:{lineno}", f"line longer than {max_line} bytes", "bad")
                continue
            try:
                obj = loads(line)
            except ValueError:
                if line.strip():  # blank lines carry nothing; not worth an error
                    counts["bad"] += 1
                    report.error(f"<stdin>:{lineno}", pipe.undecodable(line), "bad")
                continue
            if obj.__class__ is not dict or obj.get("v") != version:
                problem = pipe.check_object(obj)
                if problem is not None:
                    counts["bad"] += 1
                    report.error(f"<stdin>:{lineno}", problem, "bad")
                    continue
            get = obj.get
            raw = get("offender")
            if type(raw) is not str or not raw:
                if get("type") == pipe.POSITION and get("v") == pipe.VERSION:
                    target = self.close_unit(obj, lineno, groups)
                    continue
                counts["bad"] += 1
                report.error(f"<stdin>:{lineno}", "no offender address", "bad")
                continue
            verdict = judged(raw)
            if verdict is None:
                verdict = offenders.lookup(raw)
            addr, refused = verdict
            if refused is not None:
                if addr is None:
                    counts["bad"] += 1
                    report.error(f"<stdin>:{lineno}", _not_an_address(raw), "bad")
                else:
                    counts["refused"] += 1
                    report.error(
                        f"<stdin>:{lineno}", f"refusing to ban {addr}: {refused}", "refused"
                    )
                continue
            # exact types (True is not a number here)
            gid, sid, rev = get("gid"), get("sid"), get("rev")
            if type(gid) is not int or type(sid) is not int:
                sig = None
            elif type(rev) is int:
                sig = sig_of((gid, sid, rev))  # all exact ints: 1 and True never meet here
                if sig is None:
                    sig = sigs.lookup((gid, sid, rev))
            else:
                sig = f"{gid}:{sid}"
            msg, priority, victim, reason = (
                get("msg"),
                get("priority"),
                get("victim"),
                get("reason"),
            )
            if type(priority) is int and not _INT64_MIN <= priority <= _INT64_MAX:
                counts["bad"] += 1  # SQLite stores 64 bits: this line's error, not the batch's
                report.error(f"<stdin>:{lineno}", f"priority out of range: {priority}", "bad")
                continue
            if type(victim) is str:
                text = victim
                victim = victim_of(text)
                if victim is None:
                    victim = victims.lookup(text)
            else:
                victim = None
            key = (
                addr,
                sig,
                msg[:1000] if type(msg) is str else None,
                priority if type(priority) is int else None,
                victim,
                get("reversed") is True,
                reason[:1000] if type(reason) is str else None,
            )
            ts = get("ts")
            if type(ts) is not str or len(ts) > 64:
                ts = _alert_ts(ts)
            group = target.get(key)
            if group is None:
                target[key] = [ts, 1, lineno, ts]
            else:
                group[1] += 1
                group[2] = lineno
                group[3] = ts
        counts["lines"] += len(lines)
        if lines:
            self.monitor.input_seen()

    def close_unit(self, obj: dict[str, Any], lineno: int, groups: dict[tuple, list]) -> dict:
        """A position record closes the open unit: its violations join ``groups`` (to
        be recorded with the position) unless the ledger already holds them. Returns
        the new open unit."""
        self.positional = True
        try:
            pos = positions.parse(obj)
        except ValueError as exc:
            self.counts["bad"] += 1
            self.report.error(f"<stdin>:{lineno}", f"bad position: {exc}", "bad")
            return self.unit  # the unit stays open until a valid position closes it
        if pos is None or self.recorded.is_new(pos):
            positions.merge(groups, self.unit)
            if pos is not None:
                self.recorded.advance(pos)
        else:
            self.counts["repeated"] += sum(g[1] for g in self.unit.values())
        self.unit = {}
        return self.unit

    def drop_open_unit(self) -> None:
        """End of input inside a unit: its alerts come again when fasttail resumes."""
        n = sum(g[1] for g in self.unit.values())
        if n:
            self.report.say(
                None,
                f"end of input after {n} violations without their position: not "
                "recorded (they come again from the recorded position)",
            )
        self.unit = {}

    def commit(self, groups: dict[tuple, list], *, force: bool = False) -> bool:
        """Record gathered violations and the positions of their units in one durable
        transaction, then block the new bans in one firewall call.

        Positions without violations (every alert of their units was filtered out)
        are recorded at most every POSITION_EVERY seconds, unless ``force``. When the
        ledger cannot be written (disk full, read-only), nothing is lost: the batch is
        kept in ``self.stalled`` and input is not read until a retry succeeds; the
        firewall keeps enforcing what the ledger holds. Returns False while stalled.
        """
        rows = self.recorded.rows() if self.recorded.pending else []
        if not groups and (
            not rows
            or not (force or self.recorded.urgent)
            and time.monotonic() - self.last_pos_commit < POSITION_EVERY
        ):
            return True
        counts = self.counts
        now = self.env.clock()
        try:
            budget = self.brake.budget(self.ledger, now)
            with self.ledger.locked():
                with self.ledger.transaction():
                    out = self.ledger.record_groups(
                        groups, now, self.policy, self.env.rng, new_ban_budget=budget
                    )
                    if rows:
                        self.ledger.record_positions(rows)
                self.recorded.pending.clear()
                self.recorded.urgent = False
                self.last_pos_commit = time.monotonic()
                if out.new_bans:
                    self._firewall(self._block, out.new_bans)
        except (LedgerError, sqlite3.Error) as exc:
            self.stall(groups, exc)
            return False
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
        self.data_version = self.ledger.data_version()
        self.monitor.changed()
        return True

    def stall(self, groups: dict[tuple, list], exc: Exception) -> None:
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

    def log_bans(self, new: list[str], groups: dict[tuple, list]) -> None:
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

    # -- time ----------------------------------------------------------------------

    def expire_due(self) -> None:
        now = self.env.clock()
        nxt = self.ledger.next_expiry()
        if nxt is None or nxt > now:
            return
        try:
            with self.ledger.locked():
                due = self.ledger.expire(now, retention=self.env.retention)
                if due:
                    self._firewall(self.fw.release, due)
        except (LedgerError, sqlite3.Error):
            return  # cannot write: the bans stay, in the ledger and the firewall alike
        self.counts["expired"] += len(due)
        if 0 < len(due) <= 20:
            for a in due:
                self.report.say(a, "ban expired, lifted")
        elif due:
            self.report.say(None, f"{len(due)} bans expired, lifted")
        self.data_version = self.ledger.data_version()
        self.monitor.changed()

    def periodic(self) -> None:
        """Drift check and repair (an external flush), then history pruning."""
        self.repair("firewall drift repaired")
        self.prune()

    def repair(self, said: str) -> None:
        with self.ledger.locked():
            drift = reconcile(self.ledger, self.fw, self.env)
        self.monitor.checked(drift)
        self.own_events()
        if not drift.clean:
            self.report.say(None, f"{said}: {drift.summary()}", level=cli.WARNING)

    def open_events(self) -> None:
        """Listen for our part of the firewall being taken away (banpipe.fwevents)."""
        if self.fw.name not in ("iptables", "ipset", "nftables"):
            return
        from banpipe.fwevents import Concern, FirewallEvents

        s = self.env.config.firewall.settings()
        try:
            self.events = FirewallEvents(Concern(self.fw.name, s.table, s.chain, s.hooks))
        except OSError as exc:
            self.report.say(
                None,
                f"no firewall change events ({exc.strerror or exc}); drift is repaired "
                "at the periodic check only",
                level=cli.WARNING,
            )

    def own_events(self) -> None:
        """Forget the notifications of our own changes (they were queued before the
        change returned): only changes by others should trigger a repair."""
        if self.events is not None:
            self.events.read()

    def firewall_changed(self) -> None:
        """A notification: something of ours vanished (flush, reload). Repair now."""
        if self.events is not None and self.events.read():
            self._guarded(lambda: self.repair("firewall changed from outside; repaired"))

    def prune(self) -> None:
        ban = self.env.config.ban
        with contextlib.suppress(LedgerError, sqlite3.Error):  # a full disk: next time
            self.ledger.prune(
                self.env.clock(),
                retention=float(ban.retention),
                recidive_window=float(ban.recidive_window),
            )

    def timeout(self) -> float:
        """Seconds until something is due: next expiry, periodic check, brake release."""
        now, mono = self.env.clock(), time.monotonic()
        deadlines = [self.next_check - mono]
        nxt = self.ledger.next_expiry()
        if nxt is not None:
            deadlines.append(nxt - now)
        clears = self.brake.clears_at()
        if clears is not None:
            deadlines.append(clears - now)
        writes = self.monitor.deadline()
        if writes is not None:
            deadlines.append(writes)
        if self.stalled is not None:
            deadlines.append(self.retry_at - mono)
        elif self.recorded.pending:
            deadlines.append(self.last_pos_commit + POSITION_EVERY - mono)
        return min(max(0.0, d) for d in deadlines)

    def wan_first(self) -> None:
        """Apply a WAN change that happened before the input just read (an alert that
        names the new address must meet the new protection, not the old one)."""
        watcher = self.watcher
        if watcher is None or not self.env.config.network.wan_state:
            return
        if select.select([watcher], [], [], 0)[0]:
            wan = os.path.abspath(self.env.config.network.wan_state)
            if wan in watcher.changed():
                self.wan_changed()

    def wan_changed(self) -> None:
        wan = self.env.wan_addresses()
        if wan == self.wan:
            return
        added = wan - self.wan
        self.wan = wan
        self.protection = self.env.protection(wan)
        self._offenders = Memo(CACHE_MAX // 2, self._judge)
        self.report.say(None, f"WAN addresses now {', '.join(sorted(wan)) or 'none'}")
        lift_wan_bans(self.env, self.ledger, self.fw, added)
        self.monitor.changed()

    def ledger_changed(self) -> bool:
        """True when another process committed (an admin command) since we last looked."""
        version = self.ledger.data_version()
        changed = version != self.data_version
        self.data_version = version
        if changed:
            self.monitor.changed()
        return changed

    # -- the loop ------------------------------------------------------------------

    def run(self, stdin: IO[Any]) -> None:
        """Start, consume input until end of input or SIGTERM/SIGINT, then stop.

        Signal handlers go in before start-up (a restore of 100,000 bans takes a
        moment) and only set a flag and wake select() through a pipe, so a second
        SIGTERM during the teardown changes nothing.
        """
        fd = _fileno(stdin)
        if fd is None:
            self._run_stream(stdin)
            return
        _widen_pipe(fd)
        from banpipe.watch import PathWatcher

        flag = cli.StopFlag()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old = _install_signals(flag, wake_w)
        watcher = None
        why = "error"
        try:
            self.open_events()  # before the restore: a flush from now on is noticed
            self.start()
            self.own_events()
            wan_path = self.env.config.network.wan_state
            watched = [self.ledger.path + "-wal", self.ledger.path]
            watcher = PathWatcher([*watched, *([wan_path] if wan_path else [])])
            self.watcher = watcher
            self._loop(fd, flag, wake_r, watcher)
            why = "end of input"
            if flag.stop:
                why = "signal " + signal.Signals(flag.signals[0]).name
        finally:
            try:
                self.stop(why, orderly=flag.stop)
            finally:
                if watcher is not None:
                    watcher.close()
                if self.events is not None:
                    self.events.close()
                _restore_signals(old)
                os.close(wake_r)
                os.close(wake_w)

    def _run_stream(self, stdin: IO[Any]) -> None:
        """Injected in-memory input (tests): read it all, in bounded bursts."""
        why = "error"
        try:
            self.start()
            splitter = pipe.Lines()
            data = stdin.read()
            lines = splitter.feed(data.encode() if isinstance(data, str) else data)[0]
            lines += splitter.finish()[0]
            for i in range(0, len(lines), BATCH_MAX_LINES):
                self.handle(lines[i : i + BATCH_MAX_LINES], i)
            self.drop_open_unit()
            self.commit({}, force=True)
            self.expire_due()
            why = "end of input"
        finally:
            self.stop(why)

    def _loop(self, fd: int, flag: cli.StopFlag, wake_r: int, watcher: Any) -> None:
        wan_path = self.env.config.network.wan_state
        wan_abs = os.path.abspath(wan_path) if wan_path else None
        splitter = pipe.Lines()
        while not flag.stop:
            self.brake_tick(self.env.clock())
            # While the ledger cannot take a batch, input waits in the pipe: upstream
            # blocks and nothing is read past what is recorded.
            inputs = [fd] if self.stalled is None else []
            if self.events is not None:
                inputs.append(self.events)
            ready, _, _ = select.select([*inputs, watcher, wake_r], [], [], self.timeout())
            if wake_r in ready:
                _drain(wake_r)
            if flag.stop:
                return
            if self.events is not None and self.events in ready:
                self.firewall_changed()
            if watcher in ready:
                if wan_abs and wan_abs in watcher.changed():
                    self.wan_changed()
                # An admin commit needs nothing else: timeout() asks the ledger for the
                # next expiry on every pass.
                self.ledger_changed()
            if self.stalled is not None:
                # Not on every wake-up: a failed write touches the -wal file, whose
                # inotify event would wake us again at once.
                if time.monotonic() >= self.retry_at:
                    self.commit(self.stalled, force=True)
            elif fd in ready:
                groups: dict[tuple, list] = {}
                eof = self._read_burst(fd, splitter, groups)
                if eof:
                    self.gather(*splitter.finish(), groups)
                    self.drop_open_unit()
                self.commit(groups, force=eof)
                if eof:
                    return
            else:
                self.commit({})  # positions of filtered-out alerts, when due
            self.expire_due()
            if time.monotonic() >= self.next_check:
                self.next_check = time.monotonic() + self.check_interval
                self._guarded(self.periodic)
                self.wan_changed()  # in case /run/banpipe appeared only now
            self.monitor.tick()

    def _read_burst(self, fd: int, splitter: pipe.Lines, groups: dict[tuple, list]) -> bool:
        """Read and gather what is available now (one burst); True at end of input.

        A single alert is handled at once. In a flood (the burst already holds more
        than FLOOD_BYTES) banctl lingers up to FLOOD_LINGER for the producer's next
        write, up to FLOOD_SPAN in all: one durable commit then covers thousands of
        alerts instead of a few hundred, which is what keeps up with a flood. Each
        chunk is gathered as soon as it is read, so the producer keeps writing into
        the pipe while banctl works instead of waiting for the whole burst.
        """
        total = 0
        started = time.monotonic()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            lines, first = splitter.feed(chunk)
            self.wan_first()
            self.gather(lines, first, groups)
            total += len(chunk)
            if total >= BATCH_MAX_BYTES:
                return False
            if select.select([fd], [], [], 0)[0]:
                continue
            if total < FLOOD_BYTES or time.monotonic() - started > FLOOD_SPAN:
                return False
            if not select.select([fd], [], [], FLOOD_LINGER)[0]:
                return False

    def _block(self, addrs: list[str]) -> None:
        """New bans into the firewall; a full set makes room (reconcile.block)."""
        evicted = block(self.env, self.ledger, self.fw, addrs)
        self.counts["evicted"] += len(evicted)

    def _firewall(self, action: Callable[[list[str]], None], addrs: list[str]) -> None:
        """A firewall change after its ledger commit. On failure the ledger already
        holds the truth: report it and let the periodic check repair within seconds."""
        try:
            action(addrs)
        except firewall_error() as exc:
            self.report.error("firewall", f"{exc}; repairing at the next check", "firewall")
            self.next_check = min(self.next_check, time.monotonic() + 2.0)
        self.own_events()

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run a periodic action; a firewall hiccup is reported and retried soon."""
        try:
            action()
        except firewall_error() as exc:
            self.report.error("firewall", f"{exc}; retrying", "firewall")
            self.next_check = time.monotonic() + min(5.0, self.check_interval)


def _fileno(stream: IO[Any]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _widen_pipe(fd: int) -> None:
    """Let a pipe on ``fd`` hold PIPE_BYTES, so that alertfilter keeps writing while a
    burst's durable commit runs. With the default 64 KiB (about 150 alerts) the
    producer stalled at every fsync: the whole pipe ran at one pipe buffer per commit
    (issue 12). Nothing is committed later than before; the firewall still follows
    the commit."""
    with contextlib.suppress(OSError, AttributeError):
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 512):
            pass


def _install_signals(flag: cli.StopFlag, wake_w: int) -> tuple[Any, Any, int]:
    old = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    flag.install()
    old_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    return old[0], old[1], old_fd


def _restore_signals(old: tuple[Any, Any, int]) -> None:
    signal.signal(signal.SIGTERM, old[0])
    signal.signal(signal.SIGINT, old[1])
    signal.set_wakeup_fd(old[2])
