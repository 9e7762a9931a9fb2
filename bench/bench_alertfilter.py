"""Benchmark alertfilter: throughput and peak memory on N JSON alerts.

    /opt/bpvenv/bin/python bench/bench_alertfilter.py [--alerts 1000000] [--via-fasttail]

Writes a realistic config (1,000 whitelist CIDRs, 100 ignore rules, WAN + networks) and
pipe-contract alerts (many sources incl. a stream of one-off ones, IPv4 and IPv6, mixed
priorities, reverse markers, alerts without addresses) to bench/out/ (git-ignored),
then times the real process ``bin/alertfilter --config CFG < alerts.jsonl > /dev/null``
for N/10, N and 2N alerts and prints alerts/s and the child's peak RSS: the same peak for
N and 2N is what "memory flat" means (the per-address caches are bounded).

``--via-fasttail`` also turns ``bench/gen_alerts.py --style fast`` text into JSON with
``bin/fasttail --once`` and times alertfilter on what fasttail really writes.

Figures go in bench/README.md, section "alertfilter".
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from banpipe import pipe  # noqa: E402

OUT = ROOT / "bench" / "out"
WAN = "198.51.100.8"
NETWORKS = ("192.168.1.0/24", "2001:db8:1::/48", "192.168.0.0/16", "2001:db8:ffff::/48")

MESSAGES = [
    "ET SCAN Potential SSH Scan",
    "MS-SQL Worm propagation attempt",
    "ET DROP Dshield Block Listed Source group 1",
    "(portscan) TCP Filtered Portsweep",
    "LOCAL.RULES SMTP Mail set NOT to be delivered -- BLOCKED DESTINATION",
    "SURICATA UDP invalid header length",
    "ET CINS Active Threat Intelligence Poor Reputation IP TCP group 71",
    "INFO web bug 0x0 gif attempt",
]


def public_v4(rng: random.Random) -> str:
    return str(ipaddress.IPv4Address(rng.randrange(0x01000000, 0xDF000000)))


def write_config(directory: Path, rng: random.Random) -> Path:
    whitelist = sorted({f"{public_v4(rng).rsplit('.', 1)[0]}.0/24" for _ in range(990)})
    whitelist += [f"2001:db8:{i:x}::/48" for i in range(1000 - len(whitelist))]
    ignore = [f"1:{rng.randint(100, 60000)}" for _ in range(80)]
    ignore += [f"1:{lo}-{lo + 500}" for lo in rng.sample(range(2_000_000, 3_000_000, 1000), 15)]
    ignore += ["122:*", "129:*", "116:*", "119:*", "120:*"]
    quoted = lambda items: ", ".join(f'"{x}"' for x in items)  # noqa: E731
    lines = [
        "[network]",
        f'wan = ["{WAN}"]',
        f'wan_state = "{directory / "wan.json"}"',
        f"networks = [{quoted(NETWORKS)}]",
        'gateways = ["198.51.100.1"]',
        "[filter]",
        f"whitelist = [{quoted(whitelist)}]",
        f"ignore = [{quoted(ignore)}]",
        "priorities = [1, 2]",
        'no_priority = "skip"',
        'reverse_markers = ["BLOCKED DESTINATION"]',
        "require_ours = true",
    ]
    path = directory / "banpipe.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_alerts(path: Path, count: int, rng: random.Random) -> None:
    attackers = [public_v4(rng) for _ in range(20000)]
    attackers += [
        f"2001:db8:{rng.randrange(1 << 16):x}::{rng.randrange(1, 1 << 16):x}" for _ in range(2000)
    ]
    ours = [WAN, "192.168.1.10", "192.168.1.20", "2001:db8:1::5"]
    elsewhere = ["10.0.0.5", "8.8.8.8", "172.16.0.1"]
    sids = (2003, 2925, 2003068, 1000001, 2402000, 527, 469, 7)
    with path.open("wb") as f:
        buf = []
        for i in range(count):
            r = rng.random()
            if r < 0.02:
                src = dst = None  # {eth} / Raw pkt alerts
            elif r < 0.07:
                src, dst = public_v4(rng), rng.choice(ours)  # one-off sources: cache churn
            else:
                src = rng.choice(attackers)
                dst = rng.choice(ours) if rng.random() < 0.85 else rng.choice(elsewhere)
            msg = rng.choice(MESSAGES)
            if "BLOCKED DESTINATION" in msg and src is not None:
                src, dst = dst, src
            alert = {
                "v": 1,
                "ts": f"2026-11-28T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:06d}",
                "gid": 1 if rng.random() < 0.9 else rng.choice((122, 129, 116)),
                "sid": rng.choice(sids),
                "rev": rng.randint(1, 9),
                "msg": msg,
                "classification": "Misc Attack",
                "priority": rng.choice((1, 2, 2, 2, 3, None)),
                "proto": "TCP",
                "src": src,
                "sport": rng.randint(1024, 65535) if src else None,
                "dst": dst,
                "dport": rng.choice((22, 80, 443, 1434, 25)) if dst else None,
                "action": None,
                "refs": [],
                "format": "snort2-fast",
            }
            buf.append(pipe.encode(alert))
            if len(buf) >= 10000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))


def run(argv: list[str], stdin_path: Path) -> tuple[float, float, int, str]:
    """Wall time, CPU time (user + sys), peak RSS in KiB and stderr of one child.

    CPU time is the steadier figure on a shared machine; wait4 gives this child's own
    rusage, not the maximum over all children so far.
    """
    with stdin_path.open("rb") as f, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=f, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode().strip()
    if proc.returncode != 0:
        raise SystemExit(f"alertfilter exited {proc.returncode}: {text}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, text


def report(label: str, count: int, result: tuple[float, float, int, str]) -> None:
    elapsed, cpu, peak_kib, summary = result
    print(
        f"{label:<15} {count:>9,} alerts  wall {elapsed:6.2f} s {count / elapsed:>9,.0f}/s"
        f"  cpu {cpu:6.2f} s {count / cpu:>9,.0f}/s  peak RSS {peak_kib / 1024:.1f} MiB"
    )
    print(f"{'':15} {summary}")


def via_fasttail(count: int, seed: int, alertfilter: list[str]) -> None:
    """alertfilter on JSON as fasttail really writes it, from bench/gen_alerts.py text."""
    text = OUT / f"alert_fast-{count}.txt"
    data = OUT / f"alert_fast-{count}.jsonl"
    if not text.exists():
        gen = [sys.executable, str(ROOT / "bench" / "gen_alerts.py"), "--count", str(count)]
        subprocess.run([*gen, "--style", "fast", "--seed", str(seed), "-o", str(text)], check=True)
    if not data.exists():
        fasttail = [sys.executable, str(ROOT / "bin" / "fasttail"), "--once", str(text)]
        with data.open("wb") as f:
            subprocess.run(fasttail, stdout=f, check=True)
    lines = sum(1 for _ in data.open("rb"))
    report("fasttail JSON", lines, run(alertfilter, data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--via-fasttail",
        action="store_true",
        help="also run on bench/gen_alerts.py text turned into JSON by bin/fasttail",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    config = write_config(OUT, random.Random(args.seed))
    alertfilter = [sys.executable, str(ROOT / "bin" / "alertfilter"), "--config", str(config)]
    print(f"python {sys.version.split()[0]}, orjson {'yes' if pipe.orjson else 'no'}, {config}")

    for count in (args.alerts // 10, args.alerts, 2 * args.alerts):
        data = OUT / f"alerts-{count}.jsonl"
        if not data.exists():
            t = time.perf_counter()
            write_alerts(data, count, random.Random(args.seed + count))
            size = data.stat().st_size >> 20
            print(f"generated {data.name} ({size} MiB) in {time.perf_counter() - t:.1f}s")
        report("generated JSON", count, run(alertfilter, data))
    if args.via_fasttail:
        via_fasttail(args.alerts, args.seed, alertfilter)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
