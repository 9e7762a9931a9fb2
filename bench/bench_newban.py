"""A new ban's path inside banctl, stage by stage: CPU from a line read to the netlink send.

``Daemon.handle()`` in process, one new offender per call, with a pause between calls as
alerts come in a quiet hour (``--gap``, default 20 ms as in bench_pipeline.py's latency
run). After a pause the caches are cold: the same code costs about three times what it
costs in a tight loop, so this measures with the pause (bench/README.md, issue 12,
"banctl's new-ban path"). Each stage's thread CPU time, median of ``--bans`` calls:

    read -> gather -> commit -> brake -> BEGIN -> plan -> bans written -> COMMIT
         -> firewall call -> netlink send -> after

The COMMIT's row is its CPU (the WAL's pwrites and its fdatasync's share), not the
disk's wait. ``--backend nftables`` needs root and a network namespace of its own:

    ip netns add bpnewban
    PYTHONPATH=<checkout>/lib ip netns exec bpnewban /work/venv/bin/python \\
        bench/bench_newban.py --backend nftables [--spoof-max 500]
    ip netns del bpnewban

``--spoof-max`` is the brake's limit (0: off, as bench_pipeline.py's config; the
default config has 500). The ledger is made in ``--dir`` (default /var/tmp: a disk,
not a tmpfs).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STAGES = [
    ("read", "gather<"),
    ("gather<", "gather>"),
    ("gather>", "commit<"),
    ("commit<", "brake>"),
    ("brake>", "BEGIN"),
    ("BEGIN", "plan>"),
    ("plan>", "bans written"),
    ("bans written", "COMMIT"),
    ("COMMIT", "firewall call"),
    ("firewall call", "netlink send"),
    ("netlink send", "after"),
]


def alert_line(offender: str) -> bytes:
    return (
        json.dumps(
            {
                "v": 1, "ts": "2026-11-28T10:00:00.000000", "gid": 1, "sid": 2003, "rev": 8,
                "msg": "MS-SQL Worm propagation attempt", "classification": "Misc Attack",
                "priority": 2, "proto": "UDP", "src": offender, "sport": 1434,
                "dst": "198.51.100.8", "dport": 1434, "action": None, "refs": [],
                "format": "snort2-fast", "offender": offender, "victim": "198.51.100.8",
                "reversed": False, "reason": "priority 2",
            }
        )
        + "\n"
    ).encode()  # fmt: skip


def marked(marks: dict[str, int], label: str, fn: Any, *, after: str | None = None) -> Any:
    """``fn`` noting the thread's CPU time under ``label`` (and ``after`` on return)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        marks.setdefault(label, time.thread_time_ns())
        try:
            return fn(*args, **kwargs)
        finally:
            if after is not None:
                marks[after] = time.thread_time_ns()

    return call


def run(backend: str, bans: int, gap: float, spoof_max: int, directory: str) -> None:
    from banpipe import banctl
    from banpipe.config import parse_config
    from banpipe.daemon import Daemon
    from banpipe.firewall import nlsocket
    from banpipe.pipe import Lines

    config = parse_config(
        f'[ban]\nspoof_max = {spoof_max}\n[firewall]\nbackend = "{backend}"\n'
        '[network]\nwan = ["192.0.2.1"]\nnetworks = ["2001:db8:1::/48"]\n'
    )
    err = io.StringIO()
    with tempfile.TemporaryDirectory(dir=directory, prefix="bp-newban-") as tmp:
        env = banctl.Env(
            config=config, ledger_path=str(Path(tmp) / "ledger.sqlite3"), backend=backend,
            stdout=io.StringIO(), stderr=err, clock=time.time, rng=random.Random(1),
            runner=None, report=banctl.cli.Reporter("banctl", err),
        )  # fmt: skip
        daemon = Daemon(env, env.ledger(), env.firewall())
        daemon.start()
        marks: dict[str, int] = {}
        intake, record, ledger = daemon.intake, daemon.record, daemon.ledger
        intake.gather = marked(marks, "gather<", intake.gather, after="gather>")
        record.commit = marked(marks, "commit<", record.commit)
        daemon.brake.budget = marked(marks, "brake<", daemon.brake.budget, after="brake>")
        ledger.plan_groups = marked(marks, "plan<", ledger.plan_groups, after="plan>")
        ledger.write_bans = marked(marks, "bans<", ledger.write_bans, after="bans written")
        daemon.enforce.block = marked(marks, "firewall call", daemon.enforce.block)
        for cls in vars(nlsocket).values():
            if isinstance(cls, type) and "_send" in vars(cls):
                cls._send = marked(marks, "netlink send", cls._send)

        def statement(sql: str) -> None:
            if sql in ("BEGIN IMMEDIATE", "COMMIT"):
                marks.setdefault(sql.split()[0], time.thread_time_ns())

        ledger.db.set_trace_callback(statement)
        rows = []
        for i in range(bans + 20):  # 20 to warm up
            line = alert_line(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
            time.sleep(gap)
            marks.clear()
            marks["read"] = time.thread_time_ns()
            daemon.handle(*Lines().feed(line))
            marks["after"] = time.thread_time_ns()
            if i >= 20:
                rows.append(dict(marks))
            daemon.enforce.expire_due()
            if record.checkpoint_due(time.monotonic()):
                record.checkpoint()
        daemon.stop("end of input")
    if spoof_max <= 0:
        for r in rows:
            r["brake>"] = r["commit<"]
    if backend == "null":
        for r in rows:
            r["netlink send"] = r["firewall call"]
    code = Path(banctl.__file__).parents[2]
    print(
        f"{code}: backend {backend}, {bans} new bans, {gap * 1000:g} ms apart, "
        f"spoof_max {spoof_max}:"
    )
    for a, b in STAGES:
        us = statistics.median((r[b] - r[a]) / 1000 for r in rows)
        print(f"  {a:>13} -> {b:<13} {us:7.1f} us")
    to_send = statistics.median((r["netlink send"] - r["read"]) / 1000 for r in rows)
    print(f"  read -> netlink send: {to_send:.1f} us CPU (median of the sums)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="null", choices=["null", "nftables"])
    ap.add_argument("--bans", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between alerts")
    ap.add_argument("--spoof-max", type=int, default=0)
    ap.add_argument("--dir", default="/var/tmp")
    a = ap.parse_args()
    run(a.backend, a.bans, a.gap, a.spoof_max, a.dir)


if __name__ == "__main__":
    sys.exit(main())
