"""What ``banctl apply`` tells people and monitoring while it runs.

The daemon calls a few hooks (started, alerts read, a check's drift, the spoof brake,
"the ledger changed", stopped); this module keeps the rest out of the daemon:

* the **runtime file** ``<ledger>.status.json``: pid, start, backend, last input,
  counters, brake state, last check and last drift repair, for ``banctl status``;
  replaced atomically, at most once a second;
* the **daemon lock** ``<ledger>.apply.lock``, held (flock) for the daemon's whole
  life: ``banctl status`` knows whether a daemon runs without trusting a pid, and a
  ``kill -9`` releases it;
* the **metrics textfile** (``[metrics] textfile``), every ``[metrics] interval``;
* the **pages** (``[pages] dir``), after a change, at most every ``[pages] interval``
  and, from start to start, at least ten times the last run's duration (and every
  five minutes, so "time left" stays roughly true).

The metrics and the pages read the ledger for up to seconds (a first page run over
100,000 bans, over a minute): each is written by a child process
(:mod:`banpipe.offload`), never in the daemon's loop, so a new ban never waits for
them; a run due while the last one still goes is skipped. Writing these never stops
the daemon: a failure is reported (a warning, once until a run succeeds again),
counted (``banpipe_background_failures_total``) and retried at the next interval. At
an orderly stop a page run still going is stopped; at end of input the daemon waits
up to ``offload.PAGES_STOP_WAIT`` s for the pages to be current.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from banpipe import metrics, offload, overview
from banpipe.cli import Reporter
from banpipe.statefile import replace_file

STATUS_EVERY = 1.0
DAEMON_LOCK_WAIT = 5.0  # s: how long a start waits out someone else's hold on the lock
_FIREWALL_OPS = ("init", "block", "release", "check", "close")


def runtime_path(ledger_path: str) -> str:
    return ledger_path + ".status.json"


def lock_path(ledger_path: str) -> str:
    return ledger_path + ".apply.lock"


def daemon_running(ledger_path: str) -> bool:
    """True while a ``banctl apply`` holds the daemon lock of this ledger."""
    try:
        fd = os.open(lock_path(ledger_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a lock we may just have taken
    return False


def _lock_for_life(fd: int) -> bool:
    """Take the daemon lock; False when another ``apply`` holds it.

    ``banctl status`` (daemon_running) holds a shared lock on the same file for the
    moment it looks: a daemon that met that moment and gave up at once held no lock
    for its whole life, and every later ``status`` said "not running" (a monitoring
    probe every few seconds against a restart). Such a lock goes away within
    microseconds; another apply's stays: tried again for up to DAEMON_LOCK_WAIT.
    """
    deadline = time.monotonic() + DAEMON_LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            _lock_pause()
        except OSError:
            return False
        else:
            return True


def _lock_pause() -> None:
    time.sleep(0.01)


def read_runtime(ledger_path: str) -> dict[str, Any] | None:
    """The daemon's last runtime file, or None when absent or unreadable."""
    try:
        with open(runtime_path(ledger_path), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class CountingFirewall:
    """A firewall backend that counts its operations and their failures per call."""

    def __init__(self, fw: Any, ops: Counter[str], errors: Counter[str]) -> None:
        self._fw, self._ops, self._errors = fw, ops, errors

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fw, name)
        if name not in _FIREWALL_OPS or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._ops[name] += 1
            try:
                return attr(*args, **kwargs)
            except Exception:
                self._errors[name] += 1
                raise

        return counted


