"""banctl status, the Prometheus textfiles, --json results and journal priorities.

The textfiles are parsed with prometheus_client's own text parser (a test-only
dependency) and their values compared with the ledger.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from banpipe import alertfilter, banctl, cli, fasttail, metrics, monitor, offload
from banpipe.config import PagesConfig, load_config
from banpipe.ledger import Ledger
from banpipe.monitor import Monitor
from banpipe.reconcile import Drift
from banpipe.record import SpoofBrake


class Low:
    def uniform(self, a, b):
        return a


def line(offender: str, sid: int = 2003, msg: str = "worm") -> str:
    return json.dumps(
        {
            "v": 1,
            "ts": "2026-11-28T10:00:00",
            "gid": 1,
            "sid": sid,
            "rev": 1,
            "msg": msg,
            "priority": 2,
            "src": offender,
            "dst": "198.51.100.2",
            "offender": offender,
            "victim": "198.51.100.2",
            "reversed": False,
            "reason": "test",
        }  # fmt: skip
    )


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "banpipe.toml"
    path.write_text(
        "[network]\n"
        'wan = ["198.51.100.2"]\n'
        f'wan_state = "{tmp_path / "wan.json"}"\n'
        '[ban]\nspoof_max = 2\nspoof_window = "1h"\n'
        '[firewall]\nbackend = "null"\n'
        f'[banctl]\nledger = "{tmp_path / "ledger.sqlite3"}"\n'
        f'[metrics]\ntextfile = "{tmp_path / "prom" / "banpipe.prom"}"\n'
    )
    (tmp_path / "prom").mkdir()
    return path


def run(cfg, *argv, stdin="", clock=None):
    out, err = io.StringIO(), io.StringIO()
    rc = banctl.main(
        ["--config", str(cfg), *argv], stdin=io.StringIO(stdin), stdout=out, stderr=err,
        clock=clock, rng=Low(),
    )  # fmt: skip
    return rc, out.getvalue(), err.getvalue()


def samples(path) -> dict[tuple, float]:
    """{(name, sorted labels): value} from a textfile, through prometheus_client."""
    found = {}
    with open(path) as f:
        text = f.read()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_apply_writes_a_textfile_that_matches_the_ledger(cfg, tmp_path):
    feed = [line("203.0.113.7"), line("203.0.113.7", 2004), line("2001:db8:bad::7"),
            line("203.0.113.8"), "garbage", line("198.51.100.2")]  # fmt: skip
    rc, _, err = run(cfg, "apply", stdin="\n".join(feed) + "\n")
    assert rc == 0, err
    m = samples(tmp_path / "prom" / "banpipe.prom")
    with Ledger.open(str(tmp_path / "ledger.sqlite3")) as led:
        active = led.active_addresses()
        assert m[("banpipe_ledger_offenders", ())] == len(led.offenders(active_only=False))
    assert active == {"203.0.113.7", "2001:db8:bad::7"}  # the brake held the third
    assert m[("banpipe_active_bans", (("family", "v4"), ("kind", "automated")))] == 1
    assert m[("banpipe_active_bans", (("family", "v6"), ("kind", "automated")))] == 1
    assert m[("banpipe_active_bans", (("family", "v4"), ("kind", "manual")))] == 0
    assert m[("banpipe_bans_added_total", ())] == 2
    assert m[("banpipe_bans_extended_total", ())] == 1
    assert m[("banpipe_bans_held_total", ())] == 1
    assert m[("banpipe_spoof_brake_trips_total", ())] == 1
    assert m[("banpipe_banctl_lines_total", ())] == 6
    assert m[("banpipe_banctl_lines_rejected_total", (("reason", "bad"),))] == 1
    assert m[("banpipe_banctl_lines_rejected_total", (("reason", "refused"),))] == 1
    assert m[("banpipe_firewall_operations_total", (("op", "block"),))] >= 1
    assert m[("banpipe_firewall_errors_total", (("op", "block"),))] == 0
    assert m[("banpipe_enforcement_ratio", ())] == 1.0
    assert m[("banpipe_ledger_size_bytes", ())] > 0
    # prometheus_client reads counters as `name_total`; every counter is named so
    text = (tmp_path / "prom" / "banpipe.prom").read_text()
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("banpipe_")
        assert (fam.type == "counter") == any(s.name.endswith("_total") for s in fam.samples)


def test_enforcement_gauge_falls_when_the_firewall_lacks_bans(cfg, tmp_path):
    led = Ledger.open(str(tmp_path / "l.sqlite3"))
    for a in ("203.0.113.7", "203.0.113.8", "203.0.113.9"):
        led.ban(a, 1.0, expires=None, reason="x")
    env = SimpleNamespace(
        report=cli.Reporter("t", io.StringIO()), clock=lambda: 5.0, config=load_config(str(cfg))
    )
    mon = Monitor(env, led, Counter(), SpoofBrake(0, 1))
    mon.checked(Drift(missing={"203.0.113.9"}, orphans={"192.0.2.1"}))
    check = mon.snapshot()["last_check"]
    assert check["enforcement"] == 2 / 4  # 2 of 3 present; 1 entry the ledger lacks
    assert (check["ledger_bans"], check["firewall_entries"]) == (3, 3)
    assert mon.snapshot()["drift_repairs"] == 1
    mon.checked(Drift())
    assert mon.snapshot()["last_check"]["enforcement"] == 1.0


def test_alertfilter_and_fasttail_write_their_own_textfiles(cfg, tmp_path):
    alert = tmp_path / "alert"
    alert.write_text(
        "11/28-10:00:01.000001  [**] [1:2003:8] worm [**] [Priority: 2] {UDP} "
        "203.0.113.7:1 -> 198.51.100.2:2\nnot an alert\n"
    )
    ft_out = io.BytesIO()
    prom = tmp_path / "prom"
    rc = fasttail.main(
        ["--once", "--from-start", "--metrics", str(prom / "banpipe-fasttail.prom"), str(alert)],
        stdout=ft_out, stderr=io.StringIO(),
    )  # fmt: skip
    assert rc == 0
    m = samples(prom / "banpipe-fasttail.prom")
    assert m[("banpipe_fasttail_alerts_read_total", ())] == 1
    assert m[("banpipe_fasttail_parse_errors_total", (("reason", "not an alert"),))] == 1
    out, err = io.BytesIO(), io.StringIO()
    data = ft_out.getvalue() + b'{"v":1}\n' + line("127.0.0.1").encode() + b"\n"
    rc = alertfilter.main(["--config", str(cfg), "--json"], io.BytesIO(data), out, err)
    assert rc == 0
    summary = json.loads(err.getvalue().splitlines()[-1])
    assert summary["alerts"] == 2 and summary["ban"] == 1 and summary["bad_lines"] == 1
    assert summary["skipped"]["special address"] == 1 and set(summary) == {
        "alerts", "ban", "skipped", "bad_lines"}  # fmt: skip
    m = samples(metrics.sibling(str(prom / "banpipe.prom"), "alertfilter"))
    assert m[("banpipe_alertfilter_alerts_passed_total", ())] == 1
    assert m[("banpipe_alertfilter_alerts_skipped_total", (("reason", "special address"),))] == 1
    assert m[("banpipe_alertfilter_bad_lines_total", ())] == 1


def test_textfile_escapes_label_values_and_is_replaced_atomically(tmp_path):
    f = metrics.Family("banpipe_x_total", "counter", "help\nwith newline")
    f.add(3, reason='a "quoted" \\ value\n')
    path = tmp_path / "x.prom"
    metrics.write_textfile(str(path), [f])
    (fam,) = text_string_to_metric_families(path.read_text())
    assert fam.samples[0].labels == {"reason": 'a "quoted" \\ value\n'}
    assert os.listdir(tmp_path) == ["x.prom"]


def test_status_json_keys_and_values(cfg, tmp_path):
    run(cfg, "apply", stdin=line("203.0.113.7") + "\n" + line("2001:db8:bad::7") + "\n")
    assert run(cfg, "ban", "192.0.2.9", "--reason", "by hand")[0] == 0
    rc, out, err = run(cfg, "status", "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert list(s) == sorted(s)
    assert set(s) == {"v", "daemon", "backend", "ledger", "active", "last_hour", "last_day",
                      "last_alert", "spoof_brake", "last_drift_repair", "firewall"}  # fmt: skip
    assert s["daemon"] == {"running": False, "pid": None, "started": None, "updated": None}
    assert s["backend"] == "null"
    assert s["active"] == {"total": 3, "v4": {"automated": 1, "manual": 1},
                           "v6": {"automated": 1, "manual": 0}}  # fmt: skip
    assert s["last_hour"]["added"] == 3 and s["last_day"]["lifted"] == 0
    assert s["spoof_brake"]["limit"] == 2 and s["spoof_brake"]["recent_new_bans"] == 2
    assert s["last_alert"] is not None
    assert s["ledger"]["offenders"] == 3 and s["ledger"]["bytes"] > 0
    rc, text, _ = run(cfg, "status")
    assert "daemon:      not running" in text and "active bans: 3" in text


def test_json_results_of_admin_commands(cfg):
    t = [1000.0]
    clock = lambda: t[0]  # noqa: E731
    rc, out, _ = run(cfg, "ban", "203.0.113.7", "--for", "1m", "--json", clock=clock)
    assert json.loads(out) == {"addr": "203.0.113.7", "result": "banned", "expires": 1060.0,
                               "manual": True}  # fmt: skip
    rc, out, _ = run(cfg, "pin", "203.0.113.7", "--json", clock=clock)
    assert json.loads(out)["result"] == "pinned"
    rc, out, _ = run(cfg, "check", "--json", clock=clock)
    check = json.loads(out)
    assert set(check) == {"active", "consistent", "missing", "orphans", "duplicates",
                          "problems", "repaired"}  # fmt: skip
    assert rc == 1 and check["missing"] == ["203.0.113.7"]  # null backend lists nothing
    rc, out, _ = run(cfg, "unban", "203.0.113.7", "--json", clock=clock)
    assert json.loads(out) == {"addr": "203.0.113.7", "result": "unbanned"}
    rc, out, _ = run(cfg, "unban", "203.0.113.7", "--json", clock=clock)
    assert json.loads(out)["result"] == "not_banned"
    run(cfg, "ban", "203.0.113.8", "--for", "1s", clock=clock)
    t[0] += 5
    rc, out, _ = run(cfg, "expire", "--json", clock=clock)
    got = json.loads(out)
    assert got["expired"] == ["203.0.113.8"] and set(got["pruned"]) >= {"violations"}


# -- journal priorities ---------------------------------------------------------------


def test_reporter_prefixes_severities_only_on_the_journal_stream(tmp_path, monkeypatch):
    path = tmp_path / "stderr"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        rep = cli.Reporter("banctl", stream)
        rep.say(None, "banned 203.0.113.7")
        rep.say(None, "SPOOF BRAKE: ...", level=cli.WARNING)
        rep.error("firewall", "iptables failed", "firewall")
        rep.error("<stdin>:3", "not JSON", "bad")
        cli.run_tool("banctl", lambda: (_ for _ in ()).throw(cli.ToolError("x", 73)),
                     debug=False, stderr=stream)  # fmt: skip
    assert path.read_text().splitlines() == [
        "<6>banctl: banned 203.0.113.7",
        "<4>banctl: SPOOF BRAKE: ...",
        "<3>banctl: firewall: iptables failed",
        "<4>banctl: <stdin>:3: not JSON",
        "<3>banctl: x",
    ]
    # another file (a redirect by the admin): plain lines
    with open(tmp_path / "other", "w") as other:
        cli.Reporter("banctl", other).say(None, "plain")
    assert (tmp_path / "other").read_text() == "banctl: plain\n"
    monkeypatch.delenv("JOURNAL_STREAM")
    with open(path, "w") as stream:
        cli.Reporter("banctl", stream).say(None, "plain")
    assert path.read_text() == "banctl: plain\n"


def test_daemon_lines_carry_their_severity(cfg, monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli, "stream_is_journal", lambda stream, environ=None: True)
    feed = "\n".join(line(f"203.0.113.{i}") for i in range(1, 5)) + "\n"
    banctl.main(["--config", str(cfg), "apply"], stdin=io.StringIO(feed), stdout=out,
                stderr=err, rng=Low())  # fmt: skip
    lines = err.getvalue().splitlines()
    assert any(x.startswith("<4>banctl: SPOOF BRAKE") for x in lines)
    assert any(x.startswith("<6>banctl: 203.0.113.1: banned until") for x in lines)
    assert any(x.startswith("<5>banctl: started") for x in lines)


def test_readme_status_example_has_the_real_lines(cfg):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("$ banctl status\n", 1)[1].split("```", 1)[0].splitlines()
    run(cfg, "apply", stdin=line("203.0.113.7") + "\n")
    real = run(cfg, "status")[1].splitlines()
    assert [x[:13] for x in example] == [x[:13] for x in real]


def test_a_status_look_as_apply_starts_leaves_apply_its_lock(cfg, tmp_path, monkeypatch):
    """``banctl status`` holds a shared lock on the daemon lock file while it looks: a
    daemon starting at that moment gave up its lock for good and was "not running"."""
    led = Ledger.open(str(tmp_path / "l.sqlite3"))
    env = SimpleNamespace(
        report=cli.Reporter("t", io.StringIO()), clock=lambda: 5.0, config=load_config(str(cfg))
    )
    path = monitor.lock_path(led.path)
    look = [os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)]
    fcntl.flock(look[0], fcntl.LOCK_SH)  # status is looking

    def look_ends():  # while the start waits
        if look:
            os.close(look.pop())

    monkeypatch.setattr(monitor, "_lock_pause", look_ends)
    mon = Monitor(env, led, Counter(), SpoofBrake(0, 1))
    mon.started("null", Drift())
    assert look == []  # the start did meet the look
    assert monitor.daemon_running(led.path)
    mon.stopped()
    assert not monitor.daemon_running(led.path)
    # Another apply's lock stays: the start gives up (after DAEMON_LOCK_WAIT).
    other = os.open(path, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    monkeypatch.setattr(monitor, "DAEMON_LOCK_WAIT", 0.0)
    second = Monitor(env, led, Counter(), SpoofBrake(0, 1))
    second.started("null", Drift())
    assert second._lock_fd is None and monitor.daemon_running(led.path)
    os.close(other)
    assert not monitor.daemon_running(led.path)
    led.close()


def test_slow_pages_are_written_less_often(cfg, tmp_path, monkeypatch):
    t = [0.0]
    calls = []

    class TwoSecondRun(offload.Child):
        """A page run's child that ends 2 s after it started."""

        def start(self, job):
            if job["kind"] == "pages":
                calls.append(t[0])
            self.proc = object()
            return True

        def fileno(self):
            return None

        def poll(self):
            if self.proc is None:
                return None
            self.proc = None
            return offload.Outcome(True, "", 2.0)

    monkeypatch.setattr(offload, "Child", TwoSecondRun)
    env = SimpleNamespace(
        report=cli.Reporter("t", io.StringIO()),
        clock=lambda: 5.0,
        config=replace(load_config(str(cfg)), pages=PagesConfig(str(tmp_path / "p"), 1.0)),
    )
    led = Ledger.open(str(tmp_path / "l.sqlite3"))
    mon = Monitor(env, led, Counter(), SpoofBrake(0, 1), mono=lambda: t[0])
    mon.tick(force=True)
    t[0] = 2.0
    mon.tick()  # the run ended
    mon.changed()
    t[0] = 10.0
    mon.tick()
    assert calls == [0.0]  # due at 0 + 10 x 2 s, not at 0 + 1 s
    t[0] = 20.0
    mon.tick()
    assert calls == [0.0, 20.0]
