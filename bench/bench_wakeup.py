"""One stage of the pipe fed one alert per wake-up: its CPU and system calls per alert.

The latency path (issue 12) is a single alert per wake-up; a hot loop hides the fixed
cost of each wake-up (system calls, bookkeeping, cold paths). This runs fasttail
(following a file, one line appended at a time) or alertfilter (one pipe line written
to its stdin at a time) alone, waits for each alert's output line before the next,
pauses ``--gap`` seconds between alerts (the stage sleeps, as on a quiet machine),
and prints per alert: CPU (schedstat, all threads), voluntary context switches,
system calls (perf stat raw_syscalls:sys_enter; this VM has no hardware counters for
instructions), each counted over the alerts only (after a warm-up), and the median
wall time from the append (or write) to the stage's output line.

    .venv/bin/python bench/bench_wakeup.py [--stage fasttail,alertfilter] [--alerts 300]
        [--gap 0.01] [--code CHECKOUT] [--ledger] [--state] [--profile FILE]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_pipeline import fast_line, proc_usage, sources, write_config

PY = sys.executable


def wait_line(fd: int, buf: bytearray, what: bytes) -> None:
    """Read ``fd`` until a line holding ``what`` arrived (the stage's output)."""
    while True:
        cut = buf.find(b"\n")
        while cut >= 0:
            line, buf[:] = bytes(buf[:cut]), buf[cut + 1 :]
            if what in line:
                return
            cut = buf.find(b"\n")
        data = os.read(fd, 1 << 16)
        if not data:
            raise RuntimeError("the stage ended")
        buf += data


def counted(pid: int, out: Path) -> subprocess.Popen:
    events = "raw_syscalls:sys_enter"  # no hardware counters on this VM
    return subprocess.Popen(
        ["perf", "stat", "-x", ",", "-o", str(out), "-e", events, "-p", str(pid)],
        stderr=subprocess.DEVNULL,
    )


def read_counts(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 3 and parts[0].strip().replace(".", "").isdigit():
            out[parts[2]] = float(parts[0])
    return out


def run(
    stage: str, code: Path, n: int, gap: float, extra: list[str], profile: Path | None = None
) -> None:
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    env = dict(os.environ, PYTHONPATH=str(code / "lib"))
    with tempfile.TemporaryDirectory(prefix="bp-wakeup-") as tmp:
        t = Path(tmp)
        (t / "log").mkdir()
        (t / "run").mkdir()
        alert, cfg = t / "log" / "alert", t / "banpipe.toml"
        alert.write_text("")
        write_config(cfg, "null", t / "ledger.sqlite3", t / "run")
        srcs = sources(n + 2)
        if stage == "fasttail":
            args = [str(code / "bin" / "fasttail"), "--from-start"]
            if "ledger" in extra:
                args += ["--ledger", str(t / "ledger.sqlite3")]
            if "state" in extra:
                args += ["--state", str(t / "state.json")]
            proc = subprocess.Popen([PY, *prof, *args, str(alert)], stdout=subprocess.PIPE, env=env)
            sink = open(alert, "a", buffering=1)  # noqa: SIM115

            def feed(i: int, src: str) -> None:
                sink.write(fast_line(i, src))
        else:
            proc = subprocess.Popen(
                [PY, *prof, str(code / "bin" / "alertfilter"), "--config", str(cfg)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=env,
            )  # fmt: skip
            lines = subprocess.run(
                [PY, str(code / "bin" / "fasttail"), "--once", "-"],
                input="".join(fast_line(i, s) for i, s in enumerate(srcs)).encode(),
                capture_output=True, env=env, check=True,
            ).stdout.splitlines(keepends=True)  # fmt: skip
            sink = proc.stdin

            def feed(i: int, src: str) -> None:
                sink.write(lines[i])
                sink.flush()

        fd = proc.stdout.fileno()
        buf = bytearray()
        try:
            for i in range(2):  # warm-up: first imports and paths
                feed(i, srcs[i])
                wait_line(fd, buf, srcs[i].encode())
            time.sleep(0.3)
            perf_out = t / "perf.csv"
            perf = counted(proc.pid, perf_out)
            time.sleep(1.0)  # perf attaches
            cpu0, _, sw0 = proc_usage(proc.pid)
            waits = []
            for i in range(2, n + 2):
                time.sleep(gap)
                t0 = time.perf_counter()
                feed(i, srcs[i])
                wait_line(fd, buf, srcs[i].encode())
                waits.append((time.perf_counter() - t0) * 1000)
            cpu1, _, sw1 = proc_usage(proc.pid)
            time.sleep(0.05)
            perf.send_signal(signal.SIGINT)
            perf.wait()
            c = read_counts(perf_out)
        finally:
            sink.close()  # alertfilter ends at the end of its input
            if stage == "fasttail":
                proc.terminate()
            proc.wait()
        print(
            f"{stage:11s} {code.name:8s} {' '.join(extra):12s} per alert: "
            f"{(cpu1 - cpu0) / 1e6 / n:.3f} ms CPU, {(sw1 - sw0) / n:.2f} wake-ups, "
            f"{c.get('raw_syscalls:sys_enter', 0) / n:.1f} system calls; "
            f"append to output line p50 {statistics.median(waits):.3f} ms "
            f"(load {os.getloadavg()[0]:.2f})",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", default="fasttail,alertfilter")
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.01)
    ap.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--ledger", action="store_true", help="fasttail --ledger")
    ap.add_argument("--state", action="store_true", help="fasttail --state")
    ap.add_argument("--profile", type=Path, help="run the (one) stage under cProfile to FILE")
    a = ap.parse_args()
    extra = [k for k in ("ledger", "state") if getattr(a, k)]
    for stage in a.stage.split(","):
        run(
            stage,
            a.code.resolve(),
            a.alerts,
            a.gap,
            extra if stage == "fasttail" else [],
            a.profile,
        )


if __name__ == "__main__":
    main()
