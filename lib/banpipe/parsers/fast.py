"""alert_fast lines of Snort 2, Snort 3 and Suricata (docs/formats.md), the hot path.

A well-formed line costs one regex (``_SCAN_ALL``, over a text of lines: parsers.scan)
that splits it into time stamp, "middle" (ids, msg, classification, priority, protocol)
and addresses; the middle's parse by the full grammar (``_FAST``) is cached by its text
(module-wide, :data:`_MIDDLES`) as a template of the alert dict and of its pipe line,
which is completed with the line's date, time and addresses. Lines that template cannot
make (the first of a middle, any doubt) go through the full grammar one by one
(``ScanLines._line``, then ``_fast``, ``_alert`` here). Torn lines (a writer died
mid-line) and lines with text Snort never prints are read here too (``_torn``,
``_lenient``).
"""

from __future__ import annotations

import re

from banpipe.memo import Memo

from .common import (
    _CLS,
    _DATE,
    _DATES_MAX,
    _TIME,
    _TXT,
    _TXT_NB,
    R_EXTRA,
    R_FORCED,
    R_MALFORMED,
    ParseError,
    _int,
    _short,
    line_template,
    new_alert,
)
from .endpoints import (
    _AF4,
    _PM_ALWAYS,
    _PM_NONE,
    _PM_UNKNOWN,
    _PTON,
    _V4_MEMO,
    _V4_PTON,
    _V6_MEMO,
    _addresses,
    _BadAddress,
    _snort_mode,
    _v6,
)

# The one-line alert_fast grammar of Snort 2, Snort 3 and Suricata in one expression.
# Groups: date, time, spaces, action, ids, msg, class, prio, proto, src, dst, raw.
# The msg runs to the first " [**]" (written unrolled: much faster than a lazy ".*?").
# Bracketed "[Key: value]" tags other than Classification/Priority ([AppID: x], future
# tags) are skipped.  Address text is limited to hex digits, "." and ":"; validation and
# the address/port split happen in Python.
_FAST = re.compile(
    rf"({_DATE})-({_TIME})( {{1,2}})(?:\[([A-Za-z_]+)\] )?\[\*\*\] "
    rf"\[(\d{{1,10}}:\d{{1,10}}:\d{{1,10}})\] (?: <[\w.:@-]+> )?"
    rf"(?:([{_TXT_NB}]*(?:\[(?!\*\*\])[{_TXT_NB}]*)*) )?\[\*\*\]"
    rf"(?: \[(?:Classification: ({_CLS}*)|Priority: (-?\d{{1,10}})"
    rf"|(?!Classification: |Priority: )[A-Za-z][\w ]{{0,40}}: {_CLS}*)\])*"
    rf"(?: \{{([\w:.-]*)\}} ([0-9A-Fa-f:.]*) -> ([0-9A-Fa-f:.]*)"
    rf"|( \[\*\*\] \[Raw pkt:[0-9A-Fa-f ]*\](?: \[pcap file packet: \d+\])?))? *\Z",
    re.ASCII,
)
# A line that is an alert_fast line in every field but carries text Snort never prints
# between its tags or after its addresses (hand-edited files, concatenated writers).  The
# fields are all where they belong, so the alert is kept and the extra text reported.
# Compiled at first use (re's cache keeps it): it takes longer to compile than _FAST,
# 10-15 ms of every start-up, and only odd lines need it.
_LENIENT_TEXT = (
    rf"({_DATE})-({_TIME})( {{1,2}})(?:\[([A-Za-z_]+)\] )?\[\*\*\] "
    rf"\[(\d{{1,10}}:\d{{1,10}}:\d{{1,10}})\] (?: <[\w.:@-]+> )?"
    rf"(?:([{_TXT_NB}]*(?:\[(?!\*\*\])[{_TXT_NB}]*)*) )?\[\*\*\]"
    rf"([{_TXT}]*?) \{{([\w:.-]*)\}} ([0-9A-Fa-f:.]*) -> ([0-9A-Fa-f:.]*)( [{_TXT}]*)?\Z"
)
_LENIENT_CLS = re.compile(rf"\[Classification: ({_CLS}*)\]")
_LENIENT_PRIO = re.compile(r"\[Priority: (-?\d{1,10})\]")
_TS_INSIDE = re.compile(rf"{_DATE}-{_TIME} ", re.ASCII)
# The start of an alert_fast line, cut anywhere: a piece of its time stamp, or the whole
# stamp and then its spaces and whatever of the alert followed.
_CUT_ALERT = re.compile(rf"(?:[\d/]+(?:-[\d:.]*)?|{_DATE}-{_TIME} {{1,2}}(?:\[.*)?)\Z", re.ASCII)

