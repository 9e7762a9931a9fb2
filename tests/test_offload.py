"""Pages and metrics off the ban path: ``banctl apply`` runs them in a child process
(banpipe.offload), so a new ban never waits for a page run; a page run that crashes is
reported and counted, and the daemon goes on; a manual ``banctl report --html DIR``
while a page run writes DIR waits for it, then makes its own run.

``banctl apply`` runs in a thread here on a real pipe (its select() loop, as in
production) with the recording FakeFirewall; the page run's child is the real one,
held at a gate the test opens, or made to crash. Every wait is on the thing itself
(the firewall entry, a file, a line on stderr), bounded by ``WAIT``.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from banpipe import banctl, offload, report
from banpipe.ledger import Ledger
from test_banctl import FakeFirewall

WAIT = 60.0  # seconds: a bound for a slow CI machine, never a sleep
WAN = "198.51.100.2"
NOW = 1_800_000_000.0


def until(what, check, timeout: float = WAIT):
    """Poll ``check()`` until it is true; fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


def alert(offender: str) -> bytes:
    return (
        json.dumps(
            {"v": 1, "ts": "2026-11-28T10:00:00", "gid": 1, "sid": 2003, "rev": 1,
             "msg": "worm", "priority": 2, "src": offender, "dst": WAN,
             "offender": offender, "victim": WAN, "reversed": False, "reason": "test"}
        ).encode()
        + b"\n"
    )  # fmt: skip


@pytest.fixture
def fw(monkeypatch):
    fake = FakeFirewall()
    monkeypatch.setattr(banctl.Env, "firewall", lambda self: fake)
    return fake


def config(tmp_path: Path) -> Path:
    path = tmp_path / "banpipe.toml"
    path.write_text(
        f'[network]\nwan = ["{WAN}"]\nwan_state = "{tmp_path / "wan.json"}"\n'
        '[ban]\nspoof_max = 0\n[firewall]\nbackend = "null"\n'
        f'[banctl]\nledger = "{tmp_path / "ledger.sqlite3"}"\n'
        f'[pages]\ndir = "{tmp_path / "www"}"\ninterval = 1\n'
        f'[metrics]\ntextfile = "{tmp_path / "banpipe.prom"}"\n'
    )
    return path


def child_that(monkeypatch, pages_first: str) -> None:
    """The page run's child runs ``pages_first`` (Python, ``job`` in scope) before the
    real page run; the metrics' child is the real one."""
    code = (
        "import io, json, os, sys, time\n"
        "from banpipe import offload\n"
        "raw = sys.stdin.buffer.read()\n"
        "job = json.loads(raw)\n"
        "if job['kind'] == 'pages':\n"
        + "".join(f"    {line}\n" for line in pages_first.splitlines())
        + "raise SystemExit(offload.main(io.BytesIO(raw)))\n"
    )
    monkeypatch.setattr(offload, "COMMAND", [sys.executable, "-c", code])


class Apply:
    """``banctl apply`` in a thread, reading a real pipe."""

    def __init__(self, cfg: Path) -> None:
        r, self.w = os.pipe()
        self.out, self.err = io.StringIO(), io.StringIO()
        self.rc: int | None = None
        stdin = os.fdopen(r, "rb")

        def run() -> None:
            with stdin:
                self.rc = banctl.main(["--config", str(cfg), "apply"], stdin=stdin,
                                      stdout=self.out, stderr=self.err)  # fmt: skip

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def send(self, data: bytes) -> None:
        os.write(self.w, data)

    def end(self) -> int | None:
        os.close(self.w)
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), self.err.getvalue()
        return self.rc


def children() -> set[int]:
    """This process's child processes (zombies included) as the kernel lists them.

    Read again whole when a thread ends between the listing and its file (CI saw it
    once): its children move to another thread, which may already have been read."""
    while True:
        found: set[int] = set()
        try:
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as f:
                    found.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            continue
        return found


def test_a_new_ban_does_not_wait_for_a_page_run(tmp_path, fw, monkeypatch):
    gate, started = tmp_path / "gate", tmp_path / "page-run-started"
    child_that(
        monkeypatch,
        f"open({str(started)!r}, 'a').close()\n"
        f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.01)",
    )
    before = children()
    apply = Apply(config(tmp_path))
    until("the first page run to start", started.exists)
    apply.send(alert("203.0.113.7"))
    until("the ban in the firewall", lambda: "203.0.113.7" in fw.entries)
    # the page run is still held at its gate: the ban did not wait for it
    assert not gate.exists() and not (tmp_path / "www" / "index.html").exists()
    with Ledger.open(str(tmp_path / "ledger.sqlite3")) as led:
        assert led.active_addresses() == {"203.0.113.7"}
    gate.touch()
    index = tmp_path / "www" / "index.html"
    until(
        "pages showing the ban", lambda: index.exists() and "Active bans (1)" in index.read_text()
    )
    assert apply.end() == 0, apply.err.getvalue()
    assert "cannot write" not in apply.err.getvalue()
    assert children() <= before  # every child reaped: no zombie


