"""``banctl apply``: the daemon that turns alertfilter's lines into bans.

It records every violation in the ledger, bans each offender once, extends its ban
on new violations and lifts it when it expires. How it stays consistent with the
admin commands (banpipe.banctl) and the firewall:

* The daemon juggles these nouns, one class each: :class:`Daemon` wakes (the select
  loop: input, signals, the ledger's and WAN state's watches, firewall events,
  deadlines), :class:`Bursts` reads input in bursts and keeps what it gathered until
  its commit, :class:`Wan` follows the WAN state file, banpipe.intake.Intake decides
  (line -> violation, or refused), banpipe.record.Recorder records (one durable
  transaction per burst, positions, the spoof brake, a ledger that cannot be
  written) and banpipe.enforce.Enforcer enforces (the firewall after each commit,
  expiry, the periodic check, change events, the stop).

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

import gc
import os
import select
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

from banpipe import cli, sources
from banpipe.ctlenv import Env
from banpipe.enforce import Enforcer
from banpipe.intake import Groups, Intake
from banpipe.ledger import Ledger
from banpipe.monitor import Monitor
from banpipe.pipe import Lines
from banpipe.record import Commits, Recorder, SpoofBrake

BATCH_MAX_BYTES = 8 << 20  # one transaction per burst, but bounded
BATCH_MAX_LINES = 50_000
FLOOD_BYTES = 32 << 10  # a burst this big is a flood: batch harder (see _read_burst)
FLOOD_LINGER = 0.005
FLOOD_SPAN = 0.1
# Under load a commit (its fsync) takes longer: the burst grows with it, so commits stay
# a small share of the time (2,000-alert commits cost 3x the CPU of 20,000-alert ones on
# the realistic file, bench/README.md); a new offender ends the burst at once.
FLOOD_SPAN_PER_COMMIT = 4.0
FLOOD_SPAN_MAX = 1.0
# In a flood, alerts of offenders met lately wait for the next commit, however the
# input arrives: under load the producer writes in small pieces and a commit per burst
# meant hundreds of small commits, each loading, updating and writing every offender it
# touched (the whole pipe cost banctl twice its CPU alone, bench/README.md). They wait
# one second per FLOOD_RATE lines gathered since the last commit, at most COMMIT_EVERY:
# at a few hundred alerts a second that is nothing, as before. A new offender, the end
# of input, a stop or a WAN change commits at once. One second rather than 0.25: a
# violation that repeats within it is one group instead of a row's growth per commit,
# and each offender is loaded and written once instead of four times (banctl's
# recording -25% CPU on the whole pipe, bench/README.md, issue 12 "one commit a second").
COMMIT_EVERY = 1.0
FLOOD_RATE = 5000.0  # lines a second
# The cyclic GC's first generation, for the daemon: a flood allocates a group (a list)
# per violation that lives until its commit, and at the default 700 the collector walked
# them again and again (about 5% of banctl's instructions on the realistic file,
# bench/README.md, issue 12 "banctl's intake"); what it frees here is rare (no cycles
# on the path), so a collection per GC_YOUNG allocations is plenty. At 100,000 the
# collections still took 0.37-0.49 s of banctl's 6.4 s on the whole realistic file (its
# open rows and memos are young too); at 1,000,000 0.15-0.17 s (issue 12, 2026-12-08).
GC_YOUNG = 1_000_000


class Bursts:
    """Input read in bursts and the alerts gathered from it until their commit: one
    durable commit covers a burst, and in a flood the alerts of offenders met lately
    wait for the next one (COMMIT_EVERY)."""

    def __init__(self, intake: Intake, record: Recorder, counts: Counter[str]) -> None:
        self.intake = intake
        self.record = record
        self.counts = counts
        # Called before each chunk is gathered (Daemon sets Wan.before_input).
        self.before: Callable[[], None] = lambda: None
        self.waiting: Groups = {}  # gathered, for the next commit (COMMIT_EVERY)
        self.waiting_lines = 0  # lines gathered into them

    def commit(self, *, force: bool = False) -> None:
        """Record what waits (also nothing: positions and shares may be due)."""
        waiting, self.waiting, self.waiting_lines = self.waiting, {}, 0
        self.record.commit(waiting, force=force)

    def commit_due(self) -> float | None:
        """Monotonic time at which the waiting alerts are to be committed."""
        if not self.waiting:
            return None
        return self.record.committed + min(COMMIT_EVERY, self.waiting_lines / FLOOD_RATE)

    def due(self) -> bool:
        """No alert waits, or their time has come (positions and shares decide then)."""
        due = self.commit_due()
        return due is None or time.monotonic() >= due

    def handle(self, lines: list[bytes], lineno: int) -> int:
        """Gather and commit ``lines`` at once (``lineno``: lines before them)."""
        groups: Groups = {}
        n = self.intake.gather(lines, lineno, groups)
        self.record.commit(groups)
        return n

    def read_stream(self, stdin: IO[Any]) -> None:
        """Injected in-memory input (tests): read it all, in bounded bursts."""
        splitter = Lines()
        data = stdin.read()
        lines = splitter.feed(data.encode() if isinstance(data, str) else data)[0]
        lines += splitter.finish()[0]
        for first in range(0, len(lines), BATCH_MAX_LINES):
            self.handle(lines[first : first + BATCH_MAX_LINES], first)
        self.intake.drop_open_unit()
        self.record.commit({}, force=True)

    def input_ready(self, fd: int, reader: Lines) -> bool:
        """Read a burst from ``fd`` and commit when it is time; True at end of input."""
        seen = self.counts["lines"]
        eof = self._read_burst(fd, reader, self.waiting)
        if eof:
            self.intake.gather(*reader.finish(), self.waiting)
            self.intake.drop_open_unit()
        self.waiting_lines += self.counts["lines"] - seen
        if eof or self.intake.novel or self.waiting_lines >= BATCH_MAX_LINES:
            self.commit(force=eof)
        elif self.due():
            self.commit()
        return eof

    def _read_burst(self, fd: int, reader: Lines, groups: Groups) -> bool:
        """Read and gather what is available now (one burst); True at end of input.

        A single alert is handled at once. In a flood (the burst already holds more
        than FLOOD_BYTES) banctl lingers up to FLOOD_LINGER for the producer's next
        write, up to FLOOD_SPAN in all (FLOOD_SPAN_PER_COMMIT times the last commit's
        time when that is longer, up to FLOOD_SPAN_MAX): one durable commit then covers
        thousands of alerts instead of a few hundred, which is what keeps up with a
        flood. A chunk that brings an offender not met lately ends the burst at once:
        a new ban never waits for the linger. Each chunk is gathered as soon as it is
        read, so the producer keeps writing into the pipe while banctl works instead of
        waiting for the whole burst.
        """
        total = 0
        started = time.monotonic()
        intake = self.intake
        gather = intake.gather
        intake.novel = False
        span = min(FLOOD_SPAN_MAX, max(FLOOD_SPAN, FLOOD_SPAN_PER_COMMIT * self.record.took))
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            lines, first = reader.feed(chunk)
            self.before()
            gather(lines, first, groups)
            total += len(chunk)
            if total >= BATCH_MAX_BYTES or intake.novel:
                return False
            if select.select([fd], [], [], 0)[0]:
                continue
            if total < FLOOD_BYTES or time.monotonic() - started > span:
                return False
            if not select.select([fd], [], [], FLOOD_LINGER)[0]:
                return False


class Wan:
    """The WAN state file's addresses in force: a change re-protects the intake (after
    the alerts gathered under the old protection are committed) and lifts the bans of
    our own new addresses."""

    def __init__(
        self,
        env: Env,
        addresses: set[str],
        first: sources.FirstReads,
        intake: Intake,
        enforce: Enforcer,
        monitor: Monitor,
        bursts: Bursts,
    ) -> None:
        self.env = env
        self.addresses = addresses
        self.first_read = first  # the WAN state file as it was when ``addresses`` were read
        self.intake = intake
        self.enforce = enforce
        self.monitor = monitor
        self.bursts = bursts
        path = env.config.network.wan_state
        self.path = os.path.abspath(path) if path else None  # as the watcher names it
        self.watcher: Any = None  # set by Daemon.run once the watch exists

    def before_input(self) -> None:
        """Apply a WAN change that happened before the input just read (an alert that
        names the new address must meet the new protection, not the old one)."""
        watcher = self.watcher
        if watcher is None or self.path is None:
            return
        if select.select([watcher], [], [], 0)[0] and self.path in watcher.changed():
            self.changed()

    def catch_up(self) -> None:
        """Call once the file is watched: a change written since ``addresses`` were read
        (during a long restore, or by wanwatch starting at the same boot) raised no
        event, and would have waited for the periodic check."""
        if self.first_read.changed():
            self.changed()

    def changed(self) -> None:
        wan = self.env.wan_addresses()
        if wan == self.addresses:
            return
        added = wan - self.addresses
        if self.bursts.waiting:  # gathered before the change: judged by the old protection
            self.bursts.commit()
        self.addresses = wan
        self.intake.protect(self.env.protection(wan))
        self.env.report.say(None, f"WAN addresses now {', '.join(sorted(wan)) or 'none'}")
        self.enforce.lift_wan(added)
        self.monitor.changed()


class Daemon:
    """``banctl apply``: the select() loop and everything that wakes it (input, signals,
    the ledger's and WAN state's inotify, firewall events, deadlines); the work is done
    by its bursts, intake, recorder, enforcer and WAN state (all I/O wired in ``run``)."""

    def __init__(self, env: Env, ledger: Ledger, fw: Any) -> None:
        self.env = env
        self.ledger = ledger
        self.report = env.report
        first = sources.FirstReads()
        first.note([env.config.network.wan_state])
        wan = env.wan_addresses()
        protection = env.protection(wan)
        ban = env.config.ban
        self.brake = SpoofBrake(int(ban.spoof_max), float(ban.spoof_window))
        self.counts: Counter[str] = Counter()
        self.monitor = Monitor(env, ledger, self.counts, self.brake)
        self.commits = Commits(ledger, self.monitor)
        fw = self.monitor.firewall(fw)
        self.enforce = Enforcer(env, ledger, fw, self.monitor, self.counts, self.commits.ours)
        self.record = Recorder(
            env, ledger, self.enforce, self.brake, self.counts, self.monitor, self.commits
        )
        self.intake = Intake(
            protection, self.record.recorded, self.counts, self.report, self.monitor.input_seen
        )
        self.bursts = Bursts(self.intake, self.record, self.counts)
        self.wan_state = Wan(env, wan, first, self.intake, self.enforce, self.monitor, self.bursts)
        self.bursts.before = self.wan_state.before_input
        self.watcher: Any = None
        self.started = False
        self.stopped = False

    @property
    def wan(self) -> set[str]:
        """The WAN state file's addresses in force."""
        return self.wan_state.addresses

    # -- start and stop ----------------------------------------------------------

    def start(self) -> None:
        lapsed, drift = self.enforce.start()
        self.started = True
        active = self.ledger.count_active()
        self.report.say(
            None,
            f"started: {cli.plural(active, 'active ban')} in the firewall "
            f"({len(drift.missing)} restored), "
            f"{len(lapsed)} lapsed lifted, backend {self.enforce.fw.name}",
            level=cli.NOTICE,
        )
        self.monitor.started(self.enforce.fw.name, drift)
        self.enforce.started()
        self.commits.version = self.ledger.data_version()

    def stop(self, why: str, *, orderly: bool = False) -> None:
        """Idempotent: after an orderly stop (SIGTERM/SIGINT) remove automated entries
        or keep them by ``[ban] on_stop``; after anything else keep them.

        End of input is not an orderly stop: it is also what a crash of fasttail or
        alertfilter looks like from here, and the bans must outlive that.
        """
        if self.stopped or not self.started:
            return
        self.stopped = True
        if self.record.stalled is None:
            self.bursts.commit(force=True)  # alerts and positions still waiting
        firewall = self.enforce.stop(orderly=orderly)
        c = self.counts
        self.report.say(
            None,
            f"stopped ({why}): {cli.plural(c['lines'], 'line')}, {cli.plural(c['banned'], 'ban')}, "
            f"{c['extended']} extended, {c['expired']} expired, {c['bad']} bad, "
            f"{c['refused']} refused, {c['held']} held by the spoof brake; {firewall}",
            level=cli.NOTICE,
        )
        self.monitor.stopped(orderly=orderly)

    def handle(self, lines: list[bytes], lineno: int) -> int:
        """One burst of pipe lines (``lineno``: lines before them): validate, record in
        one transaction, block new bans in one call. Returns the number of lines."""
        return self.bursts.handle(lines, lineno)

    # -- what wakes us besides input -----------------------------------------------

    def timeout(self) -> float:
        """Seconds until something is due: next expiry, periodic check, brake release,
        the monitor's writes, a stalled batch or waiting positions."""
        now, mono = self.env.clock(), time.monotonic()
        deadlines = self.enforce.deadlines(now, mono)
        writes = self.monitor.deadline()
        if writes is not None:
            deadlines.append(writes)
        deadlines += self.record.deadlines(now, mono)
        due = self.bursts.commit_due()
        if due is not None:
            deadlines.append(due - mono)
        return min(max(0.0, d) for d in deadlines)

    # -- the loop ------------------------------------------------------------------

    def run(self, stdin: IO[Any]) -> None:
        """Start, consume input until end of input or SIGTERM/SIGINT, then stop.

        Signal handlers go in before start-up (a restore of 100,000 bans takes a
        moment) and only set a flag and wake select() through a pipe, so a second
        SIGTERM during the teardown changes nothing.
        """
        fd = cli.fileno(stdin)
        if fd is None:
            self._run_stream(stdin)
            return
        from banpipe.watch import PathWatcher

        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG, *thresholds[1:])  # as it was again on the way out
        watcher = None
        why = "error"
        with cli.Signals() as signals:
            flag = signals.flag
            try:
                self.enforce.open_events()  # before the restore: a flush from now on is noticed
                self.start()  # forgets the notifications of its own restore
                wan_path = self.env.config.network.wan_state
                watched = [self.ledger.path + "-wal", self.ledger.path]
                watcher = PathWatcher([*watched, *([wan_path] if wan_path else [])])
                self.watcher = self.wan_state.watcher = watcher
                self.wan_state.catch_up()
                self._loop(fd, signals, watcher)
                why = "end of input"
                if flag.stop:
                    why = "signal " + signal.Signals(flag.signals[0]).name
            finally:
                try:
                    self.stop(why, orderly=flag.stop)
                finally:
                    if watcher is not None:
                        watcher.close()
                    self.enforce.close_events()
                    gc.set_threshold(*thresholds)

    def _run_stream(self, stdin: IO[Any]) -> None:
        """Injected in-memory input (tests): read it all, in bounded bursts."""
        why = "error"
        try:
            self.start()
            self.bursts.read_stream(stdin)
            self.enforce.expire_due()
            why = "end of input"
        finally:
            self.stop(why)

    def _loop(self, fd: int, signals: cli.Signals, watcher: Any) -> None:
        flag, wake_r = signals.flag, signals.fd
        reader = Lines()
        record, enforce, events = self.record, self.enforce, self.enforce.events
        bursts = self.bursts
        while not flag.stop:
            record.brake_tick(self.env.clock())
            # While the ledger cannot take a batch, input waits in the pipe: upstream
            # blocks and nothing is read past what is recorded.
            inputs = [fd] if record.stalled is None else []
            if events is not None:
                inputs.append(events)
            # Our own commits (and checkpoints) of this pass have just written the
            # ledger's files: their inotify events are read now, not by a wake-up of
            # their own (a second pass per ban: timeout()'s and expire_due()'s reads).
            if select.select([watcher], [], [], 0)[0]:
                self._ledger_or_wan_changed(watcher)
            waits = [*inputs, watcher, wake_r, *self.monitor.fds()]  # fds: page runs ending
            ready, _, _ = select.select(waits, [], [], self.timeout())
            if wake_r in ready:
                signals.drain()
            if flag.stop:
                return
            if events is not None and events in ready:
                enforce.firewall_changed()
            if watcher in ready:
                self._ledger_or_wan_changed(watcher)
            if record.stalled is not None:
                record.retry()
            elif fd in ready:
                if bursts.input_ready(fd, reader):
                    return
            elif bursts.due():
                # Waiting alerts; or positions of filtered-out alerts, shares, when due.
                # Never positions without the alerts before them: they go together.
                bursts.commit()
            enforce.expire_due()
            if enforce.check_due():
                self.wan_state.changed()  # in case /run/banpipe appeared only now
            self.monitor.tick()
            if record.checkpoint_due(time.monotonic()) and not select.select([fd], [], [], 0)[0]:
                record.checkpoint()

    def _ledger_or_wan_changed(self, watcher: Any) -> None:
        # Always read the events: left unread (no WAN state file configured), the -wal
        # file's kept select() returning at once, a busy loop.
        if self.wan_state.path in watcher.changed():
            self.wan_state.changed()
        # An admin commit needs nothing else: timeout() asks the ledger for the next
        # expiry on every pass.
        self.commits.others()
