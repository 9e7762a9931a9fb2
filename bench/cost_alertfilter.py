"""Issue 12: alertfilter's instructions per alert (callgrind), this tree and REV side by side.

    /work/venv/bin/python bench/cost_alertfilter.py --keep DIR [--before REV]

CPU seconds on the shared 2-core machine move by 15% and more between two runs of the
same code; instruction counts do not. This script takes the first 40,000 lines of the
realistic file (``bench_realistic.py --keep DIR`` leaves it in DIR, and makes it when
absent), turns them into pipe lines with this tree's ``fasttail --once``, and counts
under ``valgrind --tool=callgrind`` two in-process runs of alertfilter's judge
(``Filter.process`` on 64 KiB chunks, output into memory) and two of ``RuleSet.decide``
alone, on 10,000 and 40,000 lines: the difference divided by 30,000 is the cost of an
alert without the start-up. ``PYTHONHASHSEED=0`` keeps the counts repeatable.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_realistic  # noqa: E402

LINES = (10_000, 40_000)

# Run under callgrind as ``python -c INNER LIB CONFIG JSONL N PART``.
INNER = """
import io, sys
lib, config, path, n, part = sys.argv[1:]
sys.path.insert(0, lib)
from banpipe import pipe
from banpipe.cli import Reporter
from banpipe.judge import Filter, Loader
loader = Loader(config, Reporter("x", sys.stderr))
loader.start()
lines = open(path, "rb").readlines()
if part == "decide":  # every line decoded in both runs: only decide's count differs
    decide = loader.rules.decide
    for alert in [pipe.loads(line) for line in lines[:40000]][: int(n)]:
        decide(alert)
else:
    data = b"".join(lines[: int(n)])
    judge = Filter(loader, io.BytesIO(), Reporter("x", sys.stderr), "x",
                   dry_run=False, explain=False)
    split = pipe.Lines()
    for k in range(0, len(data), 1 << 16):
        judge.process(*split.feed(data[k:k + (1 << 16)]))
"""


def instructions(lib: Path, config: Path, jsonl: Path, n: int, part: str, work: Path) -> int:
    out = work / f"callgrind.{os.getpid()}.{n}.{part}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         sys.executable, "-c", INNER, str(lib), str(config), str(jsonl), str(n), part],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            out.unlink()
            return int(line.split()[1])
    raise RuntimeError(f"{out}: no instruction total")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", required=True, help="directory of the realistic file")
    ap.add_argument("--before", help="git revision to count beside this tree")
    args = ap.parse_args()
    alerts = bench_realistic.realistic_file(Path(args.keep), 1_000_000, 1)
    with tempfile.TemporaryDirectory(prefix="bp-cost-af-") as tmp:
        work = Path(tmp)
        text = work / "head.txt"
        with alerts.open("rb") as src:
            text.write_bytes(b"".join(next(src) for _ in range(max(LINES) + 100)))
        jsonl = work / "alerts.jsonl"
        with jsonl.open("wb") as out:
            subprocess.run(
                [sys.executable, str(ROOT / "bin" / "fasttail"), "--once", str(text)],
                check=True, stdout=out, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        config = work / "banpipe.toml"
        bench_realistic.write_config(config, work / "ledger.sqlite3")
        trees = [("now", ROOT)]
        if args.before:
            old = bench_realistic.checkout(args.before, work / "before")
            trees.insert(0, (f"before ({args.before})", old))
        print(f"{'tree':24s} {'part':8s} {'instructions/alert':>18s}")
        for name, root in trees:
            for part in ("judge", "decide"):
                lo, hi = (instructions(root / "lib", config, jsonl, n, part, work) for n in LINES)
                print(f"{name:24s} {part:8s} {(hi - lo) / (LINES[1] - LINES[0]):18,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
