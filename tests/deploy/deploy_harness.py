"""Machinery for the deploy tests (ansible/README.md, "Testing").

A cached Debian rootfs built with mmdebstrap, copied per scenario; Ansible runs into it
through the chroot connection (static checks) or into a booted systemd-nspawn container
through community.docker.nsenter; the container lives in a network namespace the test
creates, so its firewall can be inspected after it has powered off, and nothing touches
the host's own network namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"
SITE = ANSIBLE_DIR / "site.yml"
ROLE = ANSIBLE_DIR / "roles" / "banpipe"

SUITE = "bookworm"
# What a Debian gateway managed by Ansible has: systemd as init, ifupdown (its
# networking.service really takes the network down on stop), the firewall tools,
# python3-venv for the role's virtualenv and python3-apt for Ansible's apt module;
# openssh-server and sudo for the way most people run Ansible (test_deploy_ssh.py).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "iptables",
    "ipset",
    "nftables",
    "python3",
    "python3-venv",
    "python3-apt",
    "ifupdown",
    "openssh-server",
    "sudo",
)
CACHE = Path(os.environ.get("BANPIPE_ROOTFS_CACHE", "/var/tmp/banpipe-rootfs-cache"))

# Documentation addresses only: our WAN end of the veth pair and the offenders.
WAN_IFACE = "wan0"
WAN_ADDR = "192.0.2.2"
ALERT_FILE = "/var/log/snort/alert"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, reason: str) -> None:
    """Missing prerequisites fail in CI (where they are installed) and skip elsewhere."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def find_tool(name: str) -> str:
    """A tool from the running interpreter's venv first (ansible, ansible-lint), then PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    require(found is not None, f"{name} is not installed")
    return str(found)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (chroot, network namespaces, systemd-nspawn)")


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv; on an unexpected exit status fail with the command's whole output."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll predicate() until it returns a true value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- the rootfs -----------------------------------------------------------------------


def apt_mirror() -> str:
    """The host's own Debian mirror (deb822 sources first, then sources.list)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                return parts[1] if not parts[1].startswith("[") else parts[2]
    return "http://deb.debian.org/debian"


