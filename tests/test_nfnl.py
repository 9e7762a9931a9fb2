"""The netlink channel to the firewall (banpipe.firewall.nfnl): messages, answers, and
the real kernel in a namespace (no fork per ban, every error read and tied to its ban);
nftables' structure on it (banpipe.firewall.nftstruct): what ``init()``'s ``nft -f``
script builds, as ``nft -j list`` shows it, for every setting that shapes it."""

from __future__ import annotations

import errno
import itertools
import json
import socket
import struct

import pytest

from banpipe.address import packed
from banpipe.firewall import FirewallConfig, FirewallFull, SubprocessRunner, make_backend
from banpipe.firewall.ipsetmsg import (
    ipset_payload,
)
from banpipe.firewall.nfnl import (
    Channel,
    ChannelError,
    channel_for,
)
from banpipe.firewall.nfproto import (
    NFPROTO_IPV4,
    NFPROTO_IPV6,
)
from banpipe.firewall.nftmsg import (
    XtLog,
    _rule_payload,
    parse_rule,
    setelem_payload,
    xt_rule_payload,
)
from banpipe.firewall.nlsocket import parse_answers
from banpipe.firewall.runner import RecordingRunner
from banpipe.netlink import pack_attr, pack_message, parse_attrs
from netns import Namespace, netns_one, skip_unless_root, spy  # noqa: F401 - the ns fixture

BACKENDS = ["iptables", "ipset", "nftables"]


# -- pure: messages and answers ----------------------------------------------------------
def _elements(payload: bytes) -> list[bytes]:
    attrs = parse_attrs(payload, 4)
    assert attrs[1] == b"banpipe\0" and attrs[2] == b"v4\0"
    out = []
    body = attrs[3]
    off = 0
    while off < len(body):
        (length,) = struct.unpack_from("=H", body, off)
        elem = parse_attrs(body[off + 4 : off + length])
        key = parse_attrs(elem[1])[1]
        out.append(key)
        off += (length + 3) & ~3
    return out


def test_set_elements_carry_every_key_in_order():
    keys = [packed(a) for a in ("203.0.113.7", "192.0.2.1", "198.51.100.255")]
    assert _elements(setelem_payload(1, "banpipe", "v4", keys)) == keys


def test_one_element_carries_its_own_key_each_time():
    # One key, the everyday new ban, has a payload of its own (a fixed head and the key).
    for a in ("203.0.113.7", "192.0.2.1", "2001:db8::7", "2001:db8::8"):
        assert _elements(setelem_payload(1, "banpipe", "v4", [packed(a)])) == [packed(a)]
    one = setelem_payload(1, "banpipe", "v4", [packed("203.0.113.7")])
    two = setelem_payload(1, "banpipe", "v4", [packed("203.0.113.7"), packed("192.0.2.1")])
    # The same framing as an element of a longer list (an IPv4 element: 12 bytes of
    # attribute heads, 4 of key): only the list's length differs.
    assert one[-16:] == two[-32:-16]
    assert len(one) == len(two) - 16


def test_too_many_elements_for_one_message_are_refused():
    with pytest.raises(ValueError):
        setelem_payload(1, "t", "v6", [packed("2001:db8::1")] * 3000)


def test_ipset_payload_is_one_address():
    payload = ipset_payload("banpipe4", packed("203.0.113.7"))
    attrs = parse_attrs(payload, 4)
    assert attrs[1] == b"\x07" and attrs[2] == b"banpipe4\0"
    ip = parse_attrs(parse_attrs(attrs[7])[1])
    assert ip[1] == socket.inet_aton("203.0.113.7")
    six = parse_attrs(ipset_payload("banpipe6", packed("2001:db8::7")), 4)
    assert parse_attrs(parse_attrs(six[7])[1])[2] == socket.inet_pton(
        socket.AF_INET6, "2001:db8::7"
    )


