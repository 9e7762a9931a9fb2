"""banshare across real gateways: network namespaces, nftables, real nats-server -js.

Each gateway has its own ledger, banctl and banshare (see fleetnet.py); bans are made
with ``banctl`` on one gateway and looked for in the other gateways' kernels.
"""

from __future__ import annotations

import shutil
import time

import pytest

from fleetnet import Fleet
from netns import skip_unless_root

pytestmark = [
    pytest.mark.root,
    skip_unless_root,
    pytest.mark.skipif(shutil.which("nats-server") is None, reason="needs nats-server"),
]

# B protects 203.0.113.66 (whitelist): a ban from A must be refused there.
B_PROTECTS = '\n[filter]\nwhitelist = ["203.0.113.66"]\n'


def test_single_node_ban_unban_refusal_catch_up_and_server_restart():
    with Fleet("s", gateways=("a", "b", "c"), nodes=1, extra={"b": B_PROTECTS}) as f:
        for g in ("a", "b", "c"):
            f.start_banshare(g)

        # A ban on A appears in B's and C's firewall, with its origin.
        f.banctl("a", "ban", "203.0.113.50", "--for", "1h", "--reason", "seen on a")
        assert f.wait(lambda: "203.0.113.50" in f.entries("b") & f.entries("c"))
        listing = f.banctl("b", "list").stdout
        assert "ORIGIN" in listing and "gw-a" in listing
        assert "gw-a" in f.banctl("c", "show", "203.0.113.50").stdout

        # Unban of the remote ban on B unbans it fleet-wide (A included).
        f.banctl("b", "unban", "203.0.113.50")
        assert f.wait(lambda: not ({"203.0.113.50"} & (f.entries("a") | f.entries("c"))))
        assert "not banned" in f.banctl("a", "show", "203.0.113.50").stdout

        # A protected address of B named by A: refused and reported by B, applied by C.
        f.banctl("a", "ban", "203.0.113.66", "--for", "1h")
        assert f.wait(lambda: "203.0.113.66" in f.entries("c"))
        assert f.wait(lambda: "203.0.113.66: ban from gw-a refused: whitelisted" in f.stderr("b"))
        assert "203.0.113.66" not in f.entries("b")
        assert "not in the ledger" in f.banctl("b", "show", "203.0.113.66", check=False).stdout

        # Pin propagates.
        f.banctl("a", "ban", "203.0.113.51", "--for", "1h")
        assert f.wait(lambda: "203.0.113.51" in f.entries("c"))
        f.banctl("a", "pin", "203.0.113.51")
        assert f.wait(lambda: "manual" in f.banctl("c", "show", "203.0.113.51").stdout)

        # B down for a while: what happened meanwhile arrives when it starts again;
        # a ban that expired meanwhile is skipped.
        assert f.stop_banshare("b") == 0
        f.banctl("a", "ban", "203.0.113.52", "--for", "1h")
        f.banctl("c", "ban", "2001:db8:66::52", "--for", "1h")
        f.banctl("a", "ban", "203.0.113.53", "--for", "1s")
        assert f.wait(lambda: "203.0.113.52" in f.entries("c"))
        time.sleep(1.5)  # let the short ban lapse while B is away
        f.start_banshare("b")
        assert f.wait(lambda: {"203.0.113.52", "2001:db8:66::52"} <= f.entries("b"))
        assert "203.0.113.53" not in f.entries("b")
        assert "not in the ledger" in f.banctl("b", "show", "203.0.113.53", check=False).stdout

        # Server killed: local banning goes on; after the restart nothing is lost.
        f.kill_server(0)
        f.banctl("a", "ban", "203.0.113.54", "--for", "1h")  # works without the engine
        assert "203.0.113.54" in f.entries("a")
        assert f.wait(lambda: "unreachable" in f.stderr("a"))
        f.start_server(0)
        assert f.wait(lambda: "203.0.113.54" in f.entries("b") & f.entries("c"))
        assert f.wait(lambda: "reconnected" in f.stderr("a"))
        assert {"203.0.113.52", "2001:db8:66::52"} <= f.entries("b")
        assert f.stderr("a").count("unreachable") == 1  # the outage reported once

        for g in ("a", "b", "c"):
            assert f.stop_banshare(g) == 0


def test_three_node_cluster_survives_a_killed_node():
    with Fleet("c", gateways=("a", "b"), nodes=3) as f:
        f.start_banshare("a")
        f.start_banshare("b")
        f.banctl("a", "ban", "203.0.113.60", "--for", "1h")
        assert f.wait(lambda: "203.0.113.60" in f.entries("b"), timeout=60)
        f.kill_server(0)
        f.banctl("a", "ban", "203.0.113.61", "--for", "1h")
        f.banctl("b", "ban", "2001:db8:66::61", "--for", "1h")
        assert f.wait(lambda: "203.0.113.61" in f.entries("b"), timeout=60)
        assert f.wait(lambda: "2001:db8:66::61" in f.entries("a"), timeout=60)
        # A restart of B against the two remaining nodes replays nothing twice.
        assert f.stop_banshare("b") == 0
        f.banctl("a", "unban", "203.0.113.60")
        f.start_banshare("b")
        assert f.wait(lambda: "203.0.113.60" not in f.entries("b"), timeout=60)
        assert "203.0.113.61" in f.entries("b")
