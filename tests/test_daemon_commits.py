"""``banctl apply``'s commits in a flood: alerts of offenders met lately wait for the
next commit (daemon.COMMIT_EVERY, FLOOD_RATE); a new offender and the end of input
commit at once, with whatever waits."""

from __future__ import annotations

import io
import os
import threading
import time

from banpipe import banctl, daemon
from test_banctl import _wait_for, alert, cfg, fw, ledger_of, lines  # noqa: F401


def _recorded(cfg, addr):  # noqa: F811
    with ledger_of(cfg) as led:
        sql = "SELECT coalesce(sum(count), 0) FROM violations WHERE addr = ?"
        return led.db.execute(sql, (addr,)).fetchone()[0]


def _apply_driven(cfg, drive, args=None):  # noqa: F811
    """Run ``banctl apply`` here on a pipe that ``drive(write)`` feeds from a thread
    (banctl.main installs signal handlers: it runs in the main thread); its exit code."""
    args = args or cfg("[ban]\nspoof_max = 0\n")
    r, w = os.pipe()

    def feed():
        try:
            drive(lambda *alerts: os.write(w, lines(*alerts).encode()))
        finally:
            os.close(w)

    driver = threading.Thread(target=feed)
    driver.start()
    with open(r, "rb", buffering=0) as stdin:
        rc = banctl.main([*args, "apply"], stdin=stdin, stdout=io.StringIO(), stderr=io.StringIO())
    driver.join(timeout=30)
    return rc


def test_a_known_offenders_alerts_wait_a_new_offender_commits_at_once(cfg, fw, monkeypatch):  # noqa: F811
    monkeypatch.setattr(daemon, "COMMIT_EVERY", 30.0)  # nothing waiting is due by itself
    monkeypatch.setattr(daemon, "FLOOD_RATE", 0.001)  # however few lines: a flood
    seen: dict[str, object] = {}

    def drive(write):
        write(alert("203.0.113.7"))
        seen["first"] = _wait_for(lambda: _recorded(cfg, "203.0.113.7") == 1)
        write(alert("203.0.113.7"), alert("203.0.113.7"))
        time.sleep(1.0)
        seen["waiting"] = _recorded(cfg, "203.0.113.7")
        write(alert("203.0.113.8"))  # new: at once, with the rest
        seen["new"] = _wait_for(lambda: _recorded(cfg, "203.0.113.8") == 1)
        seen["with it"] = _recorded(cfg, "203.0.113.7")
        write(alert("203.0.113.8"))  # waits until the end

    assert _apply_driven(cfg, drive) == 0
    assert seen == {"first": True, "waiting": 1, "new": True, "with it": 3}
    assert _recorded(cfg, "203.0.113.8") == 2


def test_below_the_flood_rate_a_known_offenders_alert_commits_at_once(cfg, fw, monkeypatch):  # noqa: F811
    monkeypatch.setattr(daemon, "COMMIT_EVERY", 30.0)
    seen: dict[int, bool] = {}

    def drive(write):
        for n in (1, 2, 3):  # one alert a while: no flood, no wait
            write(alert("203.0.113.7"))
            seen[n] = _wait_for(lambda n=n: _recorded(cfg, "203.0.113.7") == n)

    assert _apply_driven(cfg, drive) == 0
    assert seen == {1: True, 2: True, 3: True}
