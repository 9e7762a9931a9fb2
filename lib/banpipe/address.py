"""IP addresses: the one place that parses, canonicalises and classifies them.

The rule, for every tool and every input (alerts, config, whitelist files, WAN state,
firewall listings, fleet decisions, the command line):

* An address is one IPv4 or IPv6 address written out in full: no prefix, no zone id
  (``%eth0``), no surrounding space, IPv4 as four decimal octets 0-255 without leading
  zeros (what :mod:`ipaddress` accepts, less zone ids).
* Its canonical text is :mod:`ipaddress`'s (lower-case, RFC 5952 compression), except
  that an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, ``::ffff:0:0/96``) IS the IPv4
  address ``a.b.c.d``: the same host, so the same ledger row, the same firewall entry,
  the same protection. An attacker must not evade a ban or protection by spelling.
* Other IPv6 spellings of an IPv4 address (IPv4-compatible ``::a.b.c.d``, -translated
  ``::ffff:0:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``) stay IPv6 addresses (they are other
  packets on the wire) but are protected like the IPv4 address they carry:
  :func:`embedded_ipv4` tells which.

A ban **entry** (a ledger key, a firewall entry) is an address or a range: the
canonical address text for one host (``203.0.113.7``; ``203.0.113.7/32`` is the same
entry), the canonical network text ``a/n`` for a range of more than one address
(``203.0.113.0/24``, host bits cleared). :func:`entry` makes one, :class:`Ranges`
answers "is this entry inside a banned range?".

Speed: :func:`canonical` is on every hot path.  IPv4 text is judged by ``inet_pton``
(glibc's is exactly as strict as the rule; checked at import, else ``ipaddress``
judges); IPv6 text by ``inet_pton``/``inet_ntop`` (C, 20 times faster than
``ipaddress``, which only judges dotted forms and what libc refuses), memoised here in
two generations (:data:`V6_MEMO`).  bench/README.md has the figures.
"""

from __future__ import annotations

import ipaddress
import socket
from itertools import compress, repeat
from operator import not_
from typing import Any, NamedTuple

from banpipe.memo import Memo

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_AF4 = socket.AF_INET
_AF6 = socket.AF_INET6
_PTON = socket.inet_pton
_NTOP = socket.inet_ntop
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = 0x0064_FF9B << 96  # 64:ff9b::/96, the well-known NAT64 prefix (RFC 6052)
_TRANSLATED = 0xFFFF_0000 << 32  # ::ffff:0:0:0/96, IPv4-translated (RFC 2765)
_LONGEST = 45  # characters of the longest address text (IPv6 with a dotted tail)


def parse(text: Any) -> IP | None:
    """The address ``text`` spells under the rule (IPv4-mapped: IPv4), or None."""
    if type(text) is not str or "%" in text or "/" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _by_ipaddress(text: str) -> str:
    """The canonical text by :mod:`ipaddress`, the judge; "" when no address."""
    ip = parse(text)
    return "" if ip is None else str(ip)


def _libc_v6_agrees() -> bool:
    """Whether this libc's inet_ntop writes what ipaddress writes (checked once).

    For hex-and-colon text both accept the same addresses (1-4 hex digits a group, one
    "::" standing for at least one group) and inet_ntop compresses as ipaddress does
    (lower case, longest run of two or more zero groups, the first of equal runs).  They
    differ only in dotted forms (input with ".", or output such as "::ffff:1.2.3.4"), and
    those, like everything inet_pton refuses, go to ipaddress (:func:`canonical`).
    """
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
        return all(_NTOP(_AF6, _PTON(_AF6, a)) == _by_ipaddress(a) for a in samples)
    except (OSError, ValueError):
        return False


def _libc_v4_agrees() -> bool:
    """Whether this libc's inet_pton accepts exactly the IPv4 text the rule accepts."""
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
        if ok != (parse(a) is not None):
            return False
    return True


# Whether inet_pton(AF_INET) alone decides IPv4 text (a hot path may call it inline).
V4_PTON: bool = _libc_v4_agrees()
V6_LIBC: bool = _libc_v6_agrees()

