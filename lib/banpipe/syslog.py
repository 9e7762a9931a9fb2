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
