"""Benchmark banshare across real gateways (needs root and nats-server).

A fleet as in tests/test_banshare_netns.py (tests/fleetnet.py): one nats-server -js in a
hub namespace, gateways as namespaces joined by veth, each with its own ledger, nftables
firewall and bin/banshare. Bans are committed straight into a gateway's ledger by this
process (what ``banctl ban`` or ``banctl apply`` commits, without their start-up).

- **latency**: 1,000 bans on A, one at a time; t0 just before A's ledger commit, t1 when
  ``nft monitor`` in B's namespace prints the element being added to B's set.
- **catch-up**: B's banshare stopped; 10,000 bans committed on A (one transaction) and
  applied by C; then B's banshare started: time until B's kernel set holds all 10,000
  (includes banshare's start-up).
- **sustained**: A, B and C each commit a share of N decisions/s for S seconds (a
  transaction every 100 ms); time after the last commit until every gateway's kernel holds
  every other gateway's bans, and the rate achieved end to end.

    /work/venv/bin/python bench/bench_banshare.py [--bans 1000] [--catch-up 10000]
        [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests"), str(ROOT / "bench")]

from banpipe.bantime import BanPolicy  # noqa: E402
from banpipe.config import BanConfig  # noqa: E402
from banpipe.ledger import Ledger, Violation  # noqa: E402
from bench_firewall import addresses  # noqa: E402
from fleetnet import Fleet  # noqa: E402
from ledgerutil import record  # noqa: E402

POLICY = BanPolicy.from_config(BanConfig())


class Monitor:
    """``nft monitor`` in a namespace; remembers when each address first showed up."""

    def __init__(self, fleet: Fleet, g: str) -> None:
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.proc = fleet.ns[g].popen(
            ["stdbuf", "-oL", "nft", "monitor", "elements"],
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t = time.perf_counter()
            if line.startswith("add element") and "{" in line:
                inner = line.split("{", 1)[1].rsplit("}", 1)[0]
                with self.cond:
                    for a in inner.split(","):
                        self.seen.setdefault(a.strip(), t)
                    self.cond.notify_all()

    def wait_for(self, addr: str, timeout: float = 10.0) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: addr in self.seen, timeout)
            return self.seen.get(addr)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def ledger(f: Fleet, g: str) -> Ledger:
    return Ledger.open(str(f.dir / g / "ledger.sqlite3"))


def ready(f: Fleet, gateways: list[str]) -> None:
    """Every banshare connected (a probe ban travels from each to all others)."""
    for i, g in enumerate(gateways):
        probe = f"2001:db8:ff::{i + 1}"
        with ledger(f, g) as led:
            led.ban(probe, time.time(), expires=time.time() + 3600, reason="probe")
        for other in gateways:
            if other != g and not f.wait(lambda o=other, p=probe: p in f.entries(o), 60):
                raise SystemExit(f"banshare on {other} never got {probe}")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench_latency(n: int) -> None:
    with Fleet("bl", gateways=("a", "b"), nodes=1) as f:
        for g in ("a", "b"):
            f.start_banshare(g)
        ready(f, ["a", "b"])
        mon = Monitor(f, "b")
        lat: list[float] = []  # from just before A's commit
        after: list[float] = []  # from A's commit returning (the ban exists on A)
        missing = 0
        try:
            with ledger(f, "a") as led:
                # Until nft monitor listens: a warm-up ban it must see.
                for i in range(1, 100):
                    led.ban(f"2001:db8:fe::{i}", time.time(), expires=time.time() + 3600,
                            reason="warm-up")  # fmt: skip
                    if mon.wait_for(f"2001:db8:fe::{i}", 2.0) is not None:
                        break
                for addr in addresses(n, offset=100):
                    t0 = time.perf_counter()
                    led.ban(addr, time.time(), expires=time.time() + 3600, reason="bench",
                            manual=False)  # fmt: skip
                    committed = time.perf_counter()
                    t1 = mon.wait_for(addr)
                    if t1 is None:
                        missing += 1
                    else:
                        lat.append((t1 - t0) * 1000)
                        after.append((t1 - committed) * 1000)
        finally:
            mon.close()
        for what, values in (("commit start", lat), ("commit done", after)):
            print(
                f"latency A's {what} -> B's firewall, {n} bans: "
                f"p50 {statistics.median(values):.2f} ms, p90 {pct(values, 90):.2f} ms, "
                f"p99 {pct(values, 99):.2f} ms, max {max(values):.2f} ms, missing {missing}"
            )


def bench_catch_up(n: int) -> None:
    with Fleet("bc", gateways=("a", "b", "c"), nodes=1) as f:
        for g in ("a", "b", "c"):
            f.start_banshare(g)
        ready(f, ["a", "b", "c"])
        f.stop_banshare("b")
        want = addresses(n, offset=100)
        with ledger(f, "a") as led:
            record(led, [Violation(a, reason="bench") for a in want], time.time(), POLICY,
                       random.Random())  # fmt: skip
        if not f.wait(lambda: set(want) <= f.entries("c"), 120):
            raise SystemExit("C never got the 10,000 bans")
        before = f.stderr("b").count("connected to")
        t0 = time.perf_counter()
        f.start_banshare("b")
        connected: list[float] = []

        def done() -> bool:
            if not connected and f.stderr("b").count("connected to") > before:
                connected.append(time.perf_counter())
            return set(want) <= f.entries("b")

        ok = f.wait(done, 120)
        t1 = time.perf_counter()
        up = connected[0] - t0 if connected else float("nan")
        print(
            f"catch-up: {n} decisions after downtime: {t1 - t0:.2f} s from start "
            f"(banshare connected after {up:.2f} s; complete: {ok})"
        )


def bench_sustained(rate: int, seconds: float) -> None:
    gws = ["a", "b", "c"]
    with Fleet("bs", gateways=tuple(gws), nodes=1) as f:
        for g in gws:
            f.start_banshare(g)
        ready(f, gws)
        total = int(rate * seconds)
        pool = addresses(total, offset=100)
        shares = {g: pool[i :: len(gws)] for i, g in enumerate(gws)}
        leds = {g: ledger(f, g) for g in gws}
        ticks = int(seconds * 10)
        t0 = time.perf_counter()
        for k in range(ticks):
            for g in gws:
                mine = shares[g]
                chunk = mine[k * len(mine) // ticks : (k + 1) * len(mine) // ticks]
                record(leds[g], [Violation(a, reason="bench") for a in chunk], time.time(),
                               POLICY, random.Random())  # fmt: skip
            delay = t0 + (k + 1) * 0.1 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        t_last = time.perf_counter()
        want = {g: set(pool) - set(shares[g]) for g in gws}
        ok = f.wait(lambda: all(want[g] <= f.entries(g) for g in gws), 120)
        t_done = time.perf_counter()
        for led in leds.values():
            led.close()
        print(
            f"sustained: {total} decisions in {t_last - t0:.2f} s across {len(gws)} gateways "
            f"({total / (t_last - t0):.0f}/s offered); all applied everywhere "
            f"{t_done - t_last:.2f} s after the last commit "
            f"({total / (t_done - t0):.0f}/s end to end; complete: {ok})"
        )


def main() -> None:
    # SIGTERM (a timeout) unwinds through Fleet.__exit__: no namespace or server left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser()
    p.add_argument("--bans", type=int, default=1000)
    p.add_argument("--catch-up", type=int, default=10_000)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    print(f"load before: {os.getloadavg()[0]:.2f}")
    bench_latency(args.bans)
    bench_catch_up(args.catch_up)
    bench_sustained(args.rate, args.seconds)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