# IPv6 text -> canonical text ("" for no address): the answer depends only on the text.
# About 200 bytes an entry.  A hot path may look up ``V6_MEMO.get(text)`` itself and
# call canonical() on a miss (or on "").  A miss recomputes rather than asks the old
# generation: inet_pton/inet_ntop cost no more than the lookup.
V6_MEMO = Memo(4096)
_v6_get = V6_MEMO.get  # the memo is a dict that keeps its identity
_v6_size = V6_MEMO.size
_young_len = dict.__len__


# IPv4 text that inet_pton accepted (only where V4_PTON), as itself: a lookup costs half
# of an inet_pton call (900 against 1,800 instructions, Python 3.11), and the addresses
# of alerts repeat. A hot path looks up ``V4_MEMO.get(text)`` and on a miss calls
# inet_pton and ``V4_MEMO.put(text, text)``.
V4_MEMO = Memo(4096)


def canonical(text: Any) -> str | None:
    """The canonical text of the address ``text`` spells (see the rule above), or None."""
    if type(text) is not str:
        return None
    if ":" in text:
        c = _v6_get(text)
        if c is None:
            if len(text) > _LONGEST:
                return None  # no address, and not kept: the memo holds short keys only
            if V6_LIBC and "." not in text:
                try:
                    c = _NTOP(_AF6, _PTON(_AF6, text))
                except (OSError, ValueError):
                    c = ""
            if not c or "." in c:  # refused by libc, or a dotted form: ipaddress judges
                c = _by_ipaddress(text)
            if _young_len(V6_MEMO) < _v6_size:
                V6_MEMO[text] = c
            else:
                V6_MEMO.put(text, c)
        return c or None
    if V4_PTON:
        try:
            _PTON(_AF4, text)
        except (OSError, ValueError):
            return None
        return text
    return _by_ipaddress(text) or None


def v4_value(text: str) -> int | None:
    """The IPv4 address ``text`` spells, as an int, where inet_pton alone decides IPv4
    text (V4_PTON); None for anything else (IPv6, no address, another libc): the
    caller then asks :func:`parse`. No ipaddress object: a lookup on a new offender's
    path to its ban (banpipe.protect, issue 12)."""
    if not V4_PTON or type(text) is not str or ":" in text:
        return None
    try:
        return int.from_bytes(_PTON(_AF4, text), "big")
    except (OSError, ValueError):
        return None


def network(value: str) -> str:
    """An address or CIDR network in canonical text (``a/n``, host bits cleared).

    The same rule as for addresses: ``::ffff:10.0.0.0/104`` is ``10.0.0.0/8`` (an
    IPv4-mapped network of prefix 96 or longer is the IPv4 network it covers).  A bare
    address is its /32 or /128.  Raises ValueError naming ``value``.
    """
    text = value.strip() if type(value) is str else ""
    addr, slash, plen = text.partition("/")
    try:
        if parse(addr) is None or (slash and not (plen.isascii() and plen.isdigit())):
            raise ValueError
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or network: {value!r}") from None
    if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFF_FFFF, net.prefixlen - 96))
    return str(net)


def embedded_ipv4(ip: IP) -> int | None:
    """The IPv4 address (as an int) an IPv6 address spells, or None.

    IPv4-compatible ``::a.b.c.d`` (not ``::`` or ``::1``), IPv4-translated
    ``::ffff:0:a.b.c.d`` and NAT64 ``64:ff9b::a.b.c.d``; IPv4-mapped addresses are
    already IPv4 after :func:`parse`.
    """
    if ip.version != 6:
        return None
    value = int(ip)
    high = value >> 32 << 32
    if high in (0, _TRANSLATED, _NAT64) and (high or value > 1):
        return value & 0xFFFF_FFFF
    return None


def packed(addr: str) -> bytes:
    """The 4 or 16 bytes of an address text (raises OSError for one libc refuses)."""
    return _PTON(_AF6 if ":" in addr else _AF4, addr)


