"""wanwatch without namespaces: what counts as WAN, netlink parsing, diffs, events,
the watcher's publish rules, hooks and main()'s errors (real-kernel tests live in
test_wanwatch_netns.py)."""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from banpipe import cli, netlink
from banpipe.netlink import (
    IFA_F_DADFAILED,
    IFA_F_DEPRECATED,
    IFA_F_NODAD,
    IFA_F_OPTIMISTIC,
    IFA_F_PERMANENT,
    IFA_F_SECONDARY,
    IFA_F_TENTATIVE,
    IFF_LOWER_UP,
    IFF_UP,
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    RT_SCOPE_SITE,
    RT_SCOPE_UNIVERSE,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    Addr,
    Link,
    Message,
    RouteTable,
    pack_message,
    parse_messages,
)
from banpipe.pipe import Writer
from banpipe.wanhooks import Hooks, hook_call
from banpipe.wanstate import diff, make_event, read_wan_state
from banpipe.wanwatch import main
from banpipe.wanwatcher import (
    Watcher,
    check_ifname,
    current_set,
    link_notes,
    retry_delay,
    why_not_wan,
)
from netlinkmsg import pack_addr_payload, pack_link_payload

V4, V6 = socket.AF_INET, socket.AF_INET6
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def addr(address, index=3, *, scope=RT_SCOPE_UNIVERSE, flags=0, plen=None, peer=None, **kw):
    family = V6 if ":" in address else V4
    plen = plen if plen is not None else (64 if family == V6 else 24)
    return Addr(index, family, address, plen, scope, flags, peer=peer, **kw)


def new_addr(a: Addr) -> Message:
    return Message("new-addr", item=a)


def del_addr(a: Addr) -> Message:
    return Message("del-addr", item=a)


def new_link(index, name, flags=IFF_UP | IFF_LOWER_UP) -> Message:
    return Message("new-link", item=Link(index, name, flags))


def del_link(index, name) -> Message:
    return Message("del-link", item=Link(index, name, 0))


# --------------------------------------------------------------------------------------
# what counts as a WAN address


@pytest.mark.parametrize(
    "a, reason",
    [
        (addr("198.51.100.7"), None),
        (addr("2001:db8::7"), None),
        (addr("2001:db8::7", flags=IFA_F_NODAD | IFA_F_PERMANENT), None),
        # deprecated (preferred_lft 0): still delivered to us, so still ours
        (addr("2001:db8::7", flags=IFA_F_DEPRECATED), None),
        (addr("198.51.100.8", flags=IFA_F_SECONDARY), None),  # IPv4 secondary
        (addr("2001:db8::8", flags=IFA_F_SECONDARY), None),  # IPv6 temporary (privacy)
        (addr("fd00::2"), None),  # ULA: the kernel says global, and it is ours
        (addr("fe80::1", scope=RT_SCOPE_LINK), "scope link"),
        (addr("fe80::1"), "link-local"),  # even when someone added it with scope global
        (addr("169.254.3.4", scope=RT_SCOPE_LINK), "scope link"),
        (addr("169.254.3.4"), "link-local"),
        (addr("127.0.0.1", scope=RT_SCOPE_HOST), "scope host"),
        (addr("::1", scope=RT_SCOPE_HOST, plen=128), "scope host"),
        (addr("127.0.0.2"), "not a unicast address"),
        (addr("fec0::1", scope=RT_SCOPE_SITE), "scope site"),
        (addr("2001:db8::9", flags=IFA_F_TENTATIVE), "tentative"),
        (addr("2001:db8::9", flags=IFA_F_TENTATIVE | IFA_F_OPTIMISTIC), "tentative"),
        (
            addr("2001:db8::9", flags=IFA_F_TENTATIVE | IFA_F_DADFAILED),
            "duplicate address detection failed",
        ),
    ],
)
def test_why_not_wan(a, reason):
    assert why_not_wan(a) == reason


