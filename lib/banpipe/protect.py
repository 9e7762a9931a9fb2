"""Self-protection: the addresses banpipe never bans, whatever the config says.

Shared by alertfilter (which never emits such a ban) and banctl (which refuses them,
even from `banctl ban`, unless forced), so both apply exactly the same rules:
our WAN addresses, gateways and networks, the whitelist, and the special ranges
(loopback, link-local, multicast, broadcast, unspecified, "this network" 0.0.0.0/8,
reserved 240.0.0.0/4). An IPv6 address that embeds an IPv4 address (IPv4-mapped,
-compatible, -translated, NAT64 64:ff9b::/96) is protected when that IPv4 address is:
the same host may be named either way (``embedded_ipv4``).
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path

import netaddr

from banpipe.config import Config, parse_network

_SPECIAL: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/32", "unspecified address"),
    ("0.0.0.0/8", '"this network" (0.0.0.0/8), never a source'),
    ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    ("::/128", "unspecified address"),
    ("255.255.255.255/32", "broadcast address"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
)


class AddressTable:
    """Labelled networks with O(log n) membership for the hot path.

    Lookups bisect merged integer ranges; the label (which network matched) is only
    searched for addresses that are inside, which is the rare case.
    """

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        self._labelled: list[tuple[int, int, int, str]] = []  # (version, first, last, label)
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        # Longest-prefix index for label(): (version, prefixlen, first) -> first label.
        self._by_prefix: dict[tuple[int, int, int], str] = {}
        for network, label in entries:
            net = netaddr.IPNetwork(network)
            first, last = int(net.first), int(net.last)
            self._labelled.append((net.version, first, last, label))
            ranges[net.version].append((first, last))
            self._by_prefix.setdefault((net.version, net.prefixlen, first), label)
        self._prefixlens: dict[int, list[int]] = {
            v: sorted({p for (ver, p, _) in self._by_prefix if ver == v}, reverse=True)
            for v in (4, 6)
        }
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, spans in ranges.items():
            merged: list[list[int]] = []
            for first, last in sorted(spans):
                if merged and first <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], last)
                else:
                    merged.append([first, last])
            self._starts[version] = [m[0] for m in merged]
            self._ends[version] = [m[1] for m in merged]

    def __len__(self) -> int:
        return len(self._labelled)

    def contains(self, version: int, value: int) -> bool:
        starts = self._starts[version]
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[version][i]

    def label(self, version: int, value: int) -> str | None:
        if not self.contains(version, value):
            return None
        # The most specific entry explains best: longest prefix first, a dict hit per
        # prefix length in use (was a scan of every entry: 1,000 whitelist CIDRs).
        bits = 32 if version == 4 else 128
        for plen in self._prefixlens[version]:
            shift = bits - plen
            label = self._by_prefix.get((version, plen, value >> shift << shift))
            if label is not None:
                return label
        return None


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A strictly parsed address (no scope ids, no leading zeros), or None."""
    if not isinstance(text, str) or "%" in text or "/" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_NAT64 = 0x0064_FF9B << 96  # 64:ff9b::/96, the well-known NAT64 prefix (RFC 6052)
_TRANSLATED = 0xFFFF_0000 << 32  # ::ffff:0:0/96, IPv4-translated (RFC 2765)


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
    """The IPv4 address (as an int) an IPv6 address spells, or None.

    IPv4-compatible ``::a.b.c.d`` (not ``::`` or ``::1``), IPv4-translated
    ``::ffff:0:a.b.c.d`` and NAT64 ``64:ff9b::a.b.c.d``; IPv4-mapped addresses are
    already IPv4 after ``parse_ip``.
    """
    if ip.version != 6:
        return None
    value = int(ip)
    high = value >> 32 << 32
    if high in (0, _TRANSLATED, _NAT64) and (high or value > 1):
        return value & 0xFFFF_FFFF
    return None


