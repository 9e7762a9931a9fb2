"""Ban entries that are ranges: address.entry / Ranges, and the protection of ranges."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banpipe.address import Ranges, entry, prefix
from banpipe.protect import Protection


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7/32", "203.0.113.7"),
        ("203.0.113.0/24", "203.0.113.0/24"),
        ("203.0.113.9/24", "203.0.113.0/24"),  # host bits cleared, like the whitelist
        ("2001:DB8::/64", "2001:db8::/64"),
        ("2001:db8::7/128", "2001:db8::7"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),  # IPv4-mapped: the IPv4 network
        ("203.0.113.0/33", None),
        ("203.0.113.0/024", "203.0.113.0/24"),
        ("203.0.113.0/", None),
        ("fe80::/10%eth0", None),
        ("banpipe/24", None),
        (None, None),
    ],
)
def test_entry(text, want):
    assert entry(text) == want


def test_prefix():
    assert prefix("2001:db8::7", 64) == "2001:db8::/64"
    assert prefix("203.0.113.7", 24) == "203.0.113.0/24"


def test_ranges_cover_addresses_and_narrower_ranges_only():
    r = Ranges(["203.0.113.0/24", "2001:db8::/64", "198.51.100.7"])
    assert r.covers("203.0.113.7") and r.covers("203.0.113.128/25")
    assert r.covers("2001:db8::1") and not r.covers("2001:db8:0:1::1")
    assert not r.covers("203.0.113.0/24")  # not itself
    assert r.covers("203.0.113.0/24", strictly=False)
    assert not r.covers("203.0.112.0/23") and not r.covers("198.51.100.8")
    assert not r.covers("198.51.100.7")  # addresses are no ranges
    assert r.collapse(["203.0.113.7", "203.0.113.0/24", "192.0.2.1", "2001:db8::/80"]) == {
        "203.0.113.0/24",
        "192.0.2.1",
    }
    assert not Ranges(["203.0.113.7"]) and Ranges(["203.0.113.0/24"])
    entries = ["203.0.113.7", "2001:db8::1", "2001:db8:1::1", "203.0.113.128/25", "10.0.0.1"]
    assert r.inside(entries) == {e for e in entries if r.covers(e)}
    assert r.inside(iter(entries)) == {"203.0.113.7", "2001:db8::1", "203.0.113.128/25"}


PROTECTION = Protection(
    wan=["198.51.100.1", "2001:db8:ffff::1"],
    gateways=["192.0.2.254"],
    networks=["10.1.0.0/16", "2001:db8:aaaa::/48"],
    whitelist=["100.64.0.0/24"],
)


@pytest.mark.parametrize(
    ("net", "why"),
    [
        ("198.51.100.0/24", "the range holds our WAN address 198.51.100.1"),
        ("192.0.2.0/24", "the range holds our gateway 192.0.2.254"),
        ("10.0.0.0/8", "the range holds our network 10.1.0.0/16"),
        ("10.1.2.0/24", "the range holds our network 10.1.0.0/16"),  # inside ours
        ("100.64.0.0/10", "the range holds whitelisted 100.64.0.0/24"),
        ("2001:db8::/32", "the range holds our WAN address 2001:db8:ffff::1"),
        ("2001:db8:aaaa:1::/64", "the range holds our network 2001:db8:aaaa::/48"),
        ("127.0.0.0/16", "the range holds loopback"),
        ("224.0.0.0/3", "the range holds reserved (240.0.0.0/4)"),  # the first that applies
        ("0.0.0.0/1", "the range holds unspecified address"),
        ("fe00::/7", "the range holds link-local"),
        # IPv6 blocks that carry IPv4 addresses: ours through NAT64, -mapped, -compatible.
        ("64:ff9b::c633:6400/120", "the range holds our WAN address 198.51.100.1"),
        ("64:ff9b::/96", "the range holds unspecified address"),
        ("::/64", "the range holds unspecified address"),
        ("203.0.113.0/24", None),
        ("2001:db8:66::/64", None),
        ("64:ff9b::cb00:7100/120", None),  # NAT64 of 203.0.113.0/24: not ours
        ("203.0.113.7", None),
        ("198.51.100.1", "our WAN address 198.51.100.1"),
    ],
)
def test_range_reason(net, why):
    assert PROTECTION.range_reason(net) == why


v4_nets = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 31)).map(
    lambda t: str(ipaddress.ip_network((t[0], t[1]), strict=False))
)
v6_nets = st.tuples(st.integers(0, 2**128 - 1), st.integers(1, 127)).map(
    lambda t: str(ipaddress.ip_network((t[0], t[1]), strict=False))
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(v4_nets, v6_nets))
def test_a_range_allowed_holds_no_protected_address(net):
    """Never a range that shares an address with something protected: checked against
    every protected network and address directly (and the IPv4 carried by IPv6)."""
    if PROTECTION.range_reason(entry(net)) is not None:
        return
    n = ipaddress.ip_network(entry(net))
    protected = [
        "198.51.100.1/32",
        "2001:db8:ffff::1/128",
        "192.0.2.254/32",
        "10.1.0.0/16",
        "2001:db8:aaaa::/48",
        "100.64.0.0/24",
        "0.0.0.0/8",
        "240.0.0.0/4",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "fe80::/10",
        "ff00::/8",
    ]
    for p in map(ipaddress.ip_network, protected):
        assert p.version != n.version or not n.overlaps(p), (n, p)
        if p.version == 4 and n.version == 6:
            for block in ("::ffff:0:0/96", "::/96", "::ffff:0:0:0/96", "64:ff9b::/96"):
                b = ipaddress.ip_network(block)
                if n.overlaps(b):
                    inner = n if n.subnet_of(b) else b
                    low = int(inner.network_address) & 0xFFFF_FFFF
                    high = int(inner.broadcast_address) & 0xFFFF_FFFF
                    assert high < int(p.network_address) or low > int(p.broadcast_address)
