"""banpipe.address: the one rule for address text, checked against ipaddress as the oracle."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banpipe import address
from banpipe.address import canonical, embedded_ipv4, from_packed, network, parse


def rule(text):
    """The rule, written with ipaddress alone: strict text, no zone ids or prefixes, and
    an IPv4-mapped IPv6 address is its IPv4 address."""
    if not isinstance(text, str) or "%" in text or "/" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


v4_addr = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6_addr = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
mapped_addr = v4_addr.map(lambda a: f"::ffff:{a}")
any_address = st.one_of(
    v4_addr,
    v6_addr,
    mapped_addr,
    st.sampled_from(["", "not-an-ip", "fe80::1%eth0", "1.2.3", "01.2.3.4", "::ffff:1.2.3.4/96"]),
    st.text(max_size=20),
)


def _spellings(ip):
    text = str(ip)
    out = [text, text.upper()]
    if ip.version == 6:
        out.append(ip.exploded)
        out.append(ip.exploded.upper())
    return out


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(any_address, v6_addr.map(lambda a: ipaddress.ip_address(a).exploded)))
def test_canonical_follows_the_rule(text):
    assert canonical(text) == rule(text)
    assert canonical(text) == rule(text)  # the memoised answer is the same


@given(st.ip_addresses())
def test_canonical_follows_the_rule_for_every_spelling(ip):
    for text in _spellings(ip):
        assert canonical(text) == rule(text)


@given(st.ip_addresses(v=4))
def test_canonical_maps_ipv4_in_ipv6(ip):
    for text in (f"::ffff:{ip}", f"::FFFF:{ip}", f"::ffff:{int(ip) >> 16:x}:{int(ip) & 0xFFFF:x}"):
        assert canonical(text) == rule(text) == str(ip)


@given(st.text(max_size=45))
def test_canonical_follows_the_rule_for_any_text(text):
    assert canonical(text) == rule(text)


@pytest.mark.parametrize(
    "text", ["1.2.3.4/32", "fe80::1%eth0", "01.2.3.4", "1.2.3", "::1.2.3.4", "1.2.3.4 ", ""]
)
def test_canonical_edge_cases(text):
    assert canonical(text) == rule(text)


def test_canonical():
    assert canonical("2001:0DB8:0000::0001") == "2001:db8::1"
    assert canonical("::ffff:203.0.113.5") == "203.0.113.5"
    assert canonical("300.1.1.1") is None


@pytest.mark.parametrize("value", [None, 7, b"1.2.3.4", "1" * 100 + "::", "::" + "0:" * 40])
def test_canonical_of_what_is_no_address_text(value):
    assert canonical(value) is None


def test_libc_fast_paths_are_on():
    # glibc is as strict as the rule; elsewhere ipaddress judges (correct, slower).
    assert address.V4_PTON
    assert address.V6_LIBC


def test_memory_stays_bounded():
    for n in range(3 * address.V6_MEMO.size):
        canonical(f"2001:db8::{n:x}")
        assert canonical(f"{n}:" * 100) is None
    assert len(address.V6_MEMO) <= 2 * address.V6_MEMO.size  # both generations
    assert max(map(len, address.V6_MEMO)) <= 45  # long garbage is not kept


@pytest.mark.parametrize(
    ("network_text", "expected"),
    [
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:203.0.113.7/128", "203.0.113.7/32"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::/0", "::/0"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.168.1.7/24", "192.168.1.0/24"),
        (" 2001:DB8:1::/48 ", "2001:db8:1::/48"),
        ("10.0.0.1", "10.0.0.1/32"),
        ("::ffff:10.0.0.1", "10.0.0.1/32"),
        ("::ffff:0:0/95", "::fffe:0:0/95"),  # wider than the mapped range: IPv6
    ],
)
def test_network(network_text, expected):
    assert network(network_text) == expected


@pytest.mark.parametrize(
    "bad", ["", "nonsense", "10.0.0.0/33", "10.0.0.0/x", "01.0.0.0/8", "fe80::%eth0/64", "1.2.3.4/"]
)
def test_bad_network(bad):
    with pytest.raises(ValueError, match="not an IP address or network"):
        network(bad)


def test_parse_and_embedded_ipv4():
    assert parse("::ffff:10.1.2.3") == ipaddress.IPv4Address("10.1.2.3")
    assert parse("fe80::1%eth0") is None
    assert embedded_ipv4(parse("64:ff9b::808:808")) == 0x08080808
    assert embedded_ipv4(parse("::ffff:0:808:808")) == 0x08080808
    assert embedded_ipv4(parse("::1")) is None
    assert embedded_ipv4(parse("2001:db8::1")) is None


def test_from_packed():
    assert from_packed(bytes([192, 0, 2, 1])) == "192.0.2.1"
    assert from_packed(bytes([192, 0, 2, 1]), socket.AF_INET) == "192.0.2.1"
    mapped = ipaddress.IPv6Address("::ffff:192.0.2.1").packed
    assert from_packed(mapped, socket.AF_INET6) == "192.0.2.1"
    assert from_packed(ipaddress.IPv6Address("2001:db8::1").packed) == "2001:db8::1"
    assert from_packed(b"\0" * 16, socket.AF_INET) is None
    assert from_packed(b"\0" * 5) is None


@settings(max_examples=2000)
@given(st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)))
def test_from_packed_is_the_rule_for_every_packed_address(raw):
    """The kernel's bytes read as the one rule reads their ipaddress text, whichever
    way from_packed takes (straight from inet_ntop or through canonical)."""
    assert from_packed(raw) == rule(str(ipaddress.ip_address(raw)))


def test_from_packed_of_the_embedded_forms():
    for text in ("::192.0.2.1", "::ffff:0:192.0.2.1", "64:ff9b::192.0.2.1", "::ffff:0.0.0.0"):
        raw = ipaddress.IPv6Address(text).packed
        assert from_packed(raw) == rule(text), text


@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()),
        st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"),
        st.sampled_from(["::1.2.3.4", "::ffff:0:1.2.3.4", "64:ff9b::1.2.3.4", "01.2.3.4"]),
    ),
    st.sampled_from(["32", "128"]),
)
def test_an_entry_of_one_address_is_what_the_network_rule_says(text, plen):
    """``a/32``, ``a/128`` (every entry of a listing) take the address's own rule, fast:
    the same answer as the network rule, which says what any ``a/n`` is."""
    try:
        net = address.network(f"{text}/{plen}")
    except ValueError:
        assert address.entry(f"{text}/{plen}") is None
        return
    addr, _, n = net.partition("/")
    one = n == ("128" if ":" in addr else "32")
    assert address.entry(f"{text}/{plen}") == (addr if one else net)


@given(st.lists(st.one_of(any_address, v4_addr.map(lambda a: a + "/24")), max_size=6))
def test_all_entries_is_entry_of_each(texts):
    """The bulk check agrees with entry() item by item (its C loops are the fast path)."""
    assert address.all_entries(texts) == all(address.entry(t) == t for t in texts)
    assert address.all_entries(iter(texts)) == address.all_entries(texts)


@given(
    st.lists(
        st.one_of(
            any_address,
            v4_addr.map(lambda a: a + "/24"),
            st.sampled_from(["2001:db8::/64", "::ffff:0:102:304", "::1:0"]),
        ),
        max_size=8,
    )
)
def test_sort_entries_splits_each_kind_in_order(texts):
    """IPv4 addresses, IPv6 addresses, ranges: each in the order given."""
    texts = [t for t in texts if address.entry(t) == t]
    v4, v6, nets = address.sort_entries(texts)
    assert nets == [t for t in texts if "/" in t]
    assert v4 == [t for t in texts if "/" not in t and ":" not in t]
    assert v6 == [t for t in texts if "/" not in t and ":" in t]


def test_all_entries_refuses_what_is_no_text():
    assert not address.all_entries(["203.0.113.7", None])
    assert not address.all_entries([7])
    assert address.all_entries([]) and address.all_entries(["2001:db8::/64", "::1"])


def test_all_entries_where_libc_writes_dotted():
    assert address.all_entries(["::1:0", "::ffff:0:102:304"])
    assert not address.all_entries(["::0.1.0.0"]) and not address.all_entries(["::ffff:1.2.3.4"])


def test_the_ipv4_memo_holds_only_what_inet_pton_accepted():
    """AlertParser.feed's one line validates IPv4 through address.V4_MEMO: a refused
    address is refused again (never remembered), an accepted one gives the same alert."""
    from datetime import datetime

    from banpipe.parsers import AlertParser, ParseError

    parser = AlertParser(now=datetime(2026, 11, 28, 12, 0))
    stamp = "11/17/2018-10:46:59.686494  [**] [1:2003:8] M [**] [Priority: 2] {TCP} "
    for _ in range(2):  # the second time through the memo
        (bad,) = parser.feed(stamp + "203.0.113.256:1433 -> 192.0.2.7:1433\n", 1)
        assert isinstance(bad, ParseError)
        assert "203.0.113.256" not in address.V4_MEMO
    (a,) = parser.feed(stamp + "203.0.113.9:1433 -> 192.0.2.7:1433\n", 3)
    assert address.V4_MEMO.get("203.0.113.9") == "203.0.113.9"
    assert (a["src"], a["sport"], a["dst"], a["dport"]) == ("203.0.113.9", 1433, "192.0.2.7", 1433)
    assert parser.feed(stamp + "203.0.113.9:1433 -> 192.0.2.7:1433\n", 4) == [a]