def canonical(text: str) -> str | None:
    """Canonical text form of an address (IPv4-mapped IPv6 becomes IPv4), or None."""
    ip = parse_ip(text)
    return str(ip) if ip is not None else None


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def canonical_addr(text: str) -> str | None:
    """canonical(), with a fast path for text that is canonical already.

    inet_pton/inet_ntop are several times faster than ``ipaddress``, which matters in a
    10,000-offender burst; anything they would spell differently (IPv4-mapped or
    dotted IPv6, upper case, leading zeros) goes to ``ipaddress`` as the judge.
    """
    v6 = ":" in text
    if not (v6 and "." in text):
        fam = socket.AF_INET6 if v6 else socket.AF_INET
        try:
            if socket.inet_ntop(fam, socket.inet_pton(fam, text)) == text:
                return text
        except (OSError, ValueError):
            if "%" in text or "/" in text or not text.isprintable():
                return None
    return canonical(text)


def unmap_network(text: str) -> str:
    """``::ffff:a.b.c.d/n`` (n >= 96) as the IPv4 network it covers; others unchanged."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return text
    if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        v4 = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        return str(v4)
    return text


def unmap_address(text: str) -> str:
    """An IPv4-mapped address as its IPv4 address; others canonical (or unchanged)."""
    return canonical(text) or text


def read_address_file(path: str | Path) -> tuple[list[str], list[tuple[int, str]]]:
    """Networks listed in a whitelist file (one address/CIDR a line, ``#`` comments).

    Returns (networks, errors) where errors are (line number, reason); a bad line is
    skipped, the rest still counts. Raises OSError when the file cannot be read.
    """
    networks: list[str] = []
    errors: list[tuple[int, str]] = []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            networks.append(parse_network(line))
        except ValueError as exc:
            errors.append((n, str(exc)))
    return networks, errors


class Protection:
    """Decides whether an address is ours, whitelisted or special."""

    def __init__(
        self,
        *,
        wan: Iterable[str] = (),
        gateways: Iterable[str] = (),
        networks: Iterable[str] = (),
        whitelist: Iterable[str] = (),
    ) -> None:
        # IPv4-mapped entries are judged as the IPv4 address or network they carry,
        # as alert addresses are (parse_ip): otherwise ::ffff:10.0.0.0/104 would
        # protect nothing.
        wan_t = tuple(dict.fromkeys(c for c in map(canonical, wan) if c))
        gateways = [unmap_address(g) for g in gateways]
        networks = [unmap_network(n) for n in networks]
        whitelist = [unmap_network(w) for w in whitelist]
        ours_entries = [(parse_network(a), f"our WAN address {a}") for a in wan_t]
        ours_entries += [(parse_network(g), f"our gateway {g}") for g in gateways]
        ours_entries += [(parse_network(n), f"our network {n}") for n in networks]
        self._ours = AddressTable(ours_entries)
        self._whitelist = AddressTable((parse_network(w), f"whitelisted {w}") for w in whitelist)
        self._special = AddressTable(_SPECIAL)

    @classmethod
    def from_config(
        cls,
        config: Config,
        wan_addresses: Iterable[str] = (),
        whitelist_extra: Iterable[str] = (),
    ) -> Protection:
        """Protection for a config plus the live WAN set and whitelist-file entries."""
        return cls(
            wan=(*config.network.wan, *wan_addresses),
            gateways=config.network.gateways,
            networks=config.network.networks,
            whitelist=(*config.filter.whitelist, *whitelist_extra),
        )

    def has_ours(self) -> bool:
        """True when any address or network is ours (WAN, gateway or network)."""
        return len(self._ours) > 0

    def ours(self, text: str) -> str | None:
        """Label (e.g. ``our network 192.168.1.0/24``) if the address is ours, else None."""
        ip = parse_ip(text)
        if ip is None:
            return None
        label = self._ours.label(ip.version, int(ip))
        v4 = embedded_ipv4(ip) if label is None else None
        return self._ours.label(4, v4) if v4 is not None else label

    def reason(self, text: str | None) -> str | None:
        """Why ``text`` must never be banned, or None when banning it is allowed."""
        if text is None or text == "":
            return "no offender address"
        ip = parse_ip(text)
        if ip is None:
            return f"not an IP address: {text!r}"
        version, value = ip.version, int(ip)
        for table in (self._special, self._ours, self._whitelist):
            if table.contains(version, value):
                return table.label(version, value)
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            for table in (self._special, self._ours, self._whitelist):
                if table.contains(4, v4):
                    return table.label(4, v4)
        return None
