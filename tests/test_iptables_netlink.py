"""The iptables backend's structure over netlink (banpipe.firewall.xtnl), for real.

With iptables-nft, check() and init() read and rebuild our chain and hook jumps on the
channel: a repair after ``iptables -F``, a netfilter-persistent restart (the chain
deleted) or ``nft flush ruleset`` runs no process, and what it writes is what
iptables-nft lists and deletes as its own. With iptables-legacy the tools do it all.
"""

from __future__ import annotations

import pytest

from banpipe.firewall import FirewallConfig, make_backend
from banpipe.firewall.xtnl import XtTable, structure_messages
from netns import NetnsPair, netns_one, skip_unless_root  # noqa: F401 - the ns fixture
from test_nfnl import CountingRunner

BANS = ["203.0.113.7", "198.51.100.0/24", "2001:db8:66::7"]
SAVED = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"

WIPES = {
    "iptables -F": [["iptables", "-F"], ["ip6tables", "-F"]],
    "chain deleted": [
        ["iptables", "-D", "INPUT", "-j", "BANPIPE"],
        ["iptables", "-D", "FORWARD", "-j", "BANPIPE"],
        ["iptables", "-F", "BANPIPE"],
        ["iptables", "-X", "BANPIPE"],
    ],
    "netfilter-persistent restart": [["iptables-restore"], ["ip6tables-restore"]],
    "nft flush ruleset": [["nft", "flush", "ruleset"]],
}


def test_a_table_with_everything_in_place_needs_no_message():
    t = XtTable(
        table=True,
        chains={"INPUT", "FORWARD", "BANPIPE"},
        jumps={"INPUT": [5], "FORWARD": [6]},
    )
    assert structure_messages(2, "iptables", "BANPIPE", ("INPUT", "FORWARD"), t) == []


def test_the_batch_puts_back_only_what_is_missing_and_keeps_an_existing_policy():
    t = XtTable(table=True, chains={"INPUT", "BANPIPE"}, jumps={"INPUT": [5, 9], "OUTPUT": [7]})
    where = [m.where for m in structure_messages(2, "iptables", "BANPIPE", ("INPUT", "FORWARD"), t)]
    # INPUT exists (its policy is the admin's): no chain message for it.
    assert where == [
        "iptables: -D INPUT -j BANPIPE",
        "iptables: :FORWARD ACCEPT",
        "iptables: -I FORWARD 1 -j BANPIPE",
        "iptables: -D OUTPUT -j BANPIPE",
    ]
    empty = [m.where for m in structure_messages(10, "ip6tables", "BANPIPE", ("INPUT",), XtTable())]
    assert empty == [
        "ip6tables: *filter",
        "ip6tables: -N BANPIPE",
        "ip6tables: :INPUT ACCEPT",
        "ip6tables: -I INPUT 1 -j BANPIPE",
    ]


@pytest.mark.root
@skip_unless_root
@pytest.mark.parametrize("wipe", list(WIPES))
def test_repair_after_a_wipe_runs_no_process(ns, wipe):  # noqa: F811
    runner = CountingRunner(ns.prefix)
    fw = make_backend("iptables", FirewallConfig(), runner)
    fw.init()
    fw.block(BANS)
    for argv in WIPES[wipe]:
        ns.run(argv, input=SAVED if argv[0].endswith("restore") else None)
    before = len(runner.argvs)
    state = fw.check()
    assert not state.structure_ok
    fw.init()
    fw.block(sorted(set(BANS) - state.entries))
    state = fw.check()
    assert state.structure_ok and state.entries == set(BANS), state.problems
    assert runner.argvs[before:] == []
    # What iptables-nft lists, checks and deletes as its own.
    v4 = ns.run(["iptables", "-S"]).stdout.splitlines()
    assert "-N BANPIPE" in v4 and v4.count("-A INPUT -j BANPIPE") == 1
    assert "-A FORWARD -j BANPIPE" in v4 and "-A BANPIPE -s 203.0.113.7/32 -j DROP" in v4
    assert "-A INPUT -j BANPIPE" in ns.run(["ip6tables", "-S"]).stdout
    ns.run(["iptables", "-C", "INPUT", "-j", "BANPIPE"])
    ns.run(["iptables", "-D", "FORWARD", "-j", "BANPIPE"])
    assert fw.check().problems == ["iptables: jump FORWARD -> BANPIPE missing"]
    fw.close()
    assert "BANPIPE" not in ns.run(["iptables", "-S"]).stdout


