"""banctl main(): injected streams, a fixed clock, the null backend or a recording fake."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banpipe import banctl, listing, term
from banpipe.address import canonical
from banpipe.daemon import Daemon
from banpipe.firewall import FirewallError, FirewallState, RecordingRunner
from banpipe.firewall.null import NullBackend
from banpipe.ledger import Ledger
from banrequest import ban_request

NOW = 1_800_000_000.0
BIN = Path(__file__).resolve().parents[1] / "bin" / "banctl"


class Low:
    def uniform(self, a, b):
        return a


class FakeFirewall(NullBackend):
    """The null backend, shared across main() calls, recording every call."""

    def __init__(self):
        super().__init__(settings=None, stream=io.StringIO())
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def _say(self, line):
        pass

    def init(self):
        self.calls.append(("init", ()))
        self.ready = True

    def block(self, addrs):
        addrs = tuple(addrs)
        self.calls.append(("block", addrs))
        self.entries.update(addrs)

    def release(self, addrs):
        addrs = tuple(addrs)
        self.calls.append(("release", addrs))
        self.entries.difference_update(addrs)

    def close(self, teardown=True):
        self.calls.append(("close", (str(teardown),)))
        if teardown:
            self.entries.clear()
            self.ready = False

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


@pytest.fixture
def fw(monkeypatch):
    fake = FakeFirewall()
    monkeypatch.setattr(banctl.Env, "firewall", lambda self: fake)
    return fake


@pytest.fixture
def cfg(tmp_path):
    """Write a config; returns a function taking extra TOML and returning --config args."""
    ledger = tmp_path / "ledger.sqlite3"
    wan = tmp_path / "wan.json"

    def make(extra: str = "") -> list[str]:
        path = tmp_path / "banpipe.toml"
        path.write_text(
            "[network]\n"
            'networks = ["192.168.1.0/24"]\n'
            'gateways = ["198.51.100.1"]\n'
            f'wan_state = "{wan}"\n'
            "[filter]\n"
            'whitelist = ["203.0.113.240/28"]\n'
            "[firewall]\n"
            'backend = "null"\n'
            "[banctl]\n"
            f'ledger = "{ledger}"\n' + extra
        )
        return ["--config", str(path)]

    make.ledger = str(ledger)
    make.wan = wan
    return make


def run(argv, stdin="", clock=NOW, **kw):
    out, err = io.StringIO(), io.StringIO()
    rc = banctl.main(
        argv, stdin=io.StringIO(stdin), stdout=out, stderr=err, clock=lambda: clock, rng=Low(), **kw
    )
    return rc, out.getvalue(), err.getvalue()


def alert(offender, **kw):
    return json.dumps(ban_request(offender, **kw))


def lines(*items):
    return "".join(i + "\n" for i in items)


def ledger_of(cfg):
    return Ledger.open(cfg.ledger)


# -- apply ---------------------------------------------------------------------------


def test_apply_bans_new_offenders_in_one_block_call(cfg, fw):
    rc, out, err = run(
        [*cfg('[ban]\non_stop = "keep"\n'), "apply"],
        lines(alert("203.0.113.7"), alert("2001:db8::7"), alert("203.0.113.7")),
    )
    assert rc == 0, err
    assert out == ""
    assert fw.named("block") == [("block", ("203.0.113.7", "2001:db8::7"))]
    assert fw.entries == {"203.0.113.7", "2001:db8::7"}
    with ledger_of(cfg) as led:
        o = led.get("203.0.113.7")
        assert o.active and not o.manual and o.violations == 2
        # the second violation extends the fresh ban, also within the same burst
        assert NOW + 3600 + 300 <= o.expires <= NOW + 3600 + 1800
        # two identical violations in one burst: one history row that counts both
        assert [(h.sig, h.count) for h in led.history("203.0.113.7")] == [("1:2003:8", 2)]


def test_apply_bad_lines_one_error_each_with_line_number(cfg, fw):
    stdin = lines(
        alert("203.0.113.7"),
        "not json",
        '{"v": 1}',
        alert("203.0.113.300"),
        alert("203.0.113.8/32"),
        '{"v": 2, "offender": "203.0.113.9"}',
        "[1, 2]",
        alert("fe80::1%eth0"),
        alert(None),
    )
    rc, _, err = run([*cfg(), "apply"], stdin)
    assert rc == 0
    errs = [ln for ln in err.splitlines() if "<stdin>" in ln]
    assert errs == [
        "banctl: <stdin>:2: not JSON",
        "banctl: <stdin>:3: no offender address",
        "banctl: <stdin>:4: offender is not an IP address: '203.0.113.300'",
        "banctl: <stdin>:5: offender is not an IP address: '203.0.113.8/32'",
        "banctl: <stdin>:6: unsupported pipe version 2 (expected 1)",
        "banctl: <stdin>:7: not a JSON object",
        "banctl: <stdin>:8: offender is not an IP address: 'fe80::1%eth0'",
        "banctl: <stdin>:9: no offender address",
    ]
    assert "8 bad" in err
    with ledger_of(cfg) as led:
        assert led.active_addresses() == {"203.0.113.7"}  # garbage never bans


def test_apply_refuses_protected_addresses(cfg, fw):
    cfg.wan.write_text(json.dumps({"v": 1, "type": "wan", "addresses": ["198.51.100.77"]}))
    stdin = lines(
        alert("192.168.1.9"),  # our network
        alert("198.51.100.1"),  # gateway
        alert("198.51.100.77"),  # WAN from the state file
        alert("203.0.113.241"),  # whitelisted
        alert("127.0.0.1"),
        alert("224.0.0.1"),
        alert("::"),
        alert("::ffff:192.168.1.3"),  # mapped: judged as the IPv4 address
        alert("203.0.113.7"),
    )
    rc, _, err = run([*cfg(), "apply"], stdin)
    assert rc == 0
    refused = [ln for ln in err.splitlines() if "refusing" in ln]
    assert len(refused) == 8
    assert refused[0] == (
        "banctl: <stdin>:1: refusing to ban 192.168.1.9: our network 192.168.1.0/24"
    )
    assert "our WAN address 198.51.100.77" in refused[2]
    assert fw.named("block") == [("block", ("203.0.113.7",))]


def test_apply_canonicalises_offenders(cfg, fw):
    rc, _, _ = run(
        [*cfg('[ban]\non_stop = "keep"\n'), "apply"],
        lines(alert("2001:DB8:0::7"), alert("::ffff:203.0.113.9")),
    )
    assert rc == 0
    assert fw.entries == {"2001:db8::7", "203.0.113.9"}


def test_apply_extends_existing_ban_without_blocking_again(cfg, fw):
    args = [*cfg('[ban]\non_stop = "keep"\nextend = ["1m", "10m"]\n'), "apply"]
    run(args, lines(alert("203.0.113.7")))
    rc, _, _ = run(args, lines(alert("203.0.113.7")), clock=NOW + 100)
    assert rc == 0
    assert len(fw.named("block")) == 1
    with ledger_of(cfg) as led:
        assert led.get("203.0.113.7").expires == NOW + 3600 + 60


def test_firewall_failure_in_apply_is_reported_and_not_fatal(cfg, fw, monkeypatch):
    def broken(addrs):
        raise FirewallError("ipset restore: exit 1: set banpipe4 does not exist")

    monkeypatch.setattr(fw, "block", broken)
    rc, _, err = run([*cfg('[ban]\non_stop = "keep"\n'), "apply"], lines(alert("203.0.113.7")))
    assert rc == 0
    assert (
        "banctl: firewall: ipset restore: exit 1: set banpipe4 does not exist; "
        "repairing at the next check\n"
    ) in err
    with ledger_of(cfg) as led:  # committed first: the repair will put it in
        assert led.active_addresses() == {"203.0.113.7"}


def run_until_sigterm(argv, text, until):
    """apply on a real pipe that stays open; SIGTERM (an orderly stop) once ``until()``."""
    r, w = os.pipe()
    os.write(w, text.encode())

    def stopper():
        _wait_for(until)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=stopper)
    thread.start()
    err = io.StringIO()
    try:
        with os.fdopen(r, "rb") as stdin:
            rc = banctl.main(
                argv, stdin=stdin, stdout=io.StringIO(), stderr=err, clock=lambda: NOW, rng=Low()
            )
    finally:
        thread.join()
        os.close(w)
    return rc, err.getvalue()


def test_sigterm_removes_automated_keeps_manual(cfg, fw):
    args = cfg()
    assert run([*args, "ban", "198.51.100.50"])[0] == 0
    rc, err = run_until_sigterm(
        [*args, "apply"], lines(alert("203.0.113.7")), lambda: "203.0.113.7" in fw.entries
    )
    assert rc == 0
    assert ("release", ("203.0.113.7",)) in fw.calls
    assert fw.entries == {"198.51.100.50"}
    assert "stopped (signal SIGTERM)" in err
    assert "1 automated entry removed, 1 manual ban kept" in err
    with ledger_of(cfg) as led:  # the ledger is intact either way
        assert led.active_addresses() == {"198.51.100.50", "203.0.113.7"}


def test_sigterm_without_manual_bans_tears_down(cfg, fw):
    run_until_sigterm(
        [*cfg(), "apply"], lines(alert("203.0.113.7")), lambda: "203.0.113.7" in fw.entries
    )
    assert fw.calls[-1] == ("close", ("True",))
    assert fw.entries == set()


def test_end_of_input_keeps_entries_whatever_on_stop(cfg, fw):
    """End of input is also what a crash of fasttail or alertfilter looks like."""
    args = cfg()  # on_stop = "remove"
    rc, _, err = run([*args, "apply"], lines(alert("203.0.113.7")))
    assert rc == 0
    assert fw.named("release") == [] and fw.entries == {"203.0.113.7"}
    assert "stopped (end of input)" in err and "firewall entries kept" in err


def test_stop_keep_leaves_entries(cfg, fw):
    rc, _, err = run([*cfg('[ban]\non_stop = "keep"\n'), "apply"], lines(alert("203.0.113.7")))
    assert rc == 0
    assert fw.named("release") == []
    assert fw.entries == {"203.0.113.7"}
    assert "firewall entries kept" in err


def test_restart_restores_in_one_block_and_lifts_lapsed(cfg, fw):
    args = [*cfg('[ban]\non_stop = "keep"\n'), "apply"]
    run(args, lines(alert("203.0.113.1")), clock=NOW)
    run(args, lines(alert("203.0.113.2"), alert("203.0.113.3")), clock=NOW + 1000)
    fw.entries.clear()  # a reboot: the firewall forgot everything
    fw.calls.clear()
    rc, _, err = run(args, "", clock=NOW + 3600)
    assert rc == 0
    assert fw.named("block") == [("block", ("203.0.113.2", "203.0.113.3"))]
    assert fw.entries == {"203.0.113.2", "203.0.113.3"}
    assert "1 lapsed lifted" in err


def test_spoof_brake_holds_new_bans_and_says_so_once(cfg, fw):
    args = [*cfg('[ban]\non_stop = "keep"\nspoof_max = 3\nspoof_window = 60\n'), "apply"]
    stdin = lines(*(alert(f"203.0.113.{i}") for i in range(1, 8)))
    rc, _, err = run(args, stdin)
    assert rc == 0
    assert len(fw.entries) == 3
    assert err.count("SPOOF BRAKE") == 1
    assert "4 held by the spoof brake" in err
    with ledger_of(cfg) as led:
        held = led.get("203.0.113.7")
        assert held is not None and not held.active and held.violations == 1
    # window not yet clear (even across a restart): still braking; violations by banned
    # addresses still extend their bans
    rc, _, err = run(args, lines(alert("203.0.113.1"), alert("203.0.113.9")), clock=NOW + 30)
    assert "SPOOF BRAKE" in err
    with ledger_of(cfg) as led:
        assert not led.get("203.0.113.9").active
        assert led.get("203.0.113.1").expires > NOW + 3600
    # window clear: new bans again
    rc, _, err = run(args, lines(alert("203.0.113.9")), clock=NOW + 61)
    assert "SPOOF" not in err
    with ledger_of(cfg) as led:
        assert led.get("203.0.113.9").active


def test_spoof_brake_zero_disables(cfg, fw):
    args = [*cfg('[ban]\non_stop = "keep"\nspoof_max = 0\n'), "apply"]
    rc, _, err = run(args, lines(*(alert(f"203.0.113.{i}") for i in range(1, 50))))
    assert len(fw.entries) == 49 and "SPOOF" not in err


def test_banned_wan_address_is_lifted_at_start(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("198.51.100.77")))
    assert "198.51.100.77" in fw.entries
    cfg.wan.write_text(json.dumps({"v": 1, "type": "wan", "addresses": ["198.51.100.77"]}))
    rc, _, err = run([*args, "apply"], "")
    assert rc == 0
    assert "198.51.100.77: ban lifted: it is our WAN address now" in err
    assert "198.51.100.77" not in fw.entries


def test_apply_with_no_input_starts_and_stops(cfg, fw):
    rc, out, err = run([*cfg(), "apply"], "")
    assert rc == 0 and out == ""
    assert "started" in err and "stopped (end of input)" in err


def test_apply_reads_a_real_pipe(cfg, fw):
    r, w = os.pipe()
    os.write(w, lines(alert("203.0.113.7"), alert("203.0.113.8")).encode())
    os.close(w)
    with os.fdopen(r, "rb") as stdin:
        err = io.StringIO()
        rc = banctl.main(
            [*cfg('[ban]\non_stop = "keep"\n'), "apply"],
            stdin=stdin,
            stdout=io.StringIO(),
            stderr=err,
            rng=Low(),
        )
    assert rc == 0, err.getvalue()
    assert fw.named("block") == [("block", ("203.0.113.7", "203.0.113.8"))]


# -- admin commands ----------------------------------------------------------------------


def test_ban_refuses_protected_unless_forced(cfg, fw):
    rc, out, err = run([*cfg(), "ban", "192.168.1.20"])
    assert rc == 65
    assert err == (
        "banctl: 192.168.1.20: refusing to ban: our network 192.168.1.0/24 "
        "(use --force to ban anyway)\n"
    )
    assert fw.entries == set()
    rc, out, err = run([*cfg(), "ban", "192.168.1.20", "--force"])
    assert rc == 0 and fw.entries == {"192.168.1.20"}


def test_ban_refuses_wan_address_from_state_file(cfg, fw):
    cfg.wan.write_text(json.dumps({"v": 1, "type": "wan", "addresses": ["198.51.100.77"]}))
    rc, _, err = run([*cfg(), "ban", "198.51.100.77"])
    assert rc == 65 and "our WAN address" in err


def test_ban_a_range_list_show_pin_unban(cfg, fw):
    args = cfg()
    rc, out, _ = run([*args, "ban", "203.0.113.77/28", "--for", "1h"])  # host bits cleared
    assert rc == 0 and out.startswith("203.0.113.64/28: banned until ")
    assert fw.entries == {"203.0.113.64/28"}
    run([*args, "ban", "2001:db8:66::/64"])
    rc, out, _ = run([*args, "list"])
    assert "203.0.113.64/28" in out and "2001:db8:66::/64" in out and "2 active bans" in out
    rc, out, _ = run([*args, "show", "2001:DB8:66::/64"])
    assert rc == 0 and out.startswith("2001:db8:66::/64: banned (manual) permanently")
    rc, out, _ = run([*args, "pin", "203.0.113.64/28"])
    assert rc == 0 and out == "203.0.113.64/28: pinned (manual, permanent)\n"
    # An address inside a banned range keeps its own ban, and its entry comes back
    # when the range is lifted.
    run([*args, "ban", "203.0.113.70"])
    rc, out, _ = run([*args, "unban", "203.0.113.64/28"])
    assert rc == 0 and out == "203.0.113.64/28: unbanned\n"
    assert fw.calls[-2:] == [("release", ("203.0.113.64/28",)), ("block", ("203.0.113.70",))]
    assert fw.entries == {"203.0.113.70", "2001:db8:66::/64"}
    rc, out, _ = run([*args, "check"])
    assert rc == 0, out
    pages = cfg.wan.parent / "pages"
    rc, out, _ = run([*args, "report", "--html", str(pages)])
    assert rc == 0, out
    assert "2001:db8:66::/64" in (pages / "o" / "2001-db8-66--_64.html").read_text()


@pytest.mark.parametrize(
    ("net", "why"),
    [
        ("192.168.0.0/16", "the range holds our network 192.168.1.0/24"),
        ("192.168.1.128/25", "the range holds our network 192.168.1.0/24"),
        ("198.51.100.0/24", "the range holds our gateway 198.51.100.1"),
        ("203.0.113.0/24", "the range holds whitelisted 203.0.113.240/28"),
        ("127.0.0.0/16", "the range holds loopback"),
        ("64:ff9b::c633:6400/120", "the range holds our gateway 198.51.100.1"),
    ],
)
def test_ban_refuses_a_range_holding_anything_protected(cfg, fw, net, why):
    rc, _, err = run([*cfg(), "ban", net])
    assert rc == 65
    assert err == f"banctl: {net}: refusing to ban: {why} (use --force to ban anyway)\n"
    assert fw.entries == set()


def test_ban_for_and_permanent(cfg, fw):
    args = cfg()
    rc, out, _ = run([*args, "ban", "203.0.113.5", "--for", "2h", "--reason", "scanner"])
    assert rc == 0 and out.startswith("203.0.113.5: banned until ")
    rc, out, _ = run([*args, "ban", "2001:DB8::5"])
    assert rc == 0 and out == "2001:db8::5: banned permanently\n"
    with ledger_of(cfg) as led:
        a, b = led.get("203.0.113.5"), led.get("2001:db8::5")
        assert (a.manual, a.expires, a.reason) == (True, NOW + 7200, "scanner")
        assert (b.manual, b.expires) == (True, None)
    assert fw.entries == {"203.0.113.5", "2001:db8::5"}


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["ban", "not-an-ip"], 65, "banctl: not-an-ip: not an IP address or network\n"),
        (["ban", "203.0.113.0/33"], 65, "banctl: 203.0.113.0/33: not an IP address or network\n"),
        (["ban", "203.0.113.5", "--for", "soon"], 64, None),
        (["unban", "x"], 65, "banctl: x: not an IP address or network\n"),
        (["pin", "203.0.113.5"], 65, "banctl: 203.0.113.5: not banned\n"),
    ],
)
def test_admin_errors(cfg, fw, argv, code, message):
    rc, _, err = run([*cfg(), *argv])
    assert rc == code
    if message:
        assert err == message


def test_unban_removes_from_ledger_and_firewall(cfg, fw):
    args = cfg()
    run([*args, "ban", "203.0.113.5"])
    rc, out, _ = run([*args, "unban", "203.0.113.5"])
    assert rc == 0 and out == "203.0.113.5: unbanned\n"
    assert fw.entries == set()
    rc, out, _ = run([*args, "unban", "203.0.113.5"])
    assert rc == 0 and out == "203.0.113.5: was not banned\n"


def test_pin_makes_automated_ban_manual(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("203.0.113.7")))
    rc, out, _ = run([*args, "pin", "203.0.113.7"])
    assert rc == 0 and out == "203.0.113.7: pinned (manual, permanent)\n"
    with ledger_of(cfg) as led:
        o = led.get("203.0.113.7")
        assert o.manual and o.expires is None


def test_list_shows_who_why_until_when(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\nextend = ["10m", "10m"]\n')
    run([*args, "apply"], lines(alert("203.0.113.7"), alert("203.0.113.7")))
    run([*args, "ban", "198.51.100.9", "--reason", "by hand"])
    rc, out, _ = run([*args, "list"], clock=NOW + 1200)
    assert rc == 0
    table = out.splitlines()
    assert table[0].split() == ["ADDRESS", "EXPIRES", "VIOL", "BANS", "KIND", "REASON"]
    assert table[1].startswith("203.0.113.7 ")
    assert "(in 50m)" in table[1] and " auto " in table[1] and "priority 2" in table[1]
    assert table[1].split()[5:7] == ["2", "1"]  # violations, bans
    assert table[2].startswith("198.51.100.9") and "permanent" in table[2]
    assert "manual" in table[2] and "by hand" in table[2]
    assert table[-1] == "2 active bans"


def test_list_pages_keep_one_header_the_order_and_the_count(cfg, fw, monkeypatch):
    """banctl list lays out a page at a time (a million bans: the first page at once);
    columns only ever widen, the header comes once, the order is the ledger's."""
    monkeypatch.setattr(listing, "LIST_PAGE", 3)
    args = cfg('[ban]\non_stop = "keep"\nspoof_max = 0\n')
    offenders = ["203.0.113.7", "2001:db8:66::1234:5678", "203.0.113.8", "203.0.113.9"]
    run([*args, "apply"], lines(*(alert(a) for a in offenders)))
    run([*args, "ban", "198.51.100.9", "--reason", "by hand"])
    rc, out, _ = run([*args, "list"])
    table = out.splitlines()
    assert rc == 0 and table[0].startswith("ADDRESS ") and table[-1] == "5 active bans"
    assert sum(line.startswith("ADDRESS") for line in table) == 1
    with ledger_of(cfg) as led:
        assert [t.split()[0] for t in table[1:-1]] == [o.addr for o in led.offenders()]
    # Within the first page columns line up; the long IPv6 address widened the rest.
    assert len({line.index(" auto ") for line in table[1:4] if " auto " in line}) == 1


