"""Firewall durability figures: repair after a reload, stop and restore with manual bans.

Run as root; everything happens in throwaway network namespaces (`bpdur<pid>`).

* **repair**: `banctl apply` runs with 1,000 active bans and `check_interval = "1h"`, so
  only the kernel's change notification (banpipe.fwevents) can trigger a repair. Then
  our part is wiped the way a reload does it: `nft flush ruleset` (what `systemctl
  reload nftables` runs first), `nft -f` of a ruleset file that starts with `flush
  ruleset` (the reload itself), `iptables -F`, `iptables-restore` of a saved ruleset
  without our chain (`netfilter-persistent restart`), and for ipset `iptables -F` then
  `ipset destroy` (refused while our rules use the sets: it follows the flush). Time
  from the wiping command's return to banctl's "repaired" line, and `banctl check`
  must then exit 0.
* **stop / restore**: a ledger with N automated bans plus 100 manual ones, the firewall
  holding all of them; `banctl teardown` (what an orderly stop does with on_stop =
  "remove": automated entries out, manual ones stay) and then `banctl restore` (all
  back), as processes (Python start-up, about 0.2 s, included).

    python bench/bench_durability.py [--sizes 10000,100000] [--backends nftables,ipset,iptables]
        [--repeat 5] [--skip-repair] [--skip-stop]

``BENCH_TREE=DIR`` runs the banpipe of another checkout (e.g. a worktree of the commit
before a change, for side-by-side figures) with this script's scenarios.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(os.environ.get("BENCH_TREE") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from banpipe.bantime import BanPolicy  # noqa: E402
from banpipe.firewall import FirewallConfig, SubprocessRunner, make_backend  # noqa: E402
from banpipe.ledger import Ledger  # noqa: E402
from banpipe.reconcile import reconcile, remove_automated  # noqa: E402
from bench_firewall import addresses  # noqa: E402

PY = sys.executable
BANCTL = str(ROOT / "bin" / "banctl")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "PYTHONUNBUFFERED": "1"}

WIPES = {
    "nftables": {
        "nft flush ruleset": ["nft", "flush", "ruleset"],
        "nft -f (reload)": ["nft", "-f", "{ruleset}"],
    },
    "iptables": {
        "iptables -F": ["iptables", "-F"],
        "iptables-restore (netfilter-persistent)": ["iptables-restore", "{saved}"],
        "chain deleted (jumps, chain: one transaction)": [
            "iptables-restore",
            "--noflush",
            "{unchain}",
        ],
    },
    # The kernel refuses `ipset destroy` while our rules use the sets: taking the rules
    # away is what comes first, and that is what is noticed.
    "ipset": {
        "iptables -F": ["iptables", "-F"],
        "iptables-restore (netfilter-persistent)": ["iptables-restore", "{saved}"],
        "iptables -F; ipset destroy": [
            "sh",
            "-c",
            "iptables -F; ip6tables -F; ipset destroy banpipe4; ipset destroy banpipe6; true",
        ],
    },
}
RULESET = (
    "flush ruleset\ntable inet admin {\n  chain input { type filter hook input priority 0; }\n}\n"
)
SAVED = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
UNCHAIN = "*filter\n-D INPUT -j BANPIPE\n-D FORWARD -j BANPIPE\n-F BANPIPE\n-X BANPIPE\nCOMMIT\n"


class Namespace:
    def __init__(self) -> None:
        self.name = f"bpdur{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.prefix = ["ip", "netns", "exec", self.name]

    def run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, env=ENV)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def write_config(d: Path, backend: str) -> Path:
    cfg = d / "banpipe.toml"
    cfg.write_text(
        "[network]\n"
        f'wan_state = "{d / "wan.json"}"\n'
        '[ban]\nspoof_max = 0\non_stop = "keep"\n'
        f'[firewall]\nbackend = "{backend}"\n'
        f'[banctl]\nledger = "{d / "ledger.sqlite3"}"\ncheck_interval = "1h"\n'
    )
    return cfg


def fill_ledger(path: Path, automated: list[str], manual: list[str]) -> None:
    now = time.time()
    with Ledger.open(str(path)) as led:
        groups = {
            (a, "1:1:1", None, 2, None, False, "bench"): [None, 1, i, None]
            for i, a in enumerate(automated)
        }
        led.record_groups(groups, now, BanPolicy(base=86400.0), random.Random(1))
        for a in manual:
            led.ban(a, now, expires=None, reason="manual")


def banctl(ns: Namespace, cfg: Path, *argv: str) -> float:
    t0 = time.perf_counter()
    r = ns.run([PY, BANCTL, "--config", str(cfg), *argv])
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"banctl {' '.join(argv)}: {r.returncode}: {r.stderr}")
    return dt


def repair(backend: str, repeat: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for label, wipe in WIPES[backend].items():
        ns = Namespace()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                d = Path(tmp)
                cfg = write_config(d, backend)
                (d / "ruleset.nft").write_text(RULESET)
                (d / "saved.v4").write_text(SAVED)
                (d / "unchain.v4").write_text(UNCHAIN)
                fill_ledger(d / "ledger.sqlite3", addresses(1000), [])
                proc, lines = start_apply(ns, cfg)
                # Steady state: before 0c1eb99's successor, a wipe right after "started"
                # was discarded with the restore's own notifications (both trees alike).
                time.sleep(1.0)
                times = []
                for _ in range(repeat):
                    files = {"ruleset": d / "ruleset.nft", "saved": d / "saved.v4"}
                    argv = [a.format(**files, unchain=d / "unchain.v4") for a in wipe]
                    r = ns.run(argv)
                    assert r.returncode == 0, (argv, r.stderr)
                    t0 = time.perf_counter()
                    seen = _wait_line(lines, "repaired")
                    times.append(seen - t0)
                    deadline = time.monotonic() + 10
                    while ns.run([PY, BANCTL, "--config", str(cfg), "check"]).returncode:
                        assert time.monotonic() < deadline, f"{label}: not repaired"
                    while not lines.empty():
                        lines.get()
                proc.stdin.close()
                proc.wait(timeout=60)
                out[label] = times
        finally:
            ns.close()
    return out


BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={socket}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>
<allow receive_sender="*"/></policy></busconfig>
"""


