"""alert_fast bursts read as one text: the hot path of :class:`banpipe.parsers.AlertParser`.

:meth:`ScanLines.feed_text` takes a whole read (many lines) and makes the alert of each
well-formed alert_fast line from its middle's cached entry (parsers.fast._MIDDLES) as a
pipe line, without a dict; every other line goes one by one through the full grammars
(:meth:`ScanLines._line`).
"""

from __future__ import annotations

import re
from itertools import chain, count

from banpipe import pipe

from .common import Encoded
from .endpoints import _AF4, _PTON, _V4_PTON
from .fast import _FAST_MATCH, _MIDDLES, _QUICK_MATCH, _QUICK_TEXT, _endpoints

# fast._QUICK for one line of many: "$" is the line's end, "." never crosses it.
_SCAN_MATCH = re.compile(_QUICK_TEXT + "$", re.ASCII | re.MULTILINE).match
_NO_PORT = 65536


class ScanLines:
    """The many-lines reader of :class:`banpipe.parsers.AlertParser` (a mixin, like the
    format families it hands lines to)."""

    _encoded: bool
    _max_line: int
    _block: object
    _fragment: bool
    _fdok: tuple[dict[str, tuple], dict[str, tuple]]
    last_line: int

    def feed_text(self, text: str, first: int) -> list:
        """Parse the lines of ``text`` (joined by ``"\\n"``, no final newline), the first
        being line ``first``: what :meth:`AlertParser.feed` returns for each, in order.

        The hot path of a burst: each line is one match of _SCAN at its start, a lookup
        of its middle and of its date token, and its pipe line made from the middle's
        template (line_template), so no dict is built per alert. With ``encoded`` the
        pipe lines of consecutive alerts come back as one :class:`Encoded` item;
        otherwise they are decoded to dicts. A line that the template
        cannot make (the first of its middle, a new date token, any address doubt, an
        alert_full block, other formats, errors) goes through :meth:`_line`.
        Afterwards ``last_line`` is the number of text's last line (a caller need not
        count them).
        """
        if self._block is not None:
            return self._lines(text, first)
        out: list = []
        run: list[str] = []  # pipe lines made here, not yet in out
        keep = run.append
        get = _MIDDLES.get
        fdok = self._fdok
        max_line = self._max_line
        n = len(text)
        pos = 0
        lineno = first
        while pos <= n:
            m = _SCAN_MATCH(text, pos)
            if m is not None:
                end = m.end()
                dtok, time, mid, src, dst = m.groups()
                ent = get(mid) or _MIDDLES.recall(mid)
                if ent is not None and end - pos <= max_line:
                    fe = fdok[ent[1]].get(dtok)
                    if fe is not None:
                        fmt, pre = fe
                        s, _, sp = src.rpartition(":")
                        d, _, dp = dst.rpartition(":")
                        # IPv4 with ports, the common case, here only: inet_pton is the
                        # rule (_V4_PTON); a port as endpoints._port reads it.
                        if s and ":" not in s and len(sp) <= 5 >= len(dp) and _V4_PTON:
                            try:
                                _PTON(_AF4, s)
                                _PTON(_AF4, d)
                                p, q = int(sp), int(dp)
                            except (OSError, ValueError):
                                p = q = _NO_PORT
                            if p <= 65535 >= q:
                                p0, p1, p2, p3, p4, p5, p6 = ent[3][fmt]
                                keep(f"{p0}{pre}{p1}{time}{p2}{s}{p3}{p}{p4}{d}{p5}{q}{p6}")
                                pos = end + 1
                                lineno += 1
                                continue
                        r = _endpoints(src, dst, fmt, ent[2])
                        if type(r) is tuple and r[0] is not None:  # (no addresses: _line)
                            s, sp, d, dp = r
                            if sp is None:
                                sp = "null"
                            if dp is None:
                                dp = "null"
                            p0, p1, p2, p3, p4, p5, p6 = ent[3][fmt]
                            keep(f"{p0}{pre}{p1}{time}{p2}{s}{p3}{sp}{p4}{d}{p5}{dp}{p6}")
                            pos = end + 1
                            lineno += 1
                            continue
            else:
                end = text.find("\n", pos)
                if end < 0:
                    end = n
            if run:
                self._fragment = False  # as after any alert
                self._take(run, out)
            out += self._line(text[pos:end], lineno)
            pos = end + 1
            lineno += 1
            if self._block is not None and pos <= n:
                return out + self._lines(text[pos:], lineno)
        if run:
            self._fragment = False
            self._take(run, out)
        self.last_line = lineno - 1
        return out

    def _take(self, run: list[str], out: list) -> None:
        """Move the pipe lines of ``run`` to ``out``: one Encoded item, or dicts."""
        if self._encoded:
            run.append("")
            text = "\n".join(run)
            # One non-ASCII msg makes the whole text's encoding slow (per character):
            # then line by line, which is fast for every ASCII line.
            ascii_ = text.isascii()
            data = text.encode() if ascii_ else b"\n".join([line.encode() for line in run])
            out.append(Encoded(data, len(run) - 1))
        else:
            out += map(pipe.loads, run)
        run.clear()

    def _lines(self, text: str, first: int) -> list:
        lines = text.split("\n")
        out = list(chain.from_iterable(map(self._line, lines, count(first))))
        self.last_line = first + len(lines) - 1
        return out

    def _line(self, line: str, lineno: int) -> list:
        """One line by the full grammars (see :meth:`feed_text` for when)."""
        stripped = line.rstrip("\r\n")
        if len(stripped) != len(line) and "\n" not in stripped:
            return self.feed_text(stripped, lineno)  # a CRLF line: the template may do
        line = stripped
        if self._block is None and len(line) <= self._max_line:
            if line[:1] == "{":
                return self._eve(line, lineno)  # Suricata EVE JSON: no text regex fits
            m = _FAST_MATCH(line)
            if m is not None:
                self._fragment = False
                return [self._fast(m, _QUICK_MATCH(line), line, lineno)]
        return self._slow(line, lineno)