def test_list_json(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("203.0.113.7")))
    rc, out, _ = run([*args, "list", "--json"])
    (obj,) = [json.loads(x) for x in out.splitlines()]
    assert obj["addr"] == "203.0.113.7" and obj["expires"] == NOW + 3600
    assert obj["manual"] is False and obj["violations"] == 1 and obj["reason"] == "priority 2"


def test_list_empty(cfg, fw):
    assert run([*cfg(), "list"])[1] == "no active bans\n"


def test_show_lists_every_violation(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\n')
    run(
        [*args, "apply"],
        lines(alert("203.0.113.7"), alert("203.0.113.7", sid=9, msg="other", reversed=True)),
    )
    rc, out, _ = run([*args, "show", "203.0.113.7"])
    assert rc == 0
    text = out.splitlines()
    assert text[0].startswith("203.0.113.7: banned (auto) until ")
    assert '1:2003:8 "MS-SQL Worm propagation attempt" prio 2 -> 198.51.100.8' in text[-2]
    assert text[-1].endswith('1:9:8 "other" prio 2 -> 198.51.100.8 (reversed)')
    rc, out, _ = run([*args, "show", "203.0.113.7", "--json"])
    assert len(out.splitlines()) == 3


def test_expire_with_injected_clock(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("203.0.113.7")))
    rc, out, _ = run([*args, "expire"], clock=NOW + 3599)
    assert out.startswith("0 expired") and fw.entries == {"203.0.113.7"}
    rc, out, _ = run([*args, "expire"], clock=NOW + 3600)
    assert rc == 0 and out.splitlines()[0] == "expired 203.0.113.7"
    assert fw.entries == set()


