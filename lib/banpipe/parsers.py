"""Parsers for Snort and Suricata text alerts (the input side of ``fasttail``).

Pure code: no file I/O, no clock reads.  The caller (the follower) feeds decoded lines and
gets back alerts (plain dicts, the pipe contract ``"v": 1``) and :class:`ParseError` values.

API
---
``AlertParser(*, now, year=None, force=None, max_line=65536, relay_tags=RELAY_TAGS)``
    Incremental parser.  ``now`` (a naive local ``datetime``) anchors the year of yearless
    time stamps (Snort without ``-y``, syslog stamps): the latest year that does not put
    the alert more than one day after ``now``.  ``year`` overrides that inference.
    ``force`` is one of :data:`FORMATS` and rejects everything else; without it the format
    is detected per line (per block for the full formats; a line starting with ``{`` is a
    Suricata EVE record, :mod:`banpipe.eve`).  ``relay_tags``: the syslog program tags
    whose messages may be alerts (:mod:`banpipe.syslog`); other programs' never are.
``AlertParser.feed(line, lineno) -> list[dict | ParseError]``
    One input line (a trailing ``"\\n"`` / ``"\\r\\n"`` is removed).  One-line formats are
    returned at once; an alert_full block is returned when it is complete: at the empty line
    after it, at the next ``[**] [`` header, at a one-line alert, or at :meth:`flush`.
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

Decisions that matter for bans (see ../shared/formats.md for the formats): addresses are
validated (IPv4: four decimal octets 0-255 without leading zeros; IPv6 through
:mod:`ipaddress`) and canonicalised.  Snort prints ports for TCP/UDP only, and not for
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

Speed: a well-formed alert_fast line costs one regex that splits it into time stamp,
"middle" (ids, msg, classification, priority, protocol) and addresses; the middle's parse
is cached by its text (module-wide) as a template of the alert dict, which is copied and
completed with the line's time stamp and addresses.  IPv4 addresses are validated by
inet_pton (checked at import to agree with the rule above), IPv6 canonicalised by
inet_pton/inet_ntop (ipaddress only for dotted forms) and cached, ISO date prefixes
cached per parser (they depend on ``now``).  The module-wide caches have two generations
of a fixed size each, so memory stays bounded whatever the input (bench/README.md).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from banpipe import eve, pipe, syslog
from banpipe.alert import FORMATS
from banpipe.memo import Memo

__all__ = [
    "FORMATS",
    "REASONS",
    "AlertParser",
    "ParseError",
    "parse_line",
]

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
_DATE = r"\d\d/\d\d(?:/\d\d(?:\d\d)?)?"
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
_LENIENT = re.compile(
    rf"({_DATE})-({_TIME})( {{1,2}})(?:\[([A-Za-z_]+)\] )?\[\*\*\] "
    rf"\[(\d{{1,10}}:\d{{1,10}}:\d{{1,10}})\] (?: <[\w.:@-]+> )?"
    rf"(?:([{_TXT_NB}]*(?:\[(?!\*\*\])[{_TXT_NB}]*)*) )?\[\*\*\]"
    rf"([{_TXT}]*?) \{{([\w:.-]*)\}} ([0-9A-Fa-f:.]*) -> ([0-9A-Fa-f:.]*)( [{_TXT}]*)?\Z",
    re.ASCII,
)
_LENIENT_CLS = re.compile(rf"\[Classification: ({_CLS}*)\]")
_LENIENT_PRIO = re.compile(r"\[Priority: (-?\d{1,10})\]")
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
_SYSLOG_ALERT = re.compile(
    r"\[(\d{1,10}):(\d{1,10}):(\d{1,10})\] (.*?)(?: \[Classification: ([^\]]*)\])?"
    r"(?: \[Priority: (-?\d{1,10})\])?:?(?: <[^<> ]+>)?(?: \{([^{}]*)\} (\S*) -> (\S*))? *\Z",
    re.ASCII,
)
# Lines that belong inside an alert_full block; seen without a header they are a fragment.
_BODY_LIKE = re.compile(
    rf"\[Classification: |\[Priority: |\[Xref => |\*\* (?:ORIGINAL DATAGRAM|END OF DUMP)"
    rf"|{_DATE}-\d\d:\d\d:\d\d\.\d+ |\S+ TTL:\d+ |\S+ -> \S+ \S+ TTL:\d+ ",
    re.ASCII,
)
_TS_INSIDE = re.compile(rf"{_DATE}-{_TIME} ", re.ASCII)
# The start of an alert_fast line, cut anywhere: a piece of its time stamp, or the whole
# stamp and then its spaces and whatever of the alert followed.
_CUT_ALERT = re.compile(rf"(?:[\d/]+(?:-[\d:.]*)?|{_DATE}-{_TIME} {{1,2}}(?:\[.*)?)\Z", re.ASCII)

_FAST_MATCH = _FAST.match
# An IPv4 address as _v4 accepts it: four decimal octets 0-255 without leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_V4_MATCH = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z", re.ASCII).match
# The same line as three parts: time stamp, the "middle" up to "{proto} ", the addresses.
# The middle (everything but time and addresses) repeats from alert to alert; its parse by
# _FAST is cached in _MIDDLES, keyed by its text.  Only text that _FAST accepted is ever a
# key, so the loose ".*" (DOTALL: any character) admits nothing new, and it is a quarter
# faster than a character class.
_QUICK = re.compile(
    rf"({_DATE})-({_TIME})( {{1,2}}.*\}} )([0-9A-Fa-f:.]*) -> ([0-9A-Fa-f:.]*) *\Z",
    re.ASCII | re.DOTALL,
)
_QUICK_MATCH = _QUICK.match
_SURICATA = "suricata-fast"


# middle text -> (alert template, sel, Snort port mode); see AlertParser._fast.  Few
# distinct middles occur (hundreds in the corpus, at most 252 characters long); an entry
# is about 1 KiB, and a longer middle than _MIDDLE_MAX is not cached (bounded memory).
_MIDDLES = Memo(2048)
_MIDDLE_MAX = 512


def _port_proto(proto: str) -> bool:
    """Whether Snort prints ports for this ``{proto}`` text: TCP and UDP only (6, 17)."""
    p = proto.upper()
    if p in ("TCP", "UDP"):
        return True
    if p.startswith("PROTO:"):
        p = p[6:]
    return p.isdigit() and p.isascii() and int(p) in (6, 17)


class _Groups:
    """Stands in for a match of _FAST when the groups come from elsewhere."""

    __slots__ = ("_groups",)

    def __init__(self, groups: tuple) -> None:
        self._groups = groups

    def groups(self) -> tuple:
        return self._groups


class _BadAddress(ValueError):
    """Address text that gives no address; ``str()`` is the reason's detail."""

    def __str__(self) -> str:
        return f"invalid address {self.args[0]}"


