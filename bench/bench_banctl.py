"""Benchmark banctl against the real firewall in a throwaway network namespace (root).

Three figures per backend (targets in bench/README.md, "## banctl"):

* single: one alert at a time (a new offender each), same measurement: p50 and p99.
* burst: N new offenders arrive at once as alertfilter JSON lines; time from the bytes
  being handed to banctl's pipe reader until ``Daemon.handle()`` returns, i.e. the batch
  is committed to the ledger (synchronous=FULL) and in the firewall. ``check()`` then
  must list every one of them.
* restart: a ledger with M active bans and an empty firewall; time of banctl's start-up
  restore (init, lift lapsed, compare, one bulk ``block()``), then of ``banctl
  teardown``.
* throughput: a real ``banctl --backend null apply`` reading 1,000,000 alerts from 500
  sources from a file: alerts/s including start-up and stop.
* rss: a real ``banctl apply`` process started on that ledger; VmRSS and VmHWM after its
  start-up, and after one more burst.

Addresses are documentation addresses only (192.0.2.0/24, then 2001:db8:ba::/48).

    /opt/bpvenv/bin/python bench/bench_banctl.py [--burst 10000] [--restart 100000]
        [--backends ipset,nftables,iptables] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests")]

from banpipe import cli, reconcile  # noqa: E402
from banpipe.bantime import BanPolicy  # noqa: E402
from banpipe.config import load_config  # noqa: E402
from banpipe.ctlenv import Env  # noqa: E402
from banpipe.daemon import Daemon  # noqa: E402
from banpipe.firewall import SubprocessRunner  # noqa: E402
from banpipe.ledger import Ledger, Violation  # noqa: E402
from banpipe.pipe import Lines  # noqa: E402
from banrequest import ban_request  # noqa: E402
from ledgerutil import record  # noqa: E402

V6_NET = ipaddress.ip_network("2001:db8:ba::/48")


def addresses(n: int, offset: int = 0) -> list[str]:
    def gen():
        yield from (str(a) for a in ipaddress.ip_network("192.0.2.0/24").hosts())
        base = int(V6_NET.network_address)
        for i in itertools.count(1):
            yield str(ipaddress.IPv6Address(base + i))

    return list(itertools.islice(gen(), offset, offset + n))


def alert_line(addr: str) -> bytes:
    return (json.dumps(ban_request(addr)) + "\n").encode()


class Netns:
    def __init__(self) -> None:
        self.name = f"bpbench{os.getpid()}"

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def make_env(workdir: Path, backend: str, ns: Netns) -> Env:
    cfg_path = workdir / "banpipe.toml"
    cfg_path.write_text(
        f'[firewall]\nbackend = "{backend}"\n'
        f'[banctl]\nledger = "{workdir / "ledger.sqlite3"}"\n'
        '[ban]\nspoof_max = 0\non_stop = "keep"\n'
        f'[network]\nwan_state = "{workdir / "wan.json"}"\n'
    )
    config = load_config(cfg_path)
    err = io.StringIO()
    return Env(
        config=config,
        ledger_path=config.banctl.ledger,
        backend=backend,
        stdout=io.StringIO(),
        stderr=err,
        clock=time.time,
        rng=__import__("random").Random(1),
        runner=SubprocessRunner(prefix=ns.prefix),
        report=cli.Reporter("banctl", err),
    )


def verify(fw, n: int) -> None:
    """check() must list all n entries; one transient listing failure is retried (and
    reported), since a failed `nft list` reads as "table missing" in the backend."""
    state = fw.check()
    if len(state.entries) != n:
        print(f"  note: check() saw {len(state.entries)} of {n}: {state.problems[:2]}; retrying")
        state = fw.check()
    assert len(state.entries) == n, (len(state.entries), n, state.problems[:3])


def bench_burst(backend: str, n: int, ns: Netns) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp), backend, ns)
        ledger, fw = env.ledger(), env.firewall()
        daemon = Daemon(env, ledger, fw)
        daemon.start()
        data = b"".join(alert_line(a) for a in addresses(n))
        t0 = time.perf_counter()
        daemon.handle(*Lines().feed(data))
        elapsed = time.perf_counter() - t0
        verify(fw, n)
        fw.close(teardown=True)
        env.close()
        return elapsed


def bench_single(backend: str, n: int, ns: Netns) -> list[float]:
    """Latency of single alerts (a new offender each): bytes in -> committed + blocked."""
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp), backend, ns)
        ledger, fw = env.ledger(), env.firewall()
        daemon = Daemon(env, ledger, fw)
        daemon.start()
        reader = Lines()
        times = []
        for a in addresses(n, offset=500):
            line = alert_line(a)
            t0 = time.perf_counter()
            daemon.handle(*reader.feed(line))
            times.append(time.perf_counter() - t0)
        assert len(fw.check().entries) == n
        fw.close(teardown=True)
        env.close()
        return times


def fill_ledger(path: str, n: int) -> None:
    policy = BanPolicy(base=86400, max=86400 * 7)
    with Ledger.open(path) as led:
        now = time.time()
        addrs = addresses(n)
        for i in range(0, n, 20000):
            record(led, [Violation(a) for a in addrs[i : i + 20000]], now, policy, rng_low())
        assert led.count_active() == n


def rng_low():
    class Low:
        def uniform(self, a, b):
            return a

    return Low()


def bench_restart(backend: str, n: int, ns: Netns) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp), backend, ns)
        fill_ledger(env.ledger_path, n)
        ledger, fw = env.ledger(), env.firewall()
        t0 = time.perf_counter()
        lapsed, _, drift = reconcile.restore(env, ledger, fw)
        restore_s = time.perf_counter() - t0
        assert len(drift.missing) == n and not lapsed
        verify(fw, n)
        t0 = time.perf_counter()
        with ledger.locked():  # what `banctl teardown` does (no manual bans here)
            reconcile.remove_automated(ledger, fw, thorough=True)
        teardown_s = time.perf_counter() - t0
        assert not fw.check().entries
        env.close()
        return restore_s, teardown_s


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def bench_rss(backend: str, n: int, burst: int, ns: Netns) -> tuple[int, int, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp), backend, ns)
        fill_ledger(env.ledger_path, n)
        env.close()
        cfg = str(Path(tmp) / "banpipe.toml")
        proc = subprocess.Popen(
            [*ns.prefix, sys.executable, str(ROOT / "bin" / "banctl"), "--config", cfg, "apply"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT / "lib")},
        )
        try:
            line = proc.stderr.readline().decode()
            assert "started" in line, line
            after_start = rss_kib(proc.pid)
            proc.stdin.write(b"".join(alert_line(a) for a in addresses(burst, offset=n)))
            proc.stdin.flush()
            want = n + burst
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with Ledger.open(env.ledger_path) as led:
                    if led.count_active() >= want:
                        break
                time.sleep(0.2)
            time.sleep(0.5)
            after_burst = rss_kib(proc.pid)
        finally:
            proc.stdin.close()
            proc.wait(timeout=120)
        make_env(Path(tmp), backend, ns).firewall().close(teardown=True)
        return (*after_start, *after_burst)


def bench_throughput(n: int, sources: int) -> tuple[float, float, float, int]:
    """A real `banctl --backend null apply < file`: n alerts from `sources` offenders.

    Returns (wall seconds, alerts/s, CPU seconds, peak RSS KiB); start-up and stop are
    included. CPU time is reported too: on a shared machine it is the steadier figure.
    """
    import resource

    srcs = addresses(sources)
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "alerts.jsonl"
        with feed.open("wb") as f:
            lines = [alert_line(a) for a in srcs]
            for i in range(0, n, sources):
                f.write(b"".join(lines[: min(sources, n - i)]))
        cfg = Path(tmp) / "banpipe.toml"
        cfg.write_text(
            f'[firewall]\nbackend = "null"\n[banctl]\nledger = "{Path(tmp) / "l.sqlite3"}"\n'
            f'[network]\nwan_state = "{Path(tmp) / "wan.json"}"\n'
        )
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = r0.ru_maxrss
        with feed.open("rb") as stdin:
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, str(ROOT / "bin" / "banctl"), "--config", str(cfg), "apply"],
                stdin=stdin,
                stderr=subprocess.DEVNULL,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "lib")},
            )
            elapsed = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = r1.ru_maxrss
        cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        with Ledger.open(str(Path(tmp) / "l.sqlite3")) as led:
            total = led.db.execute("SELECT sum(violations) FROM offenders").fetchone()[0]
            assert total == n, (total, n)
        return elapsed, n / elapsed, cpu, max(peak, before)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--burst", type=int, default=10_000)
    p.add_argument("--restart", type=int, default=100_000)
    p.add_argument("--backends", default="ipset,nftables,iptables")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--throughput", type=int, default=1_000_000, help="0 to skip")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench_banctl: needs root (network namespaces)", file=sys.stderr)
        return 77
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    if args.throughput:
        secs, rate, cpu, peak = bench_throughput(args.throughput, 500)
        print(
            f"null      apply {args.throughput:,} alerts from 500 sources: {secs:.2f} s, "
            f"{rate:,.0f} alerts/s (CPU {cpu:.2f} s = {args.throughput / cpu:,.0f}/s), "
            f"peak RSS {peak / 1024:.1f} MiB",
            flush=True,
        )
    with Netns() as ns:
        for backend in args.backends.split(","):
            bursts = [bench_burst(backend, args.burst, ns) for _ in range(args.repeat)]
            print(
                f"{backend:9} burst {args.burst:,}: median {statistics.median(bursts):.3f} s "
                f"(min {min(bursts):.3f}, max {max(bursts):.3f})",
                flush=True,
            )
            single = sorted(bench_single(backend, 200, ns))
            print(
                f"{backend:9} single alert: p50 {single[len(single) // 2] * 1000:.1f} ms, "
                f"p99 {single[int(len(single) * 0.99) - 1] * 1000:.1f} ms",
                flush=True,
            )
            restarts = [bench_restart(backend, args.restart, ns) for _ in range(args.repeat)]
            rs = [r for r, _ in restarts]
            ts = [t for _, t in restarts]
            print(
                f"{backend:9} restart {args.restart:,}: median {statistics.median(rs):.3f} s "
                f"(max {max(rs):.3f}); teardown median {statistics.median(ts):.3f} s "
                f"(max {max(ts):.3f})",
                flush=True,
            )
            if not args.skip_rss:
                rss, hwm, rss2, hwm2 = bench_rss(backend, args.restart, args.burst, ns)
                print(
                    f"{backend:9} rss with {args.restart:,} active: {rss / 1024:.1f} MiB "
                    f"(peak {hwm / 1024:.1f}); after +{args.burst:,} burst {rss2 / 1024:.1f} MiB "
                    f"(peak {hwm2 / 1024:.1f})",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
