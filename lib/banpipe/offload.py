"""``banctl apply``'s slow writes, each run in a child process: the pages and the metrics.

A page run over 100,000 bans takes 0.6-2.4 s, the first one into an empty directory
over a minute; the metrics' ledger part about 0.2 s (bench/README.md). Run inside the
daemon's loop, that was time a new ban waited. So each runs in a child process
(``python -m banpipe.offload``, the job as one JSON object on its stdin) that reads the
ledger on a connection of its own (WAL: readers beside the writer) at nice
``CHILD_NICE``. Not a thread: a thread doing seconds of Python holds the GIL the
daemon's loop needs.

:class:`Child` runs one kind of job, at most one at a time; a run due while the last
one still goes is skipped (the next run takes in what changed meanwhile). The daemon
waits on the child's stderr in its select(): end of file there means the child
exited. The child writes one line there when it fails, the reason; that line, or how
it ended (``killed by SIGKILL``), is the :class:`Outcome`'s ``reason``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from banpipe.cli import exit_status

# What the child runs; a test puts a slower or failing child in.
COMMAND = [sys.executable, "-m", "banpipe.offload"]
CHILD_NICE = 10  # the daemon's bans come first when the two share a core
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when a run is stopped
PAGES_REFRESH = 300.0  # a page run at least this often (times left stay roughly true)
PAGES_SHARE = 10.0  # at least this many times a page run's duration between runs
PAGES_STOP_WAIT = 20.0  # at end of input: seconds to wait for the pages to be current
_LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REASON_MAX = 2000


@dataclass
class Outcome:
    """How a child's run ended."""

    ok: bool
    reason: str  # why it failed ("" when ok)
    took: float  # seconds from start to exit


class Child:
    """One kind of job in a child process, at most one at a time (see the module doc)."""

    def __init__(self, mono: Callable[[], float] = time.monotonic) -> None:
        self.mono = mono
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._err = b""
        self._eof = False

    @property
    def running(self) -> bool:
        return self.proc is not None

    def fileno(self) -> int | None:
        """The child's stderr while it runs (readable at its exit), for select()."""
        if self.proc is None or self._eof or self.proc.stderr is None:
            return None
        return self.proc.stderr.fileno()

    def start(self, job: dict[str, Any]) -> bool:
        """Start ``job``; False when the last run still goes (nothing started).

        Raises OSError when no process can be started."""
        if self.proc is not None:
            return False
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (_LIB, env.get("PYTHONPATH"))))
        # A session of its own: a Ctrl-C at the terminal is the daemon's to handle.
        proc = subprocess.Popen(
            COMMAND, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, start_new_session=True,
        )  # fmt: skip
        self.proc, self.started, self._err, self._eof = proc, self.mono(), b"", False
        assert proc.stdin is not None and proc.stderr is not None
        os.set_blocking(proc.stderr.fileno(), False)
        with contextlib.suppress(BrokenPipeError):  # it died at once: poll() tells why
            proc.stdin.write(json.dumps(job).encode())  # a few kB: the pipe takes it all
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        return True

    def poll(self) -> Outcome | None:
        """The outcome of a run that ended (once); None while it runs, or when idle."""
        proc = self.proc
        if proc is None:
            return None
        self._drain()
        code = proc.poll()
        if code is None and self._eof:
            # stderr closes as the child exits, a moment before it can be reaped
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(timeout=1.0)
        if code is None:
            return None
        self._drain()
        return self._ended(code)

    def wait(self, timeout: float) -> Outcome | None:
        """Wait up to ``timeout`` seconds for the run to end; its outcome, or None."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None
        return self.poll()

    def stop(self) -> Outcome | None:
        """End a run that still goes (SIGTERM, then SIGKILL after ``KILL_GRACE``) and
        reap it. The outcome of a run that had ended by itself; None for one stopped
        here (not a failure) or when nothing ran."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return self.poll()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self.poll()
        return None

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stderr is None or self._eof:
            return
        try:
            while chunk := os.read(proc.stderr.fileno(), 4096):
                self._err = (self._err + chunk)[-_REASON_MAX:]
            self._eof = True
        except BlockingIOError:
            pass

    def _ended(self, code: int) -> Outcome:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        proc.stderr.close()
        self.proc = None
        lines = self._err.decode("utf-8", "replace").strip().splitlines()
        reason = "" if code == 0 else (lines[-1] if lines else exit_status(code))
        return Outcome(code == 0, reason, self.mono() - self.started)