_FAST_MATCH = _FAST.match
# The same line as three parts: time stamp, the "middle" up to "{proto} ", the addresses.
# The middle (everything but time and addresses) repeats from alert to alert; its parse by
# _FAST is cached in _MIDDLES, keyed by its text.  Only text that _FAST accepted is ever a
# key, so the loose ".*" admits nothing new, and it is a quarter faster than a character
# class.  parsers.scan's _SCAN_ALL is the same expression for every line of a text ("$" is
# a line's end, "." never crosses it); both split a line at the same places.
_QUICK_TEXT = rf"({_DATE})-({_TIME})( {{1,2}}.*\}} )([0-9A-Fa-f:.]*) -> ([0-9A-Fa-f:.]*) *"
_QUICK_MATCH = re.compile(_QUICK_TEXT + r"\Z", re.ASCII | re.DOTALL).match
_SURICATA = "suricata-fast"
_V4_GET = _V4_MEMO.get  # bound once (a dict subclass's method binds per lookup)
# The formats an alert_fast line can be, by the spaces after its time (sel: one, two).
_SEL_FORMATS = (("snort3-fast",), ("snort2-fast", _SURICATA))


# middle text -> (alert template, sel, Snort port mode, {format: line_template}); see
# FastLines._fast.  Few distinct middles occur (hundreds in the corpus, at most 252
# characters long); an entry is about 2 KiB, and a longer middle than _MIDDLE_MAX is not
# cached (bounded memory).
_MIDDLES = Memo(2048)
_MIDDLE_MAX = 512


class _Groups:
    """Stands in for a match of _FAST when the groups come from elsewhere."""

    __slots__ = ("_groups",)

    def __init__(self, groups: tuple) -> None:
        self._groups = groups

    def groups(self) -> tuple:
        return self._groups