class _OnePort(_BadAddress):
    """TCP/UDP text with a port on one side only: Snort prints both or neither."""

    def __str__(self) -> str:
        return f"port on one side only (line cut?): {self.args[0]}"


class _Ambiguous(_BadAddress):
    """Address text that reads two ways (never guessed: the wrong reading bans another)."""

    def __str__(self) -> str:
        return f"address/port split ambiguous: {self.args[0]}"


# IPv6 text -> canonical form, shared by all parsers: the answer depends only on the text.
# About 200 bytes an entry.
_V6_CANON = Memo(4096)
_PORT_PROTO: dict[str, bool] = {}
_AF4 = socket.AF_INET
_AF6 = socket.AF_INET6
_PTON = socket.inet_pton
_NTOP = socket.inet_ntop


def _v4(a: str) -> str:
    if _V4_MATCH(a) is None:
        raise _BadAddress(a)
    return a


def _v6_slow(a: str) -> str:
    if not a.isascii() or "%" in a or "/" in a:
        raise _BadAddress(a)
    try:
        return ipaddress.IPv6Address(a).compressed
    except ValueError:
        raise _BadAddress(a)


def _v6_libc(a: str) -> str:
    """Canonical IPv6 text through inet_pton/inet_ntop (C, 20 times faster than ipaddress).

    For hex-and-colon text both accept the same addresses (1-4 hex digits a group, one
    "::" standing for at least one group) and inet_ntop compresses as ipaddress does
    (lower case, longest run of two or more zero groups, the first of equal runs).  They
    differ only in dotted forms (input with ".", or output such as "::ffff:1.2.3.4"), and
    those, like everything inet_pton rejects, go to ipaddress.
    """
    if "." in a:
        return _v6_slow(a)
    try:
        c = _NTOP(_AF6, _PTON(_AF6, a))
    except (OSError, ValueError):
        return _v6_slow(a)
    if "." in c:
        return _v6_slow(a)
    return c