def test_current_set_is_the_named_interface_only():
    t = RouteTable()
    for m in (
        new_link(3, "wan0"),
        new_link(4, "lan0"),
        new_addr(addr("198.51.100.7", 3)),
        new_addr(addr("2001:db8::7", 3)),
        new_addr(addr("fe80::7", 3, scope=RT_SCOPE_LINK)),
        new_addr(addr("2001:db8::8", 3, flags=IFA_F_TENTATIVE)),
        new_addr(addr("192.0.2.1", 4)),
    ):
        t.apply(m)
    assert current_set(t, "wan0") == {"198.51.100.7", "2001:db8::7"}
    assert current_set(t, "lan0") == {"192.0.2.1"}
    assert current_set(t, "absent0") == frozenset()


# --------------------------------------------------------------------------------------
# netlink parsing


def test_parse_ipv6_address_message_with_32bit_flags_and_lifetimes():
    payload = pack_addr_payload(V6, "2001:db8::7", 64, 5, flags=0x100 | IFA_F_TENTATIVE)
    payload += netlink.pack_attr(netlink.IFA_CACHEINFO, struct.pack("=IIII", 120, 300, 0, 0))
    (msg,) = list(parse_messages(pack_message(RTM_NEWADDR, payload, seq=0)))
    assert msg.kind == "new-addr"
    a = msg.item
    assert (a.index, a.family, a.address, a.prefixlen, a.scope) == (5, V6, "2001:db8::7", 64, 0)
    assert a.flags == 0x100 | IFA_F_TENTATIVE  # from IFA_FLAGS, beyond the 8-bit field
    assert (a.preferred, a.valid) == (120, 300)
    assert a.peer is None
    assert "tentative" in a.flag_names()


def test_parse_ipv4_uses_local_not_peer():
    payload = pack_addr_payload(
        V4, "198.51.100.7", 32, 2, peer="198.51.100.1", label="ppp0", flags=IFA_F_PERMANENT
    )
    (msg,) = list(parse_messages(pack_message(RTM_NEWADDR, payload)))
    assert msg.item.address == "198.51.100.7"
    assert msg.item.peer == "198.51.100.1"
    assert msg.item.label == "ppp0"


def test_parse_several_messages_in_one_datagram_and_ignores_junk():
    data = (
        pack_message(RTM_NEWLINK, pack_link_payload(3, "wan0"))
        + pack_message(RTM_NEWADDR, pack_addr_payload(V4, "203.0.113.9", 24, 3))
        + pack_message(RTM_DELADDR, pack_addr_payload(V6, "2001:db8::1", 64, 3))
        + pack_message(RTM_DELLINK, pack_link_payload(3, "wan0"))
        + pack_message(netlink.NLMSG_DONE, b"\0\0\0\0", seq=7)
        + b"\x30\x00\x00"  # a truncated header: ignored
    )
    kinds = [(m.kind, getattr(m.item, "address", getattr(m.item, "name", None))) for m in
             parse_messages(data)]  # fmt: skip
    assert kinds == [
        ("new-link", "wan0"),
        ("new-addr", "203.0.113.9"),
        ("del-addr", "2001:db8::1"),
        ("del-link", "wan0"),
        ("done", None),
    ]


def test_parse_error_message_gives_positive_errno():
    payload = struct.pack("=i", -16) + b"\0" * 16
    (msg,) = list(parse_messages(pack_message(netlink.NLMSG_ERROR, payload, seq=9)))
    assert (msg.kind, msg.seq, msg.error) == ("error", 9, 16)


def test_bridge_port_link_messages_are_not_link_events():
    # RTM_DELLINK with family AF_BRIDGE means "left the bridge", not "interface gone".
    payload = struct.pack("=BxHiII", socket.AF_BRIDGE, 1, 3, 0, 0) + netlink.pack_attr(
        netlink.IFLA_IFNAME, b"wan0\0"
    )
    (msg,) = list(parse_messages(pack_message(RTM_DELLINK, payload)))
    assert msg.kind == "other"


