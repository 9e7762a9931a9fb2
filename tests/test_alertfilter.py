"""alertfilter: main() with injected streams, and real processes for reload and signals."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from banpipe import config as configmod
from banpipe.alertfilter import main
from test_rules import alerts as alert_strategy
from test_rules import configs, protected_by_oracle
from toolpaths import BIN

WAN = "198.51.100.8"


def make_config(tmp_path, body="", *, name="banpipe.toml", wan_state=None):
    """A config in tmp_path; [network]/[filter] defaults unless ``body`` sets them."""
    wan_state = wan_state or tmp_path / "wan.json"
    text = (
        "[network]\n"
        f'wan = ["{WAN}"]\n'
        f'wan_state = "{wan_state}"\n'
        'networks = ["192.168.1.0/24"]\n'
        "[filter]\n" + body
    )
    path = tmp_path / name
    path.write_text(text)
    return path


def alert(**over):
    a = {
        "v": 1,
        "ts": "2026-11-28T10:00:00",
        "gid": 1,
        "sid": 2003,
        "rev": 8,
        "msg": "MS-SQL Worm propagation attempt",
        "classification": None,
        "priority": 2,
        "proto": "UDP",
        "src": "203.0.113.7",
        "sport": 1234,
        "dst": WAN,
        "dport": 1434,
        "action": None,
        "refs": [],
        "format": "snort2-fast",
    }
    a.update(over)
    return a


def line(obj):
    return (json.dumps(obj) + "\n").encode()


def run(argv, data=b"", stdin=None):
    out, err = io.BytesIO(), io.StringIO()
    rc = main(argv, stdin=stdin if stdin is not None else io.BytesIO(data), stdout=out, stderr=err)
    return rc, out.getvalue().decode(), err.getvalue()


# --- output ------------------------------------------------------------------------------


def test_json_output_is_the_alert_plus_four_keys(tmp_path):
    cfg = make_config(tmp_path, 'whitelist = ["10.0.0.0/8"]\n')
    a = alert()
    a = {**dict(list(a.items())[:5]), "sensor": {"id": 7}, **dict(list(a.items())[5:])}
    a["zz_unknown"] = [1, "two", None]
    skipped = alert(src="10.1.2.3")
    rc, out, err = run(["--config", str(cfg)], line(a) + line(skipped))
    assert rc == 0
    [got] = [json.loads(x) for x in out.splitlines()]
    assert list(got) == [*a, "offender", "victim", "reversed", "reason"]
    assert got == {
        **a,
        "offender": "203.0.113.7",
        "victim": WAN,
        "reversed": False,
        "reason": f"1:2003:8 prio 2 against our WAN address {WAN}",
    }
    assert err == "alertfilter: summary: 2 alerts: 1 ban, 1 whitelisted\n"


def test_json_output_reversed_and_canonical(tmp_path):
    cfg = make_config(tmp_path)
    a = alert(
        msg="SMTP auth failed -- BLOCKED DESTINATION", src="::ffff:192.168.1.5", dst="203.0.113.9"
    )
    rc, out, _ = run(["--config", str(cfg)], line(a))
    got = json.loads(out)
    assert (got["src"], got["offender"], got["victim"], got["reversed"]) == (
        "::ffff:192.168.1.5",
        "203.0.113.9",
        "192.168.1.5",
        True,
    )
    assert got["reason"] == (
        "1:2003:8 prio 2 against our network 192.168.1.0/24 (reversed by 'BLOCKED DESTINATION')"
    )


MIXED = [
    alert(),
    alert(src="10.1.2.3"),
    alert(sid=2925, src="203.0.113.20"),
    alert(priority=3, src="203.0.113.21"),
    alert(src=None, dst=None, msg="(ipv4) IPv4 datagram length > captured length"),
    alert(msg="x BLOCKED DESTINATION", src="192.168.1.5", dst="203.0.113.9", priority=1),
    alert(dst="8.8.8.8"),
    alert(src="127.0.0.1"),
    alert(src=WAN, dst="192.168.1.7"),
]
MIXED_BODY = 'whitelist = ["10.0.0.0/8"]\nignore = ["1:2925"]\npriorities = [1, 2]\n'
BAN1 = f'BAN 203.0.113.7  1:2003:8 "MS-SQL Worm propagation attempt" prio 2 -> {WAN}'
BAN2 = 'BAN 203.0.113.9  1:2003:8 "x BLOCKED DESTINATION" prio 1 -> 192.168.1.5 (reversed)'
SUMMARY = (
    "summary: 9 alerts: 2 ban, 1 ignored, 1 priority, 1 no offender, 1 special address, "
    "1 ours, 1 whitelisted, 1 victim not ours"
)


def test_dry_run_lines(tmp_path):
    cfg = make_config(tmp_path, MIXED_BODY)
    rc, out, err = run(["--config", str(cfg), "--dry-run"], b"".join(map(line, MIXED)))
    assert (rc, err) == (0, "")
    assert out.splitlines() == [BAN1, BAN2, SUMMARY]


def test_explain_lines(tmp_path):
    cfg = make_config(tmp_path, MIXED_BODY)
    rc, out, err = run(["--config", str(cfg), "--explain"], b"".join(map(line, MIXED)))
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        BAN1,
        "skip 10.1.2.3: whitelisted 10.0.0.0/8",
        "skip 203.0.113.20: rule 1:2925 ignored",
        "skip 203.0.113.21: priority 3 not in [1, 2]",
        "skip -: no offender address",
        BAN2,
        "skip 203.0.113.7: victim 8.8.8.8 is not ours (require_ours)",
        "skip 127.0.0.1: loopback",
        f"skip {WAN}: our WAN address {WAN}",
        SUMMARY,
    ]


def test_dry_run_line_without_rev_priority_or_victim(tmp_path):
    cfg = make_config(tmp_path, 'no_priority = "act"\nrequire_ours = false\n')
    a = alert(priority=None, dst=None, msg='say "hi"\n\tnow')
    del a["rev"]
    rc, out, _ = run(["--config", str(cfg), "--dry-run"], line(a))
    assert out.splitlines()[0] == 'BAN 203.0.113.7  1:2003 "say "hi"\\n\\tnow" prio none -> -'


def test_empty_input(tmp_path):
    cfg = make_config(tmp_path)
    assert run(["--config", str(cfg)]) == (0, "", "alertfilter: summary: 0 alerts: nothing\n")
    assert run(["--config", str(cfg), "--dry-run"]) == (0, "summary: 0 alerts: nothing\n", "")


# --- bad input ---------------------------------------------------------------------------


def test_bad_input_lines_are_reported_counted_and_skipped(tmp_path):
    cfg = make_config(tmp_path)
    missing_src = alert()
    del missing_src["src"]
    data = b"".join(
        [
            b"not json\n",
            line(alert()),
            b"\n",  # blank: skipped silently, still counted as a line
            b"[1, 2]\n",
            line({**alert(), "v": 2}),
            line(missing_src),
            line(alert(gid="1")),
            line(alert(priority=2.0)),
            b'{"v":1,"gid":1,"sid":\xff}\n',
            b'{"v":1,"gid":1,"sid"',  # last line without newline
        ]
    )
    rc, out, err = run(["--config", str(cfg)], data)
    assert rc == 0
    assert [json.loads(x)["offender"] for x in out.splitlines()] == ["203.0.113.7"]
    assert err.splitlines() == [
        "alertfilter: <stdin>:1: not JSON",
        "alertfilter: <stdin>:4: not a JSON object",
        "alertfilter: <stdin>:5: unsupported pipe version 2 (expected 1)",
        "alertfilter: <stdin>:6: missing key 'src'",
        "alertfilter: <stdin>:7: 'gid' must be an integer, got a string",
        "alertfilter: <stdin>:8: 'priority' must be an integer or null, got a number",
        "alertfilter: <stdin>:9: not valid UTF-8",
        "alertfilter: <stdin>:10: not JSON",
        "alertfilter: summary: 1 alert: 1 ban; 8 bad input lines",
    ]


def test_line_numbers_survive_chunk_boundaries(tmp_path):
    cfg = make_config(tmp_path)
    good = line(alert())
    n = (1 << 17) // len(good) + 3  # spans several 64 KiB reads
    data = good * n + b"garbage\n" + good
    rc, out, err = run(["--config", str(cfg)], data)
    assert len(out.splitlines()) == n + 1
    assert err.splitlines()[0] == f"alertfilter: <stdin>:{n + 1}: not JSON"


def test_overlong_line(tmp_path):
    cfg = make_config(tmp_path)
    data = b"x" * ((1 << 20) + 5) + b"\n" + line(alert())
    rc, out, err = run(["--config", str(cfg)], data)
    assert err.splitlines()[0] == "alertfilter: <stdin>:1: line longer than 1048576 bytes"
    assert len(out.splitlines()) == 1


def test_input_file_argument_names_the_file(tmp_path):
    cfg = make_config(tmp_path)
    f = tmp_path / "alerts.jsonl"
    f.write_bytes(line(alert()) + b"oops\n")
    rc, out, err = run(["--config", str(cfg), str(f)])
    assert rc == 0 and len(out.splitlines()) == 1
    assert err.splitlines()[0] == f"alertfilter: {f}:2: not JSON"


def test_missing_input_file_is_66(tmp_path):
    cfg = make_config(tmp_path)
    rc, out, err = run(["--config", str(cfg), str(tmp_path / "absent")])
    assert (rc, out, err) == (66, "", f"alertfilter: {tmp_path / 'absent'}: no such file\n")


def test_text_stdin_is_accepted(tmp_path):
    cfg = make_config(tmp_path)
    rc, out, _ = run(["--config", str(cfg)], stdin=io.StringIO(line(alert()).decode()))
    assert json.loads(out)["offender"] == "203.0.113.7"


def test_usage_errors(tmp_path, capsys):
    assert main(["--no-such-option"], stdin=io.BytesIO(), stdout=io.BytesIO()) == 64
    assert "alertfilter: unrecognized arguments: --no-such-option" in capsys.readouterr().err
    out = io.BytesIO()
    assert main(["--help"], stdin=io.BytesIO(), stdout=out) == 0
    assert b"--dry-run" in out.getvalue()


# --- configuration -----------------------------------------------------------------------


def test_config_unknown_key_is_78_with_file_and_line(tmp_path):
    cfg = make_config(tmp_path, "priorites = [1]\n")
    rc, out, err = run(["--config", str(cfg)], line(alert()))
    assert (rc, out) == (78, "")
    assert err == (
        f"alertfilter: {cfg}:6: [filter] unknown key 'priorites' (did you mean 'priorities'?)\n"
    )


def test_config_wrong_type_is_78(tmp_path):
    cfg = make_config(tmp_path, 'require_ours = "yes"\n')
    rc, _, err = run(["--config", str(cfg)])
    assert rc == 78
    assert (
        err == f"alertfilter: {cfg}:6: [filter] require_ours: expected true or false, got 'yes'\n"
    )


def test_explicit_config_missing_is_78(tmp_path):
    rc, _, err = run(["--config", str(tmp_path / "nope.toml")])
    assert (rc, err) == (78, f"alertfilter: {tmp_path / 'nope.toml'}: no such file\n")


def test_empty_reverse_marker_is_78(tmp_path):
    cfg = make_config(tmp_path, 'reverse_markers = [""]\n')
    rc, _, err = run(["--config", str(cfg)])
    assert rc == 78
    assert err == (
        f"alertfilter: {cfg}: [filter] an empty reverse marker would reverse every alert\n"
    )


def test_missing_default_config_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(configmod, "DEFAULT_PATH", tmp_path / "absent" / "banpipe.toml")
    rc, out, err = run([], line(alert()))
    # Defaults: require_ours with nothing declared ours, so nothing is banned.
    assert (rc, out) == (0, "")
    assert err.endswith("alertfilter: summary: 1 alert: 1 victim not ours\n")
    assert "no address is ours" in err.splitlines()[0]  # and what to set


def test_whitelist_file_bad_lines_reported_rest_kept(tmp_path):
    wl = tmp_path / "whitelist.txt"
    wl.write_text("# ours\n203.0.113.0/28\nnot-a-net\n\n198.18.0.0/15  # lab\n")
    cfg = make_config(tmp_path, f'whitelist_files = ["{wl}"]\n')
    data = (
        line(alert(src="203.0.113.7"))
        + line(alert(src="198.19.1.1"))
        + line(alert(src="203.0.113.99"))
    )
    rc, out, err = run(["--config", str(cfg), "--explain"], data)
    assert rc == 0
    assert err == f"alertfilter: {wl}:3: not an IP address or network: 'not-a-net'\n"
    assert out.splitlines()[:3] == [
        "skip 203.0.113.7: whitelisted 203.0.113.0/28",
        "skip 198.19.1.1: whitelisted 198.18.0.0/15",
        f'BAN 203.0.113.99  1:2003:8 "MS-SQL Worm propagation attempt" prio 2 -> {WAN}',
    ]


def test_missing_whitelist_file_at_start_is_78(tmp_path):
    wl = tmp_path / "absent.txt"
    cfg = make_config(tmp_path, f'whitelist_files = ["{wl}"]\n')
    rc, _, err = run(["--config", str(cfg)])
    assert rc == 78
    assert err == f"alertfilter: {wl}: cannot read whitelist file: No such file or directory\n"


def test_wan_state_addresses_are_ours(tmp_path):
    (tmp_path / "wan.json").write_text('{"v": 1, "type": "wan", "addresses": ["198.51.100.50"]}')
    cfg = make_config(tmp_path)
    data = line(alert(dst="198.51.100.50")) + line(alert(src="198.51.100.50", dst=WAN))
    rc, out, _ = run(["--config", str(cfg), "--explain"], data)
    assert out.splitlines()[:2] == [
        'BAN 203.0.113.7  1:2003:8 "MS-SQL Worm propagation attempt" prio 2 -> 198.51.100.50',
        "skip 198.51.100.50: our WAN address 198.51.100.50",
    ]


def test_malformed_wan_state_at_start_is_78(tmp_path):
    (tmp_path / "wan.json").write_text("{not json")
    cfg = make_config(tmp_path)
    rc, _, err = run(["--config", str(cfg)])
    assert rc == 78
    assert err.startswith(f"alertfilter: {tmp_path / 'wan.json'}: cannot read: ")


# --- real processes: reload, signals, SIGPIPE ----------------------------------------------


# Each wait ends as soon as its line arrives; the limit only ends a failing test. The
# first judge() includes the interpreter's start (0.3 s of CPU): 10 s ran out on a
# loaded machine, where tests run at nice 19 and idle I/O priority.
WAIT = 60.0


class Tool:
    """bin/alertfilter as a process; stdout/stderr lines collected by threads."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen(
            [sys.executable, str(BIN / "alertfilter"), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.err_seen: list[str] = []
        for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    @staticmethod
    def _pump(stream, q):
        for raw in stream:
            q.put(raw.decode().rstrip("\n"))
        q.put(None)

    def send(self, obj):
        self.proc.stdin.write(line(obj))
        self.proc.stdin.flush()

    def judge(self, obj, timeout=WAIT):
        """Send one alert and return its --explain line."""
        self.send(obj)
        return self.out.get(timeout=timeout)

    def wait_err(self, text, timeout=WAIT):
        deadline = time.monotonic() + timeout
        for seen in self.err_seen:
            if text in seen:
                self.err_seen.remove(seen)
                return seen
        while True:
            got = self.err.get(timeout=max(0.01, deadline - time.monotonic()))
            if got is None:
                raise AssertionError(f"stderr closed before {text!r}; saw {self.err_seen}")
            if text in got:
                return got
            self.err_seen.append(got)

    def finish(self, timeout=WAIT):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=timeout)
        return rc, self.drain(self.out), self.err_seen + self.drain(self.err)

    @staticmethod
    def drain(q):
        lines = []
        while True:
            got = q.get(timeout=WAIT)
            if got is None:
                return lines
            lines.append(got)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def tool(tool_env):
    started = []

    def start(*args):
        t = Tool(args, tool_env)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def replace_file(path, text):
    """Write like an editor or Ansible: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ban(src, victim=WAN, tail=""):
    return f'BAN {src}  1:2003:8 "MS-SQL Worm propagation attempt" prio 2 -> {victim}{tail}'


def test_config_change_applies_to_the_next_line(tmp_path, tool):
    cfg = make_config(tmp_path, "priorities = [1]\n")
    t = tool("--config", cfg, "--explain")
    assert t.judge(alert()) == "skip 203.0.113.7: priority 2 not in [1]"
    replace_file(cfg, cfg.read_text().replace("priorities = [1]", "priorities = [1, 2]"))
    assert t.wait_err("configuration reloaded") == f"alertfilter: {cfg}: configuration reloaded"
    assert t.judge(alert()) == ban("203.0.113.7")
    rc, out, err = t.finish()
    assert rc == 0
    assert out == ["summary: 2 alerts: 1 ban, 1 priority"]


def test_a_change_before_the_watch_exists_is_applied(tmp_path, monkeypatch):
    """alertfilter reads its sources, then watches them: a change in between raised no
    event (wanwatch writing its first state while the pipe starts at boot) and was
    missed until the next one."""
    from banpipe import watch
    from banpipe.statefile import write_json_atomic

    wan = tmp_path / "wan.json"
    cfg = make_config(tmp_path, "priorities = [1]\nrequire_ours = true\n", wan_state=wan)
    real = watch.PathWatcher

    def late_watch(paths):  # the changes land just before the watch is set
        write_json_atomic(wan, {"v": 1, "type": "wan", "addresses": ["198.51.100.77"]})
        replace_file(cfg, cfg.read_text().replace("priorities = [1]", "priorities = [1, 2]"))
        return real(paths)

    monkeypatch.setattr(watch, "PathWatcher", late_watch)
    rc, out, err = run(["--config", str(cfg), "--explain"], line(alert(dst="198.51.100.77")))
    assert rc == 0, err
    assert out.splitlines()[0] == ban("203.0.113.7", victim="198.51.100.77")
    assert f"alertfilter: {cfg}: configuration reloaded" in err.splitlines()


def test_broken_config_is_reported_and_the_old_one_kept(tmp_path, tool):
    cfg = make_config(tmp_path, "priorities = [1]\n")
    good = cfg.read_text()
    t = tool("--config", cfg, "--explain")
    assert t.judge(alert()) == "skip 203.0.113.7: priority 2 not in [1]"
    replace_file(cfg, good.replace("priorities = [1]", "priorites = [1, 2]"))
    assert t.wait_err("keeping the previous configuration") == (
        f"alertfilter: {cfg}:6: [filter] unknown key 'priorites' (did you mean 'priorities'?); "
        "keeping the previous configuration"
    )
    assert t.judge(alert()) == "skip 203.0.113.7: priority 2 not in [1]"
    replace_file(cfg, good.replace("priorities = [1]", 'priorities = [2]\nignore = ["1:2003"]'))
    t.wait_err("configuration reloaded")
    assert t.judge(alert()) == "skip 203.0.113.7: rule 1:2003 ignored"
    rc, _, err = t.finish()
    assert rc == 0


def test_removed_config_keeps_the_previous_one(tmp_path, tool):
    cfg = make_config(tmp_path, "priorities = [1]\n")
    t = tool("--config", cfg, "--explain")
    assert t.judge(alert()) == "skip 203.0.113.7: priority 2 not in [1]"
    cfg.unlink()
    assert t.wait_err("keeping the previous configuration") == (
        f"alertfilter: {cfg}: no such file; keeping the previous configuration"
    )
    assert t.judge(alert()) == "skip 203.0.113.7: priority 2 not in [1]"
    t.finish()


def test_new_config_naming_a_missing_whitelist_file_is_not_applied(tmp_path, tool):
    cfg = make_config(tmp_path, "priorities = [1]\n")
    good = cfg.read_text()
    t = tool("--config", cfg, "--explain")
    assert t.judge(alert()) == "skip 203.0.113.7: priority 2 not in [1]"
    absent = tmp_path / "absent.txt"
    replace_file(cfg, good.replace("priorities = [1]", f'whitelist_files = ["{absent}"]'))
    assert t.wait_err("keeping the previous configuration") == (
        f"alertfilter: {absent}: cannot read whitelist file: No such file or directory; "
        "keeping the previous configuration"
    )
    assert t.judge(alert()) == "skip 203.0.113.7: priority 2 not in [1]"
    t.finish()


def test_whitelist_file_edit_and_removal(tmp_path, tool):
    wl = tmp_path / "whitelist.txt"
    wl.write_text("192.0.2.0/24\n")
    cfg = make_config(tmp_path, f'whitelist_files = ["{wl}"]\n')
    t = tool("--config", cfg, "--explain")
    assert t.judge(alert()) == ban("203.0.113.7")
    with wl.open("a") as f:  # edited in place, not replaced
        f.write("203.0.113.0/24\n")
    t.wait_err(f"{wl}: whitelist reloaded (2 entries)")
    assert t.judge(alert()) == "skip 203.0.113.7: whitelisted 203.0.113.0/24"
    wl.unlink()
    assert t.wait_err("keeping the previous list") == (
        f"alertfilter: {wl}: cannot read whitelist file: No such file or directory; "
        "keeping the previous list"
    )
    assert t.judge(alert()) == "skip 203.0.113.7: whitelisted 203.0.113.0/24"
    rc, _, _ = t.finish()
    assert rc == 0


def test_wan_state_appearing_later_in_a_new_directory(tmp_path, tool):
    state_dir = tmp_path / "run" / "banpipe"
    wan = state_dir / "wan.json"
    cfg = make_config(tmp_path, wan_state=wan)
    t = tool("--config", cfg, "--explain")
    victim = "198.51.100.50"
    assert t.judge(alert(dst=victim)) == (
        f"skip 203.0.113.7: victim {victim} is not ours (require_ours)"
    )
    state_dir.mkdir(parents=True)  # like wanwatch starting after alertfilter
    replace_file(wan, json.dumps({"v": 1, "type": "wan", "addresses": [victim]}))
    t.wait_err(f"WAN addresses now {victim}")
    assert t.judge(alert(dst=victim)) == ban("203.0.113.7", victim)
    assert t.judge(alert(src=victim)) == f"skip {victim}: our WAN address {victim}"
    wan.write_text("{garbage")
    assert t.wait_err("keeping the previous WAN addresses").startswith(
        f"alertfilter: {wan}: cannot read: "
    )
    assert t.judge(alert(src=victim)) == f"skip {victim}: our WAN address {victim}"
    t.finish()


def test_sighup_reloads_what_inotify_cannot_see(tmp_path, tool):
    # The whitelist is a symlink into a directory nobody watches: only SIGHUP notices
    # that the file behind it changed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = elsewhere / "real.txt"
    real.write_text("192.0.2.0/24\n")
    link = tmp_path / "whitelist.txt"
    link.symlink_to(real)
    cfg = make_config(tmp_path, f'whitelist_files = ["{link}"]\n')
    t = tool("--config", cfg, "--explain")
    assert t.judge(alert()) == ban("203.0.113.7")
    replace_file(real, "203.0.113.0/24\n")
    assert t.judge(alert()) == ban("203.0.113.7")  # not noticed: nothing watched changed
    t.proc.send_signal(signal.SIGHUP)
    t.wait_err("SIGHUP: reloading")
    t.wait_err(f"{link}: whitelist reloaded (1 entry)")
    assert t.judge(alert()) == "skip 203.0.113.7: whitelisted 203.0.113.0/24"
    rc, _, _ = t.finish()
    assert rc == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_flushes_and_prints_summary(tmp_path, tool, sig):
    cfg = make_config(tmp_path)
    t = tool("--config", cfg)
    t.send(alert())
    first = json.loads(t.out.get(timeout=WAIT))  # flushed while waiting for more input
    assert first["offender"] == "203.0.113.7"
    t.proc.send_signal(sig)
    rc = t.proc.wait(timeout=WAIT)
    assert rc == 0
    assert t.drain(t.out) == []
    assert t.drain(t.err) == ["alertfilter: summary: 1 alert: 1 ban"]


def test_sigterm_does_not_judge_half_a_line(tmp_path, tool):
    cfg = make_config(tmp_path)
    t = tool("--config", cfg, "--explain")
    assert t.judge(alert()) == ban("203.0.113.7")
    t.proc.stdin.write(line(alert())[:40])  # the writer is mid-line
    t.proc.stdin.flush()
    time.sleep(0.2)  # let alertfilter read the fragment (no effect expected either way)
    t.proc.send_signal(signal.SIGTERM)
    assert t.proc.wait(timeout=WAIT) == 0
    assert t.drain(t.out) == ["summary: 1 alert: 1 ban"]
    assert t.drain(t.err) == []


def test_sigpipe_is_quiet(tmp_path, tool_env):
    cfg = make_config(tmp_path)
    data = line(alert()) * 200000
    p = subprocess.Popen(
        [sys.executable, str(BIN / "alertfilter"), "--config", str(cfg), "--dry-run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tool_env,
    )
    writer = threading.Thread(target=lambda: _write_quietly(p.stdin, data), daemon=True)
    writer.start()
    assert p.stdout.readline().startswith(b"BAN 203.0.113.7")
    p.stdout.close()  # like `| head -1`
    rc = p.wait(timeout=30)
    assert rc in (0, -signal.SIGPIPE)
    assert p.stderr.read() == b""


def _write_quietly(stream, data):
    try:
        stream.write(data)
        stream.close()
    except BrokenPipeError:
        pass


# --- the property, end to end: nothing protected ever comes out of main() ------------------


def _toml_list(items):
    return "[" + ", ".join(json.dumps(x) for x in items) + "]"


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(config=configs(), batch=st.lists(alert_strategy, min_size=1, max_size=20))
def test_main_never_emits_a_protected_offender(tmp_path, config, batch):
    net, flt = config.network, config.filter
    cfg = tmp_path / "prop.toml"
    cfg.write_text(
        "[network]\n"
        f"wan = {_toml_list(net.wan)}\n"
        f'wan_state = "{tmp_path / "absent-wan.json"}"\n'
        f"networks = {_toml_list(net.networks)}\n"
        f"gateways = {_toml_list(net.gateways)}\n"
        "[filter]\n"
        f"whitelist = {_toml_list(flt.whitelist)}\n"
        f"ignore = {_toml_list(flt.ignore)}\n"
        f"priorities = {_toml_list(flt.priorities)}\n"
        f'no_priority = "{flt.no_priority}"\n'
        f"reverse_markers = {_toml_list(flt.reverse_markers)}\n"
        f"require_ours = {'true' if flt.require_ours else 'false'}\n"
    )
    rc, out, err = run(["--config", str(cfg)], b"".join(map(line, batch)))
    assert rc == 0, err
    # not splitlines(): U+2028 in a msg is no line end in JSON lines
    bans = [json.loads(x) for x in out.split("\n") if x]
    event(f"bans emitted: {'some' if bans else 'none'}")
    for ban in bans:
        assert not protected_by_oracle(ban["offender"], config, (), ()), ban
        raw = ban["dst"] if ban["reversed"] else ban["src"]
        assert not protected_by_oracle(raw, config, (), ()), ban


def test_without_anything_of_ours_the_summary_says_what_to_set(tmp_path):
    cfg = tmp_path / "empty.toml"
    cfg.write_text("")
    out, err = io.BytesIO(), io.StringIO()
    data = (json.dumps(alert(dst="203.0.113.50")) + "\n").encode()
    assert main(["--config", str(cfg)], stdin=io.BytesIO(data), stdout=out, stderr=err) == 0
    lines = err.getvalue().splitlines()
    assert lines[0] == (
        f"alertfilter: {cfg}: no address is ours, so 1 alert was skipped as 'victim not "
        "ours': set [network] wan, networks or gateways (or run wanwatch), or [filter] "
        "require_ours = false"
    )
    assert lines[1].startswith("alertfilter: summary: 1 alert: 1 victim not ours")


def test_no_hint_when_something_is_ours(tmp_path):
    out, err = io.BytesIO(), io.StringIO()
    data = (json.dumps(alert(dst="203.0.113.50")) + "\n").encode()
    cfg = make_config(tmp_path)
    assert main(["--config", str(cfg)], stdin=io.BytesIO(data), stdout=out, stderr=err) == 0
    assert "no address is ours" not in err.getvalue()
