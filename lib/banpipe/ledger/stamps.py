"""Alert time stamps as the ledger stores them (``hits.alert_first`` and ``alert_last``)."""

from __future__ import annotations

import calendar
import re
from datetime import datetime

# An alert's own time stamp in fasttail's form (naive ISO 8601 with microseconds) is
# stored as the integer microseconds of those fields read as UTC (8 bytes instead of 26,
# and exactly the same text back, whatever the time zone); any other text as it is.
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
STAMP_SQL = (
    "strftime('%Y-%m-%dT%H:%M:%S', {0} / 1000000, 'unixepoch') || printf('.%06d', {0} % 1000000)"
)
_days: dict[str, int | None] = {}  # "YYYY-MM-DD" -> its midnight in us, read as UTC
_seconds: dict[str, int | None] = {}  # "YYYY-MM-DDTHH:MM:SS" -> its us (None: no time)


def _day(date: str) -> int | None:
    if len(_days) >= 4096:
        _days.clear()
    us = None
    if _DATE_RE.match(date):
        y, m, d = int(date[:4]), int(date[5:7]), int(date[8:])
        try:
            datetime(y, m, d)
        except ValueError:
            pass
        else:
            us = calendar.timegm((y, m, d, 0, 0, 0)) * 1_000_000
            if us < 0:
                us = None  # before 1970: SQLite's integer division rounds towards 0
    _days[date] = us
    return us


def _second(head: str) -> int | None:
    """Microseconds of ``YYYY-MM-DDTHH:MM:SS`` read as UTC; None when it is no such time."""
    if len(_seconds) >= 1 << 16:
        _seconds.clear()
    us = None
    if head[10] == "T" and head[13] == ":" and head[16] == ":":
        date = head[:10]
        day = _days.get(date, -1)
        if day == -1:
            day = _day(date)
        clock = head[11:13] + head[14:16] + head[17:19]
        if day is not None and clock.isascii() and clock.isdigit():
            h, m, sec = int(clock[:2]), int(clock[2:4]), int(clock[4:6])
            if h <= 23 and m <= 59 and sec <= 59:
                us = day + (h * 3600 + m * 60 + sec) * 1_000_000
    _seconds[head] = us
    return us


def stamp_code(text: str | None) -> int | str | None:
    """``text`` as stored in ``hits.alert_first``: an integer for fasttail's form
    ``YYYY-MM-DDTHH:MM:SS.ffffff`` (a real date and time, ASCII digits, from 1970),
    else the text itself."""
    if text is None or len(text) != 26 or text[19] != ".":
        return text
    head = text[:19]
    base = _seconds.get(head, -1)  # alerts come many to a second: one parse per second
    if base == -1:
        base = _second(head)
    frac = text[20:]
    if base is None or not (frac.isascii() and frac.isdigit()):
        return text
    return base + int(frac)


def last_code(first: int | str | None, text: str | None) -> int | str | None:
    """``hits.alert_last`` for the last one's stamp ``text`` in a row whose
    ``alert_first`` is ``first``: microseconds after it when both are integers."""
    if first.__class__ is int:
        code = stamp_code(text)
        if code.__class__ is int:
            return code - first  # type: ignore[operator]
    return text