def test_truncated_attribute_is_dropped_not_fatal():
    payload = pack_addr_payload(V4, "198.51.100.7", 24, 3)
    (msg,) = list(parse_messages(pack_message(RTM_NEWADDR, payload[:-6])))
    assert msg.item.address == "198.51.100.7"
    assert msg.item.flags == 0  # the truncated IFA_FLAGS fell away; ifa_flags remains


def test_link_state_words():
    assert Link(1, "x", 0).state == "down"
    assert Link(1, "x", IFF_UP).state == "no-carrier"
    assert Link(1, "x", IFF_UP | IFF_LOWER_UP).state == "up"


# --------------------------------------------------------------------------------------
# the route table


def test_table_ipv6_prefix_change_replaces_entry():
    t = RouteTable()
    t.apply(new_link(3, "wan0"))
    t.apply(new_addr(addr("2001:db8::7", plen=64)))
    t.apply(new_addr(addr("2001:db8::7", plen=56)))
    t.apply(del_addr(addr("2001:db8::7", plen=56)))
    assert current_set(t, "wan0") == frozenset()


def test_table_ipv4_same_address_twice_stays_until_both_go():
    t = RouteTable()
    t.apply(new_link(3, "wan0"))
    t.apply(new_addr(addr("198.51.100.7", plen=24)))
    t.apply(new_addr(addr("198.51.100.7", plen=32)))
    t.apply(del_addr(addr("198.51.100.7", plen=32)))
    assert current_set(t, "wan0") == {"198.51.100.7"}
    t.apply(del_addr(addr("198.51.100.7", plen=24)))
    assert current_set(t, "wan0") == frozenset()


def test_table_link_deletion_forgets_its_addresses():
    t = RouteTable()
    t.apply(new_link(3, "wan0"))
    t.apply(new_addr(addr("198.51.100.7")))
    t.apply(del_link(3, "wan0"))
    t.apply(new_link(3, "wan0"))  # index reused: must not resurrect the old address
    assert current_set(t, "wan0") == frozenset()


def test_table_follows_renames_by_name():
    t = RouteTable()
    t.apply(new_link(3, "wan0"))
    t.apply(new_link(4, "spare0"))
    t.apply(new_addr(addr("198.51.100.7", 3)))
    t.apply(new_addr(addr("203.0.113.9", 4)))
    t.apply(new_link(3, "old0"))
    assert current_set(t, "wan0") == frozenset()
    t.apply(new_link(4, "wan0"))
    assert current_set(t, "wan0") == {"203.0.113.9"}


# --------------------------------------------------------------------------------------
# diffs, events, notes, hook calls


def test_diff_and_event_shape():
    ev = make_event(
        "wan0", ["198.51.100.7", "2001:db8::7"], ["2001:db8::7", "203.0.113.9", "198.51.100.10"],
        NOW.isoformat(),
    )  # fmt: skip
    assert list(ev) == ["v", "type", "interface", "added", "removed", "addresses", "ts"]
    assert ev == {
        "v": 1,
        "type": "wan",
        "interface": "wan0",
        "added": ["198.51.100.10", "203.0.113.9"],
        "removed": ["198.51.100.7"],
        "addresses": ["198.51.100.10", "203.0.113.9", "2001:db8::7"],
        "ts": "2026-11-28T12:00:00+00:00",
    }
    assert diff(["a"], ["a"]) == ([], [])