@pytest.mark.parametrize("addr", ["203.0.113.7", "2001:db8::7"])
@pytest.mark.parametrize("log", [None, XtLog(6, 60, "banpipe: ")])
def test_host_rule_reads_back_as_ours(addr, log):
    key = packed(addr)
    fam = NFPROTO_IPV6 if ":" in addr else NFPROTO_IPV4
    payload = xt_rule_payload(fam, "BANPIPE", key, 8 * len(key), log)
    # What the kernel dumps is the request plus a handle.
    rule = parse_rule(payload + pack_attr(3, struct.pack("!Q", 42)))
    assert rule.handle == 42 and rule.key == key and rule.plen == 8 * len(key)
    assert rule.action == ("drop" if log is None else "log")
    # The cached template gives the same bytes as building the rule whole.
    assert payload == _rule_payload(fam, "BANPIPE", key, 8 * len(key), log)


def test_network_rule_has_its_prefix():
    payload = xt_rule_payload(NFPROTO_IPV4, "BANPIPE", packed("203.0.112.0"), 20)
    rule = parse_rule(payload + pack_attr(3, struct.pack("!Q", 7)))
    assert rule.plen == 20 and rule.key == bytes([203, 0, 112])
    with pytest.raises(ValueError):
        xt_rule_payload(NFPROTO_IPV4, "BANPIPE", packed("203.0.113.0"), 33)


def test_rule_of_another_shape_is_not_ours():
    payload = b"\2\0\0\0" + pack_attr(3, struct.pack("!Q", 9))
    rule = parse_rule(payload)
    assert rule.handle == 9 and rule.key is None


def test_answers_are_acks_errors_and_other_messages():
    ack = pack_message(2, struct.pack("=i", 0) + b"\0" * 16, 0, 5)
    err = pack_message(2, struct.pack("=i", -errno.ENOENT) + b"\0" * 16, 0, 6)
    other = pack_message(0xA06, b"\2\0\0\0", 0, 7)
    got = list(parse_answers(ack + err + other))
    assert [(a.seq, a.error) for a in got[:2]] == [(5, 0), (6, errno.ENOENT)]
    assert got[2] == (0xA06, 7, b"\2\0\0\0")


def test_sequence_numbers_reserved_in_blocks_stay_consecutive():
    ch = Channel()
    ch._seq = 0x7FFFFFFE
    first = ch.seq(4)
    assert first == 1 and ch.seq() == 5


def test_channel_only_where_a_socket_can_follow_the_runner():
    assert channel_for(RecordingRunner()) is None
    assert channel_for(SubprocessRunner()).netns is None
    assert channel_for(SubprocessRunner(["ip", "netns", "exec", "x"])).netns == "x"
    assert channel_for(SubprocessRunner(["sudo"])) is None


# -- the real kernel ---------------------------------------------------------------------
class CountingRunner(SubprocessRunner):
    def __init__(self, prefix):
        super().__init__(prefix)
        self.argvs: list[list[str]] = []

    def __call__(self, argv, **kw):
        self.argvs.append(list(argv))
        return super().__call__(argv, **kw)


@pytest.mark.root
@skip_unless_root
@pytest.mark.parametrize("name", BACKENDS)
def test_no_fork_per_ban(ns, name):
    runner = CountingRunner(ns.prefix)
    fw = make_backend(name, FirewallConfig(), runner)
    fw.init()
    fw.block(["192.0.2.1"])  # iptables asks `iptables -V` once
    runner.argvs.clear()
    for i in range(2, 30):
        fw.block([f"192.0.2.{i}", f"2001:db8::{i:x}"])
    fw.release(["192.0.2.5", "2001:db8::5", "192.0.2.250"])
    assert runner.argvs == []
    want = {f"192.0.2.{i}" for i in range(1, 30)} | {f"2001:db8::{i:x}" for i in range(2, 30)}
    assert fw.check().entries == want - {"192.0.2.5", "2001:db8::5"}


