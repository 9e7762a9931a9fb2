"""A million active bans (issue 12): restore, stop, `banctl list`, memory.

Root only. Everything runs in a throwaway network namespace (`bpmillion<pid>`); banctl
runs there as a real process (`ip netns exec`), the way the service runs it. The ledger
is filled directly with SQL (N active automated bans: a quarter IPv4 from 10.0.0.0/8,
the rest IPv6 from 2001:db8::/32, expiries spread over a day), not through banctl,
which would take hours of simulated alerts. Then, per backend:

* **restore, cold**: `banctl restore` on an empty firewall (after a reboot): init,
  compare, one bulk block of N.
* **restore, warm**: `banctl restore` again, the firewall already holding all N (a
  restart): the comparison reads the whole firewall.
* **apply start / stop**: `banctl apply` started on that ledger until its "started"
  line (a restore, like the above), its RSS then (VmRSS, VmHWM), then SIGTERM until it
  exits (`on_stop = "remove"`: the whole table/sets go).
* **list, first page**: `banctl list` until its first 50 lines arrive.

Each restore also prints its CPU seconds (user + system, banctl's and the kernel's
work on its behalf): on the shared 2 cores the wall time grows with the load, this
much less.

    /work/venv/bin/python bench/bench_million.py [--bans 1000000] [--backends ipset,nftables]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))  # this checkout's banpipe, as bin/ uses
from banpipe.ledger import Ledger  # noqa: E402

BANCTL = [sys.executable, str(ROOT / "bin" / "banctl")]


def addresses(n: int) -> list[str]:
    v4 = n // 4
    out = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(1, v4 + 1)]
    base = int(ipaddress.IPv6Address("2001:db8::"))
    out += [str(ipaddress.IPv6Address(base + (i << 16) + 1)) for i in range(n - v4)]
    return out


def fill(ledger: str, n: int, now: float) -> None:
    Ledger.open(ledger).close()  # schema
    db = sqlite3.connect(ledger)
    rows = (
        (a, now - 3600, now - 60, now + 60 + (i * 86400) / n, 1, 1, 0, 1, "bench", now - 60)
        for i, a in enumerate(addresses(n))
    )
    db.executemany(
        "INSERT INTO offenders (addr, first_seen, last_seen, expires, violations, bans, "
        "manual, active, reason, banned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    db.close()


def timed(ns: str, argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one command in the namespace. The
    CPU time is what a loaded machine does not inflate (the 2 cores are shared)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
    t = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return t, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def bench(backend: str, n: int, ledger_src: str, tmp: Path) -> None:
    ns = f"bpmillion{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ledger = tmp / f"ledger-{backend}.sqlite3"
        subprocess.run(["cp", ledger_src, str(ledger)], check=True)
        cfg = tmp / f"{backend}.toml"
        cfg.write_text(
            f'[firewall]\nbackend = "{backend}"\n[banctl]\nledger = "{ledger}"\n'
            'check_interval = "1h"\n'
        )
        base = [*BANCTL, "--config", str(cfg)]
        cold, cold_cpu = timed(ns, [*base, "restore"])
        warm, warm_cpu = timed(ns, [*base, "restore"])
        subprocess.run(["ip", "netns", "exec", ns, *base, "teardown"], capture_output=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *base, "apply"],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = proc.stderr.readline()
        started = time.perf_counter() - t0
        if "started" not in line:
            raise RuntimeError(f"apply: {line}{proc.stderr.read()[-2000:]}")
        # ip netns exec execs banctl in place: the pid is banctl's.
        st = status(proc.pid)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=600)
        stop = time.perf_counter() - t0
        t0 = time.perf_counter()
        lister = subprocess.Popen(
            ["ip", "netns", "exec", ns, *base, "list"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(50):
            lister.stdout.readline()
        first = time.perf_counter() - t0
        lister.kill()
        lister.wait()
        print(
            f"{backend:9} n={n:,}: restore cold {cold:.2f} s (CPU {cold_cpu:.2f} s), "
            f"warm {warm:.2f} s (CPU {warm_cpu:.2f} s); "
            f"apply started {started:.2f} s, RSS {st['VmRSS']} (peak {st['VmHWM']}), "
            f"stop {stop:.2f} s; list first page {first:.2f} s",
            flush=True,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bans", type=int, default=1_000_000)
    ap.add_argument("--backends", default="ipset,nftables")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespace)")
        return 77
    with tempfile.TemporaryDirectory(prefix="bp-bench-million-") as tmp:
        src = str(Path(tmp) / "ledger.sqlite3")
        t0 = time.perf_counter()
        fill(src, args.bans, time.time())
        print(f"ledger with {args.bans:,} active bans written in {time.perf_counter() - t0:.1f} s")
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        for backend in args.backends.split(","):
            bench(backend, args.bans, src, Path(tmp))
        print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
