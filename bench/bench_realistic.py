"""Issue 12: the realistic file through every stage, side by side in one run.

Builds (or reuses, with ``--keep DIR``) the realistic alert_fast file of
``gen_alerts.py --style realistic`` (deterministic seed; the mix is described in
bench/README.md, "Realistic traffic"), then runs on it, one after the other, each as a
real process, wall and CPU time (user + sys of the children, from ``wait4``):

* the naive floor of bench_fasttail.py (one regex + ``json.dumps`` per line);
* ``fail2ban-regex`` with a filter for the same lines (parse only, no actions);
* a live ``fail2ban-server`` (own socket and config, no actions, ``maxretry`` too high
  to ban) following a log file the script appends the first ``--f2b-lines`` lines of
  the file to; rate until ``fail2ban-client status`` counts every one as failed;
* banpipe: ``fasttail --once``, ``fasttail | alertfilter``, the whole pipe with
  banctl's null backend, and ``banctl apply`` alone on alertfilter's saved output,
  each banctl with a fresh ledger: alerts recorded in the ledger (every alertfilter
  line must be), ledger bytes per recorded alert (after a WAL checkpoint), offenders.

``--before REV`` also runs banpipe's stages from the tree of git revision REV
(``git archive`` into a temporary directory), interleaved with the current tree's, so
that before and after share the same minutes of the shared machine. The load average
is printed before and after.

fail2ban is not a dependency of banpipe: the script takes it from
``--fail2ban DIR`` (default /var/tmp/banpipe-fail2ban), and when that does not exist
yet, fetches Debian's package there (``apt-get download fail2ban`` and ``dpkg -x``: no
service is installed or started); it runs with the system's /usr/bin/python3.

    /work/venv/bin/python bench/bench_realistic.py [--count 1000000] [--keep DIR]
        [--before REV] [--f2b-lines 100000] [--skip-f2b]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_alerts  # noqa: E402
from bench_fasttail import NAIVE  # noqa: E402

PY = sys.executable
F2B_PY = "/usr/bin/python3"
# One regex for the three producers' alert_fast lines; the offender is the source.
F2B_FAILREGEX = r"\[\*\*\] \[\d+:\d+:\d+\] .* \{[^}]*\} <HOST>(?::\d+)? -> \S+$"
F2B_DATEPATTERN = r"^%%m/%%d(?:/%%ExY|/%%y)?-%%H:%%M:%%S\.%%f"
IGNORED = ("1:2200073", "129:3", "116:434")  # decoder noise, as a gateway would ignore


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def realistic_file(keep: Path, count: int, seed: int) -> Path:
    """The realistic alert file of ``count`` lines and ``seed`` in ``keep``, built by
    gen_alerts.py unless it is there already."""
    keep.mkdir(parents=True, exist_ok=True)
    alerts = keep / f"realistic-{count}-{seed}.txt"
    if not alerts.exists():
        gen_alerts.main(
            ["--style", "realistic", "--count", str(count), "--seed", str(seed),
             "-o", str(alerts)]
        )  # fmt: skip
    return alerts


def write_config(path: Path, ledger: Path) -> None:
    networks = ", ".join(f'"{n}"' for n in gen_alerts.REAL_NETWORKS)
    ignore = ", ".join(f'"{r}"' for r in IGNORED)
    path.write_text(
        f"""[network]
wan = ["{gen_alerts.REAL_WAN}"]
networks = [{networks}]
wan_state = "{path.parent}/wan.json"
[filter]
ignore = [{ignore}]
[ban]
spoof_max = 0
[firewall]
backend = "null"
[banctl]
ledger = "{ledger}"
"""
    )


class Tree:
    """A banpipe tree to run the tools from (this checkout, or ``git archive`` of REV)."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root = name, root

    def tool(self, name: str, *args: str) -> list[str]:
        return [PY, str(self.root / "bin" / name), *args]

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e["PYTHONPATH"] = str(self.root / "lib")
        return e


def checkout(rev: str, path: Path) -> Path:
    """``lib`` and ``bin`` of git revision ``rev`` of this checkout, extracted into
    ``path`` (made here): a tree to run beside this one."""
    path.mkdir()
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "lib", "bin"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(path)], input=tar, check=True)
    return path