@pytest.mark.root
@skip_unless_root
@pytest.mark.parametrize("name", ["iptables", "nftables"])
def test_kernel_error_names_the_ban_and_applies_nothing(ns, name):
    fw = make_backend(name, FirewallConfig(), SubprocessRunner(ns.prefix))
    fw.init()
    fw.block(["192.0.2.1"])
    fw.close()
    with pytest.raises(ChannelError) as err:
        fw.block(["192.0.2.2", "2001:db8::2"])
    assert err.value.errno == errno.ENOENT
    assert "192.0.2.2" in err.value.addresses and "192.0.2.2" in str(err.value)


@pytest.mark.root
@skip_unless_root
def test_ipset_full_set_is_reported_per_address(ns):
    ns.run(["ipset", "create", "banpipe4", "hash:ip", "family", "inet", "maxelem", "2"])
    fw = make_backend("ipset", FirewallConfig(ipv6=False), SubprocessRunner(ns.prefix))
    with pytest.raises(ChannelError) as err:
        fw.block(["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"])
    assert err.value.addresses == ["192.0.2.3", "192.0.2.4"]
    assert "set is full" in str(err.value)
    assert ns.run(["ipset", "list", "banpipe4"]).stdout.count("192.0.2.") == 2


@pytest.mark.root
@skip_unless_root
def test_iptables_sees_outside_changes_between_calls(ns):
    """The index of rule handles is tied to the ruleset generation: a rule deleted or added
    by hand is seen at the next call, never a stale handle used."""
    fw = make_backend("iptables", FirewallConfig(ipv6=False), SubprocessRunner(ns.prefix))
    fw.init()
    fw.block(["192.0.2.1", "192.0.2.2"])
    ns.run(["iptables", "-D", "BANPIPE", "-s", "192.0.2.1/32", "-j", "DROP"])
    ns.run(["iptables", "-A", "BANPIPE", "-s", "192.0.2.3/32", "-j", "DROP"])
    fw.block(["192.0.2.1", "192.0.2.3"])  # 192.0.2.1 again, 192.0.2.3 already there
    rules = ns.run(["iptables", "-S", "BANPIPE"]).stdout.splitlines()[1:]
    assert sorted(rules) == [f"-A BANPIPE -s 192.0.2.{i}/32 -j DROP" for i in (1, 2, 3)]
    fw.release(["192.0.2.3", "192.0.2.2"])
    assert ns.run(["iptables", "-S", "BANPIPE"]).stdout.splitlines()[1:] == [
        "-A BANPIPE -s 192.0.2.1/32 -j DROP"
    ]


@pytest.mark.root
@skip_unless_root
def test_iptables_bulk_block_then_release_finds_the_handles(ns):
    fw = make_backend("iptables", FirewallConfig(ipv6=False), SubprocessRunner(ns.prefix))
    fw.init()
    many = [f"10.0.{i >> 8}.{i & 255}" for i in range(1500)]  # more than ECHO_MAX
    fw.block(many)
    fw.release(many[:10])
    assert fw.check().entries == set(many[10:])


@pytest.mark.root
@skip_unless_root
@pytest.mark.parametrize("name", ["ipset", "nftables"])
def test_max_entries_sizes_the_sets_and_a_change_keeps_the_entries(ns, name):
    runner = SubprocessRunner(ns.prefix)
    fw = make_backend(name, FirewallConfig(max_entries=3, ipv6=False), runner)
    fw.init()
    fw.block(["192.0.2.1", "192.0.2.2"])
    with pytest.raises(FirewallFull) as full:
        fw.block(["192.0.2.3", "192.0.2.4"])
    assert "192.0.2.4" in full.value.addresses
    bigger = make_backend(name, FirewallConfig(max_entries=10, ipv6=False), runner)
    bigger.init()
    bigger.block(["192.0.2.5", "192.0.2.6", "192.0.2.7"])
    assert {"192.0.2.1", "192.0.2.2", "192.0.2.5"} <= bigger.check().entries
    if name == "ipset":
        assert "maxelem 10" in ns.run(["ipset", "list", "-t", "banpipe4"]).stdout
    else:
        assert "size 10" in ns.run(["nft", "list", "set", "inet", "banpipe", "v4"]).stdout