def test_check_and_repair(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("203.0.113.7"), alert("203.0.113.8")))
    assert run([*args, "check"]) == (0, "consistent: 2 active bans\n", "")
    fw.entries.discard("203.0.113.8")  # someone flushed it
    fw.entries.add("198.51.100.99")  # and added a stray one
    rc, out, _ = run([*args, "check"])
    assert rc == 1
    assert out.splitlines() == [
        "missing 203.0.113.8",
        "orphan 198.51.100.99",
        "drift: 1 missing, 1 orphans, 0 duplicates, structure ok (banctl check --repair fixes it)",
    ]
    rc, out, _ = run([*args, "check", "--repair"])
    assert rc == 0 and out.splitlines()[-1].endswith("; repaired")
    assert fw.entries == {"203.0.113.7", "203.0.113.8"}
    assert run([*args, "check"])[0] == 0


def test_check_repairs_structure_and_duplicates(cfg, fw, monkeypatch):
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("203.0.113.7")))
    broken = FirewallState({"203.0.113.7"}, {"203.0.113.7": 2}, False, ["chain gone"])
    dup = FirewallState({"203.0.113.7"}, {"203.0.113.7": 2}, True, [])
    clean = FirewallState({"203.0.113.7"}, {}, True, [])
    # a missing structure needs no second listing, nor does the listing after init()
    states = iter([broken, dup, clean])
    monkeypatch.setattr(fw, "check", lambda: next(states))
    rc, out, _ = run([*args, "check", "--repair"])
    assert rc == 0
    assert "duplicate 203.0.113.7 x2" in out and "problem chain gone" in out
    assert fw.calls[-3:] == [
        ("init", ()),
        ("release", ("203.0.113.7",)),
        ("block", ("203.0.113.7",)),
    ]