class Monitor:
    """The daemon's runtime record and the files made from it (see the module doc)."""

    def __init__(
        self,
        env: Any,
        ledger: Any,
        counts: Counter[str],
        brake: Any,
        *,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.env, self.ledger, self.counts, self.brake = env, ledger, counts, brake
        self.report: Reporter = env.report
        self.mono = mono
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.enabled = ledger.path != ":memory:"
        cfg = env.config
        self.pages_dir: str | None = cfg.pages.dir or None
        self.pages_every = float(cfg.pages.interval)
        self.textfile: str | None = cfg.metrics.textfile or None
        self.metrics_every = float(cfg.metrics.interval)
        self.state: dict[str, Any] = {
            "pid": os.getpid(),
            "started": None,
            "backend": None,
            "last_input": None,
            "brake_trips": 0,
            "drift_repairs": 0,
            "last_check": None,
            "last_repair": None,
        }
        self._lock_fd: int | None = None
        self._status_due = 0.0
        self._failed: set[str] = set()
        # The slow writes, each by a child process (a ":memory:" ledger has no file a
        # child could read: then none is written, as no runtime file is).
        every = {"metrics": self.metrics_every, "pages": self.pages_every}
        wanted = {"metrics": self.textfile, "pages": self.pages_dir} if self.enabled else {}
        self.offload = offload.Offload(
            {what: every[what] for what, where in wanted.items() if where},
            self._job,
            self._failure,
            self._failed.discard,
            mono,
        )

    # -- hooks ---------------------------------------------------------------------

    def firewall(self, fw: Any) -> Any:
        """``fw`` with its operations counted (metrics)."""
        return CountingFirewall(fw, self.ops, self.errors)

    def started(self, backend: str, drift: Any) -> None:
        if self.enabled:
            with contextlib.suppress(OSError):
                fd = os.open(lock_path(self.ledger.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
                if _lock_for_life(fd):
                    self._lock_fd = fd
                else:
                    os.close(fd)  # another apply on this ledger: status shows it running
        self.state["started"] = self.env.clock()
        self.state["backend"] = backend
        self.checked(drift)
        self.tick(force=True)

    def input_seen(self) -> None:
        self.state["last_input"] = self.env.clock()

    def changed(self) -> None:
        """The ledger changed (ours or another process's commit): pages are stale."""
        self.offload.changed()

    def brake_tripped(self) -> None:
        self.state["brake_trips"] += 1

    def checked(self, drift: Any) -> None:
        """A ledger/firewall comparison; ``drift`` is what it found before repairing."""
        active = self.ledger.count_active()
        present = active - len(drift.missing)
        entries = present + len(drift.orphans)
        union = active + len(drift.orphans)
        now = self.env.clock()
        self.state["last_check"] = {
            "at": now,
            "ledger_bans": active,
            "firewall_entries": entries,
            "missing": len(drift.missing),
            "orphans": len(drift.orphans),
            "clean": bool(drift.clean),
            "enforcement": 1.0 if union == 0 else present / union,
        }
        if not drift.clean:
            self.state["drift_repairs"] += 1
            self.state["last_repair"] = {"at": now, "summary": drift.summary()}
            self.offload.changed()

    def stopped(self, *, orderly: bool = False) -> None:
        """The last writes: the runtime file and the metrics here and now, the pages at
        end of input (:meth:`banpipe.offload.Offload.stop`), not at an orderly stop
        (SIGTERM: the unit's stop timeout is the firewall's)."""
        self.offload.stop(orderly=orderly)  # first: a child's rename must not come last
        if self.enabled:
            self._guard("status", self._write_status)
        if self.textfile and self.enabled:
            self._guard("metrics", self._write_metrics)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- files ---------------------------------------------------------------------

    def fds(self) -> list[int]:
        """What the daemon's select() also waits on: the children's stderr, readable
        when one exits (:meth:`tick` then collects it)."""
        return self.offload.fds()

    def deadline(self) -> float | None:
        """Seconds until a write is due, or None when nothing waits."""
        mono = self.mono()
        waits = self.offload.waits(mono)
        if self.enabled:
            waits.append(self._status_due - mono)
        return max(0.0, min(waits)) if waits else None

    def tick(self, *, force: bool = False) -> None:
        """Write the runtime file when due; start the metrics and page runs that are
        due (all of it with ``force``). Never waits for a child."""
        mono = self.mono()
        if self.enabled and (force or mono >= self._status_due):
            self._status_due = mono + STATUS_EVERY
            self._guard("status", self._write_status)
        self.offload.tick(force=force)

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            self._failure(what, str(exc.strerror or exc))
            return
        self._failed.discard(what)

    def _failure(self, what: str, reason: str) -> None:
        """Report a write that failed, once until one succeeds again."""
        if what not in self._failed:
            self._failed.add(what)
            where = {"pages": self.pages_dir, "metrics": self.textfile}.get(what)
            self.report.error(
                where or runtime_path(self.ledger.path),
                f"cannot write {what}: {reason}; retrying",
                "warning",
            )

    def snapshot(self) -> dict[str, Any]:
        """The runtime record as written to the runtime file."""
        brake = self.brake
        return {
            **self.state,
            "v": 1,
            "updated": self.env.clock(),
            "counts": dict(self.counts),
            "brake": {"engaged": bool(brake.engaged), "held": int(brake.held)},
            "firewall_ops": dict(self.ops),
            "firewall_errors": dict(self.errors),
            "background_runs": dict(self.offload.runs),
            "background_failures": dict(self.offload.failures),
            "pages_took": self.offload.pages_took,
        }

    def _write_status(self) -> None:
        data = json.dumps(self.snapshot(), sort_keys=True).encode() + b"\n"
        replace_file(runtime_path(self.ledger.path), data)

    def _write_metrics(self) -> None:
        assert self.textfile is not None
        snap = self.snapshot()
        write_metrics(self.ledger, self.textfile, snap, self.brake.limit, self.env.clock())

    def _job(self, what: str) -> dict[str, Any]:
        """The job of a metrics or page run's child (:mod:`banpipe.offload`)."""
        job = {"kind": what, "ledger": os.path.abspath(self.ledger.path), "now": self.env.clock()}
        if what == "pages":
            assert self.pages_dir is not None
            return {**job, "dir": os.path.abspath(self.pages_dir)}
        assert self.textfile is not None
        snap, limit = self.snapshot(), self.brake.limit
        return {**job, "textfile": os.path.abspath(self.textfile), "snapshot": snap,
                "brake_limit": limit}  # fmt: skip


def write_metrics(
    ledger: Any, textfile: str, snap: dict[str, Any], brake_limit: int, now: float
) -> None:
    """The textfile from the runtime record ``snap`` (:meth:`Monitor.snapshot`) and the
    ledger; raises OSError when it cannot be written."""
    families = daemon_families(snap, brake_limit)
    families += ledger_families(ledger, now)
    expired = int(snap.get("counts", {}).get("expired", 0))
    families += removed_family(ledger, snap.get("started"), expired)
    metrics.write_textfile(textfile, families)


# banctl apply's metrics, declared once each: (kind, name, help, where the value is in
# the runtime record ``snap``). A value that is a dict is one sample per key, labelled.
_DAEMON_METRICS: list[tuple[str, str, str, Callable[[dict[str, Any]], Any]]] = [
    ("gauge", "banpipe_banctl_start_time_seconds", "When banctl apply started (Unix time).",
     lambda s: s.get("started") or 0),
    ("counter", "banpipe_banctl_lines_total", "Input lines read by banctl apply.",
     lambda s: _count(s, "lines")),
    ("counter", "banpipe_banctl_lines_rejected_total",
     "Input lines banctl apply rejected, by reason.",
     lambda s: {"reason": {"bad": _count(s, "bad"), "refused": _count(s, "refused")}}),
    ("counter", "banpipe_bans_added_total", "New bans.", lambda s: _count(s, "banned")),
    ("counter", "banpipe_bans_extended_total", "Bans whose expiry a violation extended.",
     lambda s: _count(s, "extended")),
    ("counter", "banpipe_bans_expired_total", "Bans lifted at their expiry.",
     lambda s: _count(s, "expired")),
    ("counter", "banpipe_bans_held_total", "New bans held back by the spoof brake.",
     lambda s: _count(s, "held")),
    ("counter", "banpipe_firewall_operations_total",
     "Firewall backend operations, by operation.", lambda s: _ops(s, "firewall_ops")),
    ("counter", "banpipe_firewall_errors_total",
     "Firewall backend operations that failed, by operation.",
     lambda s: _ops(s, "firewall_errors")),
    ("counter", "banpipe_drift_repairs_total",
     "Checks that found the firewall different from the ledger and repaired it.",
     lambda s: s.get("drift_repairs", 0)),
    ("counter", "banpipe_spoof_brake_trips_total", "Times the spoof brake engaged.",
     lambda s: s.get("brake_trips", 0)),
    ("gauge", "banpipe_spoof_brake_engaged", "1 while the spoof brake holds new bans back.",
     lambda s: 1 if s.get("brake", {}).get("engaged") else 0),
    ("gauge", "banpipe_spoof_brake_limit", "[ban] spoof_max (0: brake off).",
     lambda s: s["brake_limit"]),
    ("gauge", "banpipe_enforcement_ratio",
     "Ledger active bans found in the firewall at the last check, over ledger bans "
     "plus firewall entries the ledger does not know (1 when they match).",
     lambda s: _check(s, "enforcement", 1.0)),
    ("gauge", "banpipe_enforcement_ledger_bans", "Active bans in the ledger at the last check.",
     lambda s: _check(s, "ledger_bans", 0)),
    ("gauge", "banpipe_enforcement_firewall_entries",
     "Entries found in the firewall at the last check.",
     lambda s: _check(s, "firewall_entries", 0)),
    ("gauge", "banpipe_last_check_timestamp_seconds",
     "When the firewall was last compared with the ledger (Unix time).",
     lambda s: _check(s, "at", 0) or 0),
    ("counter", "banpipe_background_runs_total",
     "Page runs and metrics writes banctl apply ran in a child process, by job.",
     lambda s: _jobs(s, "background_runs")),
    ("counter", "banpipe_background_failures_total",
     "Page runs and metrics writes that failed (reported in the journal), by job.",
     lambda s: _jobs(s, "background_failures")),
    ("gauge", "banpipe_pages_last_run_seconds", "How long the last page run took.",
     lambda s: s.get("pages_took")),  # None (no family) until a page run ended
    ("gauge", "banpipe_last_input_timestamp_seconds",
     "When banctl apply last read an input line (Unix time).",
     lambda s: s.get("last_input")),  # None (no family) until the first line
]  # fmt: skip


def _count(snap: dict[str, Any], key: str) -> Any:
    return snap.get("counts", {}).get(key, 0)


def _ops(snap: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {"op": {op: snap.get(key, {}).get(op, 0) for op in _FIREWALL_OPS}}


def _jobs(snap: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {"job": {job: snap.get(key, {}).get(job, 0) for job in ("metrics", "pages")}}


def _check(snap: dict[str, Any], key: str, default: Any) -> Any:
    return (snap.get("last_check") or {}).get(key, default)


def daemon_families(snap: dict[str, Any], brake_limit: int) -> list[metrics.Family]:
    """Metrics from ``banctl apply``'s runtime record (``Monitor.snapshot()``)."""
    snap = {**snap, "brake_limit": brake_limit}
    fams = []
    for kind, name, help_text, value_of in _DAEMON_METRICS:
        value = value_of(snap)
        if isinstance(value, dict):
            ((label, values),) = value.items()
            fams.append(metrics.by_label(name, kind, help_text, label, values))
        elif value is not None:
            fams.append(metrics.Family(name, kind, help_text).add(value))
    return fams


def ledger_families(ledger: Any, now: float) -> list[metrics.Family]:
    """Gauges read from the ledger: active bans by family and kind, its size."""
    active = metrics.Family("banpipe_active_bans", "gauge", "Active bans, by family and kind.")
    for (fam, kind), n in sorted(overview.active_counts(ledger).items()):
        active.add(n, family=fam, kind=kind)
    t = overview.totals(ledger)
    return [
        active,
        metrics.gauge(
            "banpipe_ledger_size_bytes",
            "Ledger file plus its WAL, in bytes.",
            overview.ledger_bytes(ledger.path),
        ),
        metrics.gauge("banpipe_ledger_offenders", "Offenders the ledger knows.", t["offenders"]),
        metrics.gauge("banpipe_ledger_violations", "Violations the ledger keeps.", t["violations"]),
    ]


def removed_family(ledger: Any, started: float | None, expired: int) -> list[metrics.Family]:
    """Bans lifted before their expiry since the daemon started (admin unban, our WAN
    address), counted from the ledger's ban periods: other processes do the unbans."""
    ended = 0
    if started is not None:
        ended = ledger.db.execute(
            "SELECT count(*) FROM bans WHERE end IS NOT NULL AND end >= ?", (started,)
        ).fetchone()[0]
    return [
        metrics.counter(
            "banpipe_bans_removed_total",
            "Bans lifted before their expiry (unban, our own address).",
            max(0, int(ended) - expired),
        ),
    ]