def rootfs_key(mirror: str) -> str:
    text = json.dumps({"suite": SUITE, "packages": sorted(PACKAGES), "mirror": mirror})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_rootfs() -> Path:
    """The base rootfs, built once with mmdebstrap and reused until the package list changes.

    Set BANPIPE_ROOTFS_REBUILD=1 to rebuild (e.g. to pick up security updates).
    """
    mirror = apt_mirror()
    key = rootfs_key(mirror)
    CACHE.mkdir(parents=True, exist_ok=True)
    base = CACHE / key / "rootfs"
    done = CACHE / key / "complete"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.environ.get("BANPIPE_ROOTFS_REBUILD") and done.exists():
            done.unlink()
        if done.exists() and base.is_dir():
            return base
        mmdebstrap = find_tool("mmdebstrap")
        shutil.rmtree(CACHE / key, ignore_errors=True)
        (CACHE / key).mkdir()
        tmp = CACHE / key / "rootfs.tmp"
        proc = run(
            [
                mmdebstrap,
                "--variant=minbase",
                "--include=" + ",".join(PACKAGES),
                SUITE,
                str(tmp),
                mirror,
            ],
            check=False,
            timeout=900,
        )
        (CACHE / key / "mmdebstrap.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise AssertionError(f"mmdebstrap failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        tmp.rename(base)
        (CACHE / key / "packages").write_text("\n".join(PACKAGES) + f"\n{mirror}\n")
        done.touch()
        return base


def copy_rootfs(base: Path, dest: Path) -> Path:
    run(["cp", "-a", "--reflink=auto", str(base), str(dest)], timeout=300)
    # A fixed machine id per copy: one journal directory across its boots.
    (dest / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
    return dest


def provision_gateway(root: Path, hostname: str) -> None:
    """What the gateway has before banpipe: a WAN interface configured by ifupdown, and
    an IDS log directory with an (empty) alert file."""
    (root / "etc" / "hostname").write_text(hostname + "\n")
    ifaces = root / "etc" / "network" / "interfaces.d"
    ifaces.mkdir(parents=True, exist_ok=True)
    (ifaces / WAN_IFACE).write_text(
        f"auto {WAN_IFACE}\niface {WAN_IFACE} inet static\n    address {WAN_ADDR}/24\n"
    )
    alert = root / ALERT_FILE.lstrip("/")
    alert.parent.mkdir(parents=True, exist_ok=True)
    alert.touch()


def python_version(root: Path) -> str:
    out = run(["chroot", str(root), "python3", "-c", "import sys; print(*sys.version_info[:2])"])
    return ".".join(out.stdout.split())


def build_wheelhouse(dest: Path, target_python: str) -> Path:
    """banpipe and every dependency as wheels for the target's Python, built here (the
    target has no network) by the script the README tells users to run."""
    run(
        [sys.executable, str(ANSIBLE_DIR / "build-wheelhouse"), "--python", target_python,
         "--machine", platform.machine(), "-o", str(dest)],
        timeout=600,
    )  # fmt: skip
    return dest


# --- Ansible --------------------------------------------------------------------------


def ansible_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_LOCAL_TEMP"] = str(work / "ansible-local")
    env["ANSIBLE_HOME"] = str(work / "ansible-home")
    # Facts are gathered by the role's modules as needed; the play's own gathering on the
    # controller (local checks) would only cost time.
    env.setdefault("ANSIBLE_GATHERING", "explicit")
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    return env


def write_inventory(path: Path, host: str, hostvars: dict) -> Path:
    """A YAML inventory (JSON is YAML) putting one host in the site.yml group."""
    inventory = {"banpipe": {"hosts": {host: hostvars}}}
    path.write_text(json.dumps(inventory, indent=2))
    return path


@dataclass
class PlayResult:
    rc: int
    output: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    changed_tasks: list[str] = field(default_factory=list)


_RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def ansible_playbook(
    inventory: Path, work: Path, *extra: str, timeout: float = 300, netns: str | None = None
) -> PlayResult:
    """Run site.yml; with ``netns``, from inside that network namespace (over SSH to a
    container whose network it is)."""
    inside = ["ip", "netns", "exec", netns] if netns else []
    proc = run(
        [*inside, find_tool("ansible-playbook"), "-i", str(inventory), str(SITE), *extra],
        check=False,
        timeout=timeout,
        env=ansible_env(work),
        cwd=ANSIBLE_DIR,
    )
    out = proc.stdout + proc.stderr
    result = PlayResult(rc=proc.returncode, output=out)
    m = _RECAP.search(out)
    if m:
        result.ok, result.changed, result.unreachable, result.failed = map(int, m.groups())
    # "TASK [banpipe : name] ***" followed by "changed: [host]"
    task = None
    for line in out.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:") and task:
            result.changed_tasks.append(task)
    return result


def assert_play_ok(result: PlayResult) -> None:
    assert result.rc == 0 and result.failed == 0 and result.unreachable == 0, result.output[-8000:]


# --- network namespace and container --------------------------------------------------


class Netns:
    """A network namespace of our own with the WAN veth pair inside it (both ends)."""

    def __init__(self, name: str):
        self.name = name
        self.path = Path("/run/netns") / name

    def create(self) -> Netns:
        run(["ip", "netns", "add", self.name])
        run(["ip", "-n", self.name, "link", "add", WAN_IFACE, "type", "veth", "peer", "wanpeer"])
        run(["ip", "-n", self.name, "link", "set", "wanpeer", "up"])
        return self

    def delete(self) -> None:
        if self.path.exists():
            run(["ip", "netns", "delete", self.name], check=False)


def _ppid_comm(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return ppid, comm


def children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _ppid_comm(int(entry.name))
            if info and info[0] == pid:
                out.append((int(entry.name), info[1]))
    return out


class Container:
    """systemd as PID 1 under systemd-nspawn, in our netns, driven with nsenter."""

    def __init__(self, root: Path, name: str, netns: Netns, log: Path):
        self.root = root
        self.name = name
        self.netns = netns
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.leader: int | None = None
        self.boot_id: str | None = None

    def boot(self, timeout: float = 60) -> Container:
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        with open(self.log, "ab") as log:
            # timeout -k: a hung nspawn still ends (timeout alone may never kill it).
            self.proc = subprocess.Popen(
                [
                    "timeout",
                    "-k",
                    "10",
                    "600",
                    find_tool("systemd-nspawn"),
                    "-D",
                    str(self.root),
                    "-M",
                    self.name,
                    "--boot",
                    "--console=pipe",
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                    f"--network-namespace-path={self.netns.path}",
                ],  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

        def leader() -> int | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-4000:]
                raise AssertionError(f"systemd-nspawn exited early:\n{tail}")
            for nspawn, comm in children(self.proc.pid):
                if comm == "systemd-nspawn":
                    for pid, c in children(nspawn):
                        if c == "systemd":
                            return pid
            return None

        self.leader = wait_for(leader, timeout, 0.05, "the container's systemd")

        def running() -> bool:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")

        wait_for(running, timeout, 0.1, "systemctl is-system-running")
        self.boot_id = self.run("cat", "/proc/sys/kernel/random/boot_id").stdout.strip()
        return self

    def run(self, *argv: str, check: bool = True, timeout: float = 60):
        assert self.leader is not None
        return run(["nsenter", "-t", str(self.leader), "-a", *argv], check=check, timeout=timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poweroff(self, timeout: float = 90) -> float:
        """systemctl poweroff inside; returns the seconds until nspawn exited (status 0)."""
        assert self.proc is not None
        start = time.monotonic()
        self.run("systemctl", "poweroff", check=False)
        rc = self.proc.wait(timeout=timeout)
        took = time.monotonic() - start
        assert rc == 0, f"systemd-nspawn exited {rc}:\n{self.log.read_text()[-4000:]}"
        return took

    def kill(self) -> None:
        """Teardown fallback: SIGTERM to our own nspawn (it halts the guest), SIGTERM again
        (immediate termination), then SIGKILL; never anything but our own processes."""
        if not self.running():
            return
        assert self.proc is not None
        nspawn = [pid for pid, comm in children(self.proc.pid) if comm == "systemd-nspawn"]
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            for pid in nspawn:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            try:
                self.proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
        self.proc.kill()
        self.proc.wait(timeout=30)


# --- after the container is gone ------------------------------------------------------


def journal(root: Path, boot_id: str) -> list[dict]:
    """The container's persistent journal for one boot, read from the host."""
    proc = run(
        [
            "journalctl",
            "-D",
            str(root / "var" / "log" / "journal"),
            f"_BOOT_ID={boot_id.replace('-', '')}",
            "-o",
            "json",
            "--no-pager",
        ],  # fmt: skip
        timeout=60,
    )
    entries = []
    for line in proc.stdout.splitlines():
        entry = json.loads(line)
        if isinstance(entry.get("MESSAGE"), str):
            entries.append(entry)
    return entries


def first_index(entries: list[dict], prefix: str, unit: str | None = None) -> int:
    for i, entry in enumerate(entries):
        if entry["MESSAGE"].startswith(prefix) and (unit is None or entry.get("UNIT") == unit):
            return i
    raise AssertionError(f"no journal entry starting with {prefix!r} (unit {unit})")


def messages(entries: Iterable[dict]) -> str:
    return "\n".join(e["MESSAGE"] for e in entries)


def in_netns_chroot(netns: Netns, root: Path, *argv: str, check: bool = True):
    """The rootfs's own iptables (same nft/legacy variant as the guest), in our netns."""
    return run(["ip", "netns", "exec", netns.name, "chroot", str(root), *argv], check=check)