def from_packed(raw: bytes, family: int | None = None) -> str | None:
    """The canonical text of a packed address (4 or 16 bytes, as the kernel sends it), or
    None; ``family`` (AF_INET, AF_INET6), when given, must fit the length."""
    fam = _AF4 if len(raw) == 4 else _AF6 if len(raw) == 16 else None
    if fam is None or (family is not None and family != fam):
        return None
    text = _NTOP(fam, raw)
    # Straight from inet_ntop: its IPv4 text is canonical, and so is its IPv6 text when
    # the import-time check found libc agreeing and the text is not dotted. A listing of
    # many distinct addresses then skips the memo (20,000 nftables elements: 78 ms -> 26).
    if fam == _AF4 or (V6_LIBC and "." not in text):
        return text
    return canonical(text)


# -- ban entries: an address or a range ------------------------------------------------
def entry(text: Any) -> str | None:
    """The canonical ban entry ``text`` spells (see the rule above), or None.

    An address is its canonical text; ``a/n`` is the canonical network (host bits
    cleared, IPv4-mapped networks are IPv4) unless it holds one address, which is that
    address (``203.0.113.7/32`` is ``203.0.113.7``).
    """
    if type(text) is not str:
        return None
    if "/" not in text:
        return canonical(text)
    addr, _, plen = text.partition("/")
    if plen == ("128" if ":" in addr else "32"):
        # One address, as nearly every entry of a firewall listing is (``-s a/128``):
        # the address's own memoised rule, not ipaddress (0.2 ms an IPv6 entry, 3 of
        # the 4 s of an iptables check() of 20,000 bans; bench/README.md, issue 8).
        host = canonical(addr)
        if host is not None:
            return host
    try:
        net = network(text)
    except ValueError:
        return None
    addr, _, plen = net.partition("/")
    return addr if plen == ("128" if ":" in addr else "32") else net


def is_range(entry_text: str) -> bool:
    """Whether a canonical entry is a range (``a/n``) rather than one address."""
    return "/" in entry_text


def span(entry_text: str) -> tuple[int, int, int]:
    """(IP version, first, last) of a canonical entry, as integers."""
    net = ipaddress.ip_network(entry_text)
    return net.version, int(net.network_address), int(net.broadcast_address)


def prefix(addr: str, plen: int) -> str:
    """The canonical network of prefix length ``plen`` that holds the address ``addr``
    (``2001:db8::7``, 64 -> ``2001:db8::/64``)."""
    return str(ipaddress.ip_network(f"{addr}/{plen}", strict=False))


class Ranges:
    """A set of banned ranges, asked whether an entry lies inside one of them.

    Built from any entries (the addresses among them are ignored). :meth:`covers` of an
    address costs one dict lookup per prefix length in use, so filtering a million
    addresses against a handful of ranges stays cheap; with no range it is free.
    """

    def __init__(self, entries: Any = ()) -> None:
        # (version, prefix length) -> {network as int >> host bits}
        self._nets: dict[tuple[int, int], set[int]] = {}
        for e in entries:
            if "/" in e:
                net = ipaddress.ip_network(e)
                bits = net.max_prefixlen - net.prefixlen
                self._nets.setdefault((net.version, net.prefixlen), set()).add(
                    int(net.network_address) >> bits
                )

    def __bool__(self) -> bool:
        return bool(self._nets)

    def covers(self, entry_text: str, *, strictly: bool = True) -> bool:
        """Whether ``entry_text`` (canonical) lies inside one of the ranges; with
        ``strictly`` a range does not cover itself."""
        if not self._nets:
            return False
        addr, _, plen_text = entry_text.partition("/")
        raw = packed(addr)
        value = int.from_bytes(raw, "big")
        version, width = (6, 128) if len(raw) == 16 else (4, 32)
        plen = int(plen_text) if plen_text else width
        for (v, p), nets in self._nets.items():
            if (
                v == version
                and (p < plen or (p == plen and not strictly))
                and value >> (width - p) in nets
            ):
                return True
        return False

    def collapse(self, entries: Any) -> set[str]:
        """``entries`` less those inside another of the ranges: what the firewall must
        hold so that every entry is covered once."""
        entries = set(entries)
        return entries - self.inside(entries) if self._nets else entries

    def inside(self, entries: Any) -> set[str]:
        """The canonical ``entries`` that lie strictly inside one of the ranges. In bulk:
        the addresses are made integers in C loops, one family at a time (a million
        against a range: 0.5 s; :meth:`covers` one by one took 7 s)."""
        items = entries if isinstance(entries, (list, set, frozenset)) else list(entries)
        out = {e for e in items if "/" in e and self.covers(e)}  # ranges: few
        for version, af, width in ((4, _AF4, 32), (6, _AF6, 128)):
            groups = [(p, nets) for (v, p), nets in self._nets.items() if v == version]
            if not groups:
                continue
            six = version == 6
            hosts = [e for e in items if "/" not in e and (":" in e) == six]
            values = list(map(int.from_bytes, map(_PTON, repeat(af), hosts), repeat("big")))
            for p, nets in groups:
                shift = width - p
                out.update(h for h, v in zip(hosts, values, strict=True) if v >> shift in nets)
        return out


