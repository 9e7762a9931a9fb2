"""tests/run set-up time: a fresh virtualenv versus reusing it, side by side in one run.

    python3 bench/bench_tests_run.py        # as root, from the checkout

Runs ``tests/run --collect-only`` twice into a scratch virtualenv (``.venv-bench``, so
the checkout's .venv is untouched): first with BANPIPE_FRESH_VENV=1 (what every run
cost before the stamp: all of ansible and ansible-lint installed anew), then plainly
(the stamp matches: reused). Both include ruff and pytest's collection. The load
average before each run is printed, since the machine is shared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ".venv-bench"


def timed(fresh: bool) -> float:
    env = dict(os.environ, BANPIPE_VENV=VENV)
    if fresh:
        env["BANPIPE_FRESH_VENV"] = "1"
    start = time.monotonic()
    subprocess.run(
        ["bash", "tests/run", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.monotonic() - start


def main() -> int:
    try:
        rows = []
        for label, fresh in (("fresh .venv (before: every run)", True), ("reused .venv", False)):
            load = os.getloadavg()[0]
            rows.append((label, timed(fresh), load))
        print("| tests/run --collect-only | seconds | load before |")
        print("|---|---|---|")
        for label, seconds, load in rows:
            print(f"| {label} | {seconds:.1f} | {load:.1f} |")
        print(f"ratio: {rows[0][1] / rows[1][1]:.0f}x")
    finally:
        shutil.rmtree(ROOT / VENV, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