def test_a_crashed_page_run_is_reported_and_counted_and_bans_go_on(tmp_path, fw, monkeypatch):
    child_that(monkeypatch, "os.kill(os.getpid(), 9)")
    before = children()
    apply = Apply(config(tmp_path))
    www = tmp_path / "www"
    line = f"banctl: {www}: cannot write pages: killed by SIGKILL; retrying"
    until("the crash reported", lambda: line in apply.err.getvalue())
    apply.send(alert("203.0.113.7"))
    until("the first ban", lambda: "203.0.113.7" in fw.entries)
    apply.send(alert("2001:db8:bad::7"))
    until("the second ban", lambda: "2001:db8:bad::7" in fw.entries)
    until("another page run crashed", lambda: page_failures(tmp_path) >= 2)
    assert apply.end() == 0  # pages failing never fails the daemon
    assert apply.err.getvalue().count(line) == 1  # once, until a run succeeds again
    text = (tmp_path / "banpipe.prom").read_text()
    found = {
        (s.name, tuple(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert found[("banpipe_background_failures_total", (("job", "pages"),))] >= 2
    assert found[("banpipe_background_failures_total", (("job", "metrics"),))] == 0
    assert found[("banpipe_background_runs_total", (("job", "metrics"),))] >= 1
    assert children() <= before


def page_failures(tmp_path: Path) -> int:
    """Failed page runs, as the running daemon's runtime file counts them."""
    try:
        snap = json.loads((tmp_path / "ledger.sqlite3.status.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(snap.get("background_failures", {}).get("pages", 0))


# -- a manual run beside apply's -------------------------------------------------------


def small_ledger(path: Path) -> None:
    with Ledger.open(str(path)) as led:
        for i in range(1, 6):
            led.ban(f"203.0.113.{i}", NOW, expires=NOW + 3600, reason="by hand")


def test_manual_report_waits_for_the_running_page_run_then_runs(tmp_path):
    ledger, www, gate = tmp_path / "ledger.sqlite3", tmp_path / "www", tmp_path / "gate"
    small_ledger(ledger)
    cfg = config(tmp_path)
    # another page run on DIR (as apply's child): holds DIR until the gate opens
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys, time\n"
         "from banpipe import report\n"
         "from banpipe.ledger import Ledger\n"
         "real = report._write\n"
         "def held(*a):\n"
         "    print('holding', flush=True)\n"
         f"    while not os.path.exists({str(gate)!r}):\n"
         "        time.sleep(0.01)\n"
         "    return real(*a)\n"
         "report._write = held\n"
         f"report.write_pages(Ledger.open({str(ledger)!r}), {str(www)!r}, {NOW})\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": offload._LIB},
    )  # fmt: skip
    assert holder.stdout.readline() == "holding\n"
    out, err = io.StringIO(), io.StringIO()
    done: list[int] = []
    manual = threading.Thread(
        target=lambda: done.append(
            banctl.main(
                ["--config", str(cfg), "report", "--html", str(www)],
                stdout=out,
                stderr=err,
                clock=lambda: NOW + 60,
            )  # fmt: skip
        )
    )
    manual.start()
    until("report saying it waits", lambda: "waiting for it to end" in err.getvalue())
    assert not done and not (www / "index.html").exists()
    gate.touch()
    manual.join(WAIT)
    assert holder.wait(WAIT) == 0
    assert done == [0], err.getvalue()
    assert err.getvalue() == (
        f"banctl: {www}: another page run (banctl apply's, [pages] dir) is writing here; "
        "waiting for it to end\n"
    )
    # its own run came after the other's: nothing left to write but the index
    assert "0 offender pages and 0 tracker files written, 5 unchanged" in out.getvalue()


def test_a_locked_page_state_is_not_taken_for_a_broken_one(tmp_path):
    ledger, www = tmp_path / "ledger.sqlite3", tmp_path / "www"
    small_ledger(ledger)
    led = Ledger.open(str(ledger))
    assert report.write_pages(led, www, NOW).offender_pages == 5
    state = www / ".banpipe-pages.sqlite3"
    inode = state.stat().st_ino
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a stranger holds it (e.g. the sqlite3 shell)
    led.db.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        report.write_pages(led, www, NOW + 60)
    assert state.stat().st_ino == inode  # not unlinked and made anew
    holder.execute("ROLLBACK")
    holder.close()
    again = report.write_pages(led, www, NOW + 120)  # the same connection: detached
    assert (again.offender_pages, again.unchanged) == (0, 5)  # the state was kept