def all_entries(texts: Any) -> bool:
    """Whether every item of ``texts`` is a canonical entry (:func:`entry` of it is
    itself)."""
    return sort_entries(texts) is not None


class Split(NamedTuple):
    """Entries already split by kind, each list in its own order: what the ledger reads
    for a restore (``Ledger.active_split``), so that no pass over a million strings
    sorts them again. Nothing here is checked yet: :func:`pack_split` checks."""

    v4: list[str]  # IPv4 addresses
    v6: list[str]  # IPv6 addresses
    nets: list[str]  # ranges of either family


def sort_entries(texts: Any) -> Split | None:
    """(IPv4 addresses, IPv6 addresses, ranges) of ``texts`` in their order, or None
    unless every item is a canonical entry: the bulk check before a million entries go
    to the firewall (:func:`split_entries`, then :func:`pack_split` checks)."""
    split = split_entries(texts)
    return split if split is not None and pack_split(split) is not None else None


def split_entries(texts: Any) -> Split | None:
    """``texts`` split by kind, each kind in its order, unchecked (None when an item is
    no string). The kind is told by ``:`` and ``/`` alone: :func:`pack_split` refuses
    an item in the wrong list."""
    items = texts if type(texts) is list else list(texts)
    if not set(map(type, items)) <= {str}:
        return None
    # Split in C loops (a million: 0.2 s; a Python loop with branches took 1.6 s).
    contains = str.__contains__
    colon = list(map(contains, items, repeat(":")))
    v6 = list(compress(items, colon))
    v4 = list(compress(items, map(not_, colon)))
    nets: list[str] = []
    if any(map(contains, items, repeat("/"))):
        nets = [a for a in items if "/" in a]
        v4 = [a for a in v4 if "/" not in a]
        v6 = [a for a in v6 if "/" not in a]
    return Split(v4, v6, nets)


def pack_split(split: Split) -> tuple[list[bytes], list[bytes]] | None:
    """The packed IPv4 and IPv6 addresses of ``split`` (what a firewall message carries),
    or None unless every item is a canonical entry of its kind. One ``inet_pton`` per
    address is both the check and the packing (IPv4: libc accepts exactly the rule's
    text; IPv6: ``inet_ntop``'s text is compared with it); ranges (few) and what libc
    writes otherwise (dotted IPv6) are judged by :func:`entry`."""
    v4, v6, nets = split
    try:
        keys4 = list(map(_PTON, repeat(_AF4), v4))
        keys6 = list(map(_PTON, repeat(_AF6), v6))
    except (OSError, ValueError, TypeError):
        return None
    if not V4_PTON and not all(entry(a) == a for a in v4):
        return None
    if not V6_LIBC:
        if not all(entry(a) == a for a in v6):
            return None
    # Compared as they come: no second million strings held (55 MB). A dotted text
    # (::ffff:1.2.3.4 is the IPv4 address) is libc's too, but entry() judges it.
    elif "." in "".join(v6) or not all(map(str.__eq__, map(_NTOP, repeat(_AF6), keys6), v6)):
        back = map(_NTOP, repeat(_AF6), keys6)
        if not all(entry(a) == a for a, b in zip(v6, back, strict=True) if a != b or "." in a):
            return None
    if not all(type(a) is str and "/" in a and entry(a) == a for a in nets):
        return None
    return keys4, keys6
