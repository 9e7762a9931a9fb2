"""banctl report --html: pages and tracker files from ledgers built through the real pipe.

The ledgers come from the real processes ``fasttail | alertfilter | banctl apply``
(null backend) fed an alert file with hostile msg text and IPv6 offenders; the pages
are checked as text and, when Debian's chromium is installed, in a real headless
browser: loads with no console errors, the right rows shown, hostile text inert, a
screenshot kept (its path is printed).
"""

from __future__ import annotations

import html
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from banpipe import banctl, report
from banpipe.ledger import Ledger
from toolpaths import BIN

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quoted"'
WAN = "198.51.100.2"
V6 = ["2001:db8:bad::7", "2001:db8:bad::8"]
V4 = ["203.0.113.7", "203.0.113.9"]


def fast_line(sec: int, sid: int, msg: str, src: str, dst: str, prio: int = 2) -> str:
    """A Snort 2 alert_fast line (IPv6: ICMPv6, no ports to glue on)."""
    where = f"{{IPV6-ICMP}} {src} -> {dst}" if ":" in src else f"{{TCP}} {src}:4444 -> {dst}:80"
    return (
        f"11/28-10:{sec // 60:02d}:{sec % 60:02d}.000001  [**] [1:{sid}:3] {msg} [**] "
        f"[Classification: Misc Attack] [Priority: {prio}] {where}\n"
    )


def write_config(tmp: Path, extra: str = "") -> Path:
    cfg = tmp / "banpipe.toml"
    cfg.write_text(
        "[network]\n"
        f'wan = ["{WAN}"]\n'
        'networks = ["2001:db8:1::/64"]\n'
        f'wan_state = "{tmp / "wan.json"}"\n'
        "[ban]\nspoof_max = 0\n"
        '[firewall]\nbackend = "null"\n'
        f'[banctl]\nledger = "{tmp / "ledger.sqlite3"}"\n' + extra
    )
    return cfg


def run_pipe(tmp: Path, alert_text: str, tool_env: dict, cfg: Path) -> None:
    """fasttail --once | alertfilter | banctl apply, as real processes."""
    alert = tmp / "alert.fast"
    alert.write_text(alert_text)
    py = sys.executable
    ft = subprocess.Popen(
        [py, BIN / "fasttail", "--once", "--from-start", "--year", "2026", alert],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=tool_env,
    )  # fmt: skip
    af = subprocess.Popen(
        [py, BIN / "alertfilter", "--config", cfg], stdin=ft.stdout, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=tool_env,
    )  # fmt: skip
    ft.stdout.close()
    bc = subprocess.run(
        [py, BIN / "banctl", "--config", cfg, "apply"], stdin=af.stdout,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=tool_env, timeout=600,
    )  # fmt: skip
    af.stdout.close()
    assert ft.wait() == 0 and af.wait() == 0 and bc.returncode == 0, bc.stderr[-2000:]


def hostile_text() -> str:
    lines = [fast_line(i, 1000 + i, HOSTILE, V4[0], WAN) for i in range(3)]
    lines.append(fast_line(5, 2003, "plain worm", V4[1], WAN))
    lines += [fast_line(10 + i, 2001219, f"ET SCAN v6 {HOSTILE}", a, "2001:db8:1::2")
              for i, a in enumerate(V6)]  # fmt: skip
    return "".join(lines)


@pytest.fixture
def hostile(tmp_path, tool_env):
    cfg = write_config(tmp_path)
    run_pipe(tmp_path, hostile_text(), tool_env, cfg)
    return tmp_path, cfg


