"""alert_full blocks of Snort 2 and Snort 3 (docs/formats.md, "alert_full").

A block opens at a ``[**] [gid:sid:rev] msg [**]`` header and is complete at the empty
line after it, at the next header, at a one-line alert, or at the end of input; what its
body lines say is collected in a :class:`_Block` and turned into one alert or one error.
"""

from __future__ import annotations

import re

from .common import (
    _DATE,
    _FULL_FORMATS,
    _TIME,
    R_FORCED,
    R_INCOMPLETE,
    R_MALFORMED,
    ParseError,
    _short,
    _unquote,
    new_alert,
)
from .endpoints import _addresses, _BadAddress, _snort_mode
from .fast import _FAST

# A block this long is no alert_full block (a packet dump is at most a few thousand lines).
_BLOCK_MAX_LINES = 20000
_FULL_HEADER = re.compile(
    r"\[\*\*\] \[(\d{1,10}):(\d{1,10}):(\d{1,10})\] (?: <[^<> ]+> )?(?:(.*?) )?\[\*\*\] *\Z",
    re.ASCII,
)
_FULL_PRIO = re.compile(r"(?:\[Classification: ([^\]]*)\] )?\[Priority: (-?\d{1,10})\]", re.ASCII)
_FULL_TS = re.compile(rf"({_DATE})-({_TIME})(?: (.*))?\Z", re.ASCII)
_ADDRS = re.compile(r"(\S*) -> (\S*) *\Z")
_MAC_ADDRS = re.compile(r"\S+ -> \S+ type:0x[0-9A-Fa-f]+ len:0x[0-9A-Fa-f]+ *\Z")
_IP_HEADER = re.compile(r"(?:(\S+) -> (\S+) )?(\S+) TTL:\d+ ")
_XREF = re.compile(r"\[Xref => (.*?)\](?=\[Xref => | *\Z)")


class _Block:
    """An open alert_full block: the header plus what the body lines told so far."""

    __slots__ = (
        "lineno",
        "header",
        "gid",
        "sid",
        "rev",
        "msg",
        "fmt",
        "classification",
        "priority",
        "date",
        "time",
        "src",
        "dst",
        "proto",
        "refs",
        "state",
        "broken",
        "nlines",
    )

    def __init__(self, lineno: int, header: str, m: re.Match | None, fmt: str) -> None:
        self.lineno = lineno
        self.header = header
        self.fmt = fmt
        if m is not None:
            self.gid, self.sid, self.rev = int(m[1]), int(m[2]), int(m[3])
            msg = m[4] or ""  # a rule without msg: "[**] [1:2:3] [**]"
            self.msg = _unquote(msg) if fmt == "snort3-full" else msg
        self.classification: str | None = None
        self.priority: int | None = None
        self.date: str | None = None
        self.time: str | None = None
        self.src: str | None = None
        self.dst: str | None = None
        self.proto: str | None = None
        self.refs: list[str] = []
        # 0: before the time stamp line, 1: after it, 2: after a -e MAC line,
        # 3: inside an ORIGINAL DATAGRAM DUMP
        self.state = 0
        self.broken: str | None = None
        self.nlines = 1

    def fail(self, why: str) -> None:
        """The block is an error; the first reason found is the one reported."""
        if self.broken is None:
            self.broken = why

    def take(self, line: str, lineno: int) -> None:
        """What one line inside the block says (not empty, no header, no alert_fast)."""
        self.nlines += 1
        if self.nlines > _BLOCK_MAX_LINES:
            self.fail(R_INCOMPLETE + ": block too long")
            return
        state = self.state
        if state == 3:
            if line.startswith("** END OF DUMP"):
                self.state = 1
        elif line[0] == "[":
            self._tags(line, lineno)
        elif state == 0:
            self._stamp(line, lineno)
        elif state == 2:
            # The line after a -e MAC line: "src -> dst PROTO TTL:..." (or a non-IP packet).
            self.state = 1
            m = _IP_HEADER.match(line)
            if m is not None and m[1] is not None:
                self.src, self.dst, self.proto = m[1], m[2], m[3]
        elif line.startswith("** ORIGINAL DATAGRAM DUMP"):
            self.state = 3  # the dump's addresses are not the alert's
        elif self.proto is None and "TTL:" in line:
            m = _IP_HEADER.match(line)
            if m is not None and m[1] is None:
                self.proto = m[3]

    def _tags(self, line: str, lineno: int) -> None:
        """An ``[Xref => ...]`` line, or the classification and priority line."""
        if line.startswith("[Xref => "):
            found = _XREF.findall(line)
            if found:
                self.refs.extend(found)
            else:
                self.fail(f"{R_MALFORMED}: bad Xref line {lineno}")
        elif self.state == 0 and self.priority is None:
            m = _FULL_PRIO.match(line)
            if m is not None:
                self.classification = m[1]
                self.priority = int(m[2])

    def _stamp(self, line: str, lineno: int) -> None:
        """The time stamp line: addresses after it, or a -e MAC line's."""
        m = _FULL_TS.match(line)
        if m is None:
            return
        self.date, self.time = m[1], m[2]
        rest = m[3]
        self.state = 1
        if rest and rest.strip():
            if _MAC_ADDRS.match(rest):
                self.state = 2
            else:
                a = _ADDRS.match(rest)
                if a is None:
                    self.fail(f"{R_MALFORMED}: bad address line {lineno}")
                else:
                    self.src, self.dst = a[1], a[2]