def test_check_confirms_drift_with_a_second_listing(cfg, fw, monkeypatch):
    """A partial listing (seen with big nftables sets) is not drift; real drift is."""
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("203.0.113.7"), alert("203.0.113.8")))
    partial = FirewallState({"203.0.113.7"}, {}, True, [])
    full = FirewallState({"203.0.113.7", "203.0.113.8"}, {}, True, [])
    listings = iter([partial, full])
    monkeypatch.setattr(fw, "check", lambda: next(listings))
    assert run([*args, "check"])[:2] == (0, "consistent: 2 active bans\n")
    listings = iter([partial, partial])
    rc, out, _ = run([*args, "check"])
    assert rc == 1 and out.startswith("missing 203.0.113.8\n")


def test_restore_and_teardown(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("203.0.113.7")))
    rc, out, _ = run([*args, "teardown"])
    assert rc == 0 and fw.entries == set() and not fw.ready
    assert out == (
        "teardown: 1 automated entry removed, 0 manual bans kept; 1 active ban stays in the "
        "ledger (banctl restore puts it back)\n"
    )
    rc, out, _ = run([*args, "restore"])
    assert rc == 0 and out.startswith("restored: 1 active ban, 1 added")
    assert fw.entries == {"203.0.113.7"}
    rc, out, _ = run([*args, "teardown", "--json"])
    assert rc == 0 and fw.entries == set()
    assert json.loads(out) == {"result": "removed", "removed": 1, "manual_kept": 0, "active": 1}
    rc, out, _ = run([*args, "restore", "--json"])
    assert rc == 0 and fw.entries == {"203.0.113.7"}
    assert json.loads(out) == {
        "active": 1, "added": 1, "orphans_removed": 0, "lapsed": [], "wan_lifted": []
    }  # fmt: skip