class Offload:
    """When ``banctl apply``'s metrics and pages are written, each by a :class:`Child`.

    ``every`` maps a job ("metrics", "pages") to its interval; ``job_of(what)`` makes a
    run's job; ``failed(what, reason)`` and ``succeeded(what)`` hear how runs ended (the
    monitor reports a failure once until a run succeeds again). The pages are written
    after a change (:meth:`changed`) or every ``PAGES_REFRESH`` s, and a page run starts
    at least ``PAGES_SHARE`` times the last run's duration after the last one started:
    a page run over 100,000 bans takes seconds of a core.
    """

    def __init__(
        self,
        every: dict[str, float],
        job_of: Callable[[str], dict[str, Any]],
        failed: Callable[[str, str], None],
        succeeded: Callable[[str], None],
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every, self.job_of, self.failed, self.succeeded = every, job_of, failed, succeeded
        self.mono = mono
        self.children = {what: Child(mono) for what in every}
        self.due = dict.fromkeys(every, 0.0)
        self.dirty = True  # the pages are not known to show the ledger
        self.written = -PAGES_REFRESH  # when the last page run started
        self.runs: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.pages_took: float | None = None

    def changed(self) -> None:
        self.dirty = True

    def fds(self) -> list[int]:
        """The running children's stderr, readable when one exits: for select()."""
        return [fd for c in self.children.values() if (fd := c.fileno()) is not None]

    def waits(self, mono: float) -> list[float]:
        """Seconds until each run that is due next (none for one still going)."""
        waits = [
            self.due[what] - mono
            for what, child in self.children.items()
            if not child.running and (what != "pages" or self._stale(mono))
        ]
        if any(c.running and c.fileno() is None for c in self.children.values()):
            waits.append(0.1)  # exited but not reaped yet (rare): look again soon
        return waits

    def tick(self, *, force: bool = False) -> None:
        """Collect the runs that ended, start those due (all with ``force``); a run due
        while the last one still goes is skipped. Never waits for a child."""
        mono = self.mono()
        for what, child in self.children.items():
            self._ended(what, child.poll())
        for what, child in self.children.items():
            if what == "pages" and not self._stale(mono):
                continue
            if not (force or mono >= self.due[what]):
                continue
            if what != "pages":
                self.due[what] = mono + self.every[what]  # the pages': when this one ends
            if not child.running:
                self._start(what)

    def stop(self, *, orderly: bool) -> None:
        """Stop every run still going, except at end of input (not ``orderly``), where
        the pages are made current first, waiting up to ``PAGES_STOP_WAIT`` s."""
        pages = self.children.get("pages")
        if pages is not None and not orderly:
            end = self.mono() + PAGES_STOP_WAIT
            self._ended("pages", pages.wait(end - self.mono()))
            if not pages.running and self.dirty:
                self._start("pages")
                self._ended("pages", pages.wait(end - self.mono()))
            if pages.running:
                self.failed("pages", f"page run not done {PAGES_STOP_WAIT:g} s after the stop")
        for what, child in self.children.items():
            self._ended(what, child.stop())  # a stopped run is no failure

    def _stale(self, mono: float) -> bool:
        return self.dirty or mono - self.written >= PAGES_REFRESH

    def _start(self, what: str) -> None:
        if what == "pages":
            self.dirty = False  # a change from now on makes another run
            self.written = self.mono()
        try:
            self.children[what].start(self.job_of(what))
        except OSError as exc:
            self._ended(what, Outcome(False, str(exc.strerror or exc), 0.0))

    def _ended(self, what: str, outcome: Outcome | None) -> None:
        if outcome is None:
            return
        self.runs[what] += 1
        if what == "pages":
            self.pages_took = outcome.took
            self.due["pages"] = self.written + max(self.every["pages"], PAGES_SHARE * outcome.took)
            if not outcome.ok:
                self.dirty = True  # not current: again when due
        if outcome.ok:
            self.succeeded(what)
        else:
            self.failures[what] += 1
            self.failed(what, outcome.reason)


# -- the child -------------------------------------------------------------------------


def _pages(job: dict[str, Any]) -> None:
    from banpipe.ledger import Ledger
    from banpipe.report import write_pages

    with Ledger.open(job["ledger"], create=False) as ledger:
        write_pages(ledger, job["dir"], job["now"])


def _metrics(job: dict[str, Any]) -> None:
    from banpipe.ledger import Ledger
    from banpipe.monitor import write_metrics

    with Ledger.open(job["ledger"], create=False) as ledger:
        write_metrics(ledger, job["textfile"], job["snapshot"], job["brake_limit"], job["now"])


JOBS: dict[str, Callable[[dict[str, Any]], None]] = {"pages": _pages, "metrics": _metrics}


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds: temporary files removed, state rolled back


def main(stdin: Any = None, stderr: Any = None) -> int:
    """The child: run the job read from stdin; on failure one line on stderr, exit 1."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stderr = stderr if stderr is not None else sys.stderr
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICE)
    try:
        job = json.loads(stdin.read())
        JOBS[job["kind"]](job)
    except OSError as exc:
        print(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", file=stderr)
        return 1
    except Exception as exc:  # whatever it is, the daemon reports it and goes on
        print(f"{type(exc).__name__}: {exc}", file=stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
