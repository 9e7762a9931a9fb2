"""Durability soak: break the running pipe the way an admin would, then count.

`fasttail --ledger | alertfilter | banctl apply` as real processes, banctl in a
throwaway network namespace with a real firewall backend, while a writer appends
alerts to the alert file at a steady rate. Every alert names one of ``SOURCES``
offenders in turn, so the ledger's violation counts say exactly what arrived:

* lost = alerts written - violations recorded, duplicated = recorded twice;
* firewall == ledger: `banctl check` in the namespace exits 0 at the end.

Scenarios (figures in bench/README.md, "Durability soak"):

    python bench/soak.py kill [--kills 200]        kill -9 of a random stage or the group
    python bench/soak.py rotate [--rotations 100]  rename, dated and copytruncate rotations,
                                                   with restarts in between
    python bench/soak.py disk                      the ledger's disk full, then read-only

Firewall reloads (time to repair) and stop/restore times with manual bans are
bench/bench_durability.py's. tests/test_soak.py runs short versions of these three
(root, within CI's time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "bin"
PY = sys.executable
SOURCES = 2000  # offenders the alerts cycle through (keeps the firewall small)
WAN_NET = "2001:db8:1::/48"


def source(i: int) -> str:
    return f"2001:db8:5::{i % SOURCES + 1:x}"


def alert_line(i: int) -> str:
    """The i-th alert (Suricata fast.log, IPv6), against our network."""
    sec, usec = divmod(i, 1000)
    hh, rest = divmod(sec % 86400, 3600)
    mm, ss = divmod(rest, 60)
    return (
        f"11/28/2026-{hh:02d}:{mm:02d}:{ss:02d}.{usec:06d}  [**] [1:2001219:20] ET SCAN "
        f"Potential SSH Scan [**] [Classification: Attempted Information Leak] "
        f"[Priority: 2] {{TCP}} {source(i)}:{40000 + i % 20000} -> 2001:db8:1::2:22\n"
    )


def tool_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "PYTHONUNBUFFERED": "1"}


class Netns:
    """A throwaway network namespace for banctl's firewall (deleted on close)."""

    def __init__(self, tag: str) -> None:
        self.name = f"bpsoak{tag}{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.prefix = ["ip", "netns", "exec", self.name]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, **kw)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


