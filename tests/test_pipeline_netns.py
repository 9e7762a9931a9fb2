"""End to end: the real processes `fasttail | alertfilter | banctl apply` on real firewalls.

An alert appended to a followed alert file bans its source in the gateway namespace's
firewall: traffic from that address is dropped while others pass, for IPv4 and IPv6;
the ban expires and traffic passes again; stopping the pipe removes our entries.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from netns import NetnsPair
from toolpaths import BIN

pytestmark = pytest.mark.root

LINE = (
    "11/28-10:00:{sec:02d}.000001  [**] [1:2003:8] SQL Worm propagation attempt [**] "
    "[Classification: Misc Attack] [Priority: 2] {{UDP}} {src}:1090 -> {dst}:1434\n"
)
LINE6 = (
    "11/28/2026-10:00:{sec:02d}.000001  [**] [1:2001219:20] ET SCAN Potential SSH Scan [**] "
    "[Classification: Attempted Information Leak] [Priority: 2] {{TCP}} {src}:40422 -> {dst}:22\n"
)


# How long an automated ban lasts here. The test checks what a ban does (drops, lets
# the neighbours through, is listed) while it lasts, and then waits for its expiry: with
# 3 s, a loaded machine spent the whole ban on the probes and found "no active bans" in
# the listing. 15 s is over three times what those checks took with a quarter of one core.
BAN_SECONDS = 15


# Generous: three Python processes start under `ip netns exec` first, which takes
# seconds on a loaded 2-core CI machine. Only a failure waits this long.
def wait_until(predicate, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Pipe:
    """The three tools as real processes, banctl inside the gateway namespace."""

    def __init__(self, pair, tmp_path, backend, env):
        self.pair = pair
        self.alert = tmp_path / "alert"
        self.alert.write_text("")
        self.config = tmp_path / "banpipe.toml"
        self.ledger = tmp_path / "ledger.sqlite3"
        self.config.write_text(
            f"""
[network]
wan = ["{pair.gateway_v4}"]
networks = ["2001:db8:1::/64"]
wan_state = "{tmp_path}/wan.json"
[filter]
priorities = [1, 2]
[ban]
base = "{BAN_SECONDS}s"
extend = ["0s", "0s"]
[firewall]
backend = "{backend}"
[banctl]
ledger = "{self.ledger}"
"""
        )
        py = sys.executable
        self.fasttail = subprocess.Popen(
            [py, str(BIN / "fasttail"), "--from-start", str(self.alert)],
            stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        self.alertfilter = subprocess.Popen(
            [py, str(BIN / "alertfilter"), "--config", str(self.config)],
            stdin=self.fasttail.stdout, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        self.banctl = subprocess.Popen(
            [*pair.gateway.prefix, py, str(BIN / "banctl"), "--config", str(self.config), "apply"],
            stdin=self.alertfilter.stdout, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        self.fasttail.stdout.close()
        self.alertfilter.stdout.close()
        self.sec = 0

    def append(self, src, dst=None, template=LINE):
        self.sec += 1
        with open(self.alert, "a") as f:
            f.write(template.format(sec=self.sec, src=src, dst=dst or self.pair.target(src)))

    def banctl_cmd(self, *args):
        return self.pair.gateway.run(
            [sys.executable, str(BIN / "banctl"), "--config", str(self.config), *args],
            check=False,
        )

    def stop(self):
        for p in (self.fasttail, self.alertfilter, self.banctl):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.fasttail, self.alertfilter, self.banctl):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return self.banctl.stderr.read().decode()


@pytest.fixture
def pipe_env(tool_env):
    return tool_env


@pytest.mark.parametrize("backend", ["iptables", "ipset", "nftables"])
def test_alert_to_drop_and_back(backend, tmp_path, pipe_env):
    with NetnsPair("pipe") as pair:
        pipe = Pipe(pair, tmp_path, backend, pipe_env)
        try:
            bad4, good4 = pair.attacker_v4
            bad6, good6 = pair.attacker_v6
            pipe.append(bad4)
            pipe.append(
                "2001:0db8:0066:0000:0000:0000:0000:0007",
                "2001:0db8:0001:0000:0000:0000:0000:0002",
                LINE6,
            )
            assert wait_until(lambda: not pair.ping(bad4, timeout=0.3)), "v4 not banned"
            banned = time.monotonic()
            assert wait_until(lambda: not pair.ping(bad6, timeout=0.3)), "v6 not banned"
            assert pair.ping(good4) and pair.ping(good6), "innocent neighbours blocked"
            listing = pipe.banctl_cmd("list").stdout
            took = time.monotonic() - banned
            assert bad4 in listing and bad6 in listing, f"{took:.1f} s of a {BAN_SECONDS} s ban"
            # Expiry lifts the bans (no extension) without any new input.
            assert wait_until(lambda: pair.ping(bad4, timeout=0.3), timeout=60), "not expired"
            assert wait_until(lambda: pair.ping(bad6, timeout=0.3), timeout=60)
            # A new violation bans again; stopping the pipe removes our entries.
            pipe.append(bad4)
            assert wait_until(lambda: not pair.ping(bad4, timeout=0.3))
        finally:
            err = pipe.stop()
        assert pipe.banctl.returncode == 0, err
        assert pair.ping(bad4), "on_stop=remove left the ban in place"
        rules = (
            pair.gateway.run(["iptables-save"]).stdout
            + pair.gateway.run(["nft", "list", "ruleset"]).stdout
        )
        assert bad4 not in rules
        # The ledger keeps the history.
        shown = pipe.banctl_cmd("show", bad4).stdout
        assert "2003" in shown


def test_protected_addresses_never_reach_the_firewall(tmp_path, pipe_env):
    with NetnsPair("prot") as pair:
        pipe = Pipe(pair, tmp_path, "iptables", pipe_env)
        try:
            pipe.append("127.0.0.1")  # loopback
            pipe.append(pair.gateway_v4, "198.51.100.2")  # our own WAN address
            pipe.append("2001:db8:1::9", pair.gateway_v6)  # our network
            pipe.append(pair.attacker_v4[0])  # the one real offender, last
            assert wait_until(lambda: not pair.ping(pair.attacker_v4[0], timeout=0.3))
            rules = pair.gateway.run(["iptables-save"]).stdout
            rules += pair.gateway.run(["ip6tables-save"]).stdout
            assert "127.0.0.1" not in rules and pair.gateway_v4 not in rules
            assert "2001:db8:1::9" not in rules
        finally:
            pipe.stop()


def test_sigterm_to_every_stage_at_once_cleans_up(tmp_path, pipe_env):
    """systemd's KillMode=control-group: all stages get SIGTERM together, repeatedly."""
    with NetnsPair("term") as pair:
        for round_ in range(3):
            pipe = Pipe(pair, tmp_path, "ipset", pipe_env)
            pipe.append(pair.attacker_v4[0])
            assert wait_until(lambda: not pair.ping(pair.attacker_v4[0], timeout=0.3))
            for p in (pipe.fasttail, pipe.alertfilter, pipe.banctl):
                os.kill(p.pid, signal.SIGTERM)
            pipe.stop()
            assert pair.gateway.run(["ipset", "list", "-n"]).stdout.strip() == "", round_
            assert "BANPIPE" not in pair.gateway.run(["iptables-save"]).stdout, round_
