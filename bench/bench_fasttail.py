#!/usr/bin/env python3
"""fasttail: throughput against a naive floor, peak memory, and append-to-stdout latency.

    python bench/bench_fasttail.py [--lines 1000000] [--repeat 3] [--latency 300]
                                   [--eve-lines 300000] [--skip-fast] [--skip-latency]

Everything runs as real processes, as in production:
  * throughput: ``fasttail --once --from-start FILE > /dev/null`` on a generated
    alert_fast file (bench/gen_alerts.py: Snort 2/3 and Suricata, IPv4/IPv6, many
    sources), next to the naive floor measured in the same run on the same file: one
    regex + ``json.dumps`` per line written to /dev/null, also a separate process. Each is
    run ``--repeat`` times, interleaved, and the best run counts (the machine is shared).
  * fasttail with the standard library's json instead of orjson (orjson hidden).
  * Suricata EVE JSON: ``fasttail --once --from-start`` on a file of EVE alert records
    (bench/gen_alerts.py --style eve) next to a floor that only decodes and re-encodes
    every line with the standard library (``json.dumps(json.loads(line))``), same file,
    same loop; and the same on a file where three records in four are other events.
  * peak RSS of the fasttail process (``ru_maxrss`` from wait4), on files of two sizes.
  * latency: fasttail follows a file; this process appends one alert at a time with a
    pause, and times from just before the write to the JSON line read from the pipe.
Figures go in bench/README.md; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIB = ROOT / "lib"
FASTTAIL = ROOT / "bin" / "fasttail"
sys.path.insert(0, str(HERE))

import gen_alerts  # noqa: E402

NAIVE = r"""
import json, re, sys
R = re.compile(
    r"(?P<ts>\S+)\s+(?:\[\w+\] )?\[\*\*\] \[(?P<gid>\d+):(?P<sid>\d+):(?P<rev>\d+)\] "
    r"(?P<msg>.*?) \[\*\*\](?: \[Classification: (?P<classification>[^\]]*)\])?"
    r"(?: \[Priority: (?P<priority>\d+)\])? \{(?P<proto>[^}]*)\} (?P<src>\S*) -> (?P<dst>\S*)"
)
out = sys.stdout
with open(sys.argv[1], encoding="utf-8", errors="surrogateescape") as f:
    for line in f:
        m = R.match(line)
        if m:
            out.write(json.dumps(m.groupdict()) + "\n")
"""

# The EVE floor: decode and re-encode every line with the standard library, nothing else.
EVE_FLOOR = r"""
import json, sys
out = sys.stdout
with open(sys.argv[1], encoding="utf-8", errors="surrogateescape") as f:
    for line in f:
        out.write(json.dumps(json.loads(line)) + "\n")
"""

NO_ORJSON = (
    "import sys; sys.modules['orjson'] = None; from banpipe.fasttail import main; sys.exit(main())"
)


def env(lib: Path = LIB) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(lib) + os.pathsep + e.get("PYTHONPATH", "")
    return e


#: --baseline LIB: another checkout's lib/ measured in the same loop ("before").
BASELINE: list[Path] = []


def timed(argv: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds of a process writing to /dev/null."""
    with open(os.devnull, "wb") as sink:
        t0 = time.perf_counter()
        lib = LIB
        if argv[:1] == ["baseline"]:
            argv, lib = argv[1:], BASELINE[0]
        p = subprocess.Popen(argv, stdout=sink, stderr=subprocess.DEVNULL, env=env(lib))
        _, status, usage = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{argv} failed with {p.returncode}")
    return dt, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def make_file(path: Path, lines: int, style: str = "fast") -> None:
    with open(path, "w", encoding="utf-8") as f:
        buf: list[str] = []
        for text in gen_alerts.alerts(lines, style, seed=1, v6_share=0.2):
            buf.append(text)
            if len(buf) >= 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


def best_of(runs: dict[str, list[str]], repeat: int) -> dict[str, tuple[float, int, float]]:
    """Each command ``repeat`` times, interleaved; best wall and CPU, largest RSS."""
    best: dict[str, tuple[float, int, float]] = {}
    for _ in range(repeat):
        for name, argv in runs.items():
            dt, rss, cpu = timed(argv)
            old = best.get(name, (dt, rss, cpu))
            best[name] = (min(dt, old[0]), max(rss, old[1]), min(cpu, old[2]))
    return best


def report(best: dict[str, tuple[float, int, float]], floor: str, lines: int) -> None:
    floor_wall, _, floor_cpu = best[floor]
    # CPU time (user + sys) is the fairer figure on a shared machine; wall time also shown.
    for name, (dt, rss, cpu) in best.items():
        rate, crate = lines / dt, lines / cpu
        print(
            f"  {name:32s} wall {dt:6.2f} s {rate:9,.0f}/s {floor_wall / dt:4.2f}x | "
            f"cpu {cpu:6.2f} s {crate:9,.0f}/s {floor_cpu / cpu:4.2f}x | "
            f"peak RSS {rss / 1024:5.1f} MiB"
        )


def eve_throughput(path: Path, repeat: int) -> dict[str, tuple[float, int, float]]:
    return best_of(
        {
            "EVE floor (json.loads+json.dumps)": [sys.executable, "-c", EVE_FLOOR, str(path)],
            "fasttail on EVE (orjson)": [
                sys.executable,
                str(FASTTAIL),
                "--once",
                "--from-start",
                str(path),
            ],
        },
        repeat,
    )