class Firewalld:
    """firewalld for real in a namespace: a private system bus (dbus-daemon with an
    allow-all policy on a socket of our own, no host D-Bus touched), and
    ``firewalld --nofork`` in the namespace on it, with Debian's default configuration
    (nftables backend). ``cmd(...)`` runs firewall-cmd there."""

    def __init__(self, ns: Namespace, directory: Path) -> None:
        self.ns = ns
        sock = directory / "bus"
        (directory / "bus.conf").write_text(BUS_CONFIG.format(socket=sock))
        self.env = {**ENV, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={sock}"}
        self.bus = subprocess.Popen(
            ["dbus-daemon", "--nofork", f"--config-file={directory / 'bus.conf'}"]
        )
        self.log = (directory / "firewalld.log").open("w")
        self.daemon = subprocess.Popen(
            [*ns.prefix, "firewalld", "--nofork", "--nopid", "--log-target", "console"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while self.cmd("--state").returncode != 0:
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                self.close()
                raise RuntimeError("firewalld did not start")
            time.sleep(0.2)

    def cmd(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.ns.prefix, "firewall-cmd", *argv], capture_output=True, text=True, env=self.env
        )

    def close(self) -> None:
        for p in (self.daemon, self.bus):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log.close()


def firewalld_reload(backend: str, repeat: int) -> dict[str, list[float] | str]:
    """`firewall-cmd --reload` under a running `banctl apply` (1,000 bans): time from
    the command's return to the firewall matching the ledger again (negative: repaired
    before firewall-cmd returned; firewalld's reload takes 1-2 s); "untouched" when the
    reload left our part alone (no repair needed)."""
    ns = Namespace()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            cfg = write_config(d, backend)
            fill_ledger(d / "ledger.sqlite3", addresses(1000), [])
            fwd = Firewalld(ns, d)
            try:
                proc, lines = start_apply(ns, cfg)
                times: list[float] = []
                for _ in range(repeat):
                    r = fwd.cmd("--reload")
                    t0 = time.perf_counter()
                    assert r.returncode == 0, r.stderr
                    repaired = []
                    deadline = time.monotonic() + 10
                    while ns.run([PY, BANCTL, "--config", str(cfg), "check"]).returncode:
                        assert time.monotonic() < deadline, "not repaired"
                    time.sleep(0.5)  # any late repair line
                    while not lines.empty():
                        t, line = lines.get()
                        if "repaired" in line:
                            repaired.append(t)
                    if repaired:
                        times.append(max(repaired) - t0)
                proc.stdin.close()
                proc.wait(timeout=60)
            finally:
                fwd.close()
            return {"firewall-cmd --reload": times or "untouched"}
    finally:
        ns.close()


def start_apply(ns: Namespace, cfg: Path) -> tuple[subprocess.Popen, queue.Queue]:
    """`banctl apply` in ``ns``, its stderr lines timed into a queue, once started."""
    proc = subprocess.Popen(
        [*ns.prefix, PY, BANCTL, "--config", str(cfg), "apply"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stderr, lines), daemon=True).start()
    _wait_line(lines, "banctl: started")
    return proc, lines


def _pump(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put((time.perf_counter(), line))


def _wait_line(lines: queue.Queue, text: str, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        t, line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if text in line:
            return t


def stop_restore(backend: str, size: int, repeat: int) -> dict[str, list[float]]:
    """In process (banctl's own code, what `apply` does at an orderly stop and at start)
    and as `banctl teardown` / `banctl restore` processes."""
    ns = Namespace()
    out: dict[str, list[float]] = {k: [] for k in ("stop", "start", "teardown", "restore")}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            cfg = write_config(d, backend)
            ledger = d / "ledger.sqlite3"
            fill_ledger(ledger, addresses(size), addresses(100, offset=size))
            fw = make_backend(backend, FirewallConfig(), SubprocessRunner(ns.prefix))
            with Ledger.open(str(ledger)) as led:
                fw.init()
                reconcile(led, fw)
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    with led.locked():
                        removed, manual = remove_automated(led, fw, thorough=False)
                    out["stop"].append(time.perf_counter() - t0)
                    assert (removed, manual) == (size, 100), (removed, manual)
                    t0 = time.perf_counter()
                    with led.locked():
                        fw.init()
                        reconcile(led, fw)
                    out["start"].append(time.perf_counter() - t0)
            for _ in range(repeat):
                out["teardown"].append(banctl(ns, cfg, "teardown"))
                out["restore"].append(banctl(ns, cfg, "restore"))
            banctl(ns, cfg, "check")
    finally:
        ns.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--backends", default="nftables,ipset,iptables")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-repair", action="store_true")
    ap.add_argument("--skip-stop", action="store_true")
    ap.add_argument("--firewalld", action="store_true", help="also firewall-cmd --reload")
    args = ap.parse_args()
    backends = args.backends.split(",")
    print(f"load average at start: {os.getloadavg()}")
    if not args.skip_repair:
        print("| backend | wipe | repaired after (median / max, ms) |")
        for b in backends:
            for label, times in repair(b, args.repeat).items():
                ms = [t * 1000 for t in times]
                print(f"| {b} | {label} | {statistics.median(ms):.0f} / {max(ms):.0f} |")
            if args.firewalld:
                for label, times in firewalld_reload(b, args.repeat).items():
                    if isinstance(times, str):
                        print(f"| {b} | {label} | {times} |")
                        continue
                    ms = [t * 1000 for t in times]
                    print(f"| {b} | {label} | {statistics.median(ms):.0f} / {max(ms):.0f} |")
    if not args.skip_stop:
        print(
            "| backend | automated + 100 manual | stop: remove automated | start: restore all "
            "| `banctl teardown` process | `banctl restore` process |"
        )
        print("|---|---:|---|---|---|---|")
        for b in backends:
            for n in map(int, args.sizes.split(",")):
                r = stop_restore(b, n, args.repeat)
                cells = " | ".join(
                    f"{statistics.median(r[k]):.2f} / {max(r[k]):.2f} s"
                    for k in ("stop", "start", "teardown", "restore")
                )
                print(f"| {b} | {n:,} | {cells} |")
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
