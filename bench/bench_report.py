"""Benchmark ``banctl report --html``: pages for a ledger of N offenders (default 100,000).

Builds a ledger of N active bans (the 768 IPv4 documentation addresses, the rest IPv6
in 2001:db8:ba::/48), one to three violations each (msg with ``<script>``),
through ``Ledger.record_groups`` (the call banctl apply makes), then, for each
``--lib`` (a checkout's ``lib/``, e.g. main's before a change and this one's), in a
process of its own on a copy of that ledger, times:

* index: the board alone, in memory: the rows it lists read from the ledger and
  index.html + the bans-N.html pages rendered (from 2026-12-07 15:00, when list pages
  are written only as they change: index.html from scratch, its summary included);
* first: ``write_pages`` into an empty directory (index, every offender page and
  tracker file, the manifest);
* again: ``write_pages`` a minute later with nothing changed;
* burst 100 / burst 1000: after 100 (then 1,000) offenders got a new violation,
  ``write_pages`` (the board and their pages);
* later: ``write_pages`` five minutes after that, nothing changed (the index's
  totals, charts and tops are read from the whole ledger again: they are kept for
  ``report.SUMMARY_EVERY`` seconds);
* status and metrics: ``status.collect`` and the ledger's metric families;
* floor: the file system's part of the first run alone: as many files of the same
  sizes in the same directories as the last ``--lib``'s first run wrote, by a plain
  loop (open, write, close, rename over from one temporary name per directory: what
  an atomic write needs at least, no fsync), into an empty directory.

Before each child and the floor, ``os.sync()``; the pages directories are removed
only at the end: on this machine (ext4, ``discard``) the second side's first run
was the slower one, up to twice, in every run so far, suspected to follow from the
first side's 200,000 files deleted just before it (bench/README.md).

Wall and CPU seconds are both printed: the machine is shared, note its load.

    /work/venv/bin/python bench/bench_report.py [--offenders 100000] [--dir DIR] \\
        [--lib OLD/lib] [--lib NEW/lib]
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
V4_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
CASES = ("index", "first", "again", "burst 100", "burst 1000", "later", "status", "metrics")


def addresses(n: int) -> list[str]:
    """Documentation addresses only: the 768 IPv4 ones first, then 2001:db8:ba::/48."""
    v4 = [str(a) for net in V4_NETS for a in net]
    v6 = int(ipaddress.IPv6Address("2001:db8:ba::"))
    return (v4 + [str(ipaddress.IPv6Address(v6 + i)) for i in range(max(0, n - len(v4)))])[:n]


def _use(lib: str) -> None:
    sys.path[:0] = [lib, str(ROOT / "tests")]


def build(path: str, n: int, now: float) -> None:
    from banpipe.bantime import BanPolicy
    from banpipe.config import BanConfig
    from banpipe.ledger import Ledger, Violation
    from ledgerutil import record

    policy = BanPolicy.from_config(BanConfig())
    rng = random.Random(1)
    addrs = addresses(n)
    with Ledger.open(path) as ledger:
        for start in range(0, n, 20_000):
            batch = []
            for k, a in enumerate(addrs[start : start + 20_000]):
                for j in range(1 + (k % 3)):
                    batch.append(
                        Violation(
                            a,
                            f"1:{2000 + j}:1",
                            f"ET SCAN <script>alert({j})</script>",
                            2,
                            "198.51.100.2",
                            False,
                            "bench",
                            "2026-11-28T10:00:00",
                        )
                    )
            record(ledger, batch, now - 3600 + start / 100, policy, rng)


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def measure(ledger_path: str, pages: str, n: int, now: float) -> dict[str, list[float]]:
    """Every case against the lib first on sys.path (main's API or this one's)."""
    from banpipe import metrics, monitor, overview, report, status
    from banpipe.bantime import BanPolicy
    from banpipe.config import BanConfig
    from banpipe.ledger import Ledger, Violation
    from ledgerutil import record

    ledger = Ledger.open(ledger_path)
    if hasattr(overview, "active_rows"):  # list pages as leaves (pagestate)
        board = importlib.import_module("banpipe.board")

        def index() -> None:
            # index.html from scratch: its summary from the whole ledger (kept for
            # report.SUMMARY_EVERY) and the first page of bans
            rows = overview.active_rows(ledger, limit=report.PAGE_ROWS)
            listed = [
                (o.expires, *p) for o, p in zip(rows, board.Rows(now).parts(rows), strict=True)
            ]
            board.render_index(ledger, listed, [], now, board.summary(ledger, now))
    elif hasattr(overview, "offender_rows"):  # c17c654: the board module
        board = importlib.import_module("banpipe.board")

        def index() -> None:
            rows = overview.offender_rows(ledger)
            board.render_index(ledger, [o for o in rows if o.active], now, report.PAGE_ROWS)
    else:

        def index() -> None:
            report.render_index(ledger, overview.offenders(ledger, active_only=True), now)

    policy = BanPolicy.from_config(BanConfig())
    rng = random.Random(2)
    addrs = addresses(n)

    def burst(k: int, at: float) -> None:
        hit = [Violation(a, "1:9:1", "again <b>") for a in rng.sample(addrs, k)]
        record(ledger, hit, at, policy, rng)

    out = {"index": timed(index)}
    out["first"] = timed(lambda: report.write_pages(ledger, pages, now))
    out["again"] = timed(lambda: report.write_pages(ledger, pages, now + 60))
    burst(100, now + 100)
    out["burst 100"] = timed(lambda: report.write_pages(ledger, pages, now + 120))
    burst(1000, now + 160)
    out["burst 1000"] = timed(lambda: report.write_pages(ledger, pages, now + 180))
    # nothing changed, five minutes on: the index's summary is read again
    out["later"] = timed(lambda: report.write_pages(ledger, pages, now + 480))
    out["status"] = timed(
        lambda: status.collect(
            ledger, now, backend="null", spoof_max=500, spoof_window=10.0, firewall=None
        )
    )
    out["metrics"] = timed(lambda: metrics.render(monitor.ledger_families(ledger, now)))
    return {k: list(v) for k, v in out.items()}


def floor(pages: str, dest: str) -> tuple[float, float]:
    """(wall, CPU) seconds to write the files under ``pages`` again under ``dest``
    (empty), same names and sizes, atomically, without rendering anything."""
    files = []
    for top, _dirs, names in os.walk(pages):
        rel = os.path.relpath(top, pages)
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for name in names:
            if not name.startswith("."):
                files.append((os.path.join(dest, rel, name), os.path.getsize(f"{top}/{name}")))
    blobs: dict[int, bytes] = {}
    os.sync()

    def write() -> None:
        for path, size in files:
            data = blobs.get(size) or blobs.setdefault(size, b"x" * size)
            tmp = f"{os.path.dirname(path)}/.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            os.close(fd)
            os.replace(tmp, path)

    return timed(write)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offenders", type=int, default=100_000)
    ap.add_argument("--dir", help="where the ledgers and pages go (default: a temp dir)")
    ap.add_argument("--lib", action="append", help="a lib/ to measure (default: this one's)")
    ap.add_argument("--child", nargs=3, metavar=("LIB", "LEDGER", "NOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        lib, ledger, now = args.child
        _use(lib)
        pages = ledger + ".pages"
        print(json.dumps(measure(ledger, pages, args.offenders, float(now))))
        return 0
    base = args.dir or tempfile.mkdtemp(prefix="bench-report-")
    libs = args.lib or [str(ROOT / "lib")]
    now = time.time()
    master = os.path.join(base, "ledger.sqlite3")
    _use(str(ROOT / "lib"))
    t_build = timed(lambda: build(master, args.offenders, now))[0]
    print(f"ledger: {args.offenders} offenders built in {t_build:.1f} s", flush=True)
    load0 = os.getloadavg()
    results = []
    for i, lib in enumerate(libs):
        copy = os.path.join(base, f"ledger-{i}.sqlite3")
        shutil.copy(master, copy)
        os.sync()
        cmd = [sys.executable, __file__, "--offenders", str(args.offenders), "--child"]
        done = subprocess.run([*cmd, lib, copy, repr(now)], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout))
    last = os.path.join(base, f"ledger-{len(libs) - 1}.sqlite3.pages")
    written = floor(last, os.path.join(base, "floor"))
    for i in range(len(libs)):
        shutil.rmtree(os.path.join(base, f"ledger-{i}.sqlite3.pages"), ignore_errors=True)
    shutil.rmtree(os.path.join(base, "floor"), ignore_errors=True)
    print(f"load average before: {load0}, after: {os.getloadavg()}")
    print("| case | " + " | ".join(f"{lib}: wall, CPU s" for lib in libs) + " |")
    for case in CASES:
        cells = [f"{r[case][0]:.2f}, {r[case][1]:.2f}" for r in results]
        print(f"| {case} | " + " | ".join(cells) + " |")
    print(f"| floor: the last first run's files, plain loop | {written[0]:.2f}, {written[1]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