@pytest.mark.root
@skip_unless_root
def test_iptables_many_releases_rebuild_the_chain_instead_of_deleting_each(ns):
    # Each deletion by handle walks the chain in the kernel: 100,000 of them from a
    # 100,000-rule chain took 109 s. Few go by handle, many by one restore.
    runner = CountingRunner(ns.prefix)
    fw = make_backend("iptables", FirewallConfig(ipv6=False), runner)
    fw.init()
    addrs = [f"198.51.100.{i}" for i in range(1, 201)]
    fw.block(addrs)
    runner.argvs.clear()
    fw.release(addrs[:3])
    assert runner.argvs == []
    fw.release(addrs[3:150])
    assert [a[0] for a in runner.argvs if "restore" in a[0]] == ["iptables-restore"]
    assert fw.check().entries == set(addrs[150:])
    fw.release(addrs[150:153])  # by handle again: the index follows the rebuild
    assert fw.check().entries == set(addrs[153:])


@pytest.mark.root
@skip_unless_root
def test_nftables_check_reads_only_our_table(ns):
    # firewalld keeps its chains in `table inet firewalld`; the kernel's chain dump
    # has no table filter, and they were read as unexpected chains of ours.
    fw = make_backend("nftables", FirewallConfig(), SubprocessRunner(ns.prefix))
    fw.init()
    ns.run(["nft", "add", "table", "inet", "firewalld"], check=True)
    ns.run(["nft", "add", "chain", "inet", "firewalld", "filter_INPUT"], check=True)
    ns.run(["nft", "add", "chain", "inet", "banpipe", "stray"], check=True)
    state = fw.check()
    assert state.structure_ok
    assert state.problems == ["nftables: unexpected chain stray"]


@pytest.mark.root
@skip_unless_root
def test_nftables_replace_is_one_transaction_to_exactly_the_given_bans(ns):
    fw = make_backend("nftables", FirewallConfig(), SubprocessRunner(ns.prefix))
    fw.init()
    fw.block(["192.0.2.1", "192.0.2.2", "2001:db8::1"])
    assert fw.replace(["192.0.2.2", "192.0.2.3"]) is True
    assert fw.check().entries == {"192.0.2.2", "192.0.2.3"}
    # Without a channel the caller compares instead.
    plain = make_backend("nftables", FirewallConfig(), RecordingRunner())
    assert plain.replace(["192.0.2.2"]) is False and plain.runner.calls == []


def transactions(fw, monkeypatch) -> list[int]:
    """The number of messages of each transaction ``fw`` sends from now on."""
    return spy(monkeypatch, type(fw.channel), "transact", lambda messages, **kw: len(messages))


@pytest.mark.root
@skip_unless_root
def test_nftables_replace_fills_empty_sets_in_several_transactions(ns, monkeypatch):
    # Cold start: nothing to lose, so no million-element transaction (its notifications
    # pile up in the kernel until the commit).
    from banpipe.firewall import nftsets

    fw = make_backend("nftables", FirewallConfig(), SubprocessRunner(ns.prefix))
    fw.init()
    monkeypatch.setattr(nftsets, "BATCH", 2)
    monkeypatch.setattr(nftsets, "CHUNK", 2)
    sent = transactions(fw, monkeypatch)
    bans = [f"192.0.2.{i}" for i in range(1, 8)] + ["2001:db8::1", "198.51.100.0/24"]
    assert fw.replace(bans) is True
    assert len(sent) >= 5  # the addresses a few at a time, the ranges in one more
    assert fw.check().entries == set(bans)


