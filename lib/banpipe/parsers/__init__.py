"""Parsers for Snort and Suricata alerts (the input side of ``fasttail``).

One module per format family, behind the one dispatcher here (:class:`AlertParser`):
``fast`` (alert_fast lines of Snort 2, Snort 3 and Suricata: the hot path), ``full``
(alert_full blocks), ``syslog`` (alerts in syslog files), ``eve`` (Suricata EVE JSON);
``endpoints`` reads address and port text, ``common`` holds what they share, ``scan``
reads a burst of lines at once (the hot path, handing other lines to the families). The
formats themselves are described in docs/formats.md.

Pure code: no file I/O, no clock reads.  The caller (the follower) feeds decoded lines and
gets back alerts (plain dicts, the pipe contract ``"v": 1``) and :class:`ParseError` values.

API
---
``AlertParser(*, now, year=None, force=None, max_line=65536, relay_tags=RELAY_TAGS,
encoded=False)``
    Incremental parser.  ``now`` (a naive local ``datetime``) anchors the year of yearless
    time stamps (Snort without ``-y``, syslog stamps): the latest year that does not put
    the alert more than one day after ``now``.  ``year`` overrides that inference.
    ``force`` is one of :data:`FORMATS` and rejects everything else; without it the format
    is detected per line (per block for the full formats; a line starting with ``{`` is a
    Suricata EVE record, :mod:`banpipe.parsers.eve`).  ``relay_tags``: the syslog program tags
    whose messages may be alerts (:mod:`banpipe.parsers.syslog`); other programs' never are.
``AlertParser.feed(line, lineno) -> list[dict | ParseError]``
    One input line (a trailing ``"\\n"`` / ``"\\r\\n"`` is removed).  One-line formats are
    returned at once; an alert_full block is returned when it is complete: at the empty line
    after it, at the next ``[**] [`` header, at a one-line alert, or at :meth:`flush`.
``AlertParser.feed_text(text, first) -> list[dict | Encoded | ParseError]``
    The lines of ``text`` (joined by ``"\\n"``, no final newline), the first numbered
    ``first``: the results of ``feed`` for each, in order. With ``encoded``, the alerts of
    consecutive well-formed alert_fast lines come as one :class:`Encoded` item: their
    pipe lines (``banpipe.pipe.encode``'s bytes, each ending in a newline), and how many.
``AlertParser.flush() -> list[dict | ParseError]``
    End of input: completes an open full-format block.
``AlertParser.pending() -> bool``
    True while a full-format block is open.
``AlertParser.set_now(now)``
    Moves the year-inference anchor (a long-running follower calls this now and then).
``parse_line(line, *, now, year=None, force=None) -> dict | ParseError | None``
    Convenience for one-line formats; ``None`` for a blank or ``#`` comment line.

Alert dict keys, in this order: ``v`` (1), ``ts`` (``"2018-11-17T10:46:59.686494"``, local
time, no zone), ``gid``, ``sid``, ``rev``, ``msg``, ``classification`` (None when absent or
``(null)``), ``priority``, ``proto`` (as printed, None when not printed), ``src``,
``sport``, ``dst``, ``dport`` (canonical address strings, int ports, None when not
printed), ``action`` (lower-cased tag or None), ``refs`` (Xref URLs), ``format``.

Errors: one :class:`ParseError` per skipped unit: a line, or for the full formats a block or
a header-less fragment (the lines up to the next blank line or header).  ``reason`` is one
of :data:`REASONS`, optionally followed by ``": "`` and a detail; ``text`` is the unit's
first line (shortened, binary characters replaced).  Blank lines and ``#`` comments are
skipped silently.  A line may complete two items: a block and the one-line alert that
closed it, or a torn line (a writer died mid-line and the next alert was appended to the
fragment) as an error for the torn text plus the complete alert after it.

Decisions that matter for bans (docs/formats.md describes the formats): addresses are
validated and canonicalised by :mod:`banpipe.address` (an IPv4-mapped IPv6 address is
its IPv4 address).  Snort prints ports for TCP/UDP only, and not for
fragments (Snort 2 LogIpAddrs ``p->frag_flag``, Snort 3 ``DECODE_FRAG``), so a TCP/UDP
pair reads either with both ports or with none: the one reading that fits is taken, and
text that fits both (``2001:db8::a:443 -> 2001:db8::1:22``) or neither (a port on one
side only: a line cut short) is an error, never a guess; so is any IPv6 split that
cannot be decided.  Free text where Snort prints none (between the msg and the
addresses, after the addresses) makes the line an error, and so does a second ``[**]``
or address pair there (a msg holding ``[**]`` reads two ways).  Torn-line recovery
keeps the alert after a cut alert only, and syslog lines count only from IDS program
tags (or relayed without a tag): no other program's message is read as an alert.
Unknown ``[Key: value]`` tags between msg and protocol (``[AppID: x]``) are skipped.

Speed: a burst of alert_fast lines is parsed as one text (``AlertParser.feed_text``, which
the follower's Cursor calls per read; ``feed`` is the same for one line): per line one
regex match at the line's start splits it into time stamp, "middle" (ids, msg,
classification, priority, protocol) and addresses; the middle's parse is cached by its
text (module-wide) with the alert dict's template and its pipe line as a ``%`` format
(parsers.common.line_template), which is completed with the line's date prefix, time and
addresses: no dict per alert. IPv4 addresses are validated by inet_pton inline
(``banpipe.address.V4_PTON``: checked at import to agree with the rule), looked up in
``banpipe.address.V4_MEMO`` first, IPv6 in ``banpipe.address.V6_MEMO``; ISO date
prefixes are cached per parser (they depend on ``now``), and so are the pipe line's
pieces per middle and date token (``ScanLines._hot_entry``: two lookups a line, the
date already in the text before the time).  The module-wide caches have two
generations of a fixed size each, the parser's are cleared when full, so memory stays
bounded whatever the input (bench/README.md).  With ``encoded=True`` (fasttail)
the pipe lines of consecutive alerts come back as one ``Encoded`` item; otherwise every
alert is a dict (decoded from that line: the same bytes either way).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from banpipe.alert import FORMATS

from . import syslog
from .common import (
    _BINARY,
    _BINARY_UTF8,
    _CP1252,
    _DATE,
    _FULL_FORMATS,
    _NOT_UTF8,
    R_BINARY,
    R_FRAGMENT,
    R_MALFORMED,
    R_NOT_ALERT,
    R_TOO_LONG,
    REASONS,
    Dates,
    Encoded,
    ParseError,
    _short,
)
from .eve import EveLines
from .fast import _MIDDLES as _MIDDLES  # the templates cache (tests clear it)
from .fast import _QUICK_MATCH, FastLines
from .full import FullBlocks, _Block
from .scan import ScanLines
from .syslog import SyslogLines

__all__ = [
    "FORMATS",
    "Encoded",
    "REASONS",
    "AlertParser",
    "ParseError",
    "parse_line",
]

# The young generation's get, bound once: the memo is a dict subclass, and its method
# looked up per call binds a new method object each time (Python 3.11: 250 instructions
# of the 25,000 a line costs in AlertParser.feed).
_MIDDLE = _MIDDLES.get

# Lines that belong inside an alert_full block; seen without a header they are a fragment.
_BODY_LIKE = re.compile(
    rf"\[Classification: |\[Priority: |\[Xref => |\*\* (?:ORIGINAL DATAGRAM|END OF DUMP)"
    rf"|{_DATE}-\d\d:\d\d:\d\d\.\d+ |\S+ TTL:\d+ |\S+ -> \S+ \S+ TTL:\d+ ",
    re.ASCII,
)


class AlertParser(ScanLines, FastLines, FullBlocks, SyslogLines, EveLines, Dates):
    """Incremental parser for every supported alert text format (see the module docstring).

    The dispatcher: :meth:`feed` tells the family of a line and hands it on. The families
    are mixins (banpipe.parsers.scan, .fast, .full, .syslog, .eve) of this one object, so their
    shared state (force, dates, the open block) lives once and the hot path pays no
    extra call per line.
    """

    def __init__(
        self,
        *,
        now: datetime,
        year: int | None = None,
        force: str | None = None,
        max_line: int = 65536,
        relay_tags: Iterable[str] = syslog.RELAY_TAGS,
        encoded: bool = False,
    ) -> None:
        if force is not None and force not in FORMATS:
            raise ValueError(f"unknown format {force!r}; expected one of {', '.join(FORMATS)}")
        self._year = year
        self._force = force
        self._max_line = max_line
        self._encoded = encoded
        self.last_line = 0  # set by feed_text
        self._relay_tags = frozenset(t.lower() for t in relay_tags)
        self._block: _Block | None = None
        self._fragment = False
        self._dates: dict[object, object] = {}
        # date token -> (format, ISO date prefix), for one and for two spaces after the time
        self._fd: tuple[dict[str, tuple], dict[str, tuple]] = ({}, {})
        # The same for the tokens that need no second look: a valid date with a plain
        # prefix (not the boundary day of the year inference), format not refused by force.
        self._fdok: tuple[dict[str, tuple], dict[str, tuple]] = ({}, {})
        self._hot: dict[str, dict[str, tuple]] = {}  # see ScanLines._hot_entry
        self.set_now(now)

    # -- time stamps ---------------------------------------------------------------------

    def set_now(self, now: datetime) -> None:
        """Set the anchor for yearless time stamps (forgets the cached dates)."""
        self._anchor(now)
        for cache in self._fd + self._fdok:
            cache.clear()
        self._hot.clear()
        self._hot_size = 0

    # -- the feed ------------------------------------------------------------------------

    def pending(self) -> bool:
        """True while an alert_full block is open (its alert is not returned yet)."""
        return self._block is not None

    def flush(self) -> list:
        """End of input: return the open block's alert (or error), if any."""
        self._fragment = False
        if self._block is None:
            return []
        return [self._finish()]

    def feed(self, line: str, lineno: int) -> list:
        """Parse one line; return the alerts and errors it completes (often one or none)."""
        line = line.rstrip("\r\n")
        if self._block is None and not self._encoded and len(line) <= self._max_line:
            # One alert_fast line whose middle is cached: its dict straight from the
            # middle's template (FastLines._alert), where feed_text would build its pipe
            # line and decode it again (1.2x the lines/s of bench_parse.py). The split is
            # _SCAN_ALL's (the same places), so the result is feed_text's. A cached middle
            # holds no "\n" (_FAST admits none), so binary data never passes here.
            q = _QUICK_MATCH(line)
            if q is not None:
                dtok, time, mid, src, dst = q.groups()
                ent = _MIDDLE(mid) or _MIDDLES.recall(mid)
                if ent is not None:
                    self._fragment = False
                    self.last_line = lineno
                    return [self._alert(ent, dtok, time, src, dst, line, lineno)]
        if "\n" in line:
            return self._line(line, lineno)  # not one line: binary data
        return self.feed_text(line, lineno)

    def _slow(self, line: str, lineno: int) -> list:
        c = line[:1]
        if c == "{" and self._block is None and len(line) <= self._max_line:
            return self._eve(line, lineno)
        if (c == "\ufeff" or c == "\x00") and self._block is None:
            # A byte-order mark (a file saved by an editor) or the NULs of a sparse hole
            # (a writer that kept its offset across a copytruncate) before the text.
            rest = line.lstrip("\ufeff\x00")
            if "\x00" not in line:
                return self.feed(rest, lineno)
            if rest:
                out = self.feed(rest, lineno)
                if self._block is not None or any(type(x) is dict for x in out):
                    return out
                # Not an alert after the NULs: the line is what it looks like, binary.
                return [ParseError(lineno, R_BINARY, _short(_BINARY.sub("\ufffd", line)))]
        bad = None
        if len(line) > self._max_line:
            bad = R_TOO_LONG
        elif not line.isprintable() and _BINARY.search(line):
            if _NOT_UTF8.search(line) and not _BINARY_UTF8.search(line):
                # Bytes that are not UTF-8 (lines decoded with surrogateescape), and no
                # other binary: local rules saved in Latin-1/Windows-1252.  Read them as
                # that; addresses are ASCII, so this only ever changes msg text.
                return self.feed(line.translate(_CP1252), lineno)
            bad = R_BINARY
        if bad is not None:
            return self._bad_line(line, lineno, bad)

        block = self._block
        if block is not None:
            return self._feed_block(block, line, lineno)

        if not line or line[0] == "#" or line.isspace():
            self._fragment = False
            return []
        c = line[0]
        if c == "[" and line.startswith("[**] ["):
            self._fragment = False
            return self._open_block(line, lineno)
        if syslog.looks_like(line):
            env = syslog.envelope(line)
            if env is not None:
                self._fragment = False
                return [self._syslog(env, line, lineno)]
        if "[**]" in line:
            self._fragment = False
            return self._torn(line, lineno)
        if self._fragment:
            return []
        if _BODY_LIKE.match(line):
            # Lines of a block whose header is missing (file cut mid-block): one error.
            self._fragment = True
            return [ParseError(lineno, R_FRAGMENT, _short(line))]
        return [ParseError(lineno, R_NOT_ALERT, _short(line))]

    def _bad_line(self, line: str, lineno: int, reason: str) -> list:
        block = self._block
        if block is not None:
            # The block is the unit: it fails once, when it ends.
            block.nlines += 1
            block.fail(f"{reason}: line {lineno}")
            return []
        if self._fragment:
            return []
        return [ParseError(lineno, reason, _short(_BINARY.sub("\ufffd", line)))]

    # -- one-line formats ----------------------------------------------------------------

    def _other(self, line: str, lineno: int) -> ParseError:
        if "[**]" in line:
            return ParseError(lineno, R_MALFORMED, _short(line))
        return ParseError(lineno, R_NOT_ALERT, _short(line))

    # -- alert_full blocks ---------------------------------------------------------------


def parse_line(
    line: str,
    *,
    now: datetime,
    year: int | None = None,
    force: str | None = None,
) -> dict | ParseError | None:
    """Parse one line of a one-line format; None for a blank or ``#`` comment line.

    An alert_full header is reported as a ParseError (use AlertParser for blocks).
    """
    if force in _FULL_FORMATS:
        raise ValueError("parse_line handles one-line formats only")
    p = AlertParser(now=now, year=year, force=force)
    out = p.feed(line, 1)
    if p.pending():
        return ParseError(1, R_MALFORMED + ": alert_full header needs AlertParser", _short(line))
    if not out:
        return None
    return out[0]
