"""Real firewall tests: each backend runs inside a gateway network namespace.

An attacker namespace sends ICMP echo and TCP connects from chosen source addresses
(tests/netns.py); we assert what gets through. Nothing runs in the host's namespace.
"""

from __future__ import annotations

import subprocess

import pytest

from banpipe.firewall import FirewallConfig, SubprocessRunner, conntrack_sources, make_backend
from netns import NetnsPair, skip_unless_root

pytestmark = [pytest.mark.root, skip_unless_root]

BACKENDS = ["iptables", "ipset", "nftables"]
BANNED = ["203.0.113.7", "2001:db8:66::7"]
OTHERS = ["203.0.113.8", "2001:db8:66::8"]
PORT = 8080
# A dropped probe costs this long; a passing one answers in milliseconds.
DROP_WAIT = 0.5


@pytest.fixture
def pair():
    with NetnsPair("fw") as p, p.listen_tcp(PORT):
        yield p


def firewall(pair, name, **settings):
    runner = SubprocessRunner(pair.gateway.prefix)
    return make_backend(name, FirewallConfig(**settings), runner)


def assert_dropped(pair, src):
    assert not pair.ping(src, timeout=DROP_WAIT), f"ping from {src} got through"
    assert pair.tcp_probe(src, PORT, timeout=DROP_WAIT) == "timeout", f"TCP from {src}"


def assert_passes(pair, src):
    assert pair.ping(src), f"ping from {src} was dropped"
    assert pair.tcp_probe(src, PORT) == "open", f"TCP from {src} did not connect"


def ours(pair) -> str:
    """Everything of ours the gateway's firewall still shows."""
    gw = pair.gateway
    text = "\n".join(
        [
            gw.run(["iptables", "-w", "-S"]).stdout,
            gw.run(["ip6tables", "-w", "-S"]).stdout,
            gw.run(["ipset", "list", "-n"]).stdout,
            gw.run(["nft", "list", "ruleset"]).stdout,
        ]
    )
    return "\n".join(line for line in text.splitlines() if "banpipe" in line.lower())


def listing(pair, name) -> str:
    """The backend's own rules as its tool prints them."""
    if name == "nftables":
        return pair.gateway.run(["nft", "list", "table", "inet", "banpipe"]).stdout
    return pair.gateway.run(["iptables", "-w", "-S", "BANPIPE"]).stdout


def raw_count(pair, name, addr) -> int:
    """How often ``addr`` appears in the backend's own listing (not via check())."""
    gw = pair.gateway
    v6 = ":" in addr
    if name == "iptables":
        out = gw.run(["ip6tables" if v6 else "iptables", "-w", "-S", "BANPIPE"]).stdout
        return sum(f"-s {addr}/{128 if v6 else 32} -j DROP" in line for line in out.splitlines())
    if name == "ipset":
        out = gw.run(["ipset", "list", "banpipe6" if v6 else "banpipe4"]).stdout
        return out.splitlines().count(addr)
    out = gw.run(["nft", "list", "set", "inet", "banpipe", "v6" if v6 else "v4"]).stdout
    return out.replace(",", " ").replace("{", " ").replace("}", " ").split().count(addr)


@pytest.mark.parametrize("name", BACKENDS)
def test_block_drops_banned_sources_and_release_lets_them_back(pair, name):
    for src in BANNED + OTHERS:
        assert_passes(pair, src)
    fw = firewall(pair, name)
    fw.init()
    fw.block(BANNED)
    for src in BANNED:
        assert_dropped(pair, src)
    for src in OTHERS:
        assert_passes(pair, src)
    state = fw.check()
    assert state.entries == set(BANNED)
    assert state.structure_ok, state.problems
    assert state.duplicates == {}

    fw.release(["203.0.113.7", "203.0.113.200"])
    assert_passes(pair, "203.0.113.7")
    assert_dropped(pair, "2001:db8:66::7")
    assert fw.check().entries == {"2001:db8:66::7"}

    fw.release(BANNED)
    for src in BANNED:
        assert_passes(pair, src)
    assert fw.check().entries == set()
    fw.close()


RANGES = ["203.0.113.0/29", "2001:db8:66::/125"]  # hold .7 and ::7, not .8 and ::8


@pytest.mark.parametrize("name", BACKENDS)
def test_ranges_drop_every_address_inside_and_nothing_outside(pair, name):
    fw = firewall(pair, name)
    fw.init()
    fw.block(RANGES)
    for src in BANNED:
        assert_dropped(pair, src)
    for src in OTHERS:
        assert_passes(pair, src)
    state = fw.check()
    assert state.entries == set(RANGES) and state.structure_ok, state.problems
    if name == "iptables":
        # Written as iptables-nft writes `-s NET/LEN`: its own tools read it back.
        assert "-A BANPIPE -s 203.0.113.0/29 -j DROP" in listing(pair, name)

    # An address inside a banned range, and the same range again: no harm, no copies.
    fw.block(["203.0.113.7", *RANGES])
    assert fw.check().entries == {*RANGES, "203.0.113.7"}
    # A range inside a banned one, then a wider one around both.
    fw.block(["203.0.113.4/30"])
    assert_dropped(pair, "203.0.113.7")
    fw.block(["203.0.113.0/28"])
    assert_dropped(pair, "203.0.113.8")
    assert "203.0.113.0/28" in fw.check().entries

    fw.release(["203.0.113.0/28", "203.0.113.0/29", "203.0.113.4/30", "2001:db8:66::/125"])
    assert_dropped(pair, "203.0.113.7")  # its own entry stays
    assert_passes(pair, "203.0.113.8")
    assert_passes(pair, "2001:db8:66::7")
    assert fw.check().entries == {"203.0.113.7"}
    fw.release(["203.0.113.7", "198.51.100.0/24"])  # absent: fine
    assert fw.check().entries == set()
    fw.close()
    assert ours(pair) == ""