def test_link_notes():
    t = RouteTable()
    up = Link(3, "wan0", IFF_UP | IFF_LOWER_UP)
    down = Link(3, "wan0", 0)
    assert link_notes("wan0", None, None, t) == []
    assert link_notes("wan0", None, up, t) == ["interface appeared (index 3, up); watching it"]
    assert link_notes("wan0", up, down, t) == ["link down"]
    assert link_notes("wan0", down, Link(3, "wan0", IFF_UP), t) == ["link up, no carrier"]
    assert link_notes("wan0", Link(3, "wan0", IFF_UP), up, t) == ["link up"]
    assert link_notes("wan0", up, up, t) == []
    assert link_notes("wan0", up, None, t) == [
        "interface removed (index 3); waiting for an interface named wan0"
    ]
    t.apply(new_link(3, "wan1"))
    assert link_notes("wan0", up, None, t) == [
        "renamed to wan1 (index 3); waiting for an interface named wan0"
    ]


def test_hook_call_arguments_and_environment():
    argv, env = hook_call(("/usr/local/sbin/hook", "x"), "wan0", {"198.51.100.7"},
                          {"203.0.113.9", "2001:db8::9"})  # fmt: skip
    assert argv == [
        "/usr/local/sbin/hook", "x", "--old", "198.51.100.7", "--new", "203.0.113.9,2001:db8::9"
    ]  # fmt: skip
    assert env == {
        "BANPIPE_WAN_INTERFACE": "wan0",
        "BANPIPE_WAN_OLD": "198.51.100.7",
        "BANPIPE_WAN_NEW": "203.0.113.9,2001:db8::9",
        "BANPIPE_WAN_ADDED": "203.0.113.9,2001:db8::9",
        "BANPIPE_WAN_REMOVED": "198.51.100.7",
    }
    argv, _ = hook_call(("h",), "wan0", set(), {"203.0.113.9"})
    assert argv == ["h", "--old", "", "--new", "203.0.113.9"]


@pytest.mark.parametrize(
    "name, ok",
    [("eth0", True), ("wan.100", True), ("enp0s31f6", True), ("", False), ("a" * 16, False),
     ("a b", False), ("a/b", False), ("..", False), ("a:1", False)],
)  # fmt: skip
def test_check_ifname(name, ok):
    assert (check_ifname(name) is None) == ok


