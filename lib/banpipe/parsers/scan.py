"""alert_fast bursts read as one text: the hot path of :class:`banpipe.parsers.AlertParser`.

:meth:`ScanLines.feed_text` takes a whole read (many lines), splits every line with one
``findall`` (_SCAN_ALL), and makes the alert of each well-formed alert_fast line from its
middle's cached entry (parsers.fast._MIDDLES) as a pipe line, without a dict; every other
line goes one by one through the full grammars (:meth:`ScanLines._line`).
"""

from __future__ import annotations

import re

from banpipe import pipe

from .common import _DATE, _TIME, Encoded
from .endpoints import _AF4, _PTON, _V4_MEMO, _V4_PTON
from .fast import _FAST_MATCH, _MIDDLES, _QUICK_MATCH, _endpoints

# fast._QUICK for every line of a text (findall: one tuple per line, in C), split at the
# same places: "$" is a line's end and "." never crosses it. An IPv4 line with ports has
# them apart (groups 4-7), each port 0-65535 without leading zeros, so its text is what
# the pipe line holds; other address text is in groups 8 and 9 (any other port goes there
# too); a line that is no alert_fast line at all is group 11 (and group 1 is empty).
# Without a strict inet_pton (_V4_PTON) there is no IPv4 branch: every address goes
# through _endpoints. ([0-9] rather than \d: a range costs sre less than a category; the
# 5-digit ports first, so that a port is one pass of the alternatives.)
_PORT = r"([1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]|[1-9][0-9]{0,3}|0)"
_V4_PORTS = rf"([0-9.]{{7,15}}):{_PORT} -> ([0-9.]{{7,15}}):{_PORT}|" if _V4_PTON else "()()()()"
_SCAN_ALL = re.compile(
    rf"^(?:({_DATE})-({_TIME})( {{1,2}}.*\}} )"
    rf"(?:{_V4_PORTS}([0-9A-Fa-f:.]*) -> ([0-9A-Fa-f:.]*))( *)|(.*))$",
    re.ASCII | re.MULTILINE,
).findall


# The text between src, sport, dst and dport in every pipe line (parsers.common.line_template):
# the keys are neighbours in the contract's order, so feed_text writes it as constants.
_ADDR_GLUE = ('","sport":', ',"dst":"', '","dport":')
# Entries (middle and date token) in a parser's _hot before it is cleared: twice what
# _MIDDLES holds, for the two dates around midnight; about 200 bytes an entry (the
# pieces besides the date are the templates' own strings).
_HOT_MAX = 4 * _MIDDLES.size


def _v4(a: str) -> bool:
    """Whether inet_pton takes ``a`` as IPv4 (_V4_PTON's rule); remembered if so."""
    try:
        _PTON(_AF4, a)
    except (OSError, ValueError):
        return False
    _V4_MEMO.put(a, a)
    return True