# What banpipe before ranges created (sets of addresses only), with a ban in it: one
# command a line, the nft script on its stdin.
OLD_NFT = (
    "add table inet banpipe\n"
    "add set inet banpipe v4 { type ipv4_addr; size 1048576; elements = { 203.0.113.7 } }\n"
    "add set inet banpipe v6 { type ipv6_addr; size 1048576; }\n"
    "add chain inet banpipe input { type filter hook input priority filter - 10; }\n"
    "add rule inet banpipe input ip saddr @v4 drop\n"
    "add rule inet banpipe input ip6 saddr @v6 drop\n"
)
OLD_STRUCTURE = {
    "nftables": "nft -f -",
    "ipset": """\
ipset create banpipe4 hash:ip family inet maxelem 1048576
ipset create banpipe6 hash:ip family inet6 maxelem 1048576
ipset add banpipe4 203.0.113.7
iptables -w -N BANPIPE
iptables -w -A BANPIPE -m set --match-set banpipe4 src -j DROP
iptables -w -I INPUT -j BANPIPE""",
}


@pytest.mark.parametrize("name", ["nftables", "ipset"])
def test_init_brings_an_old_structure_up_to_ranges_keeping_its_bans(pair, name):
    gw = pair.gateway
    for line in OLD_STRUCTURE[name].splitlines():
        gw.run(line.split(), input=OLD_NFT if line.startswith("nft") else None)
    assert_dropped(pair, "203.0.113.7")
    fw = firewall(pair, name, hooks=("INPUT",))
    fw.init()
    state = fw.check()
    assert state.structure_ok, state.problems
    assert state.entries == {"203.0.113.7"}
    assert_dropped(pair, "203.0.113.7")
    fw.block(["203.0.113.8", "2001:db8:66::/125"])
    assert_dropped(pair, "203.0.113.8")
    assert_dropped(pair, "2001:db8:66::7")
    fw.close()


@pytest.mark.parametrize("name", BACKENDS)
def test_repeated_block_leaves_exactly_one_entry(pair, name):
    # conntrack_flush: the real conntrack answers exit 1 ("0 flow entries") here.
    fw = firewall(pair, name, conntrack_flush=True)
    fw.init()
    fw.block(["203.0.113.7", "203.0.113.7", "2001:db8:66::7"])
    fw.block(["2001:db8:66::7", "203.0.113.7"])
    fw.init()
    fw.block(["203.0.113.7"])
    state = fw.check()
    assert state.entries == set(BANNED) and state.duplicates == {} and state.structure_ok
    for addr in BANNED:
        assert raw_count(pair, name, addr) == 1
    assert_dropped(pair, "203.0.113.7")
    fw.close()


def iptables_flush_chain(gw):
    gw.run(["iptables", "-w", "-F", "BANPIPE"])
    gw.run(["ip6tables", "-w", "-F", "BANPIPE"])


def iptables_drop_jump(gw):
    gw.run(["iptables", "-w", "-D", "INPUT", "-j", "BANPIPE"])
    gw.run(["ip6tables", "-w", "-D", "INPUT", "-j", "BANPIPE"])


def ipset_flush_sets(gw):
    gw.run(["ipset", "flush", "banpipe4"])
    gw.run(["ipset", "flush", "banpipe6"])


def nft_flush_ruleset(gw):
    gw.run(["nft", "flush", "ruleset"])


# (backend, outside interference, structure intact afterwards?, entries kept?)
INTERFERENCE = [
    ("iptables", iptables_flush_chain, True, False),
    ("iptables", iptables_drop_jump, False, True),
    ("ipset", ipset_flush_sets, True, False),
    ("ipset", nft_flush_ruleset, False, True),
    ("nftables", nft_flush_ruleset, False, False),
]


@pytest.mark.parametrize(
    ("name", "interfere", "intact", "kept"),
    INTERFERENCE,
    ids=[f"{n}-{f.__name__}" for n, f, _, _ in INTERFERENCE],
)
def test_outside_change_is_visible_and_init_block_repairs(pair, name, interfere, intact, kept):
    fw = firewall(pair, name)
    fw.init()
    fw.block(BANNED)
    interfere(pair.gateway)
    state = fw.check()
    assert state.structure_ok is intact, state.problems
    # ipset sets survive `nft flush ruleset` (only the iptables rules go).
    assert (state.entries == set(BANNED)) is kept
    assert_passes(pair, "203.0.113.7")

    fw.init()
    fw.block(BANNED)
    state = fw.check()
    assert state.entries == set(BANNED) and state.structure_ok, state.problems
    for src in BANNED:
        assert_dropped(pair, src)
    assert_passes(pair, "203.0.113.8")
    fw.close()


