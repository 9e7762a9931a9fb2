"""Progress of long replays: only on a terminal, rate-limited, cleared at the end."""

from __future__ import annotations

import io
import os
import pty

from banpipe import fasttail, progress
from banpipe.progress import Progress, format_progress


def test_format():
    assert format_progress(512, 2048, 1234, 2.0) == "25% of 2.0 kB, 1,234 alerts, 617/s"
    assert format_progress(3 << 20, None, 10, 0.0) == "3.0 MB, 10 alerts, -/s"
    assert format_progress(5, 4, 1, 1.0).startswith("100% of 4 B")


def test_rate_limited_and_cleared():
    now = [0.0]
    out = io.StringIO()
    p = Progress("fasttail", out, 1000, interval=0.5, clock=lambda: now[0])
    p.update(10, 1)  # within the first interval: a quick replay shows nothing
    assert out.getvalue() == ""
    now[0] = 0.6
    p.update(500, 50)
    p.update(600, 60)  # not due yet
    now[0] = 1.2
    p.update(1000, 100)
    p.clear()
    assert out.getvalue() == (
        "\rfasttail: 50% of 1000 B, 50 alerts, 83/s\x1b[K\r"
        "\rfasttail: 100% of 1000 B, 100 alerts, 83/s\x1b[K\r"
        "\r\x1b[K"
    )


def test_only_on_a_terminal(monkeypatch):
    assert not progress.wanted(io.StringIO())
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            monkeypatch.setenv("TERM", "xterm")
            assert progress.wanted(tty)
            monkeypatch.setenv("TERM", "dumb")
            assert not progress.wanted(tty)
    finally:
        os.close(master)
        os.close(slave)


def test_fasttail_once_shows_progress_on_a_terminal_and_leaves_only_the_summary(
    tmp_path, monkeypatch
):
    line = (
        "11/28-10:00:00.000000  [**] [1:2003:8] SQL Worm [**] [Priority: 2] "
        "{UDP} 203.0.113.7:1090 -> 198.51.100.2:1434\n"
    )
    alerts = tmp_path / "alert"
    alerts.write_text(line * 20000)
    ticks = iter(range(10**6))
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(ticks)))
    monkeypatch.setattr(progress, "wanted", lambda stream: True)
    err, out = io.StringIO(), io.BytesIO()
    assert fasttail.main(["--once", str(alerts)], stdout=out, stderr=err) == 0
    assert out.getvalue().count(b"\n") == 20000
    text = err.getvalue()
    assert "\rfasttail: " in text and "% of " in text and " alerts, " in text
    assert text.endswith("\r\x1b[K")  # cleared: nothing of it stays on screen