class Writer:
    """Appends alerts to ``path`` at ``rate`` per second, in 10 ms batches."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.count = 0
        self.lock = threading.Lock()  # held while writing: rotations take it too
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        while not self.done.is_set():
            due = int((time.monotonic() - started) * self.rate)
            if due > self.count:
                with self.lock:
                    text = "".join(alert_line(i) for i in range(self.count, due))
                    with open(self.path, "a") as f:
                        f.write(text)
                    self.count = due
            time.sleep(0.01)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.count


class Pipe:
    """One run of the three stages, joined by pipes, as the role's pipeline runs them."""

    def __init__(self, soak: Soak) -> None:
        env = tool_env()
        err = soak.log.open("a")
        self.ft = subprocess.Popen(
            [
                PY,
                str(BIN / "fasttail"),
                "--ledger",
                str(soak.ledger),
                "--from-start",
                str(soak.alerts),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
        self.af = subprocess.Popen(
            [PY, str(BIN / "alertfilter"), "--config", str(soak.config)],
            stdin=self.ft.stdout,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
        self.bc = subprocess.Popen(
            [*soak.netns.prefix, PY, str(BIN / "banctl"), "--config", str(soak.config), "apply"],
            stdin=self.af.stdout,
            stderr=err,
            env=env,
        )
        assert self.ft.stdout is not None and self.af.stdout is not None
        self.ft.stdout.close()
        self.af.stdout.close()
        err.close()
        self.stages = [self.ft, self.af, self.bc]

    def kill(self, which: int | None) -> None:
        """kill -9 one stage (0, 1, 2) or all (None); then stop the stages upstream of
        the one that ended, as the pipeline runner does, and wait for all."""
        victims = self.stages if which is None else [self.stages[which]]
        for p in victims:
            with _quiet():
                p.kill()
        if which is not None:
            for p in self.stages[:which]:
                with _quiet():
                    p.terminate()
        self.wait()

    def stop(self) -> None:
        """An orderly end of input: fasttail stopped, the others drain and exit."""
        with _quiet():
            self.ft.terminate()
        self.wait()

    def wait(self) -> None:
        for p in self.stages:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        return kind is ProcessLookupError


class Soak:
    """The files of one soak run and the questions asked at the end."""

    def __init__(self, directory: Path, backend: str, netns: Netns, extra: str = "") -> None:
        self.dir = directory
        self.alerts = directory / "alert"
        self.alerts.touch()
        self.ledger = directory / "state" / "ledger.sqlite3"
        self.log = directory / "stderr.log"
        self.netns = netns
        self.backend = backend
        self.config = directory / "banpipe.toml"
        self.config.write_text(
            "[network]\n"
            f'networks = ["{WAN_NET}"]\n'
            f'wan_state = "{directory / "wan.json"}"\n'
            "[ban]\n"
            'base = "1h"\n'
            "spoof_max = 0\n" + extra + "[firewall]\n"
            f'backend = "{backend}"\n'
            "[banctl]\n"
            f'ledger = "{self.ledger}"\n'
        )

    def recorded(self) -> dict[str, int]:
        """Violations per offender in the ledger."""
        if not self.ledger.exists():
            return {}
        db = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True, timeout=30)
        try:
            return dict(db.execute("SELECT addr, sum(count) FROM violations GROUP BY addr"))
        finally:
            db.close()

    def wait_started(self, timeout: float = 60.0) -> None:
        """Until banctl recorded a first position (where a restart resumes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ledger.exists():
                db = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True, timeout=30)
                try:
                    if db.execute("SELECT count(*) FROM positions").fetchone()[0]:
                        return
                except sqlite3.Error:
                    pass
                finally:
                    db.close()
            time.sleep(0.05)
        raise RuntimeError("banctl recorded no position")

    def drain(self, written: int, stall: float = 60.0) -> None:
        """Run the pipe until everything written is recorded, or nothing more arrives
        for ``stall`` seconds (a backlog after many restarts takes a while)."""
        pipe = Pipe(self)
        last, since = -1, time.monotonic()
        while (have := sum(self.recorded().values())) < written:
            if have != last:
                last, since = have, time.monotonic()
            elif time.monotonic() - since > stall:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # anything beyond would be a duplicate: give it the chance
        pipe.stop()

    def verdict(self, written: int) -> dict[str, int]:
        """lost, duplicated, and whether the firewall matches the ledger."""
        want: dict[str, int] = {}
        for i in range(written):
            want[source(i)] = want.get(source(i), 0) + 1
        have = self.recorded()
        lost = sum(max(0, n - have.get(a, 0)) for a, n in want.items())
        dup = sum(max(0, n - want.get(a, 0)) for a, n in have.items())
        check = self.netns.run(
            [PY, str(BIN / "banctl"), "--config", str(self.config), "check"], env=tool_env()
        )
        return {
            "written": written,
            "recorded": sum(have.values()),
            "lost": lost,
            "duplicated": dup,
            "firewall_matches_ledger": int(check.returncode == 0),
        }


# -- scenarios --------------------------------------------------------------------------


def kill_soak(
    directory: Path, netns: Netns, *, kills: int, rate: int, backend: str, seed: int
) -> dict[str, int]:
    """``kills`` kill -9s at random moments of a random stage, or of the whole group."""
    rng = random.Random(seed)
    soak = Soak(directory, backend, netns)
    writer = Writer(soak.alerts, rate).start()
    for _ in range(kills):
        pipe = Pipe(soak)
        if _ == 0:
            soak.wait_started()
        time.sleep(rng.uniform(0.3, 3.0))
        pipe.kill(rng.choice([0, 1, 2, None]))
    written = writer.stop()
    soak.drain(written)
    return soak.verdict(written)


def _rotate(soak: Soak, writer: Writer, kind: str, n: int) -> None:
    """One rotation as logrotate does it, between two of the writer's batches."""
    f = soak.alerts
    with writer.lock:
        if kind == "rename":
            # Every rotated file is kept (logrotate's `rotate N` deletes the oldest: a file
            # deleted before it was read is lost by definition, not a finding).
            for k in range(n + 1, 0, -1):
                old = Path(f"{f}.{k}")
                if old.exists():
                    old.rename(f"{f}.{k + 1}")
            f.rename(f"{f}.1")
            f.touch()
        elif kind == "dated":
            f.rename(f"{f}-2026{n:08d}")
            f.touch()
        else:  # copytruncate
            Path(f"{f}-2026{n:08d}").write_bytes(f.read_bytes())
            with open(f, "r+") as fh:
                fh.truncate(0)


def rotate_soak(
    directory: Path, netns: Netns, *, rotations: int, rate: int, backend: str, seed: int
) -> dict[str, int]:
    """``rotations`` rotations of every kind under load; every few, a restart (kill -9
    or orderly) with rotations happening while the pipe is down."""
    rng = random.Random(seed)
    soak = Soak(directory, backend, netns)
    writer = Writer(soak.alerts, rate).start()
    pipe: Pipe | None = Pipe(soak)
    soak.wait_started()  # before that, a rotation is one fasttail cannot know about
    for n in range(rotations):
        time.sleep(rng.uniform(0.1, 0.4))
        if pipe is not None and rng.random() < 0.3:
            pipe.kill(rng.choice([0, 2, None])) if rng.random() < 0.5 else pipe.stop()
            pipe = None
        _rotate(soak, writer, rng.choice(["rename", "dated", "copytruncate"]), n)
        if pipe is None and rng.random() < 0.5:
            pipe = Pipe(soak)
    if pipe is not None:
        pipe.stop()
    written = writer.stop()
    soak.drain(written)
    return soak.verdict(written)


def disk_soak(directory: Path, netns: Netns, *, rate: int, backend: str) -> dict[str, int]:
    """The ledger's file system fills up, later is remounted read-only; then space and
    write access come back. Firewall entries must not change meanwhile."""
    mnt = directory / "state"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "soak", str(mnt)], check=True)
    try:
        soak = Soak(directory, backend, netns)
        writer = Writer(soak.alerts, rate).start()
        pipe = Pipe(soak)
        soak.wait_started()
        time.sleep(1.0)
        entries = _entries(soak)
        filler = mnt / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        time.sleep(3.0)
        full_entries = _entries(soak)
        filler.unlink()
        time.sleep(2.0)
        # Read-only: a mounted file system with a file open for writing cannot be made
        # read-only (EBUSY), so the pipe is stopped first and started on the read-only
        # ledger: banctl cannot open it (73), and nothing may leave the firewall.
        pipe.stop()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        pipe = Pipe(soak)
        pipe.wait()
        ro_status = pipe.bc.returncode
        ro_entries = _entries(soak)
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        written = writer.stop()
        soak.drain(written)
        out = soak.verdict(written)
        out["entries_before"] = len(entries)
        out["entries_lost_while_full"] = len(entries - full_entries)
        out["entries_lost_while_read_only"] = len(full_entries - ro_entries)
        out["banctl_status_read_only"] = ro_status
        log = soak.log.read_text()
        out["said_full"] = log.count("cannot write the ledger")
        return out
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _entries(soak: Soak) -> set[str]:
    out = soak.netns.run(["nft", "-j", "list", "set", "inet", "banpipe", "v6"]).stdout
    elems: set[str] = set()
    for item in json.loads(out or '{"nftables": []}')["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            elems.add(e if isinstance(e, str) else json.dumps(e))
    return elems


# -- main -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", choices=["kill", "rotate", "disk"])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--rotations", type=int, default=100)
    ap.add_argument("--rate", type=int, default=3000, help="alerts per second")
    ap.add_argument("--backend", default="nftables")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, help="work here and keep the files (default: temporary)")
    args = ap.parse_args()
    netns = Netns(args.scenario[:4])
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bpsoak") as tmp:
            d = args.dir or Path(tmp)
            d.mkdir(parents=True, exist_ok=True)
            if args.scenario == "kill":
                out = kill_soak(
                    d, netns, kills=args.kills, rate=args.rate, backend=args.backend, seed=args.seed
                )
            elif args.scenario == "rotate":
                out = rotate_soak(
                    d,
                    netns,
                    rotations=args.rotations,
                    rate=args.rate,
                    backend=args.backend,
                    seed=args.seed,
                )
            else:
                out = disk_soak(d, netns, rate=args.rate, backend=args.backend)
    finally:
        netns.close()
    out["seconds"] = round(time.monotonic() - started)
    out["load"] = os.getloadavg()[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