class FastLines:
    """The alert_fast family of :class:`banpipe.parsers.AlertParser` (a mixin: the
    parser's state is one object, and the hot path costs no call beyond ``_alert``)."""

    _force: str | None
    _fragment: bool
    _encoded: bool
    last_line: int
    _max_line: int
    _block: object
    _limit_time: str
    _fd: tuple[dict[str, tuple], dict[str, tuple]]
    _fdok: tuple[dict[str, tuple], dict[str, tuple]]

    def _fast_date(self, dtok: str, spaces: str) -> tuple:
        """(format, date prefix) for the date token of an alert_fast line, cached."""
        n = len(dtok)
        if n == 10:
            fmt = _SURICATA if spaces == "  " else None
        else:
            fmt = "snort3-fast" if spaces == " " else "snort2-fast"
        ent = (fmt, self._date_prefix(dtok, fmt == "snort3-fast") if fmt else None)
        sel = len(spaces) - 1
        cache = self._fd[sel]
        if len(cache) >= _DATES_MAX:
            cache.clear()
        cache[dtok] = ent
        if type(ent[1]) is str and (self._force is None or self._force == fmt):
            cache = self._fdok[sel]
            if len(cache) >= _DATES_MAX:
                cache.clear()
            cache[dtok] = ent
        return ent

    # -- the feed ------------------------------------------------------------------------

    def _torn(self, line: str, lineno: int) -> list:
        """A line with an alert marker that did not parse as a whole.

        When a writer died mid-line, the next alert is appended to the torn text
        (``11/13-18:00:37.96211/13-18:01:55.044396  [**] ...``): the complete alert at the
        end is kept, and the torn text before it is reported as an error.
        """
        for t in _TS_INSIDE.finditer(line, 1):
            start = t.start()
            # After a "/" the match is the tail of a longer date ("7/07/06-..." of a line
            # cut inside "17/07/06-..."), not a stamp of its own: no alert with a made-up date.
            if line[start - 1] == "/":
                continue
            # Only a cut alert can be torn: any other text before a stamp (another
            # program's message quoting an alert) makes the line no alert at all.
            if _CUT_ALERT.match(line, 0, start) is None:
                break
            m = _FAST.match(line, start)
            if m is not None:
                head = _short(line[:start])
                err = ParseError(lineno, R_MALFORMED + ": torn line, text before alert", head)
                return [err, self._fast(m, None, line, lineno)]
        lenient = self._lenient(line, lineno)
        if lenient is not None:
            return lenient
        return [ParseError(lineno, R_MALFORMED, _short(line))]

    def _lenient(self, line: str, lineno: int) -> list | None:
        m = re.match(_LENIENT_TEXT, line, re.ASCII)  # (re caches the compiled pattern)
        if m is None:
            return None
        dtok, time, spaces, action, ids, msg, tags, proto, src, dst, tail = m.groups()
        if "[**]" in tags or (tail and ("[**]" in tail or " -> " in tail)):
            # A second alert marker or address pair: the msg itself holds "[**]" (Suricata
            # prints msg verbatim) and the line reads two ways.
            return [ParseError(lineno, f"{R_MALFORMED}: '[**]' inside the msg", _short(line))]
        cls = _LENIENT_CLS.search(tags)
        prio = _LENIENT_PRIO.search(tags)
        extra = _LENIENT_CLS.sub("", _LENIENT_PRIO.sub("", tags)).strip()
        extra = " ".join(t for t in (extra, (tail or "").strip()) if t)
        groups = (
            dtok, time, spaces, action, ids, msg,
            cls.group(1) if cls else None, prio.group(1) if prio else None,
            proto, src, dst, None,
        )  # fmt: skip
        alert = self._fast(_Groups(groups), None, line, lineno)
        if isinstance(alert, ParseError):
            return [alert]
        return [ParseError(lineno, f"{R_EXTRA}: {extra!r}", _short(line)), alert]

    def _fast(self, m: re.Match, q: re.Match | None, line: str, lineno: int) -> dict | ParseError:
        """Full parse of an alert_fast line (q: its _QUICK match, to fill the cache)."""
        dtok, time, spaces, action, ids, msg, cls, prio, proto, src, dst, raw = m.groups()
        sel = len(spaces) - 1
        if msg is None:
            msg = ""  # a rule without msg: Snort prints "[1:2:3] [**]"
        elif sel == 0 and msg[:1] == '"' and msg[-1:] == '"' and len(msg) > 1:
            msg = msg[1:-1]  # Snort 3 (one space) quotes the msg
        gid, sid, rev = ids.split(":")
        # Everything the middle of the line determines, in output order; ts, addresses,
        # refs and format are filled in per alert (refs None here: always replaced).
        template = new_alert(
            None,
            (int(gid), int(sid), int(rev)),
            msg,
            cls,
            _int(prio),
            proto,
            (None, None, None, None),
            None if action is None else action.lower(),
            None,
            None,
        )
        mode = _PM_UNKNOWN if proto is None else _snort_mode(proto)
        ent = (template, sel, mode, {f: line_template(template, f) for f in _SEL_FORMATS[sel]})
        if raw is not None:
            fe = self._fd[sel].get(dtok) or self._fast_date(dtok, spaces)
            if fe[0] != _SURICATA:
                return ParseError(lineno, R_MALFORMED + ": Raw pkt outside Suricata", _short(line))
        if proto is None:
            src = dst = None
        elif q is not None and q.end(3) == m.start(10) and len(q[3]) <= _MIDDLE_MAX:
            # _QUICK split this line where _FAST did: its middle stands for this parse.
            _MIDDLES.put(q[3], ent)
        return self._alert(ent, dtok, time, src, dst, line, lineno)

    def _alert(
        self,
        ent: tuple,
        dtok: str,
        time: str,
        src: str | None,
        dst: str | None,
        line: str,
        lineno: int,
    ) -> dict | ParseError:
        """The alert dict of an alert_fast line from its middle's entry (see _fast).

        The path of the lines feed_text does not take: the first of each middle, and any
        line with doubt about its date. A date token seen before (plain, not refused by
        ``force``) is one lookup; anything else goes through the general date code,
        which also says why it refuses.
        """
        template, sel, snort_mode, _ = ent
        fe = self._fdok[sel].get(dtok)
        if fe is not None:
            fmt, pre = fe
            ts = pre + time
        else:
            fe = self._fd[sel].get(dtok)
            if fe is None:
                fe = self._fast_date(dtok, " " if sel == 0 else "  ")
            fmt, pre = fe
            if type(pre) is str:
                ts = pre + time
            elif pre is None:
                why = "invalid date" if fmt else "one space after a Suricata time"
                return ParseError(lineno, f"{R_MALFORMED}: {why}", _short(line))
            else:
                ts = (pre[1] if time > self._limit_time else pre[0]) + time
            if self._force is not None and self._force != fmt:
                return ParseError(lineno, f"{R_FORCED}: looks like {fmt}", _short(line))
        if src is None:
            s = sp = d = dp = None
        else:
            # IPv4 with ports, the common case, read here by feed_text's rule (_SCAN_ALL:
            # a port without a leading zero, at most 65535; inet_pton, through its memo)
            # and nowhere else on this path: feed_text reads them itself. The address
            # text holds nothing but hex digits, "." and ":" (every caller's regex), so
            # int() takes digits only. Anything else, or any doubt: _endpoints, which also
            # says why it refuses.
            s, _, sp = src.rpartition(":")
            d, _, dp = dst.rpartition(":")
            ok = False
            if _V4_PTON and s and ":" not in s:
                try:
                    if _V4_GET(s) is None:
                        _PTON(_AF4, s)
                        _V4_MEMO.put(s, s)
                    if _V4_GET(d) is None:
                        _PTON(_AF4, d)
                        _V4_MEMO.put(d, d)
                    p, q = int(sp), int(dp)
                    ok = p <= 65535 >= q and (sp >= "1" or sp == "0") and (dp >= "1" or dp == "0")
                except (OSError, ValueError):
                    pass
            if ok:
                sp, dp = p, q
            else:
                r = _endpoints(src, dst, fmt, snort_mode)  # type: ignore[arg-type]
                if type(r) is str:
                    return ParseError(lineno, f"{R_MALFORMED}: {r}", _short(line))
                s, sp, d, dp = r
        a = template.copy()
        a["ts"] = ts
        a["src"] = s
        a["sport"] = sp
        a["dst"] = d
        a["dport"] = dp
        a["refs"] = []
        a["format"] = fmt
        return a