@pytest.mark.root
@skip_unless_root
def test_the_jump_goes_first_and_an_admin_policy_and_rules_stay(ns):  # noqa: F811
    fw = make_backend("iptables", FirewallConfig(hooks=("INPUT",)), CountingRunner(ns.prefix))
    ns.run(["iptables", "-A", "INPUT", "-s", "192.0.2.9/32", "-j", "ACCEPT"])
    ns.run(["iptables", "-P", "INPUT", "DROP"])
    fw.init()
    fw.init()  # nothing to do: no second jump
    v4 = ns.run(["iptables", "-S", "INPUT"]).stdout.splitlines()
    assert v4 == ["-P INPUT DROP", "-A INPUT -j BANPIPE", "-A INPUT -s 192.0.2.9/32 -j ACCEPT"]
    ns.run(["iptables", "-A", "INPUT", "-j", "BANPIPE"])  # a second jump, by hand
    assert fw.check().structure_ok
    fw.init()
    assert ns.run(["iptables", "-S", "INPUT"]).stdout.count("-j BANPIPE") == 1
    # A rule in our chain that is no entry of ours: named as iptables prints it.
    ns.run(["iptables", "-A", "BANPIPE", "-p", "tcp", "-j", "DROP"])
    assert fw.check().problems == ["iptables: foreign rule in BANPIPE: -p tcp -j DROP"]
    fw.close()


class LegacyRunner(CountingRunner):
    """iptables-legacy in place of iptables (as on a host with the legacy alternative)."""

    def __call__(self, argv, **kw):
        tool, *rest = argv
        if tool.startswith(("iptables", "ip6tables")):
            family, _, verb = tool.partition("-")
            tool = f"{family}-legacy" + (f"-{verb}" if verb else "")
        return super().__call__([tool, *rest], **kw)


@pytest.mark.root
@skip_unless_root
def test_legacy_iptables_keeps_the_tools_and_drops_for_real():
    with NetnsPair("xtl") as pair, pair.listen_tcp(8080):
        gw = pair.gateway
        runner = LegacyRunner(gw.prefix)
        fw = make_backend("iptables", FirewallConfig(), runner)
        assert fw.channel is not None  # a channel, but the tables are not nf_tables
        fw.init()
        fw.block(["203.0.113.7"])
        assert "-A BANPIPE -s 203.0.113.7/32 -j DROP" in gw.run(["iptables-legacy", "-S"]).stdout
        assert "BANPIPE" not in gw.run(["nft", "list", "ruleset"]).stdout
        assert not pair.ping("203.0.113.7", timeout=0.5)
        assert pair.ping("203.0.113.8")
        gw.run(["iptables-legacy", "-F"])
        state = fw.check()
        assert not state.structure_ok and state.entries == set()
        fw.init()
        fw.block(["203.0.113.7"])
        assert fw.check().structure_ok and fw.check().entries == {"203.0.113.7"}
        assert not pair.ping("203.0.113.7", timeout=0.5)
        assert any(argv[0] == "iptables-legacy-restore" for argv in runner.argvs)
        fw.close()
        assert "BANPIPE" not in gw.run(["iptables-legacy", "-S"]).stdout


@pytest.mark.root
@skip_unless_root
def test_a_repaired_chain_drops_for_real():
    with NetnsPair("xtn") as pair, pair.listen_tcp(8080):
        gw = pair.gateway
        fw = make_backend("iptables", FirewallConfig(), CountingRunner(gw.prefix))
        fw.init()
        fw.block(["203.0.113.7", "2001:db8:66::7"])
        gw.run(["iptables-restore"], input=SAVED)
        assert pair.ping("203.0.113.7")
        fw.init()
        fw.block(sorted({"203.0.113.7", "2001:db8:66::7"} - fw.check().entries))
        assert not pair.ping("203.0.113.7", timeout=0.5)
        assert not pair.ping("2001:db8:66::7", timeout=0.5)
        assert pair.ping("203.0.113.8")
        fw.close()