@pytest.mark.root
@skip_unless_root
@pytest.mark.parametrize("log", [False, True])
def test_nftables_replace_of_full_sets_recreates_them_in_one_transaction(ns, monkeypatch, log):
    settings = FirewallConfig(log=log, max_entries=1000)
    fw = make_backend("nftables", settings, SubprocessRunner(ns.prefix))
    fw.init()
    fw.block(["192.0.2.1", "192.0.2.2", "2001:db8::1", "203.0.113.0/24"])
    ns.run(["nft", "add", "element", "inet", "banpipe", "v6", "{ 2001:db8::99 }"], check=True)
    sent = transactions(fw, monkeypatch)
    bans = ["192.0.2.2", "192.0.2.3", "2001:db8::2", "198.51.100.0/24"]
    assert fw.replace(bans) is True
    # Before: the bans added and the sentinel tried (small); then ONE transaction.
    from banpipe.firewall.nftstruct import structure_messages

    assert sent[-1] > len(structure_messages(settings)) > max(sent[:-1])
    state = fw.check()
    assert state.entries == set(bans) and state.structure_ok, state.problems
    # The sets came back as init() makes them: same size, same rules (the listing of a
    # fresh init() with the same elements; the sets are listed in another order, the
    # rules in order is what check() found ok).
    after = sorted(map(json.dumps, listing(ns)))
    ns.run(["nft", "flush", "ruleset"], check=True)
    fresh = make_backend("nftables", settings, SubprocessRunner(ns.prefix))
    fresh.init()
    fresh.block(bans)
    assert after == sorted(map(json.dumps, listing(ns)))


@pytest.mark.root
@skip_unless_root
def test_nftables_replace_of_sets_holding_exactly_the_bans_changes_nothing(ns, monkeypatch):
    # A warm restart: the sets hold what the ledger holds. The adds find every element
    # present and the sentinel fits under the limit: no re-creation, the size is back.
    settings = FirewallConfig(max_entries=1000)
    fw = make_backend("nftables", settings, SubprocessRunner(ns.prefix))
    fw.init()
    bans = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "203.0.113.0/24"]
    fw.block(bans)
    sent = transactions(fw, monkeypatch)
    assert fw.replace(bans) is True
    # Per set: its bans added once (v4 two messages, v6 one), the new limit, then the
    # sentinel added and deleted with the limit back; last the ranges' sets flushed and
    # refilled. No second fill of a set found exact, no big batch.
    assert sent == [2, 1, 3, 1, 1, 3, 3]
    assert max(sent) < 10
    assert fw.check().entries == set(bans)
    assert "size 1000" in ns.run(["nft", "list", "set", "inet", "banpipe", "v4"]).stdout
    assert "size 1000" in ns.run(["nft", "list", "set", "inet", "banpipe", "v6"]).stdout


@pytest.mark.root
@skip_unless_root
@pytest.mark.parametrize("orphan", ["192.0.2.99", "0.0.0.0", "::"])
def test_nftables_replace_finds_an_orphan_without_reading_the_set(ns, orphan):
    # One element more than the bans (even one that is the sentinel itself) and the set
    # is re-created with exactly the bans.
    fw = make_backend("nftables", FirewallConfig(max_entries=1000), SubprocessRunner(ns.prefix))
    fw.init()
    bans = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
    fw.block(bans)
    v = "v6" if ":" in orphan else "v4"
    ns.run(["nft", "add", "element", "inet", "banpipe", v, f"{{ {orphan} }}"], check=True)
    assert fw.replace(bans) is True
    assert fw.check().entries == set(bans)
    assert "size 1000" in ns.run(["nft", "list", "set", "inet", "banpipe", v]).stdout


@pytest.mark.root
@skip_unless_root
def test_nftables_replace_flushes_a_set_it_cannot_recreate(ns):
    # A rule of someone else's in our table refers to the set: it cannot be deleted.
    fw = make_backend("nftables", FirewallConfig(), SubprocessRunner(ns.prefix))
    fw.init()
    fw.block(["192.0.2.1", "192.0.2.2"])
    ns.run(["nft", "add", "chain", "inet", "banpipe", "stray"], check=True)
    ns.run(["nft", "add", "rule", "inet", "banpipe", "stray", "ip saddr @v4 accept"], check=True)
    assert fw.replace(["192.0.2.2", "192.0.2.3"]) is True
    assert fw.check().entries == {"192.0.2.2", "192.0.2.3"}
    assert "@v4" in ns.run(["nft", "list", "chain", "inet", "banpipe", "stray"]).stdout