def _v6_libc_agrees() -> bool:
    """Whether this libc's inet_ntop writes what ipaddress writes (checked once)."""
    samples = (
        "2001:0DB8:0000:0000:0000:0000:0000:0001",
        "0:0:1:0:0:0:0:1",
        "1:0:0:2:0:0:0:3",
        "1:0:0:0:2:0:0:3",
        "1:0:2:3:4:5:6:7",
        "::1",
        "1::",
        "::",
        "fe80::0abc:0",
        "0:0:0:0:0:0:0:2",
    )
    try:
        return all(_v6_libc(a) == _v6_slow(a) for a in samples)
    except (_BadAddress, OSError, ValueError):
        return False


_V6_LIBC = _v6_libc_agrees()
_v6_canon = _v6_libc if _V6_LIBC else _v6_slow


def _v4_pton_agrees() -> bool:
    """Whether this libc's inet_pton accepts exactly the IPv4 text _v4 accepts."""
    samples = (
        "0.0.0.0",  # noqa: S104 - text, not a bind address
        "255.255.255.255",
        "192.0.2.1",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3.256",
        "1.2.3",
        "1.2.3.4.5",
        "1..2.3",
        "1.2.3.4 ",
        "",
        "1.2.3.00",
        "300.1.1.1",
    )
    for a in samples:
        try:
            _PTON(_AF4, a)
            ok = True
        except OSError:
            ok = False
        if ok != (_V4_MATCH(a) is not None):
            return False
    return True


_V4_PTON = _v4_pton_agrees()


def _v6(a: str) -> str:
    c = _V6_CANON.get(a)
    if c is None:
        c = _V6_CANON.recall(a)
        if c is None:
            c = _v6_canon(a)
            _V6_CANON.put(a, c)
    return c


def _canon(a: str) -> str:
    """The canonical text of an IPv4 or IPv6 address; raises _BadAddress (a ValueError)."""
    if ":" in a:
        return _v6(a)  # cached
    if _V4_MATCH(a) is None:
        raise _BadAddress(a)
    return a


def _port(p: str) -> int:
    if not (p.isascii() and p.isdigit()) or len(p) > 5:
        raise _BadAddress(p)
    n = int(p)
    if n > 65535:
        raise _BadAddress(p)
    return n


# Port modes: how to read "addr:port" for a side of "src -> dst".
_PM_ALWAYS = 0  # Suricata: the last ":" field is always the port
_PM_TCPUDP = 1  # Snort TCP/UDP: IPv6 has the port glued on, IPv4 has ":port"
_PM_NONE = 2  # Snort other protocols: IPv6 is the bare address
_PM_UNKNOWN = 3  # full block without an IP header line: only unambiguous splits


