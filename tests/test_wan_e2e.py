"""WAN address changes reach the decisions: wanwatch -> state file -> alertfilter, banctl.

Real processes in a network namespace the test creates: wanwatch follows ``wan0`` (a
veth whose peer sits in the same namespace), alertfilter and banctl watch the state
file wanwatch writes.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from toolpaths import BIN

pytestmark = pytest.mark.root

ALERT = {
    "v": 1,
    "ts": "2026-11-28T10:00:00.000001",
    "gid": 1,
    "sid": 2003,
    "rev": 8,
    "msg": "SQL Worm propagation attempt",
    "classification": "Misc Attack",
    "priority": 2,
    "proto": "UDP",
    "src": "203.0.113.7",
    "sport": 1090,
    "dst": "198.51.100.7",
    "dport": 1434,
    "action": None,
    "refs": [],
    "format": "snort2-fast",
}


# Waits end on the condition; the limit only ends a failing test (5 s, including a
# tool's start, ran out on a loaded machine).
WAIT = 30.0


def deadline_wait(predicate, timeout=WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Lines:
    """Lines of a process's stream, read in a thread, taken with a deadline."""

    def __init__(self, stream):
        self.q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.q.put(line.decode() if isinstance(line, bytes) else line)

    def get(self, timeout=WAIT) -> str:
        return self.q.get(timeout=timeout)


@pytest.fixture
def wan_ns(tmp_path, tool_env):
    name = f"bpwane2e{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    procs = []

    def ip(*args):
        subprocess.run(["ip", "-n", name, *args], check=True, capture_output=True)

    try:
        ip("link", "set", "lo", "up")
        ip("link", "add", "wan0", "type", "veth", "peer", "name", "wanpeer")
        ip("link", "set", "wan0", "up")
        ip("link", "set", "wanpeer", "up")
        ip("addr", "add", "198.51.100.2/24", "dev", "wan0")
        state = tmp_path / "wan.json"
        ww = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, str(BIN / "wanwatch"),
             "--interface", "wan0", "--state", str(state)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tool_env,
        )  # fmt: skip
        procs.append(ww)
        events = Lines(ww.stdout)
        first = json.loads(events.get(timeout=60))
        assert first["addresses"] == ["198.51.100.2"]
        yield name, ip, state, events, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_alertfilter_decision_follows_the_wan_address(wan_ns, tmp_path, tool_env):
    name, ip, state, events, procs = wan_ns
    cfg = tmp_path / "banpipe.toml"
    cfg.write_text(f'[network]\nwan_state = "{state}"\n[filter]\nrequire_ours = true\n')
    af = subprocess.Popen(
        [sys.executable, str(BIN / "alertfilter"), "--config", str(cfg), "--dry-run", "--explain"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tool_env,
    )  # fmt: skip
    procs.append(af)
    out = Lines(af.stdout)

    def send():
        af.stdin.write((json.dumps(ALERT) + "\n").encode())
        af.stdin.flush()
        return out.get()

    # 198.51.100.7 is not ours yet: the alert against it is no reason to ban.
    assert send().startswith("skip 203.0.113.7: ")
    # DHCP hands us 198.51.100.7: wanwatch writes the state, alertfilter reloads it.
    ip("addr", "add", "198.51.100.7/24", "dev", "wan0")
    event = json.loads(events.get())
    assert event["added"] == ["198.51.100.7"]
    assert send().startswith("BAN 203.0.113.7  1:2003:8 ")
    # And the address we lost stops being ours.
    ip("addr", "del", "198.51.100.7/24", "dev", "wan0")
    assert json.loads(events.get())["removed"] == ["198.51.100.7"]
    assert send().startswith("skip 203.0.113.7: ")


def test_a_banned_address_that_becomes_ours_is_unbanned(wan_ns, tmp_path, tool_env):
    name, ip, state, events, procs = wan_ns
    cfg = tmp_path / "banpipe.toml"
    ledger = tmp_path / "ledger.sqlite3"
    cfg.write_text(
        f'[network]\nwan_state = "{state}"\n[firewall]\nbackend = "iptables"\n'
        f'[banctl]\nledger = "{ledger}"\n'
    )
    banctl = [sys.executable, str(BIN / "banctl"), "--config", str(cfg)]
    apply = subprocess.Popen(
        ["ip", "netns", "exec", name, *banctl, "apply"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tool_env,
    )  # fmt: skip
    procs.append(apply)
    recycled = "198.51.100.9"
    ban = dict(ALERT, src=recycled, offender=recycled, victim="198.51.100.2", reversed=False)
    ban["reason"] = "test"
    apply.stdin.write((json.dumps(ban) + "\n").encode())
    apply.stdin.flush()

    def rules():
        return subprocess.run(
            ["ip", "netns", "exec", name, "iptables", "-S", "BANPIPE"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip

    assert deadline_wait(lambda: recycled in rules()), "not banned in the first place"
    # Our ISP recycles the address and DHCP gives it to us.
    ip("addr", "add", f"{recycled}/24", "dev", "wan0")
    assert json.loads(events.get())["added"] == [recycled]
    assert deadline_wait(lambda: recycled not in rules()), "ban not lifted"
    listing = subprocess.run(
        ["ip", "netns", "exec", name, *banctl, "list", "--json"],
        capture_output=True, text=True, env=tool_env,
    )  # fmt: skip
    assert recycled not in listing.stdout
    # And it cannot be banned again while it is ours.
    apply.stdin.write((json.dumps(ban) + "\n").encode())
    apply.stdin.flush()
    apply.stdin.close()
    apply.wait(timeout=20)
    err = apply.stderr.read().decode()
    assert f"{recycled}: our WAN address {recycled}" in err, err  # refused, and said so
