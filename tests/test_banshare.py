"""banshare without a network: the wire form, the judgement, the ledger's decisions,
idempotence and ordering, the applier, and the command line."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banpipe import banctl, banshare, fleet
from banpipe.bantime import BanPolicy
from banpipe.cli import Reporter
from banpipe.config import BanConfig, ConfigError, parse_config
from banpipe.ledger import Decision, Ledger, Violation
from banpipe.ledger.hits import SHARE_EVERY
from banpipe.protect import Protection
from ledgerutil import record
from test_banctl import FakeFirewall
from toolpaths import BIN

NOW = 1_800_000_000.0
OPEN = Protection()


class Low:
    def uniform(self, a, b):
        return a


def remote(ident, kind="ban", addr="203.0.113.7", *, ts=NOW, expires=NOW + 3600, **kw):
    return Decision(ident, ts, kind, addr, expires, kw.pop("manual", False),
                    kw.pop("reason", "r"), kw.pop("origin", "gw-a"))  # fmt: skip


# -- wire form ------------------------------------------------------------------------


@given(
    ident=st.integers(1, 2**53),
    kind=st.sampled_from(["ban", "extend", "unban", "pin"]),
    expires=st.none() | st.floats(0, 4e9),
    manual=st.booleans(),
    reason=st.none() | st.text(max_size=50),
)
def test_encode_decode_round_trip(ident, kind, expires, manual, reason):
    d = Decision(ident, NOW, kind, "2001:db8::7", expires, manual, reason)
    assert fleet.decode(fleet.encode(d, "gw-a")) == d._replace(origin="gw-a")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"garbage", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"v":2}', "unsupported version"),
        (b'{"v":1,"id":0,"ts":1,"kind":"ban","addr":"203.0.113.7","origin":"a"}', "no decision id"),
        (b'{"v":1,"id":1,"ts":1,"kind":"nuke","addr":"203.0.113.7","origin":"a"}', "unknown kind"),
        (
            b'{"v":1,"id":1,"ts":1,"kind":"ban","addr":"203.0.113.7; rm -rf /","origin":"a"}',
            "not an IP address",
        ),  # fmt: skip
        (b'{"v":1,"id":1,"ts":1,"kind":"ban","addr":"203.0.113.7","origin":"a.b"}', "no origin"),
        (
            b'{"v":1,"id":1,"ts":1,"kind":"ban","addr":"203.0.113.7","expires":"x","origin":"a"}',
            "bad expiry",
        ),  # fmt: skip
    ],
)
def test_decode_rejects_garbage_with_a_reason(body, why):
    with pytest.raises(ValueError, match=why):
        fleet.decode(body)


def test_decode_canonicalises_the_address():
    body = b'{"v":1,"id":1,"ts":1,"kind":"ban","addr":"2001:DB8:0::7","origin":"a"}'
    assert fleet.decode(body).addr == "2001:db8::7"


def test_gateway_name_defaults_to_the_short_hostname_as_a_subject_token():
    assert fleet.gateway_name("", "gw.branch.example.org") == "gw"
    assert fleet.gateway_name("", "odd host*") == "odd_host_"
    assert fleet.gateway_name("edge-1", "whatever") == "edge-1"


# -- judgement ------------------------------------------------------------------------


def test_protection_always_wins_whatever_the_sender():
    ours = Protection(wan=["198.51.100.2"], networks=["192.168.1.0/24"], whitelist=["203.0.113.9"])
    policy = fleet.Policy()
    for addr, label in [
        ("198.51.100.2", "our WAN"),
        ("192.168.1.7", "our network"),
        ("203.0.113.9", "whitelisted"),
        ("127.0.0.1", "loopback"),
    ]:
        for kind in ("ban", "extend", "pin"):
            d = remote(1, kind, addr, manual=True)
            got, why = fleet.judge(d, now=NOW, policy=policy, protection=ours)
            assert got is None and why.startswith("refused") and label in why


def test_a_remote_range_is_judged_as_a_whole():
    ours = Protection(networks=["192.168.1.0/24"])
    policy = fleet.Policy()
    body = b'{"v":1,"id":1,"ts":1,"kind":"ban","addr":"2001:DB8:66::/64","origin":"a"}'
    assert fleet.decode(body).addr == "2001:db8:66::/64"
    got, why = fleet.judge(
        remote(1, addr="192.168.0.0/16"), now=NOW, policy=policy, protection=ours
    )
    assert got is None and why == "refused: the range holds our network 192.168.1.0/24"
    got, _ = fleet.judge(remote(1, addr="203.0.113.0/24"), now=NOW, policy=policy, protection=ours)
    assert got is not None and got.addr == "203.0.113.0/24"


def test_unban_always_passes_expired_is_skipped_and_kinds_are_filtered():
    policy = fleet.Policy(accept=("automated",))
    assert fleet.judge(remote(1, "unban"), now=NOW, policy=policy, protection=OPEN)[0]
    got, why = fleet.judge(remote(1, expires=NOW - 1), now=NOW, policy=policy, protection=OPEN)
    assert got is None and "expired" in why
    got, why = fleet.judge(remote(1, manual=True), now=NOW, policy=policy, protection=OPEN)
    assert got is None and "manual" in why
    got, why = fleet.judge(remote(1, "pin"), now=NOW, policy=policy, protection=OPEN)
    assert got is None and "manual" in why


def test_cap_limits_long_and_permanent_remote_bans():
    policy = fleet.Policy(max_duration=600)
    for expires in (None, NOW + 86400):
        got, _ = fleet.judge(remote(1, expires=expires), now=NOW, policy=policy, protection=OPEN)
        assert got.expires == NOW + 600
    got, _ = fleet.judge(remote(1, expires=NOW + 60), now=NOW, policy=policy, protection=OPEN)
    assert got.expires == NOW + 60


# -- the ledger's decisions -----------------------------------------------------------


@pytest.fixture
def ledger():
    with Ledger.open(":memory:") as led:
        yield led


def policy():
    return BanPolicy.from_config(BanConfig())


def test_every_local_change_is_a_decision_in_the_same_transaction(ledger):
    record(ledger, [Violation("203.0.113.7", reason="r1")], NOW, policy(), Low())
    # an extension SHARE_EVERY after the last decision on the address goes out at once
    record(ledger, [Violation("203.0.113.7")] * 3, NOW + SHARE_EVERY, policy(), Low())
    ledger.ban("203.0.113.8", NOW + 2, expires=None, reason="by hand")
    ledger.pin("203.0.113.7", NOW + 3)
    ledger.unban(["203.0.113.8"], NOW + 4)
    ledger.expire(NOW + 10**9)  # expiry is not shared: every gateway expires by itself
    got = [(d.kind, d.addr, d.manual) for d in ledger.local_decisions(0)]
    assert got == [
        ("ban", "203.0.113.7", False),
        ("extend", "203.0.113.7", False),
        ("ban", "203.0.113.8", True),
        ("pin", "203.0.113.7", True),
        ("unban", "203.0.113.8", False),
    ]
    first = ledger.local_decisions(0)
    assert first[0].reason == "r1" and first[2].expires is None
    assert ledger.local_decisions(first[2].id) == first[3:]


def test_extensions_are_shared_at_most_once_per_share_every(ledger):
    """A flood extends at every commit: an ``extend`` decision at once when none was
    written on the address within SHARE_EVERY, else the extension waits and goes out,
    with the expiry as it then is, once SHARE_EVERY has passed since the last one."""
    every = int(SHARE_EVERY)
    record(ledger, [Violation("203.0.113.7")], NOW, policy(), Low())  # ban
    for t in range(1, 2 * every + 31):  # a commit a second
        record(ledger, [Violation("203.0.113.7")], NOW + t, policy(), Low())
        assert ledger.share_extensions(NOW + t) == 0  # none waits past its time
    expiry = ledger.get("203.0.113.7").expires
    assert expiry == NOW + 3600 + (2 * every + 30) * 300
    got = [(d.kind, d.ts) for d in ledger.local_decisions(0)]
    assert got == [("ban", NOW), ("extend", NOW + every), ("extend", NOW + 2 * every)]
    assert ledger.share_due_at() == NOW + 3 * every  # the last 30 s wait
    assert ledger.share_extensions(NOW + 3 * every - 1) == 0
    assert ledger.share_extensions(NOW + 3 * every) == 1
    last = ledger.local_decisions(0)[-1]
    assert (last.kind, last.ts, last.expires) == ("extend", NOW + 3 * every, expiry)
    assert ledger.share_due_at() is None
    # At a stop every waiting one goes, due or not; a lifted ban's waits no more.
    record(ledger, [Violation("203.0.113.7")], NOW + 3 * every + 1, policy(), Low())
    record(ledger, [Violation("203.0.113.8")] * 2, NOW, policy(), Low())
    record(ledger, [Violation("203.0.113.8")], NOW + 1, policy(), Low())
    ledger.unban(["203.0.113.8"], NOW + 2)
    assert ledger.share_extensions(NOW + 3 * every + 2, every=True) == 1
    assert ledger.local_decisions(0)[-1].addr == "203.0.113.7"
    assert ledger.share_due_at() is None


def test_remote_decisions_are_not_local_ones_and_carry_their_origin(ledger):
    out = ledger.apply_remote([remote(5)], NOW)
    assert out.block == ["203.0.113.7"]
    assert ledger.local_decisions(0) == []
    o = ledger.get("203.0.113.7")
    assert o.active and o.origin == "gw-a" and o.as_dict()["origin"] == "gw-a"


def test_applying_the_same_decisions_twice_changes_nothing(ledger):
    batch = [remote(1), remote(2, "extend", expires=NOW + 7200), remote(3, addr="203.0.113.8")]
    first = ledger.apply_remote(batch, NOW)
    before = [o.as_dict() for o in ledger.offenders(active_only=False)]
    again = ledger.apply_remote(batch, NOW + 5)
    assert first.block == ["203.0.113.7", "203.0.113.8"] and first.changed == 1
    assert again.block == [] and again.release == [] and again.duplicate == 3
    assert [o.as_dict() for o in ledger.offenders(active_only=False)] == before


def test_a_late_older_unban_does_not_undo_a_newer_ban(ledger):
    ledger.apply_remote([remote(2, ts=NOW + 10, origin="gw-b")], NOW + 10)
    out = ledger.apply_remote([remote(1, "unban", ts=NOW, origin="gw-c")], NOW + 11)
    assert out.stale == 1 and out.release == []
    assert ledger.get("203.0.113.7").active


def test_a_late_older_ban_does_not_revive_a_newer_unban(ledger):
    ledger.ban("203.0.113.7", NOW, expires=NOW + 3600, reason="here")
    ledger.unban(["203.0.113.7"], NOW + 20)  # local, newer
    out = ledger.apply_remote([remote(1, ts=NOW + 10)], NOW + 21)
    assert out.stale == 1 and out.block == []
    assert not ledger.get("203.0.113.7").active


def test_a_remote_ban_only_lengthens_and_permanent_wins(ledger):
    ledger.ban("203.0.113.7", NOW, expires=NOW + 7200, reason="here", manual=False)
    ledger.apply_remote([remote(1, ts=NOW + 1, expires=NOW + 60)], NOW + 1)
    assert ledger.get("203.0.113.7").expires == NOW + 7200
    ledger.apply_remote([remote(2, ts=NOW + 2, expires=None, manual=True)], NOW + 2)
    o = ledger.get("203.0.113.7")
    assert o.expires is None and o.manual
    ledger.apply_remote([remote(3, ts=NOW + 3, expires=NOW + 99)], NOW + 3)
    assert ledger.get("203.0.113.7").expires is None


@given(st.permutations(range(4)))
def test_outcome_does_not_depend_on_arrival_order(order):
    """ban(t1), extend(t2), unban(t3), ban(t4) from several gateways, in any order."""
    decisions = [
        remote(1, ts=NOW + 1, expires=NOW + 100, origin="gw-a"),
        remote(1, "extend", ts=NOW + 2, expires=NOW + 200, origin="gw-b"),
        remote(2, "unban", ts=NOW + 3, expires=None, origin="gw-a"),
        remote(1, ts=NOW + 4, expires=NOW + 400, origin="gw-c"),
    ]
    with Ledger.open(":memory:") as led:
        for i in order:
            led.apply_remote([decisions[i]], NOW + 5)
        o = led.get("203.0.113.7")
        # The newest decision (the ban at t4) always stands.
        assert o.active and o.expires is not None and o.expires >= NOW + 400


def test_a_burst_reports_each_address_final_state(ledger):
    ledger.ban("203.0.113.7", NOW, expires=None, reason="here")
    burst = [
        remote(1, "unban", ts=NOW + 1, expires=None),
        remote(2, ts=NOW + 2),
        remote(3, addr="203.0.113.8", ts=NOW + 1),
        remote(4, "unban", addr="203.0.113.8", ts=NOW + 2, expires=None),
    ]
    out = ledger.apply_remote(burst, NOW + 3)
    assert out.block == ["203.0.113.7"] and out.release == ["203.0.113.8"]
    assert ledger.get("203.0.113.7").active and not ledger.get("203.0.113.8").active


def test_remote_bans_do_not_engage_the_local_spoof_brake(ledger):
    ledger.apply_remote([remote(i, addr=f"203.0.113.{i}") for i in range(1, 50)], NOW)
    record(ledger, [Violation("198.51.100.9")], NOW, policy(), Low())
    assert ledger.bans_started_since(NOW - 10) == [NOW]


def test_prune_forgets_old_decisions(ledger):
    ledger.ban("203.0.113.7", NOW, expires=NOW + 1, reason=None)
    later = NOW + 100 * 86400
    counts = ledger.prune(later, retention=86400, recidive_window=86400)
    assert counts["decisions"] == 1 and ledger.local_decisions(0) == []


def test_migration_from_v2_keeps_offenders_and_adds_origin(tmp_path):
    from banpipe.ledger import MIGRATIONS

    path = str(tmp_path / "l.sqlite3")
    with Ledger.open(path, migrations=MIGRATIONS[:2]) as old:  # a v2 ledger, as v2 wrote it
        old.db.execute(
            "INSERT INTO offenders (addr, first_seen, last_seen, active, reason) "
            "VALUES ('203.0.113.7', 1, 1, 1, 'kept')"
        )
    with Ledger.open(path) as new:
        o = new.get("203.0.113.7")
        assert o.active and o.reason == "kept" and o.origin is None
        assert new.version == len(MIGRATIONS)


# -- the applier: judged, applied in one transaction, one firewall call -------------


def make_applier(ledger, protection=OPEN, accept=("automated", "manual")):
    err = io.StringIO()
    env = SimpleNamespace(
        clock=lambda: NOW, retention=86400.0, report=Reporter("banshare", err),
        protection=lambda: protection,
    )  # fmt: skip
    fw = FakeFirewall()
    return banshare.Applier(env, ledger, fw, "gw-b", fleet.Policy(accept)), fw, err


def test_applier_refuses_reports_and_blocks_the_rest_in_one_call(ledger):
    ours = Protection(networks=["192.168.1.0/24"])
    applier, fw, err = make_applier(ledger, ours)
    bodies = [
        fleet.encode(remote(1, addr="203.0.113.7"), "gw-a"),
        fleet.encode(remote(2, addr="192.168.1.5"), "gw-a"),
        fleet.encode(remote(3, addr="203.0.113.8"), "gw-c"),
        fleet.encode(remote(9, addr="203.0.113.99"), "gw-b"),  # our own, echoed
        b"\xff garbage",
    ]
    places = [f"BANPIPE.gw-x:{i}" for i in range(1, 6)]
    assert applier.apply(list(zip(places, bodies))) == ["203.0.113.7", "203.0.113.8"]
    assert fw.calls == [("block", ("203.0.113.7", "203.0.113.8"))]
    assert err.getvalue().splitlines() == [
        "banshare: 192.168.1.5: ban from gw-a refused: our network 192.168.1.0/24",
        "banshare: BANPIPE.gw-x:5: ignored: not JSON",
    ]
    assert applier.counts["refused"] == 1 and applier.counts["bad"] == 1
    assert ledger.get("192.168.1.5") is None and ledger.get("203.0.113.99") is None


def test_applier_releases_on_remote_unban(ledger):
    applier, fw, _ = make_applier(ledger)
    applier.apply([("s:1", fleet.encode(remote(1), "gw-a"))])
    applier.apply([("s:2", fleet.encode(remote(2, "unban", ts=NOW + 1, expires=None), "gw-a"))])
    assert fw.calls[-1] == ("release", ("203.0.113.7",))
    assert not ledger.get("203.0.113.7").active


# -- banctl shows the origin ----------------------------------------------------------


def test_banctl_list_and_show_name_the_origin_only_in_a_fleet(tmp_path):
    path = str(tmp_path / "l.sqlite3")
    args = ["--config", "/dev/null", "--ledger", path, "--backend", "null"]
    with Ledger.open(path) as led:
        led.ban("203.0.113.8", NOW, expires=None, reason="local one")

    def run(*cmd):
        out = io.StringIO()
        banctl.main([*args, *cmd], stdout=out, stderr=io.StringIO(), clock=lambda: NOW)
        return out.getvalue()

    assert "ORIGIN" not in run("list")
    with Ledger.open(path) as led:
        led.apply_remote([remote(1)], NOW)
    listing = run("list").splitlines()
    assert listing[0].split()[:6] == ["ADDRESS", "EXPIRES", "VIOL", "BANS", "KIND", "ORIGIN"]
    assert any("203.0.113.7" in line and "gw-a" in line for line in listing)
    assert any("203.0.113.8" in line and "local" in line for line in listing)
    assert "banned (auto, from gw-a)" in run("show", "203.0.113.7")


# -- configuration and command line ---------------------------------------------------


def test_fleet_config_is_validated_with_file_and_line():
    cfg = parse_config('[fleet]\nservers = ["nats://10.0.0.1:4222"]\naccept = ["manual"]\n')
    assert cfg.fleet.servers == ("nats://10.0.0.1:4222",) and cfg.fleet.accept == ("manual",)
    assert cfg.fleet.stream == "BANPIPE" and cfg.fleet.name == ""
    for bad, what in [
        ('servers = ["http://x"]', "servers"),
        ('name = "gw.a"', "name"),
        ('accept = ["all"]', "accept"),
        ("replicas = 7", "replicas"),
    ]:
        with pytest.raises(ConfigError, match=rf"x.toml:2: \[fleet\] {what}"):
            parse_config(f"[fleet]\n{bad}\n", "x.toml")


def test_banshare_without_servers_is_a_config_error(tmp_path):
    cfg = tmp_path / "b.toml"
    cfg.write_text("")
    err = io.StringIO()
    assert banshare.main(["--config", str(cfg)], stderr=err) == 78
    assert err.getvalue() == f"banshare: {cfg}: [fleet] servers: none configured\n"


def test_banshare_says_how_to_install_nats_py(tmp_path, tool_env):
    cfg = tmp_path / "b.toml"
    cfg.write_text('[fleet]\nservers = ["nats://192.0.2.1:4222"]\n')
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "nats.py").write_text("raise ImportError('hidden for the test')\n")
    env = dict(tool_env, PYTHONPATH=f"{hide}:{tool_env['PYTHONPATH']}")
    proc = subprocess.run([sys.executable, str(BIN / "banshare"), "--config", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert proc.returncode == 69
    assert "pip install 'banpipe[fleet]'" in proc.stderr


def test_no_server_is_an_outage_reported_once_and_sigterm_still_stops(tmp_path, tool_env):
    import signal
    import socket
    import time

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "b.toml"
    cfg.write_text(
        f'[banctl]\nledger = "{tmp_path}/l.sqlite3"\n[firewall]\nbackend = "null"\n'
        f'[network]\nwan_state = ""\n[fleet]\nservers = ["nats://127.0.0.1:{port}"]\n'
    )
    err = tmp_path / "err"
    with open(err, "w") as stream:
        proc = subprocess.Popen([sys.executable, str(BIN / "banshare"), "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=stream, env=tool_env)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while "unreachable" not in err.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2.5)  # a few more attempts: still one line
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
    lines = err.read_text().splitlines()
    assert sum("unreachable" in line for line in lines) == 1, lines
    assert any(line.startswith("banshare: nats: unreachable (") for line in lines), lines
    assert lines[-1].startswith("banshare: stopped: 0 published"), lines


def test_banshare_version():
    out = io.StringIO()
    assert banshare.main(["--version"], stdout=out) == 0
    assert out.getvalue().startswith("banshare (banpipe) ")
