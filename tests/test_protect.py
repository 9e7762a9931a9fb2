"""Self-protection: what is never banned, shared by alertfilter and banctl."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banpipe.protect import AddressTable, Protection, read_address_file

P = Protection(
    wan=["198.51.100.2"],
    gateways=["198.51.100.1"],
    networks=["192.168.1.0/24", "2001:db8:1::/48"],
    whitelist=["203.0.113.0/28", "203.0.113.8/29", "10.0.0.0/8"],
)


@pytest.mark.parametrize(
    "addr, reason",
    [
        ("198.51.100.2", "our WAN address 198.51.100.2"),
        ("198.51.100.1", "our gateway 198.51.100.1"),
        ("192.168.1.77", "our network 192.168.1.0/24"),
        ("2001:db8:1:ff::9", "our network 2001:db8:1::/48"),
        ("203.0.113.9", "whitelisted 203.0.113.8/29"),  # most specific entry named
        ("10.1.2.3", "whitelisted 10.0.0.0/8"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:198.51.100.2", "our WAN address 198.51.100.2"),
        # every IPv4-embedding spelling of ours is ours
        ("::c633:6402", "our WAN address 198.51.100.2"),  # IPv4-compatible
        ("::198.51.100.2", "our WAN address 198.51.100.2"),
        ("::ffff:0:c633:6402", "our WAN address 198.51.100.2"),  # IPv4-translated
        ("64:ff9b::c633:6402", "our WAN address 198.51.100.2"),  # NAT64
        ("64:ff9b::192.168.1.7", "our network 192.168.1.0/24"),
        ("::c0a8:107", "our network 192.168.1.0/24"),
        ("64:ff9b::cb00:7109", "whitelisted 203.0.113.8/29"),
        ("64:ff9b::7f00:1", "loopback"),
        # reserved and "this network" sources
        ("0.1.2.3", '"this network" (0.0.0.0/8), never a source'),
        ("240.0.0.1", "reserved (240.0.0.0/4)"),
        ("254.255.255.255", "reserved (240.0.0.0/4)"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.22", "multicast"),
        ("ff02::16", "multicast"),
        ("255.255.255.255", "broadcast address"),
        ("0.0.0.0", "unspecified address"),
        ("::", "unspecified address"),
        (None, "no offender address"),
        ("", "no offender address"),
        ("fe80::1%eth0", "not an IP address: 'fe80::1%eth0'"),
        ("203.0.113.7/32", "not an IP address: '203.0.113.7/32'"),
        ("1.2.3", "not an IP address: '1.2.3'"),
    ],
)
def test_protected(addr, reason):
    assert P.reason(addr) == reason


@pytest.mark.parametrize("addr", ["203.0.113.16", "198.51.100.3", "2001:db8:2::1", "8.8.8.8"])
def test_not_protected(addr):
    assert P.reason(addr) is None


def test_ours_is_only_wan_gateways_and_networks():
    assert P.ours("192.168.1.9") == "our network 192.168.1.0/24"
    assert P.ours("10.1.1.1") is None  # whitelisted, but not ours
    assert P.ours("bogus") is None


def test_table_edges():
    t = AddressTable([("192.0.2.0/30", "a"), ("192.0.2.4/30", "b")])
    assert t.label(4, int.from_bytes(bytes([192, 0, 2, 7]), "big")) == "b"
    assert not t.contains(4, int.from_bytes(bytes([192, 0, 2, 8]), "big"))
    assert not t.contains(6, 1)


def test_whitelist_file_keeps_good_lines_and_reports_bad_ones(tmp_path):
    f = tmp_path / "wl.txt"
    f.write_text("# monitoring\n203.0.113.5\n\n2001:db8:9::/48  # v6 office\nnonsense\n")
    nets, errors = read_address_file(f)
    assert nets == ["203.0.113.5/32", "2001:db8:9::/48"]
    assert errors == [(5, "not an IP address or network: 'nonsense'")]


def test_ipv4_mapped_config_entries_protect_the_ipv4_addresses():
    p = Protection(networks=["::ffff:192.168.7.0/120"], whitelist=["::ffff:10.0.0.0/104"])
    assert p.reason("192.168.7.9") == "our network 192.168.7.0/24"
    assert p.reason("::ffff:10.9.9.9") == "whitelisted 10.0.0.0/8"


def test_embedded_spellings_of_ours_are_ours_for_require_ours():
    assert P.ours("64:ff9b::c0a8:107") == "our network 192.168.1.0/24"
    assert P.ours("::ffff:0:c633:6402") == "our WAN address 198.51.100.2"
    assert P.ours("64:ff9b::808:808") is None


@pytest.mark.parametrize("addr", ["64:ff9b::808:808", "::ffff:0:808:808", "64:ff9b:1::c633:6402"])
def test_embedded_spellings_of_others_are_bannable(addr):
    assert P.reason(addr) is None


@given(
    st.one_of(
        st.ip_addresses(network="192.168.1.0/24"),
        st.ip_addresses(network="203.0.113.0/28"),
        st.just(ipaddress.IPv4Address("198.51.100.2")),
    ),
    st.sampled_from(["::{}", "::ffff:{}", "::ffff:0:{}", "64:ff9b::{}"]),
)
def test_every_spelling_of_a_protected_ipv4_address_is_protected(v4, spelling):
    text = str(ipaddress.IPv6Address(spelling.format(v4)))  # compressed, hex groups
    assert P.reason(text) == P.reason(str(v4)) is not None


@given(
    st.one_of(
        st.ip_addresses(v=4),
        st.ip_addresses(network="192.168.1.0/24"),
        st.ip_addresses(network="203.0.113.0/27"),
        st.ip_addresses(network="198.51.100.0/30"),
    )
)
def test_ipv4_text_is_judged_as_its_ipv4_mapped_spelling(v4):
    # Dotted IPv4 text takes libc's way (address.v4_value), the mapped spelling the
    # ipaddress way: the same address, the same answer.
    assert P.reason(str(v4)) == P.reason(f"::ffff:{v4}")


def test_ranges_merged_for_bisect():
    from banpipe.intervals import merged

    assert merged([(5, 9), (1, 3), (4, 4), (12, 20), (15, 16)]) == ([1, 12], [9, 20])
    assert merged([(2, 2), (4, 6)]) == ([2, 4], [2, 6])  # 3 is in neither: not merged
    assert merged([]) == ([], [])
