"""The whole pipe, measured: `fasttail | alertfilter | banctl apply` as real processes.

Two figures (targets from issue 4, recorded in bench/README.md "## Whole pipe"):

* throughput: 1,000,000 alert_fast lines from 500 sources through
  `fasttail --once --from-start | alertfilter | banctl --backend null apply`, wall time
  from start to the last process exiting, and each stage's peak RSS (wait4).
* latency (root): the pipe following a live alert file, banctl in a throwaway network
  namespace with a real backend; one alert from a new offender appended at a time, time
  from the append returning to the kernel reporting the firewall change. For nftables
  and iptables (iptables-nft) the change is the kernel's event on NFNLGRP_NFTABLES in
  the namespace, read by a thread of the bench (``--nft-monitor``: through an
  `nft monitor` process, as before), not a poll; ipset has no change events, so its
  figure comes from polling with IPSET_CMD_TEST on a netlink socket in the namespace
  (about 0.05 ms per poll; `ipset test` cost 1-2 ms a poll before issue 12). Each
  stage's CPU time and wake-ups (voluntary context switches) per alert are printed
  beside it: they depend far less on the machine's load than the wall clock.
  ``--perf-trace FILE`` breaks one backend's latency down by stage (bench/pipetrace.py),
  ``--code CHECKOUT`` runs another checkout's tools (side by side with the code before).

    .venv/bin/python bench/bench_pipeline.py [--count 1000000] [--latency 200]
        [--backends nftables,iptables,ipset] [--skip-throughput] [--skip-latency]
        [--code CHECKOUT] [--perf-trace FILE] [--strace DIR] [--nft-monitor]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipetrace import STAGE_CALLS, breakdown

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))  # this checkout's banpipe, as bin/ uses
BIN = ROOT / "bin"
PY = sys.executable
WAN = "198.51.100.2"


def sources(n: int) -> list[str]:
    v4 = [f"203.0.113.{i}" for i in range(1, 255)] + [f"192.0.2.{i}" for i in range(1, 255)]
    out = v4[: min(n, 400)]
    out += [f"2001:db8:bad::{i // 65536:x}:{i % 65536:x}" for i in range(1, n - len(out) + 1)]
    return out[:n]


def fast_line(i: int, src: str) -> str:
    sec, usec = divmod(i, 1000)
    hh, rest = divmod(sec % 86400, 3600)
    mm, ss = divmod(rest, 60)
    if ":" in src:
        return (
            f"11/28/2026-{hh:02d}:{mm:02d}:{ss:02d}.{usec:06d}  [**] [1:2001219:20] ET SCAN "
            f"Potential SSH Scan [**] [Classification: Attempted Information Leak] "
            f"[Priority: 2] {{TCP}} {src}:{40000 + i % 20000} -> 2001:db8:1::2:22\n"
        )
    return (
        f"11/28-{hh:02d}:{mm:02d}:{ss:02d}.{usec:06d}  [**] [1:2003:8] SQL Worm propagation "
        f"attempt [**] [Classification: Misc Attack] [Priority: 2] {{UDP}} "
        f"{src}:{1024 + i % 60000} -> {WAN}:1434\n"
    )


def write_config(path: Path, backend: str, ledger: Path, state_dir: Path) -> None:
    path.write_text(
        f"""[network]