def _side(tok: str, mode: int) -> tuple[str | None, int | None]:
    """Split and canonicalise one side of ``src -> dst``; raises _BadAddress."""
    if not tok:
        return None, None
    colons = tok.count(":")
    if colons <= 1 and "." in tok:
        if colons:
            a, _, p = tok.partition(":")
            return _v4(a), _port(p)
        if mode == _PM_ALWAYS:
            raise _BadAddress(tok)
        return _v4(tok), None
    if mode in (_PM_ALWAYS, _PM_TCPUDP):
        a, _, p = tok.rpartition(":")
        return _v6(a), _port(p)
    if mode == _PM_NONE:
        return _v6(tok), None
    # Without the protocol only a fully expanded address plus port is certain.
    if colons == 8 and "::" not in tok:
        a, _, p = tok.rpartition(":")
        return _v6(a), _port(p)
    raise _BadAddress(tok + " (address/port split unknown without protocol)")


def _readings(tok: str) -> tuple[tuple[str, int] | None, str | None]:
    """Both readings of one side of a Snort TCP/UDP line: (address, port) and bare address.

    Each is None where the text cannot be it.  Snort prints ``addr:port`` for TCP/UDP but
    the bare address for fragments (``p->frag_flag`` in Snort 2's LogIpAddrs, the same
    test in Snort 3's log_text.cc), and an IPv6 address with a port glued on can read
    either way (``2001:db8::a:443``).  Snort writes IPv6 with inet_ntop, which never uses
    ``::`` for a single zero group (RFC 5952 4.2.2) nor leaves a longer run uncompressed:
    a bare reading whose ``::`` text is not that canonical form is not Snort's output.
    (Only the bare reading is held to that, as the fast path in AlertParser.feed takes
    an address with a 5-digit port as it is.)
    """
    a, colon, p = tok.rpartition(":")
    with_port = None
    if colon and p.isascii() and p.isdigit() and len(p) <= 5 and int(p) <= 65535:
        try:
            with_port = (_v4(a) if ":" not in a else _v6(a), int(p))
        except _BadAddress:
            pass
    bare = None
    try:
        bare = _v6_printed(tok) if ":" in tok else _v4(tok)
    except _BadAddress:
        pass
    return with_port, bare


def _v6_printed(a: str) -> str:
    """_v6(a), for text that inet_ntop could have written; raises _BadAddress."""
    c = _v6(a)
    if "::" in a and a.lower() != c:
        raise _BadAddress(a)
    return c


def _snort_ports(src: str, dst: str) -> tuple:
    """(src, sport, dst, dport) of a Snort TCP/UDP line: both ports or neither.

    The one reading that fits both sides is taken; a line that fits both readings is an
    error, never a guess (the wrong one bans another address), and so is a line with a
    port on one side only (Snort never prints that: the line was cut, as alert_syslog
    does at 1024 bytes).
    """
    sw, sb = _readings(src)
    dw, db = _readings(dst)
    ported = sw is not None and dw is not None
    bare = sb is not None and db is not None
    if ported and bare:
        raise _Ambiguous(f"{src} -> {dst} (a fragment without ports, or with ports)")
    if ported:
        return sw[0], sw[1], dw[0], dw[1]  # type: ignore[index]
    if bare:
        return sb, None, db, None
    for tok, ok in ((src, sw or sb), (dst, dw or db)):
        if ok is None:
            # Name the bad part: an IPv4 address, or the whole text (a bad port, IPv6).
            a = tok.partition(":")[0]
            raise _BadAddress(a if tok.count(":") == 1 and _V4_MATCH(a) is None else tok)
    raise _OnePort(f"{src} -> {dst}")


def _addresses(src: str, dst: str, mode: int) -> tuple:
    if not src and not dst:
        return None, None, None, None
    if not src or not dst:
        raise _BadAddress("one side empty")
    if mode == _PM_TCPUDP:
        return _snort_ports(src, dst)
    s, sp = _side(src, mode)
    d, dp = _side(dst, mode)
    return s, sp, d, dp


