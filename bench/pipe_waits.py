"""Issue 12: where the whole pipe's wall time goes, per stage, on the realistic file.

Runs ``fasttail --once | alertfilter | banctl apply`` (null backend, fresh ledger) as
bench_realistic.py does, and samples each stage's ``/proc/PID/schedstat`` and context
switches every 20 ms until it exits. For each stage it prints the time it was alive
split into: on a CPU, runnable but waiting for one (two cores, three processes), and
asleep (an empty or full pipe, or the disk). The stage with the least sleep is the
bottleneck; its runnable wait is what the other stages took from it.

``--pipe-size BYTES`` sets both pipes' capacity (F_SETPIPE_SZ) right after they are
made, to see whether larger pipes change the waits.

    /work/venv/bin/python bench/pipe_waits.py --keep /var/tmp/real1m [--code CHECKOUT]
        [--pipe-size 1048576] [--runs 2]
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_realistic  # noqa: E402

STAGES = ("fasttail", "alertfilter", "banctl")


def sample(pid: int) -> tuple[int, int, int, int] | None:
    """(ns on CPU, ns runnable waiting, voluntary, involuntary switches), None if gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            run, wait, _ = (int(x) for x in f.read().split())
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except (OSError, ValueError):
        return None
    return (
        run,
        wait,
        int(fields["voluntary_ctxt_switches"]),
        int(fields["nonvoluntary_ctxt_switches"]),
    )


def run_pipe(cmds: list[list[str]], env: dict[str, str], pipe_size: int | None) -> None:
    start = time.perf_counter()
    resize = (lambda fd: fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, pipe_size)) if pipe_size else None
    procs = bench_realistic.start_chain(cmds, env, on_pipe=resize)
    seen: dict[int, tuple[float, tuple[int, int, int, int]]] = {}

    def poll() -> None:
        while any(p.poll() is None for p in procs):
            for p in procs:
                got = sample(p.pid)
                if got is not None:
                    seen[p.pid] = (time.perf_counter() - start, got)
            time.sleep(0.02)

    sampler = threading.Thread(target=poll)
    sampler.start()
    for p in procs:
        p.wait()
    sampler.join()
    wall = time.perf_counter() - start
    size = f"{pipe_size:,} B pipes" if pipe_size else "default pipes"
    print(f"wall {wall:.2f} s ({size}); load {bench_realistic.load()}")
    for name, p in zip(STAGES, procs, strict=True):
        alive, (run, wait, vol, invol) = seen[p.pid]
        on_cpu, waiting = run / 1e9, wait / 1e9
        print(
            f"  {name:12} alive {alive:5.2f} s: on a CPU {on_cpu:5.2f}, runnable waiting "
            f"{waiting:4.2f}, asleep {alive - on_cpu - waiting:5.2f}; switches "
            f"{vol:,} voluntary, {invol:,} involuntary"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", help="directory for the alert file (reused when present)")
    ap.add_argument("--code", type=Path, help="checkout whose tools to run (default: this)")
    ap.add_argument("--pipe-size", type=int, help="F_SETPIPE_SZ of both pipes, bytes")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    keep = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bp-waits-"))
    alerts = bench_realistic.realistic_file(keep, args.count, args.seed)
    tree = bench_realistic.Tree("now", (args.code or bench_realistic.ROOT).resolve())
    with tempfile.TemporaryDirectory(prefix="bp-waits-") as tmp:
        cfg, ledger = Path(tmp) / "banpipe.toml", Path(tmp) / "ledger.sqlite3"
        bench_realistic.write_config(cfg, ledger)
        cmds = [
            tree.tool("fasttail", "--once", "--from-start", str(alerts)),
            tree.tool("alertfilter", "--config", str(cfg)),
            tree.tool("banctl", "--config", str(cfg), "--backend", "null", "apply"),
        ]
        print(f"code: {tree.root}")
        for _ in range(args.runs):
            for path in glob.glob(str(ledger) + "*"):
                os.unlink(path)
            run_pipe(cmds, tree.env(), args.pipe_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
