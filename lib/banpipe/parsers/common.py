"""What every alert format family of banpipe.parsers shares: the error value, its
reasons, the text limits and character classes, and the dates (year inference)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from banpipe import pipe

_FULL_FORMATS = ("snort2-full", "snort3-full")

R_NOT_ALERT = "not an alert"
R_BINARY = "binary data"
R_TOO_LONG = "line too long"
R_MALFORMED = "malformed alert"
R_EXTRA = "extra text ignored"
R_FRAGMENT = "fragment without alert header"
R_INCOMPLETE = "incomplete alert block"
R_FORCED = "not the forced format"
REASONS = (
    R_NOT_ALERT,
    R_BINARY,
    R_TOO_LONG,
    R_MALFORMED,
    R_FRAGMENT,
    R_INCOMPLETE,
    R_FORCED,
    R_EXTRA,
)

# Longest text kept in ParseError.text: enough to recognise the line in a report.
_TEXT_MAX = 200
# A block this long is no alert_full block (a packet dump is at most a few thousand lines).
_BLOCK_MAX_LINES = 20000
# Per-parser caches of date tokens are cleared when this full (a date a day repeats).
_DATES_MAX = 4096


@dataclass(frozen=True)
class ParseError:
    """A skipped input unit: ``lineno`` of its first line, why, and that line (shortened)."""

    lineno: int
    reason: str
    text: str | None = None


_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}"
# The year's digits as alternatives, not nested optional groups: sre runs a group's "?"
# through its general repeat (0.5k instructions a line in parsers.scan's findall).
_DATE = r"\d\d/\d\d(?:/\d\d\d\d|/\d\d|)"
# Text that may appear in msg/classification/proto: no control characters (tab allowed),
# no DEL/C1 controls, no lone surrogates (undecodable bytes).  Excluding them here keeps
# the binary-data check off the fast path: such a line fails _FAST and is checked later.
_TXT = "\\t\\x20-\\x7e\\xa0-\\ud7ff\\ue000-\\U0010ffff"
_TXT_NB = "\\t\\x20-\\x5a\\x5c-\\x7e\\xa0-\\ud7ff\\ue000-\\U0010ffff"  # without "["
_CLS = r"[^\]\x00-\x1f\x7f-\x9f\ud800-\udfff]"
_BINARY = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
# Undecodable bytes as surrogateescape left them, and binary other than those.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_BINARY_UTF8 = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udc7f\udd00-\udfff]")
# Each undecodable byte as Windows-1252 reads it (Latin-1 plus printable 0x80-0x9f),
# U+FFFD for the five bytes it leaves undefined.
_CP1252 = {0xDC00 + b: bytes([b]).decode("cp1252", "replace") for b in range(0x80, 0x100)}


def _short(line: str) -> str:
    return line if len(line) <= _TEXT_MAX else line[:_TEXT_MAX] + "..."


def _unquote(msg: str) -> str:
    if len(msg) >= 2 and msg[0] == '"' and msg[-1] == '"':
        return msg[1:-1]
    return msg


def _century(yy: int) -> int:
    # Same pivot as strptime's %y: 69-99 are 1969-1999.
    return 1900 + yy if yy >= 69 else 2000 + yy


def _iso_date(y: int, m: int, d: int) -> str:
    date(y, m, d)  # validates, raises ValueError
    return f"{y:04d}-{m:02d}-{d:02d}T"


def new_alert(
    ts: str | None,
    ids: tuple[int, int, int],
    msg: str,
    classification: str | None,
    priority: int | None,
    proto: str | None,
    addresses: tuple[str | None, int | None, str | None, int | None],
    action: str | None,
    refs: list[str] | None,
    fmt: str | None,
) -> dict[str, Any]:
    """An alert dict, keys in contract order (banpipe.pipe.ALERT_KEYS): ``ids`` is
    (gid, sid, rev), ``addresses`` (src, sport, dst, dport); a classification that is
    empty or printed as ``(null)`` is none."""
    gid, sid, rev = ids
    src, sport, dst, dport = addresses
    return {
        "v": 1,
        "ts": ts,
        "gid": gid,
        "sid": sid,
        "rev": rev,
        "msg": msg,
        "classification": None if classification in ("(null)", "") else classification,
        "priority": priority,
        "proto": proto,
        "src": src,
        "sport": sport,
        "dst": dst,
        "dport": dport,
        "action": action,
        "refs": refs,
        "format": fmt,
    }


class Encoded(NamedTuple):
    """Alerts as their pipe lines (``AlertParser(encoded=True)``): ``data`` is ``alerts``
    lines, each the bytes ``banpipe.pipe.encode`` makes of the alert dict."""

    data: bytes
    alerts: int


# The parts of an alert_fast alert that change from line to line, as slots of its pipe line.
_SLOTS = {
    "ts": '"%s%s"',  # ISO date prefix, time
    "src": '"%s"',
    "sport": "%s",  # an int, or "null"
    "dst": '"%s"',
    "dport": "%s",
    "refs": "[]",
}


def line_template(alert: dict[str, Any], fmt: str) -> tuple[str, ...]:
    """The pipe line (pipe.encode's text, no newline) of alerts like ``alert`` in format
    ``fmt``: the 7 pieces of text around (date prefix, time, src, sport, dst, dport).

    Each member is the encoder's own text for that key and value, so a line made from
    the pieces is the line ``pipe.encode`` makes of the alert dict: one encoding.
    The pieces hold the encoder's *bytes*, one character each (decoded as Latin-1):
    a line made of them and of ASCII (time, addresses, ports) is its pipe line's bytes
    by ``encode("latin-1")``, a plain copy, where a non-ASCII msg would make the UTF-8
    encoding of a whole batch go character by character.
    """
    parts = []
    for key, value in alert.items():
        slot = _SLOTS.get(key)
        if slot is not None:
            parts.append(f'"{key}":{slot}')
        else:
            member = pipe.dumps({key: fmt if key == "format" else value}).decode("latin-1")
            parts.append(member[1:-1].replace("%", "%%"))
    # NUL marks the slots: JSON text never holds one (the encoder writes \u0000).
    line = "{" + ",".join(parts) + "}"
    return tuple((line % (("\0",) * 6)).split("\0"))


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


class Dates:
    """The time-stamp side of a parser: ISO date prefixes from date tokens, with the
    year inferred for yearless stamps (mixed into :class:`banpipe.parsers.AlertParser`).

    ``_now``, ``_year`` and the caches are set by the parser; :meth:`_anchor` moves the
    year-inference anchor.
    """

    _now: datetime
    _year: int | None
    _dates: dict[object, object]
    _limit_date: date
    _limit_time: str

    def _anchor(self, now: datetime) -> None:
        self._now = now
        limit = now.replace(tzinfo=None) + timedelta(days=1)
        self._limit_date = limit.date()
        self._limit_time = limit.strftime("%H:%M:%S.%f")
        self._dates.clear()

    def _yearless(self, month: int, day: int) -> object:
        """ISO date prefix for a yearless stamp, or (later, earlier) on the boundary day.

        The year is the latest one that does not put the stamp more than a day after
        ``now``: next year's 1 January read on 31 December (a clock ahead of ours, an
        anchor a minute old) is next year's, 29 February is the last leap year's.  On the
        boundary day the time decides between that year and the one before it.
        """
        if self._year is not None:
            return _iso_date(self._year, month, day)
        limit = self._limit_date
        found: list[str] = []
        # Leap years are at most 8 years apart (1896, 1904): 9 candidates always hold one.
        for y in range(self._now.year + 1, self._now.year - 8, -1):
            try:
                d = date(y, month, day)
            except ValueError:
                continue
            if d > limit:
                continue
            found.append(_iso_date(y, month, day))
            if d < limit or len(found) == 2:
                break
        if not found:
            raise ValueError(f"no date {month:02d}/{day:02d}")
        return found[0] if len(found) == 1 else tuple(found)

    def _date_prefix(self, tok: str, year_first: bool) -> object:
        """Cached ISO "YYYY-MM-DDT" for a date token; None when invalid."""
        key = tok if len(tok) != 8 else (("y" if year_first else "m") + tok)
        v = self._dates.get(key, False)
        if v is not False:
            return v
        try:
            if len(tok) == 5:
                v = self._yearless(int(tok[:2]), int(tok[3:5]))
            elif len(tok) == 10:
                v = _iso_date(int(tok[6:]), int(tok[:2]), int(tok[3:5]))
            else:
                a, b, c = int(tok[:2]), int(tok[3:5]), int(tok[6:8])
                # Snort 3 -y prints YY/MM/DD, Snort 2 -y MM/DD/YY.
                y, mo, d = (a, b, c) if year_first else (c, a, b)
                v = _iso_date(_century(y), mo, d)
        except ValueError:
            v = None
        if len(self._dates) >= _DATES_MAX:
            self._dates.clear()
        self._dates[key] = v
        return v

    def _ts(self, tok: str, time: str, year_first: bool) -> str | None:
        v = self._date_prefix(tok, year_first)
        if type(v) is str:
            return v + time
        if v is None:
            return None
        return (v[1] if time > self._limit_time else v[0]) + time
