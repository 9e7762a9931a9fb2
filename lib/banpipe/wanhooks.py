"""wanwatch's hooks: the ``--exec`` command run on every change of the WAN set.

One run at a time, never blocking wanwatch's event loop (``poll()`` says when it next
needs a look); changes that arrive meanwhile are merged into one later call, old of
the first and new of the last. A run past its timeout gets SIGTERM, HOOK_KILL_GRACE
later SIGKILL, as a whole process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from banpipe import cli
from banpipe.wanstate import diff, sort_addresses

DEFAULT_HOOK_TIMEOUT = 30.0
HOOK_KILL_GRACE = 2.0


def hook_call(
    command: Sequence[str], interface: str, old: Iterable[str], new: Iterable[str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment of one hook run."""
    old_l, new_l = sort_addresses(old), sort_addresses(new)
    added, removed = diff(old_l, new_l)
    argv = [*command, "--old", ",".join(old_l), "--new", ",".join(new_l)]
    env = {
        "BANPIPE_WAN_INTERFACE": interface,
        "BANPIPE_WAN_OLD": ",".join(old_l),
        "BANPIPE_WAN_NEW": ",".join(new_l),
        "BANPIPE_WAN_ADDED": ",".join(added),
        "BANPIPE_WAN_REMOVED": ",".join(removed),
    }
    return argv, env


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    label: str
    deadline: float
    killed_at: float | None = None


@dataclass
class Hooks:
    """Runs the --exec command, one at a time, never blocking the event loop."""

    command: tuple[str, ...]
    interface: str
    report: cli.Reporter
    timeout: float = DEFAULT_HOOK_TIMEOUT
    output_fd: int | None = None
    monotonic: Callable[[], float] = time.monotonic
    running: _Running | None = None
    pending: tuple[frozenset[str], frozenset[str]] | None = None
    runs: int = 0
    failures: int = 0
    _env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def submit(self, old: frozenset[str], new: frozenset[str]) -> None:
        if not self.command:
            return
        if self.pending is not None:
            old = self.pending[0]  # merge: the hook sees the whole step it missed
        self.pending = (old, new)
        self.poll()

    def poll(self) -> float | None:
        """Reap, enforce timeouts, start the next run; seconds until it needs a look."""
        now = self.monotonic()
        if self.running is not None:
            self._check(now)
        if self.running is None and self.pending is not None:
            old, new = self.pending
            self.pending = None
            if old != new:
                self._start(old, new, now)
        if self.running is None:
            return None
        r = self.running
        due = (r.killed_at + HOOK_KILL_GRACE) if r.killed_at is not None else r.deadline
        return max(0.0, due - now)

    def _start(self, old: frozenset[str], new: frozenset[str], now: float) -> None:
        argv, extra = hook_call(self.command, self.interface, old, new)
        label = self.command[0]
        out = self.output_fd if self.output_fd is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,  # never our stdout: that is the event pipe
                stderr=out,
                env={**self._env, **extra},
                start_new_session=True,  # its own process group, killed as one on timeout
                close_fds=True,
            )
        except OSError as exc:
            self.failures += 1
            self.report.error("hook", f"{label}: cannot run: {exc.strerror or exc}", "hook")
            return
        self.runs += 1
        self.running = _Running(proc, label, now + self.timeout)

    def _check(self, now: float) -> None:
        r = self.running
        assert r is not None
        code = r.proc.poll()
        if code is not None:
            self.running = None
            if r.killed_at is not None:
                return  # already reported as timed out
            if code != 0:
                self.failures += 1
                self.report.error("hook", f"{r.label}: {cli.exit_status(code)}", "hook")
            return
        if r.killed_at is None and now >= r.deadline:
            self.failures += 1
            self.report.error(
                "hook", f"{r.label}: timed out after {self.timeout:g}s; terminating it", "hook"
            )
            _signal_group(r.proc, signal.SIGTERM)
            r.killed_at = now
        elif r.killed_at is not None and now >= r.killed_at + HOOK_KILL_GRACE:
            _signal_group(r.proc, signal.SIGKILL)
            r.proc.wait()
            self.running = None

    def wait(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Run what is pending to the end (bounded by the timeout); for --once."""
        while not stop():
            left = self.poll()
            if left is None:
                return
            try:
                self.running.proc.wait(timeout=min(left, 0.2) or 0.01)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
