"""wanwatch latency: from an address change to the printed event and the state file.

Run as root: python bench_wanwatch.py [N] [STATE_DIR]. It creates a namespace with a
veth pair, starts bin/wanwatch in it, then (from inside the namespace, with its own
netlink socket, so no `ip` process start-up is counted) adds and deletes an address N
times; t0 is taken just before the RTM_NEWADDR/RTM_DELADDR request is sent. The event
time is when the line is read from wanwatch's stdout; the file time is when inotify
reports the state file renamed into place.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path("/work/main")
sys.path.insert(0, str(ROOT / "lib"))

import pyinotify  # noqa: E402

from banpipe import netlink  # noqa: E402
from banpipe.watch import InotifyWatcher  # noqa: E402


def request(sock, mtype, address, plen, index):
    payload = netlink._IFADDRMSG.pack(socket.AF_INET, plen, 0, 0, index)
    payload += netlink.pack_attr(netlink.IFA_LOCAL, ipaddress.ip_address(address).packed)
    payload += netlink.pack_attr(netlink.IFA_ADDRESS, ipaddress.ip_address(address).packed)
    flags = netlink.NLM_F_REQUEST | 0x4 | (0x400 | 0x200 if mtype == netlink.RTM_NEWADDR else 0)
    sock.send(netlink.pack_message(mtype, payload, flags, 1))
    sock.recv(65536)  # the ack


def inside(n: int, state_dir: Path) -> None:
    state = state_dir / "wan.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bin/wanwatch"), "--config", "/dev/null",
         "--interface", "wan0", "--state", str(state)],
        stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    proc.stdout.readline()  # start event
    ino = InotifyWatcher()
    ino.add(state_dir, pyinotify.IN_MOVED_TO)
    index = socket.if_nametoindex("wan0")
    ctl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    ev_lat, file_lat = [], []
    for i in range(n):
        mtype = netlink.RTM_NEWADDR if i % 2 == 0 else netlink.RTM_DELADDR
        t0 = time.perf_counter()
        request(ctl, mtype, "198.51.100.77", 24, index)
        t_file = t_ev = None
        while t_file is None or t_ev is None:
            r, _, _ = select.select([proc.stdout, ino], [], [], 5)
            assert r, "timeout"
            now = time.perf_counter()
            if ino in r and any(e.name == "wan.json" for e in ino.events()):
                t_file = t_file or now
            if proc.stdout in r:
                proc.stdout.readline()
                t_ev = now
        ev_lat.append((t_ev - t0) * 1000)
        file_lat.append((t_file - t0) * 1000)
    proc.terminate()
    proc.wait()

    def fmt(xs):
        xs = sorted(xs)
        p95 = xs[int(len(xs) * 0.95) - 1]
        return f"median {statistics.median(xs):.2f} ms, p95 {p95:.2f} ms, max {xs[-1]:.2f} ms"

    print(f"{n} changes, state in {state_dir} ({fs_type(state_dir)})")
    print(f"  change -> state file renamed in place: {fmt(file_lat)}")
    print(f"  change -> event line read:             {fmt(ev_lat)}")


def fs_type(path: Path) -> str:
    out = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True)
    return out.stdout.split()[-1]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        inside(int(sys.argv[2]), Path(sys.argv[3]))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    state_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/dev/shm/bpwwbench")
    state_dir.mkdir(parents=True, exist_ok=True)
    ns = f"bpwwbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (
            ["link", "add", "wan0", "type", "veth", "peer", "name", "wanpeer"],
            ["link", "set", "wan0", "up"],
            ["link", "set", "wanpeer", "up"],
        ):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, __file__, "--inside", str(n),
             str(state_dir)],
            check=True,
        )  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    main()
