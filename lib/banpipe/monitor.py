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
  and at most a tenth of the time (and every ``PAGES_REFRESH`` s, so "time left" stays
  roughly true).

Writing these never stops the daemon: a failure is reported once (a warning) and
retried at the next interval.
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

from banpipe import metrics, overview
from banpipe.cli import Reporter
from banpipe.statefile import replace_file

STATUS_EVERY = 1.0
PAGES_REFRESH = 300.0
DAEMON_LOCK_WAIT = 5.0  # s: how long a start waits out someone else's hold on the lock
PAGES_SHARE = 10.0  # at least this many times a page run's duration between runs
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
        self._due = {"status": 0.0, "metrics": 0.0, "pages": 0.0}
        self._pages_dirty = True
        self._pages_written = -PAGES_REFRESH
        self._failed: set[str] = set()

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
        self._pages_dirty = True

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
            self._pages_dirty = True

    def stopped(self) -> None:
        self.tick(force=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- files ---------------------------------------------------------------------

    def deadline(self) -> float | None:
        """Seconds until a write is due, or None when nothing waits."""
        mono = self.mono()
        waits = [self._due["status"] - mono] if self.enabled else []
        if self.textfile:
            waits.append(self._due["metrics"] - mono)
        if self.pages_dir and (self._pages_dirty or mono - self._pages_written >= PAGES_REFRESH):
            waits.append(self._due["pages"] - mono)
        return max(0.0, min(waits)) if waits else None

    def tick(self, *, force: bool = False) -> None:
        """Write whatever is due (everything with ``force``)."""
        mono = self.mono()
        due = self._due
        if self.enabled and (force or mono >= due["status"]):
            due["status"] = mono + STATUS_EVERY
            self._guard("status", self._write_status)
        if self.textfile and (force or mono >= due["metrics"]):
            due["metrics"] = mono + self.metrics_every
            self._guard("metrics", self._write_metrics)
        stale = self._pages_dirty or mono - self._pages_written >= PAGES_REFRESH
        if self.pages_dir and stale and (force or mono >= due["pages"]):
            self._pages_dirty = False
            self._pages_written = mono
            self._guard("pages", self._write_pages)
            # Pages of 100,000 bans take seconds, and the daemon waits meanwhile: keep
            # that under a tenth of its time, whatever [pages] interval says.
            took = self.mono() - mono
            due["pages"] = mono + max(self.pages_every, PAGES_SHARE * took)

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            if what not in self._failed:
                self._failed.add(what)
                where = {"pages": self.pages_dir, "metrics": self.textfile}.get(what)
                self.report.error(
                    where or runtime_path(self.ledger.path),
                    f"cannot write {what}: {exc.strerror or exc}; retrying",
                    "warning",
                )
            return
        self._failed.discard(what)

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
        }

    def _write_status(self) -> None:
        data = json.dumps(self.snapshot(), sort_keys=True).encode() + b"\n"
        replace_file(runtime_path(self.ledger.path), data)

    def _write_metrics(self) -> None:
        assert self.textfile is not None
        families = daemon_families(self.snapshot(), self.brake.limit)
        families += ledger_families(self.ledger, self.env.clock())
        families += removed_family(self.ledger, self.state["started"], self.counts["expired"])
        metrics.write_textfile(self.textfile, families)

    def _write_pages(self) -> None:
        from banpipe.report import write_pages

        assert self.pages_dir is not None
        write_pages(self.ledger, self.pages_dir, self.env.clock())


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
    ("gauge", "banpipe_last_input_timestamp_seconds",
     "When banctl apply last read an input line (Unix time).",
     lambda s: s.get("last_input")),  # None (no family) until the first line
]  # fmt: skip


def _count(snap: dict[str, Any], key: str) -> Any:
    return snap.get("counts", {}).get(key, 0)


def _ops(snap: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {"op": {op: snap.get(key, {}).get(op, 0) for op in _FIREWALL_OPS}}


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