class FullBlocks:
    """The alert_full family of :class:`banpipe.parsers.AlertParser` (a mixin)."""

    _block: _Block | None
    _force: str | None

    def _open_block(self, line: str, lineno: int) -> list:
        m = _FULL_HEADER.match(line)
        if m is None:
            # An unusable header still opens a unit, so that its body is one error with it.
            b = self._block = _Block(lineno, line, None, "")
            b.broken = R_MALFORMED + ": bad alert_full header"
            return []
        force = self._force
        if force in _FULL_FORMATS:
            fmt = force
        else:
            msg = m[4] or ""
            quoted = len(msg) >= 2 and msg[0] == '"' and msg[-1] == '"'
            fmt = "snort3-full" if quoted else "snort2-full"
        b = self._block = _Block(lineno, line, m, fmt)
        if force is not None and force != fmt:
            b.broken = f"{R_FORCED}: looks like {fmt}"
        return []

    def _feed_block(self, b: _Block, line: str, lineno: int) -> list:
        """One line while a block is open: the end of the block, or one of its lines."""
        if not line:
            return [self._finish()]
        c = line[0]
        if c == "[" and line.startswith("[**] ["):
            out = [self._finish()]
            out.extend(self._open_block(line, lineno))
            return out
        if "0" <= c <= "9":
            m = _FAST.match(line)
            if m is not None:
                return [self._finish(), self._fast(m, None, line, lineno)]
        b.take(line, lineno)
        return []

    def _finish(self) -> dict | ParseError:
        b = self._block
        self._block = None
        assert b is not None
        text = _short(b.header)
        if b.broken is not None:
            return ParseError(b.lineno, b.broken, text)
        if b.date is None:
            return ParseError(b.lineno, f"{R_INCOMPLETE}: no time stamp line", text)
        ts = self._ts(b.date, b.time, b.fmt == "snort3-full")
        if ts is None:
            return ParseError(b.lineno, R_MALFORMED + ": invalid date", text)
        if b.src is not None:
            try:
                s, sp, d, dp = _addresses(b.src, b.dst, _snort_mode(b.proto))
            except _BadAddress as e:
                return ParseError(b.lineno, f"{R_MALFORMED}: {e}", text)
        else:
            s = sp = d = dp = None
        return new_alert(
            ts,
            (b.gid, b.sid, b.rev),
            b.msg,
            b.classification,
            b.priority,
            b.proto,
            (s, sp, d, dp),
            None,
            b.refs,
            b.fmt,
        )