class ScanLines:
    """The many-lines reader of :class:`banpipe.parsers.AlertParser` (a mixin, like the
    format families it hands lines to)."""

    _encoded: bool
    _max_line: int
    _block: object
    _fragment: bool
    _fdok: tuple[dict[str, tuple], dict[str, tuple]]
    # middle text -> {date token -> _hot_entry's pieces}: one parser's dates (its now,
    # year and force), so cleared with its date caches (AlertParser.set_now).
    _hot: dict[str, dict[str, tuple]]
    _hot_size: int  # entries in _hot
    last_line: int

    def feed_text(self, text: str, first: int) -> list:
        """Parse the lines of ``text`` (joined by ``"\\n"``, no final newline), the first
        being line ``first``: what :meth:`AlertParser.feed` returns for each, in order.

        The hot path of a burst: the lines are split by one findall of _SCAN_ALL over the
        whole text, then each takes a lookup of its middle and of its date token, and its
        pipe line is made from the middle's template (line_template), so no dict is built
        per alert. With ``encoded`` the
        pipe lines of consecutive alerts come back as one :class:`Encoded` item;
        otherwise they are decoded to dicts. A line that the template
        cannot make (the first of its middle, a new date token, any address doubt, an
        alert_full block, other formats, errors) goes through :meth:`_line`.
        Afterwards ``last_line`` is the number of text's last line (a caller need not
        count them).
        """
        if (
            self._block is not None
            or text[:1] == "{"
            or (len(text) > self._max_line and max(map(len, text.split("\n"))) > self._max_line)
        ):
            # An open alert_full block, EVE JSON (findall would copy each line through
            # its ".*": +3% a record) or a line too long: line by line.
            return self._lines(text, first)
        out: list = []
        run: list[str] = []  # pipe lines made here, not yet in out
        keep = run.append
        hot = self._hot
        v4 = _V4_MEMO
        lineno = first - 1
        for lineno, (dtok, time, mid, s, sp, d, dp, src, dst, tail, other) in enumerate(
            _SCAN_ALL(text), first
        ):
            if dtok:
                try:
                    t = hot[mid][dtok]  # (a miss costs a KeyError: the first of its kind)
                except KeyError:
                    t = self._hot_entry(mid, dtok)
                if t is not None:
                    head, between, end, fmt, mode = t
                    if sp:
                        # IPv4 with ports, the common case, here only: inet_pton is the
                        # rule (_V4_PTON; an address it took is in its memo).
                        if (s in v4 or _v4(s)) and (d in v4 or _v4(d)):
                            keep(
                                f'{head}{time}{between}{s}","sport":{sp},"dst":"{d}","dport":{dp}{end}'
                            )
                            continue
                        src, dst = f"{s}:{sp}", f"{d}:{dp}"
                    r = _endpoints(src, dst, fmt, mode)
                    if type(r) is tuple and r[0] is not None:  # (no addresses: _line)
                        s, sp, d, dp = r
                        if sp is None:
                            sp = "null"
                        if dp is None:
                            dp = "null"
                        keep(
                            f'{head}{time}{between}{s}","sport":{sp},"dst":"{d}","dport":{dp}{end}'
                        )
                        continue
                if sp:
                    src, dst = f"{s}:{sp}", f"{d}:{dp}"
                other = f"{dtok}-{time}{mid}{src} -> {dst}{tail}"  # the line again
            if run:
                self._fragment = False  # as after any alert
                self._take(run, out)
            out += self._line(other, lineno)
            if self._block is not None:
                rest = text.split("\n", lineno - first + 1)
                if len(rest) > lineno - first + 1:
                    out += self._lines(rest[-1], lineno + 1)
                    return out
        if run:
            self._fragment = False
            self._take(run, out)
        self.last_line = lineno
        return out

    def _hot_entry(self, mid: str, dtok: str) -> tuple | None:
        """The pieces of the pipe lines of a middle on a date: (the text up to the time,
        the text from the time to src, the text after dport, format, Snort port mode),
        kept in ``_hot``; None when a line of them takes the full grammar (the middle is
        not cached, the date token not plain: see Dates, FastLines._fast_date)."""
        ent = _MIDDLES.get(mid) or _MIDDLES.recall(mid)
        if ent is None:
            return None
        fe = self._fdok[ent[1]].get(dtok)
        if fe is None:
            return None
        fmt, pre = fe
        p0, p1, p2, p3, p4, p5, p6 = ent[3][fmt]
        if (p3, p4, p5) != _ADDR_GLUE:  # never: src, sport, dst, dport are neighbours
            return None
        hot = self._hot
        self._hot_size += 1
        if self._hot_size > _HOT_MAX:
            hot.clear()
            self._hot_size = 1
        by_date = hot.get(mid)
        if by_date is None:
            by_date = hot[mid] = {}
        t = by_date[dtok] = (p0 + pre + p1, p2, p6, fmt, ent[2])
        return t

    def _take(self, run: list[str], out: list) -> None:
        """Move the pipe lines of ``run`` to ``out``: one Encoded item, or dicts."""
        if self._encoded:
            # The lines are their bytes, one character each (line_template): a copy.
            run.append("")
            out.append(Encoded("\n".join(run).encode("latin-1"), len(run) - 1))
        else:
            out += [pipe.loads(line.encode("latin-1")) for line in run]
        run.clear()

    def _lines(self, text: str, first: int) -> list:
        # find() looks for "\n" with memchr; split() goes character by character (5% of
        # an EVE record of 740 characters).
        out: list = []
        line = self._line
        pos, lineno = 0, first
        end = text.find("\n")
        while end >= 0:
            out += line(text[pos:end], lineno)
            pos, lineno = end + 1, lineno + 1
            end = text.find("\n", pos)
        out += line(text[pos:], lineno)
        self.last_line = lineno
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