def _endpoints(src: str, dst: str, fmt: str, snort_mode: int) -> tuple | str:
    """(src, sport, dst, dport) of the address text of an alert_fast line in format
    ``fmt``, or why there is none (the detail of a malformed-alert error).

    The common cases come first, inline: both sides IPv4 without ports (validated by
    inet_pton, see _V4_PTON), or both IPv6. Anything else, or any doubt, goes through
    endpoints._addresses, which also says why it refuses. (IPv4 with ports is read
    before this is called: by ScanLines.feed_text, the hot path, and FastLines._alert.)
    """
    s, _, sp = src.rpartition(":")
    d, _, dp = dst.rpartition(":")
    if not s:
        if not d and fmt != _SURICATA:
            try:
                _PTON(_AF4, sp)
                _PTON(_AF4, dp)
                if _V4_PTON:
                    return sp, None, dp, None
            except (OSError, ValueError):
                pass
    elif ":" in s and ":" in d:
        # IPv6 (two or more colons on both sides: _side's IPv6 branch)
        mode = _PM_ALWAYS if fmt == _SURICATA else snort_mode
        try:
            if mode == _PM_NONE:
                return _V6_MEMO.get(src) or _v6(src), None, _V6_MEMO.get(dst) or _v6(dst), None
            if (
                sp.isdigit()
                and dp.isdigit()
                and len(sp) <= 5 >= len(dp)
                # A 5-digit port is no IPv6 group: no bare reading.
                # Otherwise Snort's text may be a fragment's (_readings).
                and (mode == _PM_ALWAYS or len(sp) == 5 or len(dp) == 5)
            ):
                p, q = int(sp), int(dp)
                if p <= 65535 and q <= 65535:
                    return _V6_MEMO.get(s) or _v6(s), p, _V6_MEMO.get(d) or _v6(d), q
        except ValueError:  # _BadAddress included
            pass
    if (not src or not dst) and src != dst:
        return "one address missing"
    try:
        return _addresses(src, dst, _PM_ALWAYS if fmt == _SURICATA else snort_mode)
    except _BadAddress as e:
        return str(e)