def throughput(path: Path, lines: int, repeat: int) -> dict[str, tuple[float, int, float]]:
    runs = {
        "naive floor (regex + json.dumps)": [sys.executable, "-c", NAIVE, str(path)],
        "fasttail (orjson)": [sys.executable, str(FASTTAIL), "--once", "--from-start", str(path)],
        # Position records after every 32 KiB read (docs/pipe-format.md, "Positions").
        "fasttail --ledger (positions)": [
            sys.executable,
            str(FASTTAIL),
            "--once",
            "--from-start",
            "--ledger",
            str(path.parent / "no-ledger.sqlite3"),
            str(path),
        ],
        "fasttail (json, orjson hidden)": [
            sys.executable,
            "-c",
            NO_ORJSON,
            "--once",
            "--from-start",
            str(path),
        ],
    }
    if BASELINE:
        launcher = BASELINE[0].parent / "bin" / "fasttail"  # it puts its own lib/ first
        runs["fasttail (baseline)"] = [
            "baseline",
            sys.executable,
            str(launcher),
            "--once",
            "--from-start",
            str(path),
        ]
    return best_of(runs, repeat)


def latency(samples: int, gap: float, state: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "alert"
        f.write_text("")
        argv = [sys.executable, str(FASTTAIL), str(f)]
        if state:
            argv[2:2] = ["--state", str(Path(d) / "pos.json")]
            ready = Path(d) / "pos.json"
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env())
        try:
            if state:
                while not ready.exists():
                    time.sleep(0.01)
            else:
                time.sleep(1.0)  # no readiness signal without --state; warm-up only
            lines = list(gen_alerts.alerts(samples + 20, "fast", seed=2, v6_share=0.2))
            out: list[float] = []
            fd = os.open(f, os.O_WRONLY | os.O_APPEND)
            try:
                for i, text in enumerate(lines):
                    data = text.encode()
                    t0 = time.perf_counter()
                    os.write(fd, data)
                    got = p.stdout.readline()
                    t1 = time.perf_counter()
                    if not got:
                        raise SystemExit("fasttail ended early")
                    if i >= 20:  # warm-up
                        out.append((t1 - t0) * 1000)
                    time.sleep(gap)
            finally:
                os.close(fd)
            return out
        finally:
            p.terminate()
            p.wait()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency", type=int, default=300, help="latency samples")
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between appends")
    ap.add_argument("--keep", metavar="DIR", help="keep/reuse generated files in DIR")
    ap.add_argument("--eve-lines", type=int, default=300_000, help="EVE records per file")
    ap.add_argument("--skip-fast", action="store_true", help="no alert_fast throughput run")
    ap.add_argument("--skip-latency", action="store_true", help="no memory/latency runs")
    ap.add_argument(
        "--baseline", metavar="LIB", help="also time the fasttail of the checkout holding LIB"
    )
    args = ap.parse_args(argv)
    if args.baseline:
        BASELINE.append(Path(args.baseline).resolve())

    tmp = tempfile.TemporaryDirectory()
    base = Path(args.keep or tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    big = base / f"alert_fast_{args.lines}.txt"
    small = base / "alert_fast_100000.txt"
    full = base / "alert_full_100000.txt"
    eve = base / f"eve_{args.eve_lines}.json"
    eve_mixed = base / f"eve_mixed_{args.eve_lines}.json"
    for path, n, style in (
        (big, args.lines, "fast"),
        (small, 100_000, "fast"),
        (full, 100_000, "full"),
        (eve, args.eve_lines, "eve"),
        (eve_mixed, args.eve_lines, "eve-mixed"),
    ):
        if not path.exists():
            print(f"generating {path.name} ...", file=sys.stderr)
            make_file(path, n, style)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    print(
        f"\nthroughput, {args.lines:,} alert_fast lines ({big.stat().st_size / 1e6:.0f} MB), "
        f"best of {args.repeat}:"
    )
    if not args.skip_fast:
        best = throughput(big, args.lines, args.repeat)
        report(best, "naive floor (regex + json.dumps)", args.lines)

    for path, n, what in ((eve, args.eve_lines, "EVE alert"), (eve_mixed, args.eve_lines, "")):
        label = what or "EVE mixed (1 alert : 3 other events)"
        print(
            f"\nthroughput, {n:,} {label} lines ({path.stat().st_size / 1e6:.0f} MB), "
            f"best of {args.repeat}:"
        )
        report(eve_throughput(path, args.repeat), "EVE floor (json.loads+json.dumps)", n)
    if args.skip_latency:
        tmp.cleanup()
        return 0

    print("\npeak RSS of fasttail --once by file size:")
    for path, n in ((small, 100_000), (big, args.lines)):
        dt, rss, cpu = timed([sys.executable, str(FASTTAIL), "--once", str(path)])
        print(f"  {n:>9,} lines  {rss / 1024:5.1f} MiB")
    dt, rss, cpu = timed([sys.executable, str(FASTTAIL), "--once", str(full)])
    print(
        f"  alert_full, 100,000 blocks: {100_000 / cpu:,.0f} alerts/s (cpu), {rss / 1024:.1f} MiB"
    )

    for state in (False, True):
        lat = latency(args.latency, args.gap, state)
        label = "with --state" if state else "no --state"
        print(
            f"\nlatency append -> JSON line ({label}, {len(lat)} samples, {args.gap * 1000:.0f} ms "
            f"apart): p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, "
            f"max {max(lat):.2f} ms, mean {statistics.mean(lat):.2f} ms"
        )
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
