"""Address and port text as the IDSes print it: splitting ``addr:port``, validating and
canonicalising the address (the alert formats' shared rules, docs/formats.md).

Snort prints ports for TCP/UDP only and glues an IPv6 port on with one more colon;
Suricata always prints a port. How to read one side is its *port mode* (``_PM_*``);
text that reads two ways or none is a :class:`_BadAddress`, never a guess.
"""

from __future__ import annotations

import socket

from banpipe import address


def _port_proto(proto: str) -> bool:
    """Whether Snort prints ports for this ``{proto}`` text: TCP and UDP only (6, 17)."""
    p = proto.upper()
    if p in ("TCP", "UDP"):
        return True
    if p.startswith("PROTO:"):
        p = p[6:]
    return p.isdigit() and p.isascii() and int(p) in (6, 17)


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


# Addresses are validated and canonicalised by banpipe.address (the one rule: an
# IPv4-mapped IPv6 address is its IPv4 address); the fast path calls inet_pton inline for
# IPv4 (address.V4_PTON: libc is as strict as the rule) and looks IPv6 up in its memo.
_PORT_PROTO: dict[str, bool] = {}
_AF4 = socket.AF_INET
_PTON = socket.inet_pton
_V4_PTON = address.V4_PTON
_V6_MEMO = address.V6_MEMO
_V4_MEMO = address.V4_MEMO


def _v4(a: str) -> str:
    """IPv4 text (no ":" in ``a``) as it is; raises _BadAddress."""
    if address.canonical(a) is None:
        raise _BadAddress(a)
    return a


def _v6(a: str) -> str:
    """The canonical text of IPv6 text (an IPv4-mapped one is IPv4); raises _BadAddress."""
    c = _V6_MEMO.get(a) or address.canonical(a)
    if c is None:
        raise _BadAddress(a)
    return c


def _canon(a: str) -> str:
    """The canonical text of an IPv4 or IPv6 address; raises _BadAddress (a ValueError)."""
    c = address.canonical(a)
    if c is None:
        raise _BadAddress(a)
    return c


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
    # An IPv4-mapped address (canonical: IPv4) is not held to it: inet_ntop writes it
    # "::ffff:a.b.c.d", ipaddress before Python 3.13 "::ffff:a0b:c0d".
    if "::" in a and ":" in c and a.lower() != c:
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
            raise _BadAddress(a if tok.count(":") == 1 and address.canonical(a) is None else tok)
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