def test_teardown_keeps_manual_bans_unless_all(cfg, fw):
    args = cfg('[ban]\non_stop = "keep"\n')
    run([*args, "apply"], lines(alert("203.0.113.7")))
    run([*args, "ban", "198.51.100.50"])
    fw.entries.add("192.0.2.99")  # an entry the ledger does not know
    for _ in range(2):  # idempotent
        rc, out, _ = run([*args, "teardown"])
        assert rc == 0 and fw.entries == {"198.51.100.50"} and fw.ready
    rc, out, _ = run([*args, "teardown", "--all", "--json"])
    assert rc == 0 and fw.entries == set() and not fw.ready
    assert json.loads(out) == {
        "result": "all_removed", "removed": None, "manual_kept": 0, "active": 2
    }  # fmt: skip
    rc, out, _ = run([*args, "teardown", "--all"])
    assert rc == 0 and fw.entries == set() and not fw.ready
    assert out.startswith("teardown: all of banpipe's firewall entries and structure removed")
    with ledger_of(cfg) as led:
        assert led.active_addresses() == {"203.0.113.7", "198.51.100.50"}


# -- exit codes --------------------------------------------------------------------------


def test_usage_errors_exit_64_with_one_line(cfg, capsys):
    assert banctl.main([]) == 64
    assert capsys.readouterr().err == (
        "banctl: the following arguments are required: COMMAND (see banctl --help)\n"
    )
    assert banctl.main(["frobnicate"]) == 64
    err = capsys.readouterr().err
    assert err.startswith("banctl: argument COMMAND: invalid choice: 'frobnicate'")
    assert len(err.splitlines()) == 1


def test_help_exits_0(capsys):
    assert banctl.main(["--help"]) == 0
    assert "apply" in capsys.readouterr().out


def test_global_options_also_after_the_command(tmp_path, capsys):
    ledger = str(tmp_path / "l.sqlite3")
    args = ["--config", "/dev/null", "--backend", "null", "--ledger", ledger]
    assert banctl.main(["ban", "203.0.113.9", *args]) == 0
    assert banctl.main(["list", *args]) == 0
    assert "203.0.113.9" in capsys.readouterr().out
    # before the command still works, and a value given before is not reset by the
    # subcommand's parser
    assert banctl.main(["--ledger", ledger, "--backend", "null", "list", "--json"]) == 0
    assert "203.0.113.9" in capsys.readouterr().out


def test_config_error_exits_78(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ban]\nbsae = 5\n")
    rc, _, err = run(["--config", str(bad), "list"])
    assert rc == 78 and "unknown key 'bsae'" in err


def test_unwritable_ledger_exits_73(tmp_path, cfg):
    blocker = tmp_path / "plainfile"
    blocker.write_text("")
    rc, _, err = run([*cfg(), "--ledger", str(blocker / "x" / "l.sqlite3"), "ban", "203.0.113.5"])
    assert rc == 73 and err.startswith("banctl: ")


