"""Where one alert's time goes in fasttail and alertfilter when their caches are cold.

A stage that sleeps between single alerts wakes with its code and data out of the CPU's
caches (bench_wakeup.py: about 0.25 ms CPU a wake-up against 0.02-0.03 ms in a hot
loop). This runs each stage's per-alert steps in process, one alert at a time, with
16 MiB of other memory written before each alert ("cold") or not ("hot"), and prints
the median of each step in microseconds (issue 12; bench/README.md).

    .venv/bin/python bench/cold_parts.py [--alerts 1500] [--code CHECKOUT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_pipeline import fast_line, sources, write_config

JUNK = bytearray(16 << 20)


def thrash() -> None:
    for i in range(0, len(JUNK), 64):
        JUNK[i] = (JUNK[i] + 1) & 255


def timed(steps: dict, cold: bool, n: int, skip: int = 100) -> dict[str, float]:
    """Median microseconds of each of ``steps`` (name -> callable taking i), in order."""
    got: dict[str, list[int]] = {k: [] for k in steps}
    for i in range(n):
        if cold:
            thrash()
        for name, step in steps.items():
            t0 = time.perf_counter_ns()
            step(i)
            if i >= skip:
                got[name].append(time.perf_counter_ns() - t0)
    return {k: statistics.median(v) / 1000 for k, v in got.items()}


def fasttail_steps(tmp: Path, srcs: list[str]) -> dict:
    from banpipe import cli, fasttail
    from banpipe.follow import Follower
    from banpipe.parsers import AlertParser

    alert = tmp / "alert"
    alert.write_text("")
    out = fasttail.JsonOutput(open(os.devnull, "wb"), cli.Reporter("fasttail", sys.stderr))  # noqa: SIM115

    def parser() -> AlertParser:
        return AlertParser(now=datetime.now(), max_line=65536, encoded=True)

    fol = Follower(str(alert), new_parser=parser, output=out, note=print)
    fol.start(saved=None, from_start=True)
    sink = open(alert, "a", buffering=1)  # noqa: SIM115
    held: dict = {}

    def append(i: int) -> None:  # the writer's (Snort's) part, not fasttail's
        sink.write(fast_line(i, srcs[i]))

    def read(i: int) -> None:
        held["chunk"] = fol.cur.read()

    def check(i: int) -> None:
        fol.files.truncated(fol.cur)

    def parse(i: int) -> None:
        fol.cur.extend_head(held["chunk"])
        held["items"] = fol.cur.feed(held["chunk"])

    def emit(i: int) -> None:
        out.emit(held["items"], fol.cur.name)
        out.flush()

    def after(i: int) -> None:  # the rest of the wake-up: end-of-file read, name, waits
        fol.step()
        fol._stale_block()
        fol.checkpoint()
        fol._timeout()

    return {
        "(append)": append,
        "read the chunk": read,
        "truncation check": check,
        "parse": parse,
        "encode and write": emit,
        "after the write": after,
    }


def alertfilter_steps(tmp: Path, srcs: list[str], code: Path) -> dict:
    from banpipe import cli, pipe
    from banpipe.judge import Filter, Loader

    (tmp / "run").mkdir()
    cfg = tmp / "banpipe.toml"
    write_config(cfg, "null", tmp / "ledger.sqlite3", tmp / "run")
    lines = subprocess.run(
        [sys.executable, str(code / "bin" / "fasttail"), "--once", "-"],
        input="".join(fast_line(i, s) for i, s in enumerate(srcs)).encode(),
        capture_output=True, check=True,
        env=dict(os.environ, PYTHONPATH=str(code / "lib")),
    ).stdout.splitlines(keepends=True)  # fmt: skip
    reporter = cli.Reporter("alertfilter", sys.stderr)
    loader = Loader(str(cfg), reporter)
    loader.start()
    out = open(os.devnull, "wb")  # noqa: SIM115
    filt = Filter(loader, out, reporter, "<stdin>", dry_run=False, explain=False)
    feeder = pipe.Lines()
    held: dict = {}

    def split(i: int) -> None:
        held["lines"] = feeder.feed(lines[i])

    def judge(i: int) -> None:  # loads, the contract's check, decide (a new offender), encode
        filt.process(*held["lines"])

    def flush(i: int) -> None:
        out.flush()

    return {"split": split, "judge and encode": judge, "write": flush}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=1500)
    ap.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1])
    a = ap.parse_args()
    code = a.code.resolve()
    sys.path.insert(0, str(code / "lib"))
    srcs = sources(a.alerts + 1)
    for stage in ("fasttail", "alertfilter"):
        for cold in (False, True):
            with tempfile.TemporaryDirectory(prefix="bp-cold-") as tmp:
                if stage == "fasttail":
                    steps = fasttail_steps(Path(tmp), srcs)
                else:
                    steps = alertfilter_steps(Path(tmp), srcs, code)
                got = timed(steps, cold, a.alerts)
            parts = ", ".join(f"{k} {v:.1f}" for k, v in got.items())
            got.pop("(append)", None)
            print(
                f"{stage:11s} {'cold' if cold else 'hot':4s} {code.name}: {parts}; "
                f"sum {sum(got.values()):.1f} us (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
