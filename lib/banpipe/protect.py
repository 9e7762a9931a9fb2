"""Self-protection: the addresses banpipe never bans, whatever the config says.

Shared by alertfilter (which never emits such a ban) and banctl (which refuses them,
even from `banctl ban`, unless forced), so both apply exactly the same rules:
our WAN addresses, gateways and networks, the whitelist, and the special ranges
(loopback, link-local, multicast, broadcast, unspecified, "this network" 0.0.0.0/8,
reserved 240.0.0.0/4). An IPv6 address that embeds an IPv4 address (IPv4-mapped,
-compatible, -translated, NAT64 64:ff9b::/96) is protected when that IPv4 address is:
the same host may be named either way (:mod:`banpipe.address` has the rule).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from banpipe import intervals
from banpipe.address import canonical, embedded_ipv4, network, parse, span, v4_value
from banpipe.config import Config

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
        for net_text, label in entries:
            net = ipaddress.ip_network(net_text)
            first, last = int(net.network_address), int(net.broadcast_address)
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
            self._starts[version], self._ends[version] = intervals.merged(spans)

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

    def overlap(self, version: int, first: int, last: int) -> str | None:
        """Label of an entry that shares an address with ``first..last``, or None."""
        starts = self._starts[version]
        i = bisect.bisect_right(starts, last) - 1
        if i < 0 or self._ends[version][i] < first:
            return None
        for v, lo, hi, label in self._labelled:
            if v == version and lo <= last and first <= hi:
                return label
        return None  # pragma: no cover - the merged ranges said there is one


# The IPv6 blocks whose addresses carry an IPv4 address in their low 32 bits:
# IPv4-mapped, -compatible, -translated, NAT64 (banpipe.address has the rule).
_EMBEDDING = tuple(
    (int(n.network_address), int(n.broadcast_address))
    for n in map(
        ipaddress.IPv6Network, ("::ffff:0:0/96", "::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
    )
)


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
            networks.append(network(line))
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
        # Entries in canonical form: IPv4-mapped ones are the IPv4 address or network
        # they carry, as alert addresses are (otherwise ::ffff:10.0.0.0/104 would protect
        # nothing). A bad entry raises ValueError.
        wan_t = tuple(dict.fromkeys(c for c in map(canonical, wan) if c))
        gateways = [canonical(g) or g for g in gateways]
        networks = [network(n) for n in networks]
        whitelist = [network(w) for w in whitelist]
        ours_entries = [(network(a), f"our WAN address {a}") for a in wan_t]
        ours_entries += [(network(g), f"our gateway {g}") for g in gateways]
        ours_entries += [(n, f"our network {n}") for n in networks]
        self._ours = AddressTable(ours_entries)
        self._whitelist = AddressTable((w, f"whitelisted {w}") for w in whitelist)
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
        ip = parse(text)
        if ip is None:
            return None
        label = self._ours.label(ip.version, int(ip))
        v4 = embedded_ipv4(ip) if label is None else None
        return self._ours.label(4, v4) if v4 is not None else label

    def reason(self, text: str | None) -> str | None:
        """Why ``text`` must never be banned, or None when banning it is allowed."""
        if text is None or text == "":
            return "no offender address"
        v4 = v4_value(text)
        if v4 is not None:
            return self._label(4, v4)
        ip = parse(text)
        if ip is None:
            return f"not an IP address: {text!r}"
        label = self._label(ip.version, int(ip))
        v4 = embedded_ipv4(ip) if label is None else None
        return self._label(4, v4) if v4 is not None else label

    def _label(self, version: int, value: int) -> str | None:
        """The first protected table's label for the address ``value``, or None."""
        for table in (self._special, self._ours, self._whitelist):
            if table.contains(version, value):
                return table.label(version, value)
        return None

    def range_reason(self, net: str) -> str | None:
        """Why the range ``net`` (a canonical entry: an address or ``a/n``) must never
        be banned: it shares an address with something protected (special ranges, ours,
        the whitelist), directly or through an IPv6 block that carries IPv4 addresses.
        None when banning the whole range is allowed."""
        if "/" not in net:
            return self.reason(net)
        version, first, last = span(net)
        tables = (self._special, self._ours, self._whitelist)
        for table in tables:
            label = table.overlap(version, first, last)
            if label is not None:
                return f"the range holds {label}"
        if version == 6:
            for lo, hi in _EMBEDDING:
                if first <= hi and lo <= last:
                    v4 = (max(first, lo) & 0xFFFF_FFFF, min(last, hi) & 0xFFFF_FFFF)
                    for table in tables:
                        label = table.overlap(4, *v4)
                        if label is not None:
                            return f"the range holds {label}"
        return None
