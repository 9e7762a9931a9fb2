"""Benchmark ``banctl report --html``: pages for a ledger of N offenders (default 100,000).

Builds a ledger of N active bans (the 768 IPv4 documentation addresses, the rest IPv6
in 2001:db8:ba::/48), one to three violations each (msg with ``<script>``),
through ``Ledger.record`` (the call banctl apply makes), then times, in one run:

* index: ``render_index`` alone (index.html and the bans-N.html pages), in memory;
* first: ``write_pages`` into an empty directory (index, every offender page and
  tracker file, the manifest);
* again: ``write_pages`` again with nothing changed (index + manifest check only);
* update: after a burst of 100 new violations, ``write_pages`` (index + 100 pages);
* status and metrics: ``status.collect`` and the ledger's metric families.

Wall and CPU seconds are both printed: the machine is shared, note its load.

    /work/venv/bin/python bench/bench_report.py [--offenders 100000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests")]

from banpipe import metrics, monitor, overview, report, status  # noqa: E402
from banpipe.bantime import BanPolicy  # noqa: E402
from banpipe.config import BanConfig  # noqa: E402
from banpipe.ledger import Ledger, Violation  # noqa: E402
from ledgerutil import record  # noqa: E402

V4_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


def addresses(n: int) -> list[str]:
    """Documentation addresses only: the 768 IPv4 ones first, then 2001:db8:ba::/48."""
    v4 = [str(a) for net in V4_NETS for a in net]
    v6 = int(ipaddress.IPv6Address("2001:db8:ba::"))
    return (v4 + [str(ipaddress.IPv6Address(v6 + i)) for i in range(max(0, n - len(v4)))])[:n]


def build(path: str, n: int, now: float) -> Ledger:
    ledger = Ledger.open(path)
    policy = BanPolicy.from_config(BanConfig())
    rng = random.Random(1)
    addrs = addresses(n)
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
    return ledger


def timed(fn):
    """(wall seconds, value); the CPU seconds go to CPU[-1] (the machine is shared)."""
    t, c = time.perf_counter(), time.process_time()
    value = fn()
    CPU.append(time.process_time() - c)
    return time.perf_counter() - t, value


CPU: list[float] = []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offenders", type=int, default=100_000)
    ap.add_argument("--dir", help="where the ledger and pages go (default: a temp dir)")
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="bench-report-")
    now = time.time()
    load0 = os.getloadavg()
    t_build, ledger = timed(
        lambda: build(os.path.join(base, "ledger.sqlite3"), args.offenders, now)
    )
    print(f"ledger: {args.offenders} offenders built in {t_build:.1f} s", flush=True)
    pages = os.path.join(base, "pages")
    active = overview.offenders(ledger, active_only=True)
    t_index, index = timed(lambda: report.render_index(ledger, active, now))
    t_first, first = timed(lambda: report.write_pages(ledger, pages, now))
    t_again, again = timed(lambda: report.write_pages(ledger, pages, now))
    policy = BanPolicy.from_config(BanConfig())
    addrs = addresses(args.offenders)[:100]
    record(ledger, [Violation(a, "1:9:1", "again") for a in addrs], now, policy, random.Random(2))
    t_update, update = timed(lambda: report.write_pages(ledger, pages, now + 1))
    t_status, _ = timed(
        lambda: status.collect(
            ledger, now, backend="null", spoof_max=500, spoof_window=10.0, firewall=None
        )
    )
    t_metrics, _ = timed(lambda: metrics.render(monitor.ledger_families(ledger, now)))
    names = ("index", "first", "again", "update", "status", "metrics")
    cpu = dict(zip(names, CPU[1:], strict=True))
    print(f"load average before/after: {load0} / {os.getloadavg()}")
    print(f"index ({len(index)} pages, {len(active)} active): {t_index:.2f} s, ", end="")
    print(f"cpu {cpu['index']:.2f} s")
    print(
        f"first run: {t_first:.1f} s, cpu {cpu['first']:.1f} s ({first.offender_pages} offender "
        f"pages, {first.tracker_files} tracker files)"
    )
    print(f"again, nothing changed: {t_again:.2f} s, cpu {cpu['again']:.2f} s")
    print(
        f"update after 100 changed: {t_update:.2f} s, cpu {cpu['update']:.2f} s "
        f"({update.offender_pages} pages)"
    )
    print(f"status: {t_status:.2f} s, cpu {cpu['status']:.2f} s")
    print(f"metrics (ledger part): {t_metrics:.2f} s, cpu {cpu['metrics']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
