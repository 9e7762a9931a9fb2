"""Throughput of banpipe.parsers on generated alert_fast lines (parse only, no I/O).

Usage: python bench/bench_parse.py [N]   (default 1,000,000 lines)

Prints lines/s for: the parser alone, the parser plus orjson (or json) encoding, and the
"naive floor" the speed target is measured against (one regex + json.dumps per line).
Figures go in bench/README.md; nothing here asserts a speed.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from datetime import datetime
from pathlib import Path

# This checkout's lib/, not whatever banpipe the interpreter finds first (the venv's
# points at /work/main: a side-by-side run from two checkouts measured one of them twice).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from banpipe.parsers import AlertParser  # noqa: E402

try:
    import orjson
except ImportError:  # pragma: no cover - optional dependency
    orjson = None


def make_lines(n: int, seed: int = 1) -> list[str]:
    """A mix close to real files: mostly Suricata and Snort 2 IPv4, some Snort 3 and IPv6."""
    rnd = random.Random(seed)
    msgs = [
        "ET SCAN Potential SSH Scan OUTBOUND",
        "ET DROP Dshield Block Listed Source group 1",
        "SURICATA STREAM ESTABLISHED packet out of window",
        "GPL ICMP_INFO PING *NIX",
        "ET POLICY GNU/Linux APT User-Agent Outbound likely related to package management",
    ]
    srcs = [f"198.51.100.{i}" for i in range(1, 60)] + [f"203.0.113.{i}" for i in range(1, 60)]
    out = []
    for i in range(n):
        msg = rnd.choice(msgs)
        src = rnd.choice(srcs)
        sp = rnd.randrange(1024, 65535)
        dp = rnd.choice((22, 80, 443, 3389))
        us = rnd.randrange(1000000)
        sec = i // 2000 % 60
        kind = rnd.random()
        if kind < 0.45:
            out.append(
                f"11/17/2018-10:46:{sec:02d}.{us:06d}  [**] [1:2402000:5001] {msg} [**] "
                f"[Classification: Misc Attack] [Priority: 2] {{TCP}} {src}:{sp} -> "
                f"192.0.2.7:{dp}\n"
            )
        elif kind < 0.80:
            out.append(
                f"07/07-17:40:{sec:02d}.{us:06d}  [**] [1:2003068:6] {msg} [**] "
                f"[Classification: Attempted Information Leak] [Priority: 2] {{TCP}} "
                f"{src}:{sp} -> 192.0.2.15:{dp}\n"
            )
        elif kind < 0.95:
            out.append(
                f'02/08-12:24:{sec:02d}.{us:06d} [**] [1:1000006:1] "{msg}" [**] '
                f"[Priority: 0] {{UDP}} {src}:{sp} -> 192.0.2.1:{dp}\n"
            )
        else:
            out.append(
                f"10/18/2025-03:57:{sec:02d}.{us:06d}  [**] [1:2200077:2] {msg} [**] "
                f"[Classification: Generic Protocol Command Decode] [Priority: 3] {{TCP}} "
                f"2001:0db8:e104:3f00:2370:d47c:4774:{i % 4096:04x}:{sp} -> "
                f"2001:0db8:0001:05a5:0000:0000:0000:0000:{dp}\n"
            )
    return out


_NAIVE = re.compile(
    r"(?P<ts>\S+)\s+\[\*\*\] \[(?P<gid>\d+):(?P<sid>\d+):(?P<rev>\d+)\] (?P<msg>.*?) \[\*\*\] "
    r"(?:\[Classification: (?P<classification>.*?)\] )?\[Priority: (?P<priority>\d+)\] "
    r"\{(?P<proto>\S+)\} (?P<src>\S+) -> (?P<dst>\S+)"
)


def naive(lines: list[str]) -> None:
    """The floor: one regex and json.dumps of its groupdict per line, no validation."""
    for line in lines:
        m = _NAIVE.match(line)
        if m:
            json.dumps(m.groupdict())


def parse_only(lines: list[str]) -> int:
    p = AlertParser(now=datetime(2026, 11, 28, 12, 0))
    feed = p.feed
    n = 0
    for i, line in enumerate(lines, 1):
        n += len(feed(line, i))
    return n


def parse_encode(lines: list[str]) -> None:
    p = AlertParser(now=datetime(2026, 11, 28, 12, 0))
    feed = p.feed
    dumps = orjson.dumps if orjson else (lambda o: json.dumps(o).encode())
    for i, line in enumerate(lines, 1):
        for a in feed(line, i):
            if type(a) is dict:
                dumps(a)


def timed(label: str, fn, lines: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        fn(lines)
        best = min(best, time.process_time() - t0)
    rate = len(lines) / best  # CPU time: other jobs on the machine disturb it less
    print(f"{label:<34} {rate:>12,.0f} lines/s")
    return rate


def corpus_lines() -> list[str]:
    """Every line of the real one-line-format files in ../shared/corpus, if present."""
    root = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    out: list[str] = []
    for folder in ("snort2-fast", "snort3-fast", "suricata-fast"):
        for f in sorted((root / folder).glob("*")):
            text = f.read_bytes().decode("utf-8", "surrogateescape")
            out += text.splitlines(keepends=True)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    lines = make_lines(n)
    assert parse_only(lines[:1000]) == 1000
    print(
        f"{n:,} generated alert_fast lines, best of 3 (CPU time), python {sys.version.split()[0]}"
    )
    floor = timed("naive floor (regex + json.dumps)", naive, lines)
    parsed = timed("AlertParser.feed", parse_only, lines)
    enc = timed(f"feed + {'orjson' if orjson else 'json'}.dumps", parse_encode, lines)
    print(f"feed / floor = {parsed / floor:.2f}x, feed+encode / floor = {enc / floor:.2f}x")
    real = corpus_lines()
    if real:
        real = real * max(1, n // len(real))
        print(f"{len(real):,} lines of the real corpus (fast formats, repeated)")
        timed("AlertParser.feed", parse_only, real)


if __name__ == "__main__":
    main()