def test_firewall_failure_exits_69(cfg):
    runner = RecordingRunner(lambda argv, inp: FirewallError(f"{argv[0]}: permission denied"))
    rc, _, err = run([*cfg(), "--backend", "iptables", "ban", "203.0.113.5"], runner=runner)
    assert rc == 69
    assert err.startswith("banctl: firewall: ")


def test_apply_with_recording_runner_uses_bulk_restore(cfg):
    """Golden: a burst through the ipset backend is one `ipset restore`."""
    runner = RecordingRunner(
        lambda argv, inp: "" if argv[:2] != ("ipset", "list") else None  # empty sets
    )
    rc, _, err = run(
        [*cfg('[ban]\non_stop = "keep"\n'), "--backend", "ipset", "apply"],
        lines(alert("203.0.113.7"), alert("203.0.113.8"), alert("2001:db8::9")),
        runner=runner,
    )
    assert rc == 0, err
    adds = [c for c in runner.calls if c.input and "add -exist" in c.input]
    assert len(adds) == 1
    assert adds[0].argv[:2] == ("ipset", "restore")
    body = adds[0].input.splitlines()
    assert "add -exist banpipe4 203.0.113.7" in body and "add -exist banpipe6 2001:db8::9" in body


# -- the real process: signals and a concurrent admin ------------------------------------------


