"""How long a new ban waits while ``banctl apply`` writes its pages (issue 13).

Builds a ledger of N active bans (default 100,000; bench_report.py's ledger), then for
each ``--lib`` (a checkout's ``lib/``: main before the change and this one's), on a copy
of that ledger: starts ``banctl apply`` (the checkout's ``bin/banctl``, null backend,
``[pages] dir`` set) as a real process, and from its "started" line on sends one alert
of a new offender every ``--every`` s for ``--window`` s while apply's first page run
(into an empty directory: every page and tracker file, over a minute at 100,000 bans)
is going. The delay of each is the time from writing its line into apply's stdin to
the null backend's ``null: block ADDR`` line on apply's stderr, both stamped here.

With ``--refresh``, the pages are written first (by the first lib's ``write_pages``,
outside the measurement), and every lib's apply runs in turn on that ledger and pages
directory (no copy of 200,000 files; each lib's offenders are new ones): apply's page
runs are then refreshes (0.6-2.4 s at 100,000 bans), the one at its start included,
and each alert makes the pages stale again.

    flock /work/bench.lock python bench/bench_pages_live.py \\
        --lib /work/wt/base18/lib --lib lib [--offenders 100000] [--window 20] [--refresh]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import ROOT, _use, build  # noqa: E402

WAN = "198.51.100.2"
TOML = (  # null backend, no spoof brake, pages refreshed as often as they may be
    '[network]\nwan = ["{wan}"]\nwan_state = "{base}/wan.json"\n[ban]\nspoof_max = 0\n'
    '[firewall]\nbackend = "null"\n[banctl]\nledger = "{ledger}"\n'
    '[pages]\ndir = "{pages}"\ninterval = 1\n'
)


def alert(addr: str) -> bytes:
    return (
        '{"v":1,"ts":"2026-11-28T10:00:00","gid":1,"sid":2003,"rev":1,"msg":"new",'
        f'"priority":2,"src":"{addr}","dst":"{WAN}","offender":"{addr}","victim":"{WAN}",'
        '"reversed":false,"reason":"bench"}\n'
    ).encode()


def new_addresses(n: int, first: int) -> list[str]:
    """Offenders the ledger does not know (2001:db8:bb::/48; the ledger's are in ba::)."""
    base = int(ipaddress.IPv6Address("2001:db8:bb::"))
    return [str(ipaddress.IPv6Address(base + i)) for i in range(first, first + n)]


def run_apply(lib: str, base: str, ledger: str, pages: str, args, first: int) -> dict:
    """One apply: the delays of the alerts sent during the window, in seconds."""
    cfg = os.path.join(base, "banpipe.toml")
    Path(cfg).write_text(TOML.format(wan=WAN, base=base, ledger=ledger, pages=pages))
    banctl = str(Path(lib).resolve().parent / "bin" / "banctl")
    env = {**os.environ, "PYTHONPATH": lib}
    proc = subprocess.Popen(
        [sys.executable, banctl, "--config", cfg, "apply"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    blocked: dict[str, float] = {}
    started = threading.Event()
    assert proc.stderr is not None and proc.stdin is not None

    said: list[str] = []

    def read() -> None:
        for raw in proc.stderr:  # type: ignore[union-attr]
            line = raw.decode(errors="replace")
            if line.startswith("null: block 2001:db8:bb:"):
                blocked[line.split()[-1]] = time.monotonic()
            elif not line.startswith("null: "):
                said.append(line)
                if "started:" in line:
                    started.set()
        started.set()  # it ended

    addrs = iter(new_addresses(int(args.window / args.every) + 2, first))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not started.wait(600) or proc.poll() is not None:
        raise SystemExit(f"{lib}: banctl apply did not start: {''.join(said[-5:])}")
    t0 = time.monotonic()
    sent: dict[str, float] = {}
    while time.monotonic() - t0 < args.window:
        a = next(addrs)
        sent[a] = time.monotonic()
        proc.stdin.write(alert(a))
        proc.stdin.flush()
        time.sleep(args.every)
    end = time.monotonic() + args.cap
    while len(blocked) < len(sent) and time.monotonic() < end:
        time.sleep(0.05)
    delays = [blocked[a] - t for a, t in sent.items() if a in blocked]
    proc.stdin.close()  # end of input: apply stops (a page run at most PAGES_STOP_WAIT)
    try:
        proc.wait(timeout=args.cap)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(10)
    return {"sent": len(sent), "banned": len(delays), "delays": delays}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offenders", type=int, default=100_000)
    ap.add_argument("--lib", action="append", help="a lib/ to measure (default: this one's)")
    ap.add_argument("--window", type=float, default=20.0, help="seconds of alerts")
    ap.add_argument("--every", type=float, default=0.25, help="seconds between alerts")
    ap.add_argument("--cap", type=float, default=300.0, help="longest wait for a ban")
    ap.add_argument("--refresh", action="store_true", help="pages written before apply")
    ap.add_argument("--dir", help="where the ledgers and pages go (default: a temp dir)")
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="bench-pages-live-")
    libs = [str(Path(lib).resolve()) for lib in (args.lib or [str(ROOT / "lib")])]
    now = time.time()
    master = os.path.join(base, "ledger.sqlite3")
    _use(libs[0])
    t = time.perf_counter()
    build(master, args.offenders, now)
    print(f"ledger: {args.offenders} offenders built in {time.perf_counter() - t:.1f} s")
    master_pages = os.path.join(base, "pages")
    if args.refresh:
        from banpipe.ledger import Ledger
        from banpipe.report import write_pages

        t = time.perf_counter()
        with Ledger.open(master) as led:
            write_pages(led, master_pages, now)
        print(f"pages written first in {time.perf_counter() - t:.1f} s")
    load0 = os.getloadavg()
    rows = []
    for i, lib in enumerate(libs):
        if args.refresh:
            ledger, pages = master, master_pages
        else:
            ledger, pages = (
                os.path.join(base, f"ledger-{i}.sqlite3"),
                os.path.join(base, f"pages-{i}"),
            )
            shutil.copy(master, ledger)
        r = run_apply(lib, base, ledger, pages, args, 1 + i * 65536)
        d = sorted(r["delays"])
        cells = (
            [f"{statistics.median(d) * 1000:.1f}", f"{d[int(len(d) * 0.9)] * 1000:.1f}",
             f"{d[-1] * 1000:.1f}"] if d else ["-", "-", "-"]
        )  # fmt: skip
        rows.append((lib, r["sent"], r["banned"], *cells))
        if not args.refresh:
            shutil.rmtree(pages, ignore_errors=True)
    print(f"load average before: {load0}, after: {os.getloadavg()}")
    print("| lib | alerts sent | banned | delay p50 ms | p90 ms | max ms |")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
