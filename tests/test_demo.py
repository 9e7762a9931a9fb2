"""The README's first command: the whole pipe on the bundled example."""

from __future__ import annotations

import os
import subprocess

import pytest

from toolpaths import ROOT


@pytest.mark.root
def test_demo_bans_the_right_addresses_with_real_iptables():
    if not (ROOT / ".venv" / "bin" / "fasttail").exists():
        pytest.skip("run through tests/run, which sets up .venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        ["bash", str(ROOT / "examples" / "demo")], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for line in (
        "BAN 198.51.100.77  1:1000003:1",
        "skip 203.0.113.99: whitelisted 203.0.113.96/28",
        "-A BANPIPE -s 203.0.113.7/32 -j DROP",
        "-A BANPIPE -s 198.51.100.77/32 -j DROP",
        "-A BANPIPE -s 2001:db8:bad::7/128 -j DROP",
        "4 active bans",
    ):
        assert line in out, line
    for never in ("127.0.0.1/32", "203.0.113.99/32", "192.168.1.50/32"):
        assert never not in out
    # The throwaway namespace is gone again.
    assert (
        "banpipe-demo" not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    )
