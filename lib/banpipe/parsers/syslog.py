"""The syslog envelope around relayed IDS alerts: time stamp, host, program tag, message.

Pure code: :func:`envelope` splits one line as a syslog daemon wrote it into a file, in
the forms the daemons in use write:

* BSD (RFC 3164) as rsyslog's and syslog-ng's default templates write it:
  ``Sep  5 16:05:26 host snort[12]: msg``, optionally preceded by ``<PRI>``;
* RFC 3339 time stamps as rsyslog writes them with its high-precision template
  (``RSYSLOG_FileFormat``): ``2026-10-10T16:08:06.123456+02:00 host snort[12]: msg``;
* FreeBSD ``syslogd -v``/``-vv``: ``Sep  5 16:05:26 <auth.alert> host snort: msg``
  (facility and level, by number with ``-v``, by name with ``-vv``);
* RFC 5424: ``<PRI>1 2026-10-10T16:08:06.123Z host snort 12 - - msg`` (APP-NAME is the
  tag; structured data is skipped).

A message relayed without a tag (syslog-ng reading the alert file as a file source writes
``Oct 10 16:08:06 host 10/10-16:08:05.297269  [**] ...``) has tag None.

Which tags may carry alerts is the caller's decision (:data:`RELAY_TAGS`): any program
that can log can put alert-looking text in its messages, so only the IDS's own tags count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .common import (
    R_FORCED,
    R_MALFORMED,
    R_NOT_ALERT,
    ParseError,
    _int,
    _iso_date,
    _short,
    _unquote,
    new_alert,
)
from .endpoints import _PM_ALWAYS, _addresses, _BadAddress, _snort_mode
from .fast import _FAST

#: Program tags whose messages may be alerts (fasttail's ``relay_tags`` default): the
#: idents Snort 2/3 (``snort``), Suricata, Barnyard2 and Sagan log under.
RELAY_TAGS: tuple[str, ...] = ("snort", "suricata", "barnyard2", "sagan")

MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

_HMS = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
_RFC3339 = rf"(\d{{4}}-\d\d-\d\d)T({_HMS})(?:\.(\d{{1,6}})\d*)?(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
_BSD_OR_3339 = re.compile(
    rf"(?:<\d{{1,3}}>)?(?:(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ 0-3]\d) ({_HMS})"
    rf"|{_RFC3339})(?: <\w{{1,16}}\.\w{{1,16}}>)? (\S+) (.*)\Z",
    re.ASCII | re.DOTALL,
)
# RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]
_SD = r'(?:-|(?:\[(?:[^\]\\"]|\\.|"(?:[^"\\]|\\.)*")*\])+)'
_RFC5424 = re.compile(
    rf"<\d{{1,3}}>1 {_RFC3339} (\S+) (\S+) \S+ \S+ {_SD}(?: \ufeff?(.*))?\Z",
    re.ASCII | re.DOTALL,
)
_TAG = re.compile(r"([A-Za-z][\w.-]*)(?:\[\d+\])?: ", re.ASCII)


@dataclass(frozen=True)
class Envelope:
    """One syslog line taken apart.

    ``month``/``day`` are set for a yearless BSD stamp, ``date`` (``YYYY-MM-DD``) and
    ``offset`` (``+HH:MM``) for an RFC 3339 one; ``time`` is ``hh:mm:ss.uuuuuu``.  ``tag``
    is the program name without ``[pid]`` (None: no tag), ``body`` the message after it.
    """

    month: int | None
    day: int | None
    date: str | None
    time: str
    offset: str | None
    host: str
    tag: str | None
    body: str


def looks_like(line: str) -> bool:
    """Cheap test: could ``line`` start with a syslog envelope :func:`envelope` reads?"""
    c = line[:1]
    if c == "<" or c in "JFMASOND":
        return True
    return c.isdigit() and line[4:5] == "-" and line[10:11] == "T"


def _time(hms: str, frac: str | None) -> str:
    return f"{hms}.{(frac or '').ljust(6, '0')}"


def _offset(zone: str) -> str:
    return "+00:00" if zone == "Z" else zone


def envelope(line: str) -> Envelope | None:
    """The envelope of a syslog line, or None when ``line`` is not in a known form."""
    m = _BSD_OR_3339.match(line)
    if m is not None:
        mon, day, hms, date, hms2, frac, zone, host, rest = m.groups()
        t = _TAG.match(rest)
        tag, body = (t[1], rest[t.end() :]) if t is not None else (None, rest)
        if mon is not None:
            return Envelope(MONTHS[mon], int(day), None, _time(hms, None), None, host, tag, body)
        return Envelope(None, None, date, _time(hms2, frac), _offset(zone), host, tag, body)
    m = _RFC5424.match(line)
    if m is not None:
        date, hms, frac, zone, host, app, body = m.groups()
        return Envelope(
            None, None, date, _time(hms, frac), _offset(zone), host,
            None if app == "-" else app, body or "",
        )  # fmt: skip
    return None


# -- alerts in a syslog file (the snort-syslog format, and relayed alert_fast lines) -----

_SYSLOG_ALERT = re.compile(
    r"\[(\d{1,10}):(\d{1,10}):(\d{1,10})\] (.*?)(?: \[Classification: ([^\]]*)\])?"
    r"(?: \[Priority: (-?\d{1,10})\])?:?(?: <[^<> ]+>)?(?: \{([^{}]*)\} (\S*) -> (\S*))? *\Z",
    re.ASCII,
)


class SyslogLines:
    """The syslog family of :class:`banpipe.parsers.AlertParser` (a mixin)."""

    _force: str | None
    _relay_tags: frozenset[str]
    _limit_time: str
    _dates: dict[object, object]

    def _syslog(self, env: Envelope, line: str, lineno: int) -> dict | ParseError:
        """An alert relayed through syslog: an alert_fast line or an alert_syslog message.

        Only messages without a tag (a syslog daemon relaying the alert file) or under one
        of the IDS tags (``relay_tags``) are read; another program's message is never an
        alert, whatever text it carries.
        """
        tag, body = env.tag, env.body
        if tag is not None and tag.lower() not in self._relay_tags:
            return ParseError(lineno, R_NOT_ALERT, _short(line))
        if body[:1].isdigit():
            inner = _FAST.match(body)
            if inner is not None:
                return self._fast(inner, None, line, lineno)
        if tag is None:
            return self._other(line, lineno)
        a = _SYSLOG_ALERT.match(body)
        if a is None:
            return self._other(line, lineno)
        if self._force is not None and self._force != "snort-syslog":
            return ParseError(lineno, f"{R_FORCED}: looks like snort-syslog", _short(line))
        gid, sid, rev, msg, cls, prio, proto, src, dst = a.groups()
        if proto is None and ("[Priority: " in msg or "[Classification: " in msg or " -> " in msg):
            # The tail did not parse and the lazy msg took it (a line cut inside the tail,
            # as Snort 2's alert_syslog does at 1024 bytes): not a no-IP alert.
            return ParseError(lineno, R_MALFORMED, _short(line))
        # Snort 3's alert_syslog prints the msg in quotes as its alert_fast does.
        msg = _unquote(msg)
        if env.date is not None:
            try:
                _iso_date(int(env.date[:4]), int(env.date[5:7]), int(env.date[8:10]))
            except ValueError:
                return ParseError(lineno, R_MALFORMED + ": invalid date", _short(line))
            ts = f"{env.date}T{env.time}{env.offset}"
        else:
            key = (env.month, env.day)
            v = self._dates.get(key, False)
            if v is False:
                try:
                    v = self._yearless(env.month, env.day)
                except ValueError:
                    v = None
                self._dates[key] = v
            if v is None:
                return ParseError(lineno, R_MALFORMED + ": invalid date", _short(line))
            time = env.time
            ts = v + time if type(v) is str else (v[1] if time > self._limit_time else v[0]) + time
        # Suricata's alert-syslog output prints ports for every protocol, as its fast.log.
        mode = _PM_ALWAYS if tag.lower() == "suricata" else _snort_mode(proto)
        if proto is not None:
            try:
                s, sp, d, dp = _addresses(src, dst, mode)
            except _BadAddress as e:
                return ParseError(lineno, f"{R_MALFORMED}: {e}", _short(line))
        else:
            s = sp = d = dp = None
        return new_alert(
            ts,
            (int(gid), int(sid), int(rev)),
            msg,
            cls,
            _int(prio),
            proto,
            (s, sp, d, dp),
            None,
            [],
            "snort-syslog",
        )