@pytest.mark.root
@skip_unless_root
def test_nftables_replace_leaves_more_bans_than_room_to_the_comparison(ns):
    fw = make_backend("nftables", FirewallConfig(max_entries=2), SubprocessRunner(ns.prefix))
    fw.init()
    fw.block(["192.0.2.1"])
    assert fw.replace(["192.0.2.2", "192.0.2.3", "192.0.2.4"]) is False
    assert fw.check().entries == {"192.0.2.1"}  # unchanged: reconcile makes room


# -- nftables' structure on the channel (nftstruct) --------------------------------------
def listing(ns: Namespace) -> list[dict]:
    """``nft -j list table inet banpipe`` without the handles (they count up)."""
    out = json.loads(ns.run(["nft", "-j", "list", "table", "inet", "banpipe"]).stdout)
    items = out["nftables"][1:]  # after the metainfo
    for item in items:
        for value in item.values():
            value.pop("handle", None)
    return items


def nft_script(settings: FirewallConfig) -> str:
    fw = make_backend("nftables", settings, RecordingRunner())
    return "".join(f"{line}\n" for line in fw.init_lines())


SHAPES = [
    FirewallConfig(log=log, ipv6=ipv6, hooks=hooks, max_entries=size)
    for log, ipv6, hooks, size in itertools.product(
        [False, True],
        [True, False],
        [("INPUT", "FORWARD"), ("INPUT",), ("INPUT", "OUTPUT")],
        [1000],
    )
]


@pytest.mark.root
@skip_unless_root
@pytest.mark.parametrize("settings", SHAPES, ids=lambda s: f"log{s.log}-v6{s.ipv6}-{s.hooks}")
def test_channel_init_builds_what_the_nft_script_builds(ns, settings):
    ns.run(["nft", "-f", "-"], input=nft_script(settings), check=True)
    ns.run(["nft", "add", "element", "inet", "banpipe", "v4", "{ 192.0.2.1 }"], check=True)
    by_nft = listing(ns)
    ns.run(["nft", "flush", "ruleset"], check=True)
    runner = CountingRunner(ns.prefix)
    fw = make_backend("nftables", settings, runner)
    fw.init()
    fw.block(["192.0.2.1"])
    fw.init()  # again: idempotent, the element stays, no rule twice
    assert runner.argvs == []
    assert listing(ns) == by_nft
    assert fw.check().structure_ok


@pytest.mark.root
@skip_unless_root
def test_channel_init_follows_a_change_of_settings(ns):
    runner = SubprocessRunner(ns.prefix)
    before = FirewallConfig(hooks=("INPUT", "OUTPUT"), log=True)
    make_backend("nftables", before, runner).init()
    make_backend("nftables", before, runner).block(["192.0.2.7", "2001:db8::7"])
    after = FirewallConfig(hooks=("INPUT",), ipv6=False, max_entries=5000)
    fw = make_backend("nftables", after, runner)
    fw.init()
    ns.run(["nft", "flush", "ruleset"], check=True)
    ns.run(["nft", "-f", "-"], input=nft_script(after), check=True)
    ns.run(["nft", "add", "element", "inet", "banpipe", "v4", "{ 192.0.2.7 }"], check=True)
    by_nft = listing(ns)
    ns.run(["nft", "flush", "ruleset"], check=True)
    make_backend("nftables", before, runner).init()
    make_backend("nftables", before, runner).block(["192.0.2.7", "2001:db8::7"])
    fw.init()
    assert listing(ns) == by_nft  # output chain and v6 set gone, size 5000, entry kept
