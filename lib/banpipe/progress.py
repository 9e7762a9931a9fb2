"""Progress of a long replay, on one self-overwriting stderr line, for people only.

Shown only when stderr is a terminal (never in a journal, a log file or a test's
captured stderr) and not for ``TERM=dumb``; at most every ``interval`` seconds, so a
replay of a million alerts writes a few dozen lines, not a million; cleared before
the tool's last words, so what stays on screen is only the usual summary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import IO


def wanted(stream: IO[str]) -> bool:
    """True when ``stream`` is a terminal a person watches (not ``TERM=dumb``)."""
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError, OSError):
        return False


def format_progress(
    done: int, total: int | None, items: int, elapsed: float, noun: str = "alerts"
) -> str:
    """``41% of 12.0 MB, 123,456 alerts, 27,310/s`` (no percentage without a total)."""
    rate = f"{items / elapsed:,.0f}/s" if elapsed > 0 else "-/s"
    if total:
        share = min(done * 100 // total, 100)
        return f"{share}% of {_size(total)}, {items:,} {noun}, {rate}"
    return f"{_size(done)}, {items:,} {noun}, {rate}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class Progress:
    """Rewrites ``TOOL: <progress>`` in place on a terminal, at most every ``interval`` s.

    ``update()`` is cheap when nothing is due (one clock read), so it can be called
    once per batch. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        tool: str,
        stream: IO[str],
        total: int | None = None,
        *,
        noun: str = "alerts",
        interval: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.tool = tool
        self.stream = stream
        self.total = total
        self.noun = noun
        self.interval = interval
        self.clock = clock or time.monotonic
        self.started = self.clock()
        self.next_at = self.started + interval  # a replay done within interval shows nothing
        self.shown = False

    def update(self, done: int, items: int) -> None:
        now = self.clock()
        if now < self.next_at:
            return
        self.next_at = now + self.interval
        text = format_progress(done, self.total, items, now - self.started, self.noun)
        # Cursor back to column 0: a line another tool of the pipe writes meanwhile
        # overwrites this one instead of being glued to its end.
        self._write(f"\r{self.tool}: {text}\x1b[K\r")
        self.shown = True

    def clear(self) -> None:
        """Remove the progress line (before the summary and on exit)."""
        if self.shown:
            self._write("\r\x1b[K")
            self.shown = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a progress line is never worth failing for
