"""The bulk path of a restore (issue 12, a million bans): the ledger's bans read split
by kind, checked and packed in one step (``firewall.bulk_entries``), and ipset's
messages carrying many addresses each, as the real kernel takes them in a namespace."""

from __future__ import annotations

import pytest

from banpipe.address import Split, packed
from banpipe.firewall import (
    FirewallConfig,
    FirewallError,
    FirewallFull,
    SubprocessRunner,
    bulk_entries,
    make_backend,
)
from banpipe.firewall.ipsetmsg import ipset_adt_payloads
from banpipe.firewall.nfproto import (
    IPSET_ATTR_ADT,
    IPSET_ATTR_IP,
    IPSET_ATTR_IPADDR_IPV4,
    IPSET_ATTR_IPADDR_IPV6,
    element_keys,
)
from banpipe.ledger import Ledger
from netns import Namespace, netns_one, skip_unless_root, spy  # noqa: F401 - the ns fixture


def v4s(n: int, second: int = 0) -> list[str]:
    return [f"10.{second}.{i >> 8}.{i & 255}" for i in range(n)]


def v6s(n: int) -> list[str]:
    return [f"2001:db8::{i + 1:x}:1" for i in range(n)]


# -- pure ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("addrs", "kind", "per"),
    [(v4s(10_000), IPSET_ATTR_IPADDR_IPV4, 4095), (v6s(5_000), IPSET_ATTR_IPADDR_IPV6, 2340)],
)
def test_ipset_message_carries_as_many_addresses_as_its_attribute_holds(addrs, kind, per):
    keys = [packed(a) for a in addrs]
    payloads = ipset_adt_payloads("banpipe4", keys)
    assert len(payloads) == -(-len(keys) // per)
    assert all(len(p) < 0xFFFF + 64 for p in payloads)
    assert element_keys(payloads, IPSET_ATTR_ADT, (IPSET_ATTR_IP, kind)) == keys
    assert ipset_adt_payloads("banpipe4", []) == []


def test_bulk_entries_of_a_split_are_checked_and_packed():
    split = Split(["192.0.2.1", "10.0.0.7"], ["2001:db8::1"], ["203.0.113.0/24", "2001:db8::/48"])
    e = bulk_entries(split)
    assert (e.v4, e.v6, e.v4nets, e.v6nets) == (
        ["192.0.2.1", "10.0.0.7"],
        ["2001:db8::1"],
        ["203.0.113.0/24"],
        ["2001:db8::/48"],
    )
    assert e.keys4 == [packed("192.0.2.1"), packed("10.0.0.7")]
    assert e.keys6 == [packed("2001:db8::1")]
    # The same as the entries given unsplit.
    assert bulk_entries([*split.v4, *split.v6, *split.nets]) == e


@pytest.mark.parametrize(
    "split",
    [
        Split(["2001:db8::1"], [], []),  # an IPv6 address among the IPv4 ones
        Split([], ["192.0.2.1"], []),
        Split([], ["2001:db8::/64"], []),  # a range among the addresses
        Split(["192.0.2.0/24"], [], []),
        Split([], [], ["192.0.2.1"]),  # an address among the ranges
        Split([], ["2001:DB8::1"], []),  # not canonical
        Split([], ["2001:db8:0:0:0:0:0:1"], []),
        Split([], ["::ffff:192.0.2.1"], []),  # that is the IPv4 address
        Split(["010.0.0.1"], [], []),
        Split([], [], ["192.0.2.1/24"]),  # host bits set
        Split([], [], ["192.0.2.1/32"]),  # that is the address
    ],
)
def test_bulk_entries_of_a_split_refuse_anything_out_of_place(split):
    with pytest.raises(FirewallError, match="not a canonical"):
        bulk_entries(split)


def test_bulk_entries_of_a_split_keep_ipv6_out_when_disabled():
    with pytest.raises(FirewallError, match="IPv6 is disabled"):
        bulk_entries(Split(["192.0.2.1"], ["2001:db8::1"], []), ipv6=False)
    assert bulk_entries(Split(["192.0.2.1"], [], []), ipv6=False).keys4 == [packed("192.0.2.1")]


def test_ledger_reads_its_active_bans_split_by_kind(tmp_path):
    with Ledger.open(str(tmp_path / "ledger.sqlite3")) as led:
        assert led.active_split() == Split([], [], [])
        for a in ("192.0.2.1", "2001:db8::1", "203.0.113.0/24", "2001:db8:1::/48", "192.0.2.9"):
            led.ban(a, 100.0, expires=None, reason="test")
        led.unban(["192.0.2.9"], 101.0)
        split = led.active_split()
    assert sorted(split.v4) == ["192.0.2.1"] and split.v6 == ["2001:db8::1"]
    assert sorted(split.nets) == ["2001:db8:1::/48", "203.0.113.0/24"]


# -- the kernel in a namespace ---------------------------------------------------------
def count(ns: Namespace, name: str) -> int:
    out = ns.run(["ipset", "list", "-t", name]).stdout
    return int(out.split("Number of entries:")[1].split()[0])


def sent_messages(fw, monkeypatch) -> list[int]:
    """How many messages each datagram ``fw``'s channel sends from now on carries."""
    channel = type(fw.channel)
    sent = spy(monkeypatch, channel, "each", lambda mtype, items, where: len(items))
    return spy(monkeypatch, channel, "each_key", lambda mtype, head, keys, *_: len(keys), sent)


@pytest.mark.root
@skip_unless_root
def test_ipset_adds_many_addresses_per_message_and_the_kernel_takes_them(ns, monkeypatch):
    fw = make_backend("ipset", FirewallConfig(), SubprocessRunner(ns.prefix))
    fw.init()
    sent = sent_messages(fw, monkeypatch)
    hosts = v4s(9_000) + v6s(3_000)
    fw.block(hosts + ["203.0.113.0/24"])
    # 9,000 IPv4 addresses in 3 messages, the range in its own, 3,000 IPv6 in 2.
    assert sent == [3, 1, 2]
    assert (count(ns, "banpipe4"), count(ns, "banpipe6"), count(ns, "banpipe4net")) == (
        9000,
        3000,
        1,
    )
    assert fw.check().entries == {*hosts, "203.0.113.0/24"}
    fw.release(hosts[:5000] + hosts[-100:])
    assert sent[3:] == [2, 1]
    assert fw.check().entries == {*hosts[5000:-100], "203.0.113.0/24"}


@pytest.mark.root
@skip_unless_root
def test_ipset_full_set_names_exactly_the_addresses_that_did_not_fit(ns, monkeypatch):
    fw = make_backend("ipset", FirewallConfig(max_entries=5000), SubprocessRunner(ns.prefix))
    fw.init()
    sent = sent_messages(fw, monkeypatch)
    hosts = v4s(6_000)
    with pytest.raises(FirewallFull) as err:
        fw.block(hosts)
    # The kernel refuses the second message as a whole; asked one address a message,
    # it takes what fits and names the rest.
    assert sent == [2, 6000]
    # The kernel counts its elements per region: a few more than maxelem can fit.
    held = fw.check().entries
    assert 5000 <= len(held) < 6000
    assert err.value.addresses == [a for a in hosts if a not in held]


@pytest.mark.root
@skip_unless_root
@pytest.mark.parametrize("name", ["ipset", "nftables"])
def test_replace_with_the_ledgers_split_holds_exactly_the_bans(ns, name):
    fw = make_backend(name, FirewallConfig(), SubprocessRunner(ns.prefix))
    fw.init()
    fw.block(["192.0.2.99", "2001:db8::99", *v4s(100)])
    split = Split(v4s(3_000, second=1), v6s(2_500), ["203.0.113.0/24", "2001:db8:1::/48"])
    assert fw.replace(split) is True
    assert fw.check().entries == {*split.v4, *split.v6, *split.nets}
    with pytest.raises(FirewallError, match="not a canonical"):
        fw.replace(Split(["192.0.2.1"], ["2001:DB8::1"], []))
    assert fw.check().entries == {*split.v4, *split.v6, *split.nets}


@pytest.mark.root
@skip_unless_root
def test_ipset_replace_makes_the_hash_as_big_as_its_fill(ns, monkeypatch):
    # Grown from a small table, the kernel rehashes every element on each doubling.
    from banpipe.firewall import ipsetsets

    monkeypatch.setattr(ipsetsets, "HASHSIZE", 64)
    fw = make_backend("ipset", FirewallConfig(), SubprocessRunner(ns.prefix))
    fw.init()
    assert "hashsize 64 " in ns.run(["ipset", "list", "-t", "banpipe6"]).stdout
    assert fw.replace(Split(v4s(10), v6s(2_500), [])) is True
    assert "hashsize 4096 " in ns.run(["ipset", "list", "-t", "banpipe6"]).stdout
    assert count(ns, "banpipe6") == 2500