def start_chain(
    cmds: list[list[str]], env: dict, stdin=None, stdout=None, on_pipe=None
) -> list[subprocess.Popen]:
    """Start ``cmds`` as a pipe (stderr to /dev/null, the last one's stdout to ``stdout``
    or /dev/null); ``on_pipe(fd)`` sees each pipe between two of them as it is made."""
    procs: list[subprocess.Popen] = []
    prev = stdin
    for i, cmd in enumerate(cmds):
        last = i == len(cmds) - 1
        sink = subprocess.DEVNULL if stdout is None else stdout
        p = subprocess.Popen(
            cmd,
            stdin=prev,
            stdout=sink if last else subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        if on_pipe is not None and not last:
            on_pipe(p.stdout.fileno())
        if procs and procs[-1].stdout is not None:
            procs[-1].stdout.close()
        procs.append(p)
        prev = p.stdout
    return procs


def run_chain(cmds: list[list[str]], env: dict, stdin=None, stdout=None) -> tuple[float, float]:
    """Run ``cmds`` as a pipe; (wall seconds, CPU seconds of all of them)."""
    start = time.perf_counter()
    procs = start_chain(cmds, env, stdin, stdout)
    cpu = 0.0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        if p.returncode:
            raise SystemExit(f"{' '.join(p.args)}: exit {p.returncode}")
    return time.perf_counter() - start, cpu


def ledger_figures(path: Path) -> tuple[int, int, int]:
    """(violations recorded, bytes on disk after a checkpoint, offenders)."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        recorded = db.execute("SELECT coalesce(sum(count), 0) FROM violations").fetchone()[0]
        offenders = db.execute("SELECT count(*) FROM offenders").fetchone()[0]
    finally:
        db.close()
    size = sum(os.path.getsize(p) for p in glob.glob(str(path) + "*") if not p.endswith(".lock"))
    return int(recorded), size, int(offenders)


def banpipe_stages(tree: Tree, alerts: Path, work: Path, count: int) -> list[tuple]:
    rows = []
    env = tree.env()
    cfg, led = work / f"{tree.name}.toml", work / f"{tree.name}.sqlite3"
    write_config(cfg, led)
    ft = tree.tool("fasttail", "--once", "--from-start", str(alerts))
    af = tree.tool("alertfilter", "--config", str(cfg))
    bc = tree.tool("banctl", "--config", str(cfg), "--backend", "null", "apply")
    wall, cpu = run_chain([ft], env)
    rows.append((f"{tree.name}: fasttail --once", wall, cpu, count, ""))
    passed = work / "alertfilter.jsonl"
    with open(passed, "wb") as out:
        wall, cpu = run_chain([ft, af], env, stdout=out)
    with open(passed, "rb") as f:
        n_pass = sum(1 for _ in f)
    rows.append((f"{tree.name}: fasttail | alertfilter", wall, cpu, count, f"{n_pass:,} pass"))
    for what, cmds, stdin in (
        ("fasttail | alertfilter | banctl (null)", [ft, af, bc], None),
        ("banctl apply alone (alertfilter's output)", [bc], passed),
    ):
        for p in glob.glob(str(led) + "*"):
            os.unlink(p)
        if stdin is None:
            wall, cpu = run_chain(cmds, env)
        else:
            with open(stdin, "rb") as f:
                wall, cpu = run_chain(cmds, env, stdin=f)
        recorded, size, offenders = ledger_figures(led)
        note = (
            f"{recorded:,} recorded{' (ALL)' if recorded == n_pass else ' (MISSING!)'}, "
            f"{offenders} offenders, ledger {size / 1e6:.1f} MB = "
            f"{size / max(recorded, 1):.1f} B/alert"
        )
        rows.append((f"{tree.name}: {what}", wall, cpu, count if stdin is None else n_pass, note))
    return rows


def fail2ban_home(path: Path) -> Path:
    root = path / "root"
    if not (root / "usr/bin/fail2ban-server").exists():
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "fail2ban"], cwd=path, check=True)
        deb = sorted(path.glob("fail2ban_*.deb"))[-1]
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def f2b_env(root: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(root / "usr/lib/python3/dist-packages")
    return e


def fail2ban_regex(root: Path, alerts: Path, count: int) -> tuple:
    cmd = [
        F2B_PY,
        str(root / "usr/bin/fail2ban-regex"),
        "-d",
        F2B_DATEPATTERN.replace("%%", "%"),
        str(alerts),
        F2B_FAILREGEX,
    ]
    wall, cpu = run_chain([cmd], f2b_env(root))
    return ("fail2ban-regex (parse only)", wall, cpu, count, "")


def fail2ban_live(root: Path, alerts: Path, work: Path, lines: int) -> tuple:
    conf = work / "f2b"
    (conf / "filter.d").mkdir(parents=True, exist_ok=True)
    (conf / "action.d").mkdir(exist_ok=True)
    log = work / "f2b-alert"
    log.write_text("")
    sock, pid = work / "f2b.sock", work / "f2b.pid"
    (conf / "fail2ban.conf").write_text(
        f"[Definition]\nloglevel = WARNING\nlogtarget = {work}/f2b.log\n"
        f"socket = {sock}\npidfile = {pid}\ndbfile = :memory:\n"
    )
    (conf / "filter.d/bp-snort.conf").write_text(
        f"[Definition]\nfailregex = {F2B_FAILREGEX}\ndatepattern = {F2B_DATEPATTERN}\n"
    )
    # No action, a maxretry no source reaches: fail2ban reads, matches and counts.
    (conf / "jail.conf").write_text(
        f"[DEFAULT]\nbackend = polling\n\n[bp-snort]\nenabled = true\nfilter = bp-snort\n"
        f"logpath = {log}\nmaxretry = 1000000000\nfindtime = 3650d\naction =\n"
    )
    env = f2b_env(root)
    client = [F2B_PY, str(root / "usr/bin/fail2ban-client"), "-c", str(conf), "-s", str(sock)]
    server = subprocess.Popen(
        [F2B_PY, str(root / "usr/bin/fail2ban-server"), "-f", "-x", "-c", str(conf),
         "-s", str(sock), "-p", str(pid)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            if subprocess.run([*client, "ping"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("fail2ban-server did not start")
        with open(alerts, "rb") as f:
            chunk = b"".join(f.readline() for _ in range(lines))
        cpu0 = _proc_cpu(server.pid)
        start = time.perf_counter()
        with open(log, "ab") as out:
            out.write(chunk)
        # Until every line is counted, or the count stands still for 5 s (fail2ban skips
        # a line whose time stamp it cannot read: Snort 3's short-year form here).
        failed, changed = 0, start
        while failed < lines and time.perf_counter() - changed < 5:
            time.sleep(0.2)
            r = subprocess.run([*client, "status", "bp-snort"], env=env, capture_output=True)
            for text in r.stdout.decode().splitlines():
                if "Total failed:" in text and int(text.rsplit(":", 1)[1]) != failed:
                    failed, changed = int(text.rsplit(":", 1)[1]), time.perf_counter()
        wall = changed - start
        cpu = _proc_cpu(server.pid) - cpu0
    finally:
        subprocess.run([*client, "stop"], env=env, capture_output=True)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return ("live fail2ban-server (no bans)", wall, cpu, failed, f"{failed:,} of {lines:,} counted")


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", help="directory for the alert file (reused when present)")
    ap.add_argument("--before", help="git revision to measure beside this tree")
    ap.add_argument("--f2b-lines", type=int, default=100_000)
    ap.add_argument("--skip-f2b", action="store_true")
    ap.add_argument("--fail2ban", default="/var/tmp/banpipe-fail2ban")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bp-bench-real-") as tmp:
        work = Path(tmp)
        keep = Path(args.keep) if args.keep else work
        alerts = realistic_file(keep, args.count, args.seed)
        trees = [Tree("now", ROOT)]
        if args.before:
            trees.insert(0, Tree("before", checkout(args.before, work / "before")))
        print(f"{args.count:,} lines, {alerts.stat().st_size / 1e6:.0f} MB; load {load()}")
        rows = []
        wall, cpu = run_chain([[PY, "-c", NAIVE, str(alerts)]], dict(os.environ))
        rows.append(("naive floor (regex + json.dumps)", wall, cpu, args.count, ""))
        floor = wall
        if not args.skip_f2b:
            f2b = fail2ban_home(Path(args.fail2ban))
            rows.append(fail2ban_regex(f2b, alerts, args.count))
            rows.append(fail2ban_live(f2b, alerts, work, args.f2b_lines))
        for tree in trees:
            rows += banpipe_stages(tree, alerts, work, args.count)
        print(f"load after {load()}")
        print(f"{'stage':58s} {'wall':>8s} {'CPU':>8s} {'lines/s':>9s} {'vs floor':>8s}")
        for name, wall, cpu, n, note in rows:
            ratio = floor / (wall * args.count / n)
            print(f"{name:58s} {wall:7.2f}s {cpu:7.2f}s {n / wall:9,.0f} {ratio:7.2f}x  {note}")
        shutil.rmtree(work / "f2b", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