@pytest.mark.parametrize("name", BACKENDS)
def test_flush_empties_but_keeps_structure(pair, name):
    fw = firewall(pair, name)
    fw.init()
    fw.block(BANNED + ["203.0.113.9"])
    fw.flush()
    state = fw.check()
    assert state.entries == set() and state.structure_ok
    assert_passes(pair, "203.0.113.7")
    fw.block(["203.0.113.7"])
    assert_dropped(pair, "203.0.113.7")
    fw.close()


@pytest.mark.parametrize("name", BACKENDS)
def test_close_leaves_nothing_of_ours(pair, name):
    fw = firewall(pair, name, log=True, hooks=("INPUT", "FORWARD", "OUTPUT"))
    fw.init()
    fw.block(BANNED)
    assert ours(pair) != ""
    fw.close()
    assert ours(pair) == ""
    fw.close()  # idempotent
    for src in BANNED:
        assert_passes(pair, src)
    assert fw.check().structure_ok is False


@pytest.mark.parametrize("name", BACKENDS)
def test_log_rules_and_hook_changes(pair, name):
    fw = firewall(pair, name, log=True, log_prefix="bp-test: ")
    fw.init()
    fw.block(["203.0.113.7"])
    assert '"bp-test: "' in listing(pair, name)
    state = fw.check()
    assert state.structure_ok and state.entries == {"203.0.113.7"}, state.problems
    assert_dropped(pair, "203.0.113.7")
    assert_passes(pair, "203.0.113.8")
    # Same firewall, new settings: INPUT only, logging off. init() adapts our structure.
    fw2 = firewall(pair, name, hooks=("INPUT",))
    fw2.init()
    state = fw2.check()
    assert state.structure_ok and state.entries == {"203.0.113.7"}, state.problems
    assert_dropped(pair, "203.0.113.7")
    if name != "iptables":  # iptables keeps per-address LOG rules until release
        assert "bp-test" not in listing(pair, name)
    if name == "nftables":
        assert "chain forward" not in listing(pair, name)
    else:
        assert "-A FORWARD -j BANPIPE" not in pair.gateway.run(["iptables", "-w", "-S"]).stdout
        assert "-A INPUT -j BANPIPE" in pair.gateway.run(["ip6tables", "-w", "-S"]).stdout
    fw2.close()


# Connection tracking is per namespace and stays off until a rule uses it.
TRACKING = """\
table inet bptrack {
    chain c {
        type filter hook input priority 0;
        ct state new accept
    }
}
"""


@pytest.mark.parametrize("name", BACKENDS)
def test_conntrack_flush_removes_flows_of_new_bans_only(pair, name):
    gw = pair.gateway
    gw.run(["nft", "-f", "-"], input=TRACKING)
    for src in ("203.0.113.7", "203.0.113.8", "2001:db8:66::7"):
        assert pair.ping(src)
    flows = conntrack_sources(gw.run(["conntrack", "-L"]).stdout)
    assert {"203.0.113.7", "203.0.113.8", "2001:db8:66::7"} <= flows
    fw = firewall(pair, name, conntrack_flush=True)
    fw.init()
    fw.block(["203.0.113.7", "2001:db8:66::7"])
    flows = conntrack_sources(gw.run(["conntrack", "-L"]).stdout)
    assert "203.0.113.7" not in flows and "2001:db8:66::7" not in flows
    assert "203.0.113.8" in flows
    fw.block(["203.0.113.8/29"])  # a range: the flows of the sources inside it
    assert "203.0.113.8" not in conntrack_sources(gw.run(["conntrack", "-L"]).stdout)
    fw.close()
    gw.run(["nft", "delete", "table", "inet", "bptrack"])


def test_netns_pair_cleans_up():
    with NetnsPair("cl") as p:
        names = (p.attacker.name, p.gateway.name)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(n in listed for n in names)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed.split() for n in names)


@pytest.mark.parametrize("name", BACKENDS)
def test_bulk_release_keeps_manual_bans_and_foreign_order(pair, name):
    """Releasing thousands with other entries present: exactly those go, in one change."""
    fw = firewall(pair, name, log=True)
    fw.init()
    many = [f"2001:db8:5::{i:x}" for i in range(1, 1500)]
    many += [f"{net}.{i}" for net in ("198.51.100", "192.0.2") for i in range(1, 255)]
    manual = ["203.0.113.7", "2001:db8:66::7"]
    fw.block(many[:1000] + manual[:1] + many[1000:] + manual[1:])
    fw.release(many)
    state = fw.check()
    assert state.entries == set(manual)
    assert state.structure_ok and not state.duplicates and not state.problems
    assert_dropped(pair, "203.0.113.7")
    assert_passes(pair, "203.0.113.8")
    fw.close()