def _snort_mode(proto: str | None) -> int:
    if proto is None:
        return _PM_UNKNOWN
    m = _PORT_PROTO.get(proto)
    if m is None:
        m = _port_proto(proto)
        if len(_PORT_PROTO) < 1024 and len(proto) <= 32:
            _PORT_PROTO[proto] = m
    return _PM_TCPUDP if m else _PM_NONE


def _short(line: str) -> str:
    return line if len(line) <= _TEXT_MAX else line[:_TEXT_MAX] + "..."


def _unquote(msg: str) -> str:
    if len(msg) >= 2 and msg[0] == '"' and msg[-1] == '"':
        return msg[1:-1]
    return msg


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


class AlertParser:
    """Incremental parser for every supported alert text format (see the module docstring)."""

    def __init__(
        self,
        *,
        now: datetime,
        year: int | None = None,
        force: str | None = None,
        max_line: int = 65536,
        relay_tags: Iterable[str] = syslog.RELAY_TAGS,
    ) -> None:
        if force is not None and force not in FORMATS:
            raise ValueError(f"unknown format {force!r}; expected one of {', '.join(FORMATS)}")
        self._year = year
        self._force = force
        self._max_line = max_line
        self._relay_tags = frozenset(t.lower() for t in relay_tags)
        self._block: _Block | None = None
        self._fragment = False
        self._dates: dict[object, object] = {}
        # date token -> (format, ISO date prefix), for one and for two spaces after the time
        self._fd: tuple[dict[str, tuple], dict[str, tuple]] = ({}, {})
        # The same for the tokens that need no second look: a valid date with a plain
        # prefix (not the boundary day of the year inference), format not refused by force.
        self._fdok: tuple[dict[str, tuple], dict[str, tuple]] = ({}, {})
        self.set_now(now)

    # -- time stamps ---------------------------------------------------------------------

    def set_now(self, now: datetime) -> None:
        """Set the anchor for yearless time stamps (forgets the cached dates)."""
        self._now = now
        limit = now.replace(tzinfo=None) + timedelta(days=1)
        self._limit_date = limit.date()
        self._limit_time = limit.strftime("%H:%M:%S.%f")
        self._dates.clear()
        for cache in self._fd + self._fdok:
            cache.clear()

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

    # -- the feed ------------------------------------------------------------------------

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
        if self._block is None and len(line) <= self._max_line:
            # Fast path: time stamp, addresses, and the text between them looked up in a
            # cache of already parsed "middles" (rule, msg, class, priority, proto repeat).
            # Neither regex admits control characters, so the binary-data check is only
            # needed off these paths.
            q = _QUICK_MATCH(line)
            if q is not None:
                dtok, time, mid, src, dst = q.groups()
                ent = _MIDDLES.get(mid) or _MIDDLES.recall(mid)
                if ent is not None:
                    self._fragment = False
                    fe = self._fdok[ent[1]].get(dtok)
                    if fe is not None:
                        # The common cases inline, exactly as _alert would read them: a
                        # plain date and both sides IPv4 (validated by inet_pton, see
                        # _V4_PTON) or both IPv6, with ports or, for Snort's portless
                        # protocols, without.  Anything else, or any doubt: _alert.  The
                        # alert is the middle's template plus time, addresses and format.
                        fmt, pre = fe
                        s, _, sp = src.rpartition(":")
                        d, _, dp = dst.rpartition(":")
                        ok = False
                        if ":" not in s:
                            try:
                                if s:
                                    _PTON(_AF4, s)
                                    _PTON(_AF4, d)
                                    sp = int(sp)
                                    dp = int(dp)
                                    ok = _V4_PTON and sp <= 65535 and dp <= 65535
                                elif not d and fmt != _SURICATA:
                                    _PTON(_AF4, sp)
                                    _PTON(_AF4, dp)
                                    s, sp, d, dp = sp, None, dp, None
                                    ok = _V4_PTON
                            except (OSError, ValueError):
                                pass
                        elif ":" in d:
                            # IPv6 (two or more colons on both sides: _side's IPv6 branch)
                            mode = _PM_ALWAYS if fmt == _SURICATA else ent[2]
                            try:
                                if mode == _PM_NONE:
                                    s = _V6_CANON.get(src) or _v6(src)
                                    d = _V6_CANON.get(dst) or _v6(dst)
                                    sp = dp = None
                                    ok = True
                                elif (
                                    sp.isdigit()
                                    and dp.isdigit()
                                    and len(sp) <= 5 >= len(dp)
                                    # A 5-digit port is no IPv6 group: no bare reading.
                                    # Otherwise Snort's text may be a fragment's (_alert).
                                    and (mode == _PM_ALWAYS or len(sp) == 5 or len(dp) == 5)
                                ):
                                    s = _V6_CANON.get(s) or _v6(s)
                                    d = _V6_CANON.get(d) or _v6(d)
                                    sp = int(sp)
                                    dp = int(dp)
                                    ok = sp <= 65535 and dp <= 65535
                            except ValueError:  # _BadAddress included
                                pass
                        if ok:
                            a = ent[0].copy()
                            a["ts"] = pre + time
                            a["src"] = s
                            a["sport"] = sp
                            a["dst"] = d
                            a["dport"] = dp
                            a["refs"] = []
                            a["format"] = fmt
                            return [a]
                    return [self._alert(ent, dtok, time, src, dst, line, lineno)]
            elif line[:1] == "{":
                return self._eve(line, lineno)  # Suricata EVE JSON: no text regex fits
            m = _FAST_MATCH(line)
            if m is not None:
                self._fragment = False
                return [self._fast(m, q, line, lineno)]
        return self._slow(line, lineno)

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
        m = _LENIENT.match(line)
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

    def _bad_line(self, line: str, lineno: int, reason: str) -> list:
        block = self._block
        if block is not None:
            # The block is the unit: it fails once, when it ends.
            block.nlines += 1
            if block.broken is None:
                block.broken = f"{reason}: line {lineno}"
            return []
        if self._fragment:
            return []
        return [ParseError(lineno, reason, _short(_BINARY.sub("\ufffd", line)))]

    # -- one-line formats ----------------------------------------------------------------

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
        template = {
            "v": 1,
            "ts": None,
            "gid": int(gid),
            "sid": int(sid),
            "rev": int(rev),
            "msg": msg,
            "classification": None if cls is None or cls == "(null)" else cls,
            "priority": None if prio is None else int(prio),
            "proto": proto,
            "src": None,
            "sport": None,
            "dst": None,
            "dport": None,
            "action": None if action is None else action.lower(),
            "refs": None,
            "format": None,
        }
        ent = (template, sel, _PM_UNKNOWN if proto is None else _snort_mode(proto))
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
        """The alert of an alert_fast line from its middle's entry (see _fast)."""
        template, sel, snort_mode = ent
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
        if src is not None:
            mode = _PM_ALWAYS if fmt == _SURICATA else snort_mode
            if (not src or not dst) and src != dst:
                return ParseError(lineno, f"{R_MALFORMED}: one address missing", _short(line))
            try:
                s, sp, d, dp = _addresses(src, dst, mode)
            except _BadAddress as e:
                return ParseError(lineno, f"{R_MALFORMED}: {e}", _short(line))
        else:
            s = sp = d = dp = None
        a = template.copy()
        a["ts"] = ts
        a["src"] = s
        a["sport"] = sp
        a["dst"] = d
        a["dport"] = dp
        a["refs"] = []
        a["format"] = fmt
        return a

    def _syslog(self, env: syslog.Envelope, line: str, lineno: int) -> dict | ParseError:
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
        return {
            "v": 1,
            "ts": ts,
            "gid": int(gid),
            "sid": int(sid),
            "rev": int(rev),
            "msg": msg,
            "classification": None if cls is None or cls == "(null)" else cls,
            "priority": None if prio is None else int(prio),
            "proto": proto,
            "src": s,
            "sport": sp,
            "dst": d,
            "dport": dp,
            "action": None,
            "refs": [],
            "format": "snort-syslog",
        }

    def _eve(self, line: str, lineno: int) -> list:
        """A Suricata EVE JSON record: an alert, nothing (other event types), or an error."""
        force = self._force
        if force is not None and force != eve.FORMAT:
            return [ParseError(lineno, f"{R_FORCED}: looks like {eve.FORMAT}", _short(line))]
        self._fragment = False
        if eve.skip(line):
            return []  # flow, dns, http, stats...: told from the text, never decoded
        try:
            obj = pipe.loads(line)
        except ValueError:
            return [ParseError(lineno, R_MALFORMED + ": not JSON", _short(line))]
        try:
            a = eve.alert(obj, _canon)
        except eve.EveError as e:
            return [ParseError(lineno, f"{R_MALFORMED}: {e}", _short(line))]
        return [] if a is None else [a]

    def _other(self, line: str, lineno: int) -> ParseError:
        if "[**]" in line:
            return ParseError(lineno, R_MALFORMED, _short(line))
        return ParseError(lineno, R_NOT_ALERT, _short(line))

    # -- alert_full blocks ---------------------------------------------------------------

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
        b.nlines += 1
        if b.nlines > _BLOCK_MAX_LINES:
            if b.broken is None:
                b.broken = R_INCOMPLETE + ": block too long"
            return []
        state = b.state
        if state == 3:
            if line.startswith("** END OF DUMP"):
                b.state = 1
            return []
        if c == "[":
            if line.startswith("[Xref => "):
                found = _XREF.findall(line)
                if found:
                    b.refs.extend(found)
                elif b.broken is None:
                    b.broken = f"{R_MALFORMED}: bad Xref line {lineno}"
                return []
            if state == 0 and b.priority is None:
                m = _FULL_PRIO.match(line)
                if m is not None:
                    b.classification = m[1]
                    b.priority = int(m[2])
            return []
        if state == 0:
            m = _FULL_TS.match(line)
            if m is None:
                return []
            b.date, b.time = m[1], m[2]
            rest = m[3]
            b.state = 1
            if rest and rest.strip():
                if _MAC_ADDRS.match(rest):
                    b.state = 2
                else:
                    a = _ADDRS.match(rest)
                    if a is None:
                        b.broken = b.broken or f"{R_MALFORMED}: bad address line {lineno}"
                    else:
                        b.src, b.dst = a[1], a[2]
            return []
        if state == 2:
            # The line after a -e MAC line: "src -> dst PROTO TTL:..." (or a non-IP packet).
            b.state = 1
            m = _IP_HEADER.match(line)
            if m is not None and m[1] is not None:
                b.src, b.dst, b.proto = m[1], m[2], m[3]
            return []
        if c == "*" and line.startswith("** ORIGINAL DATAGRAM DUMP"):
            b.state = 3
            return []
        if b.proto is None and "TTL:" in line:
            m = _IP_HEADER.match(line)
            if m is not None and m[1] is None:
                b.proto = m[3]
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
        cls = b.classification
        return {
            "v": 1,
            "ts": ts,
            "gid": b.gid,
            "sid": b.sid,
            "rev": b.rev,
            "msg": b.msg,
            "classification": None if cls is None or cls == "(null)" else cls,
            "priority": b.priority,
            "proto": b.proto,
            "src": s,
            "sport": sp,
            "dst": d,
            "dport": dp,
            "action": None,
            "refs": b.refs,
            "format": b.fmt,
        }


def _century(yy: int) -> int:
    # Same pivot as strptime's %y: 69-99 are 1969-1999.
    return 1900 + yy if yy >= 69 else 2000 + yy


def _iso_date(y: int, m: int, d: int) -> str:
    date(y, m, d)  # validates, raises ValueError
    return f"{y:04d}-{m:02d}-{d:02d}T"


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