def _spawn(args, tool_env):
    return subprocess.Popen(
        [sys.executable, str(BIN), *args, "apply"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=tool_env,
        text=True,
    )


def _wait_for(predicate, timeout=30.0):  # ends on the condition; the limit: a failure
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _active(cfg):
    with ledger_of(cfg) as led:
        return led.active_addresses()


def test_sigterm_twice_stops_cleanly(cfg, tool_env):
    args = cfg()
    proc = _spawn(args, tool_env)
    proc.stdin.write(lines(alert("203.0.113.7")))
    proc.stdin.flush()
    assert _wait_for(lambda: Path(cfg.ledger).exists() and _active(cfg) == {"203.0.113.7"})
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "null: teardown chain BANPIPE" in err  # no manual bans: all of ours removed
    assert err.count("stopped (signal SIGTERM)") == 1
    assert "1 automated entry removed" in err
    assert "Traceback" not in err


def test_daemon_follows_admin_expiry_changes_at_once(cfg, tool_env):
    """An admin `ban --for 1s` while apply runs: the daemon lifts it within ~1 s although its
    periodic check is an hour away (it wakes on the ledger's -wal file)."""
    args = cfg('check_interval = "1h"\n')  # the config ends in [banctl]
    proc = _spawn(args, tool_env)
    try:
        assert _wait_for(lambda: "started" in (proc.stderr.readline() or ""))
        rc, _, _ = run([*args, "ban", "203.0.113.5", "--for", "1s"], clock=time.time())
        assert rc == 0
        assert _wait_for(lambda: _active(cfg) == set())
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
        err = proc.stderr.read()
    assert "203.0.113.5: ban expired, lifted" in err


def test_daemon_lifts_ban_when_address_becomes_our_wan(cfg, tool_env):
    args = cfg()
    proc = _spawn(args, tool_env)
    try:
        proc.stdin.write(lines(alert("198.51.100.77")))
        proc.stdin.flush()
        assert _wait_for(lambda: Path(cfg.ledger).exists() and _active(cfg) == {"198.51.100.77"})
        tmp = cfg.wan.with_suffix(".tmp")
        tmp.write_text(json.dumps({"v": 1, "type": "wan", "addresses": ["198.51.100.77"]}))
        tmp.rename(cfg.wan)  # atomically, as wanwatch writes it
        assert _wait_for(lambda: _active(cfg) == set())
        proc.stdin.write(lines(alert("198.51.100.77")))  # and it is refused from now on
        proc.stdin.flush()
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
        err = proc.stderr.read()
    assert "198.51.100.77: ban lifted: it is our WAN address now" in err
    assert "refusing to ban 198.51.100.77: our WAN address 198.51.100.77" in err


def test_every_command_is_documented(capsys):
    assert banctl.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in banctl.COMMANDS:
        assert f"    {name} " in text, name
        assert banctl.main([name, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: banctl {name}")


# -- property: garbage or protected input never becomes a ban ---------------------------------

PROTECTED_CFG = (
    '[network]\nwan = ["198.51.100.2"]\nnetworks = ["192.168.0.0/16", "2001:db8:1::/48"]\n'
    'gateways = ["198.51.100.1"]\nwan_state = ""\n'
    '[filter]\nwhitelist = ["203.0.113.0/28", "2001:db8:2::/48"]\n'
    '[ban]\nspoof_max = 0\non_stop = "keep"\n'
)

_addr_text = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(
        ["198.51.100.2", "198.51.100.1", "192.168.4.4", "203.0.113.3", "2001:db8:2::9",
         "2001:db8:1::1", "::ffff:192.168.1.1", "127.0.0.1", "::1", "0.0.0.0", "::",
         "255.255.255.255", "224.0.0.5", "ff02::1", "fe80::1", "169.254.1.1", "203.0.113.99"]
    ),
    st.text(max_size=20),
)  # fmt: skip


def fixed_env(config, ledger_path: str) -> banctl.Env:
    """banctl's environment for a Daemon driven by hand: null backend, the clock at NOW."""
    err = io.StringIO()
    return banctl.Env(
        config=config,
        ledger_path=ledger_path,
        backend="null",
        stdout=io.StringIO(),
        stderr=err,
        clock=lambda: NOW,
        rng=Low(),
        runner=None,
        report=banctl.cli.Reporter("banctl", err),
    )


@given(st.lists(st.one_of(_addr_text, st.none(), st.integers()), max_size=12))
def test_never_bans_a_protected_or_invalid_address(offenders):
    from banpipe.config import parse_config
    from banpipe.pipe import Lines
    from banpipe.protect import Protection

    config = parse_config(PROTECTED_CFG)
    env = fixed_env(config, ":memory:")
    fake = FakeFirewall()
    ledger = env.ledger()
    daemon = Daemon(env, ledger, fake)
    daemon.start()
    lines = Lines().feed(
        "".join(json.dumps({"v": 1, "offender": o}) + "\n" for o in offenders).encode()
    )
    daemon.handle(*lines)
    protection = Protection.from_config(config)
    for addr in fake.entries | ledger.active_addresses():
        assert canonical(addr) == addr
        assert protection.reason(addr) is None, addr
    env.close()


class WipedMidRepair(FakeFirewall):
    """Someone else wipes the firewall while banctl repairs it (firewalld's reload
    rewrites ip, then ip6: the second rewrite lands during the repair of the first)."""

    def __init__(self):
        super().__init__()
        self.wipe_on_block = 0

    def block(self, addrs):
        super().block(addrs)
        if self.wipe_on_block:
            self.wipe_on_block -= 1
            self.entries.clear()


class Events:
    """fwevents.FirewallEvents as the Enforcer sees it: ``read()`` says whether
    deletions of our part were announced since the last read."""

    def __init__(self, answers):
        self.answers = list(answers)

    def read(self):
        return self.answers.pop(0) if self.answers else False


def test_a_wipe_during_the_repair_is_looked_at_again_at_once(tmp_path):
    from banpipe.config import parse_config

    env = fixed_env(parse_config("[ban]\nspoof_max = 0\n"), str(tmp_path / "ledger.sqlite3"))
    fake = WipedMidRepair()
    ledger = env.ledger()
    ledger.ban("203.0.113.7", NOW, expires=None, reason="manual")
    daemon = Daemon(env, ledger, fake)
    daemon.start()
    enforce = daemon.enforce
    # The first wipe, then during its repair the second (and our own changes).
    enforce.events = Events([True, True])
    assert fake.entries == {"203.0.113.7"} and enforce.next_check > time.monotonic() + 30
    fake.entries.clear()
    fake.wipe_on_block = 1
    enforce.firewall_changed()
    assert fake.entries == set()
    assert enforce.next_check <= time.monotonic()  # not in check_interval (60 s)
    assert enforce.check_due()
    assert fake.entries == {"203.0.113.7"}
    env.close()


@pytest.mark.parametrize(
    ("result", "removed"),
    [(None, True), ("success", True), ("exit-code", False), ("signal", False)],
)
def test_teardown_orderly_only_after_a_clean_stop(cfg, fw, monkeypatch, result, removed):
    """ExecStopPost runs after failures too: a crash must not take the bans down."""
    args = cfg()
    run([*args, "apply"], lines(alert("203.0.113.7")))
    if result is None:
        monkeypatch.delenv("SERVICE_RESULT", raising=False)
    else:
        monkeypatch.setenv("SERVICE_RESULT", result)
    rc, out, _ = run([*args, "teardown", "--orderly"])
    assert rc == 0
    assert (fw.entries == set()) is removed
    if not removed:
        assert out == f"teardown skipped: the service ended with {result}; entries stay\n"
        rc, out, _ = run([*args, "teardown", "--orderly", "--json"])
        assert rc == 0 and json.loads(out) == {"result": "skipped", "service_result": result}


def test_wan_change_applies_to_the_next_alert_read_even_inside_a_burst(cfg, tool_env, tmp_path):
    """The WAN state changes while banctl is busy with a flood; the alert naming the new
    address, written after the change, must meet the new protection: never banned."""
    log = tmp_path / "stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(BIN), *cfg("[ban]\nspoof_max = 0\n"), "apply"],
            stdin=subprocess.PIPE,
            stderr=err,
            env=tool_env,
            text=True,
        )
    try:
        assert _wait_for(lambda: "started" in log.read_text())
        flood = lines(*(alert(f"2001:db8:f::{i:x}") for i in range(1, 3000)))
        proc.stdin.write(flood)  # more than FLOOD_BYTES: banctl lingers for more
        cfg.wan.write_text(json.dumps({"v": 1, "type": "wan", "addresses": ["198.51.100.77"]}))
        proc.stdin.write(lines(alert("198.51.100.77")))
        proc.stdin.flush()
        assert _wait_for(lambda: len(_active(cfg)) == 2999, timeout=30)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "refusing to ban 198.51.100.77: our WAN address 198.51.100.77" in text
    assert "198.51.100.77" not in _active(cfg)
    assert "ban lifted" not in text


# -- the first hour: read-only commands create nothing, answers instead of errors --------


def test_read_only_commands_on_a_fresh_machine_create_no_ledger(cfg, fw):
    args = cfg()
    assert run([*args, "list"])[:2] == (0, "no active bans\n")
    assert run([*args, "show", "203.0.113.9"])[:2] == (
        1,
        "203.0.113.9: not in the ledger (never banned, or history pruned)\n",
    )
    rc, out, err = run([*args, "check"])
    assert (rc, err) == (0, "") and out.startswith("consistent: no ledger yet")
    assert run([*args, "unban", "203.0.113.9"])[:2] == (0, "203.0.113.9: was not banned\n")
    assert not os.path.exists(cfg.ledger)
    assert fw.calls == []


def test_show_of_an_unknown_address_exits_1_not_65(cfg, fw):
    args = cfg()
    assert run([*args, "ban", "203.0.113.7"])[0] == 0
    rc, out, err = run([*args, "show", "203.0.113.9"])
    assert (rc, err) == (1, "") and "not in the ledger" in out


def test_unban_when_our_firewall_part_does_not_exist_says_not_banned(cfg, monkeypatch):
    # iptables-nft on a fresh machine: listing a chain that does not exist fails.
    runner = RecordingRunner(
        lambda argv, inp: FirewallError(f"{argv[0]}: chain 'BANPIPE' ... is incompatible")
    )
    args = [*cfg(), "--backend", "iptables"]
    Ledger.open(cfg.ledger).close()  # a ledger exists, the address was never banned
    rc, out, err = run([*args, "unban", "203.0.113.9"], runner=runner)
    assert (rc, out, err) == (0, "203.0.113.9: was not banned\n", "")


def test_check_with_nothing_banned_and_nothing_set_up_is_consistent(cfg, fw):
    args = cfg()
    Ledger.open(cfg.ledger).close()
    rc, out, _ = run([*args, "check"])
    assert rc == 0
    assert out == (
        "consistent: 0 active bans; banpipe's firewall part is not set up yet "
        "(banctl apply or banctl restore creates it)\n"
    )
    assert "problem" not in out


def test_wording_permanent_once_and_singulars(cfg, fw):
    args = cfg()
    assert run([*args, "ban", "203.0.113.7"])[1] == "203.0.113.7: banned permanently\n"
    rc, out, _ = run([*args, "list"])
    assert out.endswith("\n1 active ban\n")
    out = run([*args, "show", "203.0.113.7"])[1]
    assert out.startswith("203.0.113.7: banned (manual) permanently\n")
    assert "1 violation, banned once" in out or "0 violations, banned once" in out


def test_show_gives_the_alert_time_not_the_processing_time(cfg, fw):
    args = cfg()
    rc, _, _ = run([*args, "apply"], lines(alert("203.0.113.7")), clock=NOW)
    assert rc == 0
    out = run([*args, "show", "203.0.113.7"])[1]
    assert "  2026-11-28 10:00:00  1:2003:8" in out  # the alert's own "ts"


def test_show_gives_a_bucketed_rows_first_and_last_alert_time(cfg, fw):
    # identical violations within five minutes are one ledger row (issue 12)
    args = cfg()
    first = alert("203.0.113.7")
    later = alert("203.0.113.7", ts="2026-11-28T10:00:42.000000")
    next_day = alert("203.0.113.7", ts="2026-11-29T09:00:00.000000")
    assert run([*args, "apply"], lines(first, later, later, next_day), clock=NOW)[0] == 0
    assert run([*args, "apply"], lines(first, later), clock=NOW + 3600)[0] == 0
    out = run([*args, "show", "203.0.113.7"])[1].splitlines()
    assert "6 violations" in out[1]
    assert out[-2].startswith("  2026-11-28 10:00:00 to 2026-11-29 09:00:00  1:2003:8 ")
    assert out[-2].endswith(" x4")
    assert out[-1].startswith("  2026-11-28 10:00:00 to 10:00:42  1:2003:8 ")  # same day
    assert out[-1].endswith(" x2")
    rc, text, _ = run([*args, "show", "203.0.113.7", "--json"])
    rows = [json.loads(x) for x in text.splitlines()[1:]]
    assert [(r["count"], r["ts"], r["last_ts"]) for r in rows] == [
        (4, NOW, NOW),
        (2, NOW + 3600, NOW + 3600),
    ]
    assert (rows[0]["alert_ts"], rows[0]["alert_last"]) == (
        "2026-11-28T10:00:00.000000",
        "2026-11-29T09:00:00.000000",
    )


def test_list_keeps_the_whole_reason_in_a_pipe_and_cuts_with_an_ellipsis_on_a_terminal():
    line = "203.0.113.7  permanent  0  1  manual  " + "r" * 100
    assert term.fit(line, None) == line
    assert term.fit(line, 80) == line[:79] + "…"
    assert len(term.fit(line, 80)) == 80
    assert term.width(io.StringIO()) is None  # a pipe or file: no width, nothing cut


def test_long_reason_is_whole_when_piped(cfg, fw):
    args = cfg()
    reason = "x" * 70 + " the end"
    assert run([*args, "ban", "203.0.113.7", "--reason", reason])[0] == 0
    assert reason in run([*args, "list"])[1]


def test_stop_line_says_what_happened_to_the_firewall(cfg, fw):
    rc, err = run_until_sigterm(
        [*cfg(), "apply"], lines(alert("203.0.113.7")), lambda: "203.0.113.7" in fw.entries
    )
    assert rc == 0
    assert err.splitlines()[-1].endswith(
        "stopped (signal SIGTERM): 1 line, 1 ban, 0 extended, 0 expired, 0 bad, 0 refused, "
        "0 held by the spoof brake; 1 automated entry removed, with banpipe's "
        "chain/sets/table (no manual ban left)"
    )
    rc, err = run_until_sigterm(
        [*cfg('[ban]\non_stop = "keep"\n'), "apply"],
        lines(alert("203.0.113.8")),
        lambda: "203.0.113.8" in fw.entries,
    )
    assert rc == 0 and err.splitlines()[-1].endswith('firewall entries kept (on_stop = "keep")')
    rc, _, err = run([*cfg(), "apply"], lines(alert("203.0.113.9")))
    assert rc == 0 and err.splitlines()[-1].endswith("firewall entries kept (no orderly stop)")


@pytest.mark.parametrize(
    ("failure", "hint"),
    [
        ("iptables: No such file or directory", "(install it, or choose another [firewall]"),
        ("iptables -w -S: exit 4: Permission denied (you must be root)", "(changing the "),
    ],
)
def test_firewall_failures_say_what_to_do(cfg, failure, hint):
    runner = RecordingRunner(lambda argv, inp: FirewallError(failure))
    rc, _, err = run([*cfg(), "--backend", "iptables", "ban", "203.0.113.5"], runner=runner)
    assert rc == 69 and err.startswith(f"banctl: firewall: {failure} {hint}")


def test_called_with_argv_keeps_the_callers_sigpipe(tmp_path, monkeypatch, capsys):
    """Only banctl as a program dies of SIGPIPE: an in-process caller keeps its handler."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    before = signal.getsignal(signal.SIGPIPE)
    try:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        banctl.main(["--ledger", str(tmp_path / "l.sqlite3"), "--backend", "null", "list"])
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGPIPE, before)