def banctl_run(cfg: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = banctl.main(["--config", str(cfg), *argv], stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_safe_names_for_ipv4_and_ipv6():
    assert report.safe_name("203.0.113.7") == "203.0.113.7"
    assert report.safe_name("2001:db8::7") == "2001-db8--7"
    assert report.safe_name("fe80::1") == "fe80--1"  # no "fe80:" URL scheme in a link
    assert report.safe_name("../etc/passwd").startswith("x")
    assert report.safe_name("203.0.113.0/24") == "203.0.113.0_24"  # a banned range
    assert report.safe_name("2001:db8::/64") == "2001-db8--_64"
    assert report.safe_name("203.0.113.0/24/8").startswith("x")
    assert "/" not in report.safe_name("a/b") and ":" not in report.safe_name("::")


def test_pages_escape_every_text_and_name_files_safely(hostile):
    tmp, cfg = hostile
    out = tmp / "pages"
    rc, text, err = banctl_run(cfg, "report", "--html", str(out))
    assert rc == 0, err
    assert "4 offender pages and 4 tracker files written" in text
    index = (out / "index.html").read_text()
    assert "<script" not in index.lower() and "onerror=alert" not in index.replace(
        "onerror=alert(1)&gt;", ""
    )
    assert html.escape(HOSTILE) in index
    for addr in V4 + V6:
        assert f'href="o/{report.safe_name(addr)}.html"' in index
        page = (out / "o" / f"{report.safe_name(addr)}.html").read_text()
        assert "<script" not in page.lower()
        assert f"banctl unban {addr}" in page and f"banctl pin {addr}" in page
    page = (out / "o" / "203.0.113.7.html").read_text()
    assert page.count("<tr>") == 1 + 3 + 1 + 1  # headers, 3 violations, 1 ban period
    for sid in (1000, 1001, 1002):
        assert f"1:{sid}:3" in page
    assert sorted(p.name for p in (out / "o").iterdir()) == sorted(
        f"{report.safe_name(a)}.html" for a in V4 + V6
    )
    tracker = (out / "tracker" / "2001-db8-bad--7.txt").read_text().splitlines()
    assert len(tracker) == 1
    fields = tracker[0].split("\t")
    assert fields[1] == "1:2001219:3" and fields[3] == "2001:db8:bad::7 -> 2001:db8:1::2"
    assert json.loads(fields[4]) == f"ET SCAN v6 {HOSTILE}"
    assert len((out / "tracker" / "203.0.113.7.txt").read_text().splitlines()) == 3


def test_only_changed_offenders_are_rewritten_and_retention_removes_trackers(hostile):
    tmp, cfg = hostile
    out = tmp / "pages"
    assert banctl_run(cfg, "report", "--html", str(out))[0] == 0
    rc, text, _ = banctl_run(cfg, "report", "--html", str(out))
    assert "0 offender pages" in text and "4 unchanged" in text
    # retention = 0: the violations go when the ban ends, and with them the tracker file
    cfg.write_text(cfg.read_text().replace("spoof_max = 0", "spoof_max = 0\nretention = 0"))
    assert banctl_run(cfg, "unban", V6[0])[0] == 0
    rc, text, _ = banctl_run(cfg, "report", "--html", str(out))
    assert "1 offender pages and 0 tracker files written, 3 unchanged, 1 files removed" in text
    assert not (out / "tracker" / "2001-db8-bad--7.txt").exists()
    assert "not banned now" in (out / "o" / "2001-db8-bad--7.html").read_text()
    rc, text, _ = banctl_run(cfg, "report", "--html", str(out), "--json")
    assert rc == 0 and json.loads(text) == {"index_pages": 1, "offender_pages": 0,
        "tracker_files": 0, "unchanged": 4, "removed": 0}  # fmt: skip


def test_apply_keeps_pages_current(tmp_path, tool_env):
    pages = tmp_path / "www"
    cfg = write_config(tmp_path, f'[pages]\ndir = "{pages}"\ninterval = 1\n')
    run_pipe(tmp_path, hostile_text(), tool_env, cfg)
    index = (pages / "index.html").read_text()
    assert "Active bans (4)" in index
    assert (pages / "tracker" / "203.0.113.9.txt").exists()
    assert not [p for p in pages.rglob(".*tmp*")]  # no temporary file left behind


def _listed(out: Path) -> list[str]:
    """The addresses on the list pages, following the index's links in order."""
    index = (out / "index.html").read_text()
    names = re.findall(r'<li><a href="(bans-\d+\.html)">', index)
    return [a for n in names for a in re.findall(r"<code>([^<]+)</code>", (out / n).read_text())]


def test_index_is_paged(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "PAGE_ROWS", 2)
    led = Ledger.open(str(tmp_path / "l.sqlite3"))
    for i, a in enumerate(V4 + V6):
        led.ban(a, 1000.0 + i, expires=None, reason="<b>x</b>")
    out = tmp_path / "p"
    done = report.write_pages(led, out, 2000.0)
    assert done.index_pages == 3  # the index and two list pages
    assert _listed(out) == sorted(V4 + V6)
    second = (out / "bans-2.html").read_text()
    assert second.count("<tr>") == 3 and "&lt;b&gt;" not in second  # reason not listed here
    led.unban(V6, 3000.0)
    report.write_pages(led, out, 3001.0)
    # the first page (the IPv6 ones, by address) emptied: it goes, and the link to it
    assert not (out / "bans-1.html").exists() and _listed(out) == sorted(V4)
    assert 'href="bans-1.html"' not in (out / "bans-2.html").read_text()


def test_list_pages_are_written_again_only_where_rows_or_times_left_changed(tmp_path, monkeypatch):
    from banpipe.bantime import BanPolicy
    from banpipe.ledger import Violation
    from ledgerutil import record

    monkeypatch.setattr(report, "PAGE_ROWS", 10)
    led = _ledger_of(tmp_path, 60)  # 61 bans, expiring together; then permanent ones
    for i in range(5):
        led.ban(f"198.51.100.{i + 10}", 1_800_000_000.0, expires=None, reason="hand")
    out = tmp_path / "p"
    t0 = 1_800_000_100.0
    first = report.write_pages(led, out, t0)
    assert first.index_pages == 1 + 7
    order = _listed(out)
    assert len(order) == len(set(order)) == 66 and order[-5:] == [
        f"198.51.100.{i + 10}" for i in range(5)
    ]
    before = _tree(out)
    again = report.write_pages(led, out, t0 + 60)
    assert (again.index_pages, again.offender_pages, again.unchanged) == (1, 0, 66)
    after = _tree(out)
    assert {k for k in after if after[k] != before[k]} <= {"index.html", ".banpipe-pages.sqlite3"}
    # one ban extended: it leaves its page and joins the last timed one; nothing else
    moved = order[3]
    record(led, [Violation(moved, "1:9:1", "again <b>")], t0 + 400, BanPolicy(), random.Random(1))
    done = report.write_pages(led, out, t0 + 460)
    changed = {k for k, v in _tree(out).items() if after.get(k) != v}
    pages = {k for k in changed if k.startswith("bans-")}
    assert done.offender_pages == 1 and len(pages) <= 3, pages
    assert sorted(_listed(out)) == sorted(order) and _listed(out).index(moved) > order.index(moved)
    # a split keeps every ban listed once, in order
    hits = [Violation(f"2001:db8:c::{i:x}", "1:9:1", "new") for i in range(40)]
    record(led, hits, t0 + 500, BanPolicy(), random.Random(1))
    report.write_pages(led, out, t0 + 560)
    listed = _listed(out)
    assert len(listed) == len(set(listed)) == 106
    assert max(len(re.findall("<tr>", p.read_text())) for p in out.glob("bans-*.html")) <= 21
    # times left are shown to the ten minutes below an hour: a page changes with them
    rows = [p.read_text() for p in sorted(out.glob("bans-*.html"))]
    later = report.write_pages(led, out, t0 + 560 + 24 * 3600)
    assert later.index_pages > 1 and "(lapsed)" in (out / "bans-1.html").read_text()
    assert rows != [p.read_text() for p in sorted(out.glob("bans-*.html"))]


def test_rough_times_left_say_when_they_change():
    from banpipe.board import rough_remaining

    assert rough_remaining(1) == ("≤10m", 1)
    assert rough_remaining(601) == ("≤20m", 1)
    assert rough_remaining(3599) == ("≤60m", 599)
    assert rough_remaining(3600) == ("≤1h", 3600)  # to the hour from one hour on
    assert rough_remaining(86_400 * 2.5) == ("≤3d", 43_200)
    for left in range(1, 300_000, 97):
        text, lasts = rough_remaining(left)
        assert rough_remaining(left - lasts + 0.5)[0] == text != rough_remaining(left - lasts)[0]


def test_a_list_page_shows_each_rows_rough_time_left_and_when_the_next_changes():
    from banpipe.board import Rows, rough_remaining

    now = 1_800_000_000.0
    rng = random.Random(5)
    lefts = sorted([rng.uniform(-100, 400_000) for _ in range(3000)] + [599.5, 600, 3600, 86_400])
    expiries = [now + x for x in lefts] + [None]
    rows = [(e, f"<tr><td>{i}", "</tr>") for i, e in enumerate(expiries)]
    for order in (rows, rows[::-1], rng.sample(rows, len(rows))):  # list order, or any
        lister = Rows(now, rough=True)
        shown = re.findall(r"<tr><td>(\d+)( \(in [^)]*\)| \(lapsed\))?</tr>", lister.table(order))
        assert len(shown) == len(rows)
        for i, text in shown:
            e = expiries[int(i)]
            want = (
                ""
                if e is None
                else " (lapsed)"
                if e <= now
                else f" (in {rough_remaining(e - now)[0]})"
            )
            assert text == want, (e, text)
        assert lister.fresh_until == min(
            now + rough_remaining(e - now)[1] for e in expiries if e and e > now
        )


# -- in a real browser -------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--enable-logging=stderr", "--v=0",
        f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line
    ]


def browse(page: Path, tmp: Path, shot_name: str | None) -> str:
    """The DOM chromium builds for ``page``; fails on console errors; keeps a screenshot
    (unless ``shot_name`` is None: each chromium start costs seconds under load)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_errors(dom.stderr) == []
    if shot_name is None:
        return dom.stdout
    keep = Path(os.environ.get("BANPIPE_ARTIFACTS") or tempfile.gettempdir()) / shot_name
    shot = chromium(
        f"--screenshot={keep}", "--window-size=412,915", page.as_uri(),
        profile=tmp / "profile-shot",
    )  # fmt: skip
    assert shot.returncode == 0 and keep.stat().st_size > 1000, shot.stderr[-2000:]
    assert console_errors(shot.stderr) == []
    print(f"screenshot of {page.name}: {keep}")
    return dom.stdout


def test_pages_in_headless_chromium(hostile):
    tmp, cfg = hostile
    out = tmp / "pages"
    assert banctl_run(cfg, "report", "--html", str(out))[0] == 0
    dom = browse(out / "index.html", tmp, "banpipe-report-index.png")
    assert "<script" not in dom.lower()  # the hostile msg stayed text
    assert html.escape(HOSTILE, quote=False) in dom
    rows = re.findall(r'<a href="o/([^"]+)\.html"><code>([^<]+)</code>', dom)
    assert {addr for _, addr in rows} == set(V4 + V6)
    assert "<svg" in dom and "Active bans (4)" in dom
    dom = browse(out / "o" / "2001-db8-bad--7.html", tmp, "banpipe-report-offender.png")
    assert "banctl unban 2001:db8:bad::7" in dom and "<script" not in dom.lower()


# The pipe takes about 40 s and the first page run (200,000 files) 80-150 s under load
# 7-12 on the shared 2-core machine; at load 12 the test ran past the 300 s default
# with nothing wrong (2026-12-07). A timing target is bench/'s to judge, not this test's.
@pytest.mark.timeout(600)
def test_100000_bans_through_the_pipe_in_chromium(tmp_path, tool_env):
    n = 100_000
    text = "".join(
        fast_line(i % 3600, 2001219, "ET SCAN <i>mass</i>", f"2001:db8:ba::{i:x}", "2001:db8:1::2")
        if i < 65536
        else fast_line(
            i % 3600, 2001219, "ET SCAN <i>mass</i>", f"2001:db8:bb::{i - 65536:x}", "2001:db8:1::2"
        )  # fmt: skip
        for i in range(n)
    )
    cfg = write_config(tmp_path)
    run_pipe(tmp_path, text, tool_env, cfg)
    with Ledger.open(str(tmp_path / "ledger.sqlite3")) as led:
        assert led.count_active() == n
    out = tmp_path / "pages"
    rc, summary, err = banctl_run(cfg, "report", "--html", str(out))
    assert rc == 0, err
    assert f"{n} offender pages and {n} tracker files written" in summary
    listed = _listed(out)
    assert len(listed) == len(set(listed)) == n  # every ban on one list page
    dom = browse(out / "index.html", tmp_path, "banpipe-report-100k-index.png")
    assert "Active bans (100000)" in dom and dom.count('<a href="o/') >= 500
    last = re.findall(r'<li><a href="(bans-\d+\.html)">', dom)[-1]
    assert len(re.findall(r'<li><a href="bans-', dom)) == 200
    dom = browse(out / last, tmp_path, None)  # the index's screenshot shows the layout
    assert dom.count("<tr>") == 501 and "&lt;i&gt;mass&lt;/i&gt;" in dom


def test_bucketed_rows_show_their_count_and_first_and_last_time(tmp_path):
    # Identical violations within five minutes are one ledger row (issue 12): the page and the
    # tracker still say how many, when the first and the last happened, and what rule.
    from banpipe.bantime import BanPolicy
    from banpipe.ledger import Violation
    from ledgerutil import record

    class Low:
        def uniform(self, a, b):
            return a

    led = Ledger.open(str(tmp_path / "l.sqlite3"))
    a = "203.0.113.7"

    def hit(ts):
        return Violation(a, "1:2003:8", "worm", 2, "198.51.100.8", False, "prio 2", ts)

    record(led, [hit("2026-11-28T10:00:00.000001")], 1_800_000_000.0, BanPolicy(), Low())
    record(led, [hit("2026-11-28T10:00:41.500000")] * 2, 1_800_000_041.0, BanPolicy(), Low())
    record(led, [hit("2026-11-28T10:05:00.000000")], 1_800_000_300.0, BanPolicy(), Low())
    report.write_pages(led, tmp_path / "p", 1_800_000_400.0)
    page = (tmp_path / "p" / "o" / "203.0.113.7.html").read_text()
    assert page.count("<tr>") == 1 + 2 + 1 + 1  # headers, 2 records, 1 ban period
    assert "2026-11-28T10:00:00.000001 to 2026-11-28T10:00:41.500000" in page
    assert re.search(r"<td class=n>3</td>", page)
    tracker = (tmp_path / "p" / "tracker" / "203.0.113.7.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in tracker] == [
        "2026-11-28T10:00:00.000001",
        "2026-11-28T10:05:00.000000",
    ]
    assert tracker[0].split("\t")[1] == "1:2003:8"
    assert tracker[0].split("\t")[5] == "x3 last=2026-11-28T10:00:41.500000"
    assert tracker[1].split("\t")[5] == "-"


# -- the fast paths of a page run ---------------------------------------------------------


def _ledger_of(tmp_path, n: int) -> Ledger:
    from banpipe.bantime import BanPolicy
    from banpipe.ledger import Violation
    from ledgerutil import record

    class Low:
        def uniform(self, a, b):
            return a

    led = Ledger.open(str(tmp_path / "l.sqlite3"))
    hits = [Violation(f"2001:db8:ba::{i:x}", "1:2001219:3", HOSTILE, 2, WAN) for i in range(n)]
    hits += [Violation(V4[0], f"1:{sid}:1", f"worm {sid}", None, WAN, True) for sid in (7, 8)]
    record(led, hits, 1_800_000_000.0, BanPolicy(), Low())
    return led


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_a_burst_rewrites_exactly_the_offenders_it_touched(tmp_path):
    from banpipe.bantime import BanPolicy
    from banpipe.ledger import Violation
    from ledgerutil import record

    led = _ledger_of(tmp_path, 30)
    out = tmp_path / "p"
    report.write_pages(led, out, 1_800_000_100.0)
    assert report.write_pages(led, out, 1_800_000_160.0).offender_pages == 0
    before = _tree(out)
    # the same violation again within five minutes: no new record, the count grows
    touched = ["2001:db8:ba::3", "2001:db8:ba::1d"]
    hits = [Violation(a, "1:2001219:3", HOSTILE, 2, WAN) for a in touched]
    record(led, hits, 1_800_000_200.0, BanPolicy(), random.Random(1))
    done = report.write_pages(led, out, 1_800_000_260.0)
    assert (done.offender_pages, done.unchanged) == (2, 29)
    after = _tree(out)
    changed = {k for k in after if after[k] != before.get(k)}
    names = {report.safe_name(a) for a in touched}
    assert {k for k in changed if k.startswith(("o/", "tracker/"))} == {
        f"{d}/{n}.{e}" for n in names for d, e in (("o", "html"), ("tracker", "txt"))
    }
    assert "x2" in (out / "tracker" / "2001-db8-ba--3.txt").read_text()
    # a manual ban changes only its reason on an address banned already
    led.ban(V4[0], 1_800_000_300.0, expires=None, reason="by hand")
    done = report.write_pages(led, out, 1_800_000_360.0)
    assert done.offender_pages == 1 and "by hand" in (out / "o" / f"{V4[0]}.html").read_text()
    led.ban(V4[0], 1_800_000_400.0, expires=None, reason="by hand, again")
    assert report.write_pages(led, out, 1_800_000_460.0).offender_pages == 1


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu", "America/St_Johns", "Africa/Monrovia"])
def test_stamps_and_times_left_match_the_plain_functions(zone, monkeypatch):
    import time as _time

    from banpipe import board, pagehtml
    from banpipe.bantime import format_remaining

    monkeypatch.setenv("TZ", zone)  # Monrovia: -0:44:30 until 1972, a minute of two dates
    _time.tzset()
    try:
        st = pagehtml.Stamps()
        for ts in (0.0, 59.999, -0.5, -1e8, -1e8 + 61.5, 1_800_000_000.5, 1_811_111_111.25,
                   1_800_003_599.0, None):  # fmt: skip
            assert st(ts) == pagehtml.stamp(ts), ts
            assert st(ts) == st(ts)  # remembered
    finally:
        monkeypatch.delenv("TZ")
        _time.tzset()
    memo: dict = {}
    for left in [*range(0, 1300), *range(590, 200_000, 7), 86_399.6, 3 * 86_400 + 0.4]:
        assert board._remaining(left, memo) == format_remaining(left), left