def test_retry_delay_backs_off_and_caps():
    assert [retry_delay(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]


# --------------------------------------------------------------------------------------
# the watcher (fed messages directly)


class Clocks:
    def __init__(self):
        self.t = 1000.0
        self.wall = NOW

    def mono(self):
        return self.t

    def now(self):
        return self.wall.timestamp()


@pytest.fixture
def w(tmp_path):
    out = io.BytesIO()
    err = io.StringIO()
    clocks = Clocks()
    report = cli.Reporter("wanwatch", err)
    hooks = Hooks((), "wan0", report)
    watcher = Watcher(
        "wan0", str(tmp_path / "wan.json"), Writer(out), report, hooks,
        clock=clocks.now, monotonic=clocks.mono,
    )  # fmt: skip
    watcher.out_bytes, watcher.err, watcher.clocks = out, err, clocks
    t = RouteTable()
    t.apply(new_link(3, "wan0"))
    t.apply(new_addr(addr("198.51.100.7")))
    watcher.start(t, frozenset())
    return watcher


def events(w):
    return [json.loads(x) for x in w.out_bytes.getvalue().splitlines()]


def test_start_writes_state_and_prints(w):
    assert read_wan_state(w.state_path) == {"198.51.100.7"}
    assert json.loads(Path(w.state_path).read_text())["interface"] == "wan0"
    assert events(w) == [make_event("wan0", [], ["198.51.100.7"], NOW.isoformat())]


def test_start_diffs_against_previous_state(tmp_path):
    out = io.BytesIO()
    report = cli.Reporter("wanwatch", io.StringIO())
    watcher = Watcher("wan0", str(tmp_path / "w.json"), Writer(out), report,
                      Hooks((), "wan0", report), clock=NOW.timestamp)  # fmt: skip
    t = RouteTable()
    t.apply(new_link(3, "wan0"))
    t.apply(new_addr(addr("203.0.113.9")))
    watcher.start(t, frozenset({"198.51.100.7", "203.0.113.9"}))
    (ev,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert (ev["added"], ev["removed"]) == ([], ["198.51.100.7"])


def test_renew_of_same_address_prints_and_writes_nothing(w):
    before = Path(w.state_path).read_bytes()
    w.clocks.wall = NOW.replace(minute=5)
    w.handle([new_addr(addr("198.51.100.7", preferred=300, valid=300))])
    w.handle([new_addr(addr("198.51.100.7", flags=IFA_F_SECONDARY))])
    assert len(events(w)) == 1
    assert Path(w.state_path).read_bytes() == before


def test_change_prints_one_line_per_batch(w):
    w.clocks.wall = NOW.replace(minute=5)
    # DHCP moving to a new lease: old address goes, new comes, in one read.
    w.handle([del_addr(addr("198.51.100.7")), new_addr(addr("203.0.113.9"))])
    ev = events(w)[-1]
    assert (ev["added"], ev["removed"], ev["addresses"]) == (
        ["203.0.113.9"], ["198.51.100.7"], ["203.0.113.9"],
    )  # fmt: skip
    assert ev["ts"] == "2026-11-28T12:05:00+00:00"
    assert read_wan_state(w.state_path) == {"203.0.113.9"}
    assert len(events(w)) == 2


def test_tentative_counts_once_dad_passes(w):
    w.handle([new_addr(addr("2001:db8::7", flags=IFA_F_TENTATIVE))])
    assert len(events(w)) == 1
    w.handle([new_addr(addr("2001:db8::7"))])
    assert events(w)[-1]["added"] == ["2001:db8::7"]


def test_rename_away_empties_and_reports(w):
    w.handle([new_link(3, "old0")])
    assert events(w)[-1]["addresses"] == []
    assert read_wan_state(w.state_path) == set()
    assert "wanwatch: wan0: renamed to old0 (index 3); waiting for an interface named wan0" in (
        w.err.getvalue().splitlines()
    )
    w.handle([new_link(3, "wan0")])
    assert events(w)[-1]["added"] == ["198.51.100.7"]
    assert "wanwatch: wan0: interface appeared (index 3, up); watching it" in w.err.getvalue()


def test_failed_write_is_reported_and_retried(w, tmp_path):
    state = Path(w.state_path)
    state.unlink()
    w.state_path = str(tmp_path / "blocker" / "wan.json")
    (tmp_path / "blocker").write_text("a file where the directory should be")
    w.handle([new_addr(addr("203.0.113.9"))])
    assert events(w)[-1]["added"] == ["203.0.113.9"]  # the event still goes out
    assert "cannot write state" in w.err.getvalue()
    assert "retrying in 1s" in w.err.getvalue()
    assert w.retry_in() == 1.0
    (tmp_path / "blocker").unlink()
    w.update()  # not due yet
    assert not Path(w.state_path).exists()
    w.clocks.t += 1
    w.update()
    assert read_wan_state(w.state_path) == {"198.51.100.7", "203.0.113.9"}
    assert w.retry_in() is None
    assert "state written again" in w.err.getvalue()
    assert len(events(w)) == 2  # a retry is not a change


def test_resync_publishes_difference(w):
    t = RouteTable()
    t.apply(new_link(3, "wan0"))
    t.apply(new_addr(addr("203.0.113.9")))
    w.resync(t)
    ev = events(w)[-1]
    assert (ev["added"], ev["removed"]) == (["203.0.113.9"], ["198.51.100.7"])


# --------------------------------------------------------------------------------------
# hooks (real short processes)


def _hook_script(tmp_path, body):
    script = tmp_path / "hook.py"
    script.write_text(body)
    return (sys.executable, str(script))


def _run_hooks(hooks, deadline=10.0):
    end = time.monotonic() + deadline
    while hooks.running is not None or hooks.pending is not None:
        assert time.monotonic() < end, "hook did not finish"
        hooks.wait()


def test_hook_runs_with_arguments_and_environment(tmp_path):
    record = tmp_path / "calls.jsonl"
    cmd = _hook_script(
        tmp_path,
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    env = {k: v for k, v in os.environ.items() if k.startswith('BANPIPE_WAN_')}\n"
        "    f.write(json.dumps([sys.argv[1:], env]) + '\\n')\n",
    )
    err = io.StringIO()
    hooks = Hooks(cmd, "wan0", cli.Reporter("wanwatch", err))
    hooks.submit(frozenset(), frozenset({"198.51.100.7"}))
    _run_hooks(hooks)
    (call,) = [json.loads(x) for x in record.read_text().splitlines()]
    assert call[0] == ["--old", "", "--new", "198.51.100.7"]
    assert call[1]["BANPIPE_WAN_ADDED"] == "198.51.100.7"
    assert err.getvalue() == ""


def test_hook_changes_while_running_are_merged(tmp_path):
    record = tmp_path / "calls"
    cmd = _hook_script(
        tmp_path,
        "import sys, time\n"
        f"open({str(record)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "time.sleep(0.3)\n",
    )
    hooks = Hooks(cmd, "wan0", cli.Reporter("wanwatch", io.StringIO()))
    a, b, c = frozenset({"198.51.100.1"}), frozenset({"198.51.100.2"}), frozenset({"203.0.113.3"})
    hooks.submit(frozenset(), a)
    hooks.submit(a, b)
    hooks.submit(b, c)
    _run_hooks(hooks)
    assert record.read_text().splitlines() == [
        "--old  --new 198.51.100.1",
        "--old 198.51.100.1 --new 203.0.113.3",
    ]
    assert hooks.runs == 2


def test_hook_failure_is_reported(tmp_path):
    err = io.StringIO()
    cmd = _hook_script(tmp_path, "raise SystemExit(3)\n")
    hooks = Hooks(cmd, "wan0", cli.Reporter("wanwatch", err))
    hooks.submit(frozenset(), frozenset({"198.51.100.7"}))
    _run_hooks(hooks)
    assert err.getvalue() == f"wanwatch: hook: {sys.executable}: exited with status 3\n"


def test_slow_hook_is_terminated_after_timeout(tmp_path):
    err = io.StringIO()
    cmd = _hook_script(tmp_path, "import time\ntime.sleep(60)\n")
    hooks = Hooks(cmd, "wan0", cli.Reporter("wanwatch", err), timeout=0.2)
    hooks.submit(frozenset(), frozenset({"198.51.100.7"}))
    assert hooks.poll() is not None  # the call returned while the hook runs
    _run_hooks(hooks)
    assert (
        err.getvalue()
        == f"wanwatch: hook: {sys.executable}: timed out after 0.2s; terminating it\n"
    )


def test_hook_that_cannot_start_is_reported(tmp_path):
    err = io.StringIO()
    hooks = Hooks((str(tmp_path / "gone"),), "wan0", cli.Reporter("wanwatch", err))
    hooks.submit(frozenset(), frozenset({"198.51.100.7"}))
    assert "cannot run" in err.getvalue()
    assert hooks.running is None


# --------------------------------------------------------------------------------------
# main(): options, config, exit codes (lo exists in every namespace, unprivileged)


def run_main(*argv, config="/dev/null"):
    out, err = io.BytesIO(), io.StringIO()
    args = ["--config", config, *argv] if config else list(argv)
    code = main(args, stdout=out, stderr=err, clock=NOW.timestamp)
    return code, out.getvalue().decode(), err.getvalue()


def test_once_on_loopback_writes_empty_set(tmp_path):
    state = tmp_path / "run" / "wan.json"
    code, out, err = run_main("--interface", "lo", "--state", str(state), "--once")
    assert (code, err) == (0, "")
    assert json.loads(out) == make_event("lo", [], [], NOW.isoformat())
    assert json.loads(state.read_text()) == {
        "v": 1, "type": "wan", "interface": "lo", "addresses": [], "ts": NOW.isoformat()
    }  # fmt: skip


def test_once_missing_interface_is_no_input(tmp_path):
    # Following waits for a missing interface; --once cannot, and says so (exit 66).
    state = tmp_path / "w.json"
    code, out, err = run_main("--interface", "bpnone0", "--state", str(state), "--once")
    assert (code, out) == (66, "")
    assert err == "wanwatch: bpnone0: no such interface (`ip -br link` lists them)\n"
    assert not state.exists()


def test_once_reports_removal_against_previous_state(tmp_path):
    state = tmp_path / "w.json"
    state.write_text(json.dumps({"v": 1, "type": "wan", "interface": "lo",
                                 "addresses": ["198.51.100.7"], "ts": "x"}))  # fmt: skip
    code, out, _ = run_main("--interface", "lo", "--state", str(state), "--once")
    assert code == 0
    assert json.loads(out)["removed"] == ["198.51.100.7"]


def test_unwritable_state_at_start_is_73(tmp_path):
    (tmp_path / "f").write_text("")
    code, out, err = run_main("--interface", "lo", "--state", str(tmp_path / "f" / "w.json"),
                              "--once")  # fmt: skip
    assert code == cli.EX_CANTCREAT
    assert out == ""
    assert err.startswith(f"wanwatch: {tmp_path}/f/w.json: cannot write state: ")


def test_no_interface_is_a_usage_error():
    code, _, err = run_main("--once")
    assert code == 64
    assert err == "wanwatch: no interface: give --interface IFACE or set [wanwatch] interface\n"


def test_bad_interface_flag_is_64_and_bad_config_interface_is_78(tmp_path):
    code, _, err = run_main("--interface", "a/b", "--once")
    assert (code, err) == (64, "wanwatch: --interface: not a valid interface name: 'a/b'\n")
    cfg = tmp_path / "b.toml"
    cfg.write_text('[wanwatch]\ninterface = "toolonginterfacename"\n')
    code, _, err = run_main("--once", config=str(cfg))
    assert code == 78
    assert err.startswith(f"wanwatch: {cfg}: [wanwatch] interface: interface name longer")


def test_config_supplies_interface_state_and_exec(tmp_path):
    cfg = tmp_path / "c.toml"
    state = tmp_path / "s.json"
    record = tmp_path / "called"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    hook.chmod(0o755)
    cfg.write_text(
        f'[network]\nwan_state = "{state}"\n[wanwatch]\ninterface = "lo"\n'
        f'exec = ["{hook}", "first"]\n'
    )
    state.write_text(json.dumps({"v": 1, "type": "wan", "interface": "lo",
                                 "addresses": ["203.0.113.9"], "ts": "x"}))  # fmt: skip
    code, out, err = run_main("--once", config=str(cfg))
    assert (code, err) == (0, "")
    assert json.loads(state.read_text())["addresses"] == []
    # --once waits for the hook: the change found at start reached it
    assert record.read_text() == "first --old 203.0.113.9 --new \n"


def test_exec_problems_are_usage_or_config_errors(tmp_path):
    code, _, err = run_main("--interface", "lo", "--once", "--exec", str(tmp_path / "nope"))
    assert (code, err) == (64, f"wanwatch: --exec: {tmp_path}/nope: no such file\n")
    code, _, err = run_main("--interface", "lo", "--once", "--exec")
    assert code == 64
    cfg = tmp_path / "c.toml"
    cfg.write_text('[wanwatch]\ninterface = "lo"\nexec = ["bp-no-such-command"]\n')
    code, _, err = run_main("--once", config=str(cfg))
    assert code == 78
    assert err == (
        f"wanwatch: {cfg}: [wanwatch] exec: bp-no-such-command: command not found in PATH\n"
    )


def test_exec_takes_everything_after_it(tmp_path):
    state = tmp_path / "s.json"
    state.write_text(json.dumps({"v": 1, "type": "wan", "interface": "lo",
                                 "addresses": ["203.0.113.9"], "ts": "x"}))  # fmt: skip
    record = tmp_path / "argv"
    code, _, err = run_main(
        "--interface", "lo", "--state", str(state), "--once", "--exec", sys.executable, "-c",
        f"import sys; open({str(record)!r}, 'w').write(repr(sys.argv[1:]))", "--interface", "x",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert record.read_text() == repr(["--interface", "x", "--old", "203.0.113.9", "--new", ""])


def test_bad_exec_timeout_is_usage():
    code, _, err = run_main("--interface", "lo", "--once", "--exec-timeout", "soon")
    assert code == 64
    assert err.startswith("wanwatch: --exec-timeout: not a duration")


def test_bad_config_is_78(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[wanwatch]\nexec = 'not a list'\n")
    code, _, err = run_main("--interface", "lo", "--once", config=str(cfg))
    assert code == 78
    assert err == f"wanwatch: {cfg}:2: [wanwatch] exec: expected a list, got str\n"


def test_malformed_previous_state_is_replaced_with_a_note(tmp_path):
    state = tmp_path / "w.json"
    state.write_text("{not json")
    code, out, err = run_main("--interface", "lo", "--state", str(state), "--once")
    assert code == 0
    assert err.startswith(f"wanwatch: {state}: previous state unusable (")
    assert read_wan_state(state) == set()


def test_help_documents_the_hook_call(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--old A,B --new C" in text and "BANPIPE_WAN_" in text
    assert "69 no netlink" in text


def test_netlink_dump_sees_loopback():
    with netlink.RouteSocket() as sock:
        t = RouteTable()
        sock.dump(t)
    lo = t.find("lo")
    assert lo is not None
    assert any(a.address == "127.0.0.1" and a.scope == RT_SCOPE_HOST
               for a in t.addresses_of(lo.index))  # fmt: skip


def test_closed_stdout_is_quiet(tmp_path, tool_env):
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parents[1] / "bin" / "wanwatch"), "--config",
         "/dev/null", "--interface", "lo", "--state", str(tmp_path / "w.json"), "--once"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tool_env,
    )  # fmt: skip
    proc.stdout.close()  # the reader is gone before the line is written
    err = proc.stderr.read()
    code = proc.wait(timeout=30)
    assert err == b""
    assert code in (0, -13)  # -SIGPIPE, like a C filter


class _OverflowingSocket:
    """Readable once; reading reports lost notifications; the dump then has news."""

    def __init__(self, wake):
        self.a, self.b = socket.socketpair()
        self.wake = wake
        self.grown = 0

    def fileno(self):
        return self.a.fileno()

    def read_available(self):
        self.a.recv(16)
        raise netlink.NetlinkOverflow("netlink receive queue overflowed")

    def grow(self):
        self.grown += 1
        return False

    def buffer_size(self):
        return 4096

    def dump(self, table):
        table.apply(new_link(3, "wan0"))
        table.apply(new_addr(addr("203.0.113.9")))
        self.wake.flag.stop = True  # one round is enough for the test
        return True


def test_loop_resyncs_after_overflow(w):
    from banpipe.wanwatch import _loop

    with cli.Signals() as wake:  # the test stops it through the flag
        sock = _OverflowingSocket(wake)
        try:
            sock.b.send(b"x")
            _loop(sock, w, w.hooks, wake, w.report)
        finally:
            sock.a.close()
            sock.b.close()
    ev = events(w)[-1]
    assert (ev["added"], ev["removed"]) == (["203.0.113.9"], ["198.51.100.7"])
    assert "wanwatch: netlink: netlink receive queue overflowed; reading all addresses again" in (
        w.err.getvalue()
    )
    assert sock.grown == 1