wan = ["{WAN}"]
networks = ["2001:db8:1::/48"]
wan_state = "{state_dir}/wan.json"
[ban]
spoof_max = 0
[firewall]
backend = "{backend}"
[banctl]
ledger = "{ledger}"
"""
    )


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(BIN.parent / "lib")
    return e


def throughput(count: int, n_sources: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bp-bench-pipe-") as tmp:
        t = Path(tmp)
        alert, cfg, ledger = t / "alert", t / "banpipe.toml", t / "ledger.sqlite3"
        srcs = sources(n_sources)
        with open(alert, "w") as f:
            buf = []
            for i in range(count):
                buf.append(fast_line(i, srcs[i % len(srcs)]))
                if len(buf) == 10000:
                    f.write("".join(buf))
                    buf.clear()
            f.write("".join(buf))
        write_config(cfg, "null", ledger, t)
        start = time.perf_counter()
        ft = subprocess.Popen(
            [PY, str(BIN / "fasttail"), "--once", "--from-start", str(alert)],
            stdout=subprocess.PIPE, env=env(),
        )  # fmt: skip
        af = subprocess.Popen(
            [PY, str(BIN / "alertfilter"), "--config", str(cfg)],
            stdin=ft.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env(),
        )  # fmt: skip
        bc = subprocess.Popen(
            [PY, str(BIN / "banctl"), "--config", str(cfg), "apply"],
            stdin=af.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
        )  # fmt: skip
        ft.stdout.close()
        af.stdout.close()
        rss, cpu = {}, {}
        for name, p in (("fasttail", ft), ("alertfilter", af), ("banctl", bc)):
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            rss[name] = usage.ru_maxrss / 1024
            cpu[name] = usage.ru_utime + usage.ru_stime
        wall = time.perf_counter() - start
        codes = {
            n: p.returncode for n, p in (("fasttail", ft), ("alertfilter", af), ("banctl", bc))
        }
        print(f"throughput: {count:,} alerts from {n_sources} sources, null backend")
        print(f"  wall {wall:.2f} s -> {count / wall:,.0f} alerts/s (target >= 150,000)")
        print("  peak RSS MiB: " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))
        total = sum(cpu.values())
        print(
            "  CPU s: "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            + f"; sum {total:.2f} -> at most {count / (total / os.cpu_count()):,.0f} alerts/s"
            f" on {os.cpu_count()} cores with perfect overlap"
        )
        print(f"  exit codes: {codes}")


class Watch:
    """Firewall changes in the namespace, read in a thread: by default the kernel's own
    report (a socket on NFNLGRP_NFTABLES, the group `nft monitor` listens on: the
    NEWSETELEM or NEWRULE message carries the address's bytes); with ``nft_monitor``
    the lines of an `nft monitor` process, as before 2026-12-07 17:30 (one more
    process and pipe between the kernel and the clock: about 0.1-0.4 ms more)."""

    def __init__(self, ns: str, *, nft_monitor: bool = False) -> None:
        self.lines: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self.proc = self.sock = None
        self.tid = 0  # the reading thread's (perf trace)
        if nft_monitor:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "nft", "monitor"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
            )  # fmt: skip
            threading.Thread(target=self._pump, daemon=True).start()
            return
        from banpipe.firewall.nfproto import (
            NETLINK_ADD_MEMBERSHIP,
            NETLINK_NETFILTER,
            NFNLGRP_NFTABLES,
            SOL_NETLINK,
        )
        from banpipe.firewall.nlsocket import _in_netns

        with _in_netns(ns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        threading.Thread(target=self._events, daemon=True).start()

    def _pump(self) -> None:
        self.tid = threading.get_native_id()
        for line in self.proc.stdout:
            self.lines.put((time.perf_counter(), line))

    def _events(self) -> None:
        self.tid = threading.get_native_id()
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            self.lines.put((time.perf_counter(), data))

    def wait_for(self, addr: str, timeout: float = 5.0) -> float:
        from banpipe.address import packed

        key = addr.encode() if self.proc else packed(addr)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(addr)
            t, data = self.lines.get(timeout=left)
            if key in data:
                return t

    def close(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        if self.sock:
            self.sock.close()


def ipset_wait(ns: str, addr: str, timeout: float = 5.0) -> float:
    from banpipe.address import packed
    from banpipe.firewall.ipsetmsg import ipset_payload
    from banpipe.firewall.nfnl import Channel, ChannelError
    from banpipe.firewall.nfproto import IPSET_CMD_TEST, ipset_type

    global _TEST_CHANNEL
    if _TEST_CHANNEL is None or _TEST_CHANNEL.netns != ns:
        _TEST_CHANNEL = Channel(ns)
    setname = "banpipe6" if ":" in addr else "banpipe4"
    item = [(ipset_payload(setname, packed(addr)), addr)]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            _TEST_CHANNEL.each(ipset_type(IPSET_CMD_TEST), item, "test")
        except ChannelError:
            continue  # not there yet (or no set yet)
        return time.perf_counter()
    raise TimeoutError(addr)


_TEST_CHANNEL = None


def fdatasync_ms(
    directory: Path, n: int = 200, pages: int = 1, idle: float = 0.0
) -> tuple[float, float]:
    """p50 and p99 of ``pages`` 4 KiB writes (in place, as the ledger's WAL after its
    restart) + fdatasync in ``directory``: the floor under a durable ledger commit of
    that many WAL pages, so under every ban's latency. ``idle``: seconds without I/O
    before each, as between the latency run's alerts: on this machine's virtual disk
    the first request after a pause costs 0.2-0.3 ms more than one right after another
    (bench/README.md, issue 12, "banctl's new-ban path")."""
    path = directory / "fdatasync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    page = b"x" * 4096
    times = []
    try:
        os.pwrite(fd, page * (16 * pages), 0)  # allocated before: rewritten in place
        os.fsync(fd)
        for i in range(n):
            if idle:
                time.sleep(idle)
            for k in range(pages):
                os.pwrite(fd, page, ((i % 16) * pages + k) * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return statistics.median(times), times[min(n - 1, int(n * 0.99))]


def proc_usage(pid: int) -> tuple[int, int, int]:
    """(ns on a CPU, of which ticks in the kernel, voluntary context switches: how often
    it slept and was woken) of one process, all threads: measures of each stage's
    share that depend far less on the machine's load than the wall clock."""
    cpu = switches = 0
    with open(f"/proc/{pid}/stat") as f:
        system = int(f.read().rsplit(")", 1)[1].split()[12])  # stime, clock ticks
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            cpu += int(f.read().split()[0])
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    switches += int(line.split()[1])
    return cpu, system, switches


def traced(name: str, cmd: list[str], trace: Path | None) -> list[str]:
    """``cmd`` under ``strace -f -ttt -T`` writing ``trace/name`` (--strace)."""
    if trace is None:
        return cmd
    trace.mkdir(parents=True, exist_ok=True)
    return ["strace", "-f", "-ttt", "-T", "-o", str(trace / name), *cmd]


def descendants(pid: int) -> list[int]:
    """``pid``'s children and theirs (/proc): a traced stage's tool under its strace,
    which a terminated strace detaches and leaves running."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return []
    return [d for k in kids for d in (k, *descendants(k))]


def latency(
    backend: str,
    n: int,
    trace: Path | None = None,
    perf_trace: Path | None = None,
    *,
    nft_monitor: bool = False,
    pin: int | None = None,
) -> None:
    ns = f"bpbenchpipe{os.getpid()}"
    # --pin: the three stages on one CPU, so each hop wakes a process on the CPU that
    # wrote to it instead of another, idle one (as CPUAffinity= in the unit would).
    on_cpu = None if pin is None else (lambda: os.sched_setaffinity(0, {pin}))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen] = []
    watch = None
    # Removed after the processes stopped: banctl writes its ledger until it exits.
    tmp = tempfile.mkdtemp(prefix="bp-bench-lat-")
    try:
        with contextlib.nullcontext(tmp):
            t = Path(tmp)
            # As deployed: the ledger's directory is not the watched state directory
            # (each WAL write there would wake alertfilter and banctl mid-commit), and
            # the alert file is not in the config's directory (/var/log/snort, not
            # /etc/banpipe: alertfilter watches that one, and woke on every append).
            for sub in ("lib", "run", "log"):
                (t / sub).mkdir()
            alert, cfg, ledger = (
                t / "log" / "alert",
                t / "banpipe.toml",
                t / "lib" / "ledger.sqlite3",
            )
            alert.write_text("")
            write_config(cfg, backend, ledger, t / "run")
            sync50, sync99 = fdatasync_ms(t / "lib")
            # A ban's durable commit: 10 WAL pages since the bans go alone (14 before).
            sync10, sync14 = (fdatasync_ms(t / "lib", pages=k)[0] for k in (10, 14))
            # As a ban meets it: 10 pages after the 20 ms pause between alerts.
            idle10 = fdatasync_ms(t / "lib", n=50, pages=10, idle=0.02)[0]
            if backend != "ipset":
                watch = Watch(ns, nft_monitor=nft_monitor)
            ft = subprocess.Popen(
                traced("fasttail", [PY, str(BIN / "fasttail"), "--from-start", str(alert)], trace),
                stdout=subprocess.PIPE, env=env(), preexec_fn=on_cpu,
            )  # fmt: skip
            af = subprocess.Popen(
                traced("alertfilter", [PY, str(BIN / "alertfilter"), "--config", str(cfg)], trace),
                stdin=ft.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env(),
                preexec_fn=on_cpu,
            )  # fmt: skip
            bc = subprocess.Popen(
                ["ip", "netns", "exec", ns,
                 *traced("banctl", [PY, str(BIN / "banctl"), "--config", str(cfg), "apply"],
                         trace)],
                stdin=af.stdout, stderr=subprocess.PIPE, text=True, env=env(),
                preexec_fn=on_cpu,
            )  # fmt: skip
            procs += [ft, af, bc]
            ft.stdout.close()
            af.stdout.close()
            started = bc.stderr.readline()
            if "started" not in started:
                raise RuntimeError(f"banctl did not start: {started}")
            threading.Thread(target=lambda: bc.stderr.read(), daemon=True).start()
            srcs = sources(n + 1)[1:]
            samples = []
            pids = {"fasttail": ft.pid, "alertfilter": af.pid, "banctl": bc.pid}
            usage0: dict[str, tuple[int, int]] = {}
            with open(alert, "a", buffering=1) as f:
                # One warm-up alert (first import paths, first transaction).
                f.write(fast_line(0, sources(1)[0]))
                if watch:
                    watch.wait_for(sources(1)[0])
                else:
                    ipset_wait(ns, sources(1)[0])
                time.sleep(0.2)  # banctl's checkpoint after its first ban
                usage0 = {k: proc_usage(p) for k, p in pids.items()} if trace is None else {}
                tracer = None
                if perf_trace is not None:
                    # One clock for every stage: the append (ours), each stage's reads and
                    # writes, banctl's WAL writes, fdatasync and netlink send, nft monitor.
                    watched = [
                        os.getpid(),
                        *pids.values(),
                        *([watch.proc.pid] if watch and watch.proc else []),
                    ]
                    tracer = subprocess.Popen(
                        ["perf", "trace", "-o", str(perf_trace), "-e", STAGE_CALLS,
                         "-p", ",".join(map(str, watched))],
                        stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    time.sleep(2.0)  # perf attaches
                for i, src in enumerate(srcs, 1):
                    time.sleep(0.02)
                    line = fast_line(i, src)
                    t0 = time.perf_counter()
                    f.write(line)
                    f.flush()
                    t1 = watch.wait_for(src) if watch else ipset_wait(ns, src)
                    samples.append((t1 - t0) * 1000)
                time.sleep(1.2)  # banctl's last checkpoint, inside the count
                if tracer is not None:
                    tracer.send_signal(subprocess.signal.SIGINT)
                    tracer.wait()
                    roles = {"bench": os.getpid(), **pids, "watch": watch.tid if watch else 0}
                    breakdown(perf_trace, roles)
            if usage0:
                per = []
                for k, p in pids.items():
                    cpu, system, sw = proc_usage(p)
                    system = (system - usage0[k][1]) * 1000 / os.sysconf("SC_CLK_TCK")
                    per.append(
                        f"{k} {(cpu - usage0[k][0]) / 1e6 / len(samples):.3f} ms CPU "
                        f"({system / len(samples):.2f} in the kernel), "
                        f"{(sw - usage0[k][2]) / len(samples):.2f} wake-ups"
                    )
                print(f"  per alert ({backend}): " + "; ".join(per))
            samples.sort()
            p50 = statistics.median(samples)
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            how = (
                "netlink IPSET_CMD_TEST polling"
                if watch is None
                else "nft monitor line"
                if watch.proc
                else "the kernel's netlink event"
            )
            print(
                f"latency {backend:9} n={len(samples)}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                f"max {samples[-1]:.2f} ms ({how}; targets p50 <= 1.5, p99 <= 5); "
                f"this disk's fdatasync of one 4 KiB page: p50 {sync50:.2f} ms, p99 {sync99:.2f} ms"
                f" (10 / 14 pages: p50 {sync10:.2f} / {sync14:.2f} ms; 10 pages after 20 ms"
                f" idle, as a ban: p50 {idle10:.2f} ms)"
            )
    finally:
        for p in procs:
            if p.poll() is None:
                for pid in descendants(p.pid) if trace is not None else ():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, subprocess.signal.SIGTERM)
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if watch:
            watch.close()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--sources", type=int, default=500)
    ap.add_argument("--latency", type=int, default=200, help="alerts per backend")
    ap.add_argument("--backends", default="nftables,iptables,ipset")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument(
        "--strace", type=Path, metavar="DIR",
        help="latency: run each stage under strace -f -ttt -T, one file per stage in DIR "
        "(slower: for the order and count of system calls, not the times)",
    )  # fmt: skip
    ap.add_argument(
        "--perf-trace", type=Path, metavar="FILE",
        help="latency: record the stages' reads, writes, WAL writes, fdatasync and netlink "
        "sends with `perf trace` (one backend; the per-stage breakdown in bench/README.md)",
    )  # fmt: skip
    ap.add_argument(
        "--nft-monitor", action="store_true",
        help="latency: see the change through an `nft monitor` process (as before) instead "
        "of the kernel's netlink event",
    )  # fmt: skip
    ap.add_argument(
        "--pin", type=int, metavar="CPU",
        help="latency: run the three stages on this one CPU (sched_setaffinity)",
    )  # fmt: skip
    ap.add_argument(
        "--code", type=Path, metavar="CHECKOUT",
        help="run the tools of another checkout (its bin/ and lib/; side by side runs)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.code:
        global BIN
        BIN = args.code.resolve() / "bin"
    print(f"code: {BIN.parent}")
    if not args.skip_throughput:
        throughput(args.count, args.sources)
    if not args.skip_latency:
        if os.geteuid() != 0:
            print("latency: needs root (network namespace); skipped")
        else:
            for backend in args.backends.split(","):
                latency(
                    backend, args.latency, args.strace, args.perf_trace,
                    nft_monitor=args.nft_monitor, pin=args.pin,
                )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
