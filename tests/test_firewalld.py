"""firewalld for real (bench/bench_durability.py's ``Firewalld``: a private system bus
and firewalld in a throwaway namespace): ``firewall-cmd --reload`` under a running
``banctl apply``. firewalld's reload rewrites the iptables ``filter`` tables (our
chain and hook jumps go: iptables and ipset backends) and leaves other nf_tables
tables alone (nftables backend). A reload reaches banctl only as the kernel's
nf_tables notification: ``firewall-cmd`` talks to firewalld over D-Bus, not through
systemd, so no unit drop-in sees it."""

from __future__ import annotations

import shutil
import signal
import sys

import pytest

from netns import skip_unless_root
from toolpaths import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import bench_durability  # noqa: E402

pytestmark = [
    pytest.mark.root,
    skip_unless_root,
    pytest.mark.skipif(
        not (shutil.which("firewalld") and shutil.which("dbus-daemon")),
        reason="firewalld or dbus-daemon not installed",
    ),
]


@pytest.mark.parametrize("backend", ["iptables", "ipset"])
def test_firewalld_reload_is_repaired_by_the_running_banctl(backend):
    # check_interval is 1h: only the kernel's notification can start the repair;
    # firewalld_reload asserts `banctl check` is clean within 10 s of the reload.
    times = bench_durability.firewalld_reload(backend, 1)["firewall-cmd --reload"]
    assert isinstance(times, list) and len(times) == 1, times
    assert times[0] < 5.0, times


def test_firewalld_reload_leaves_the_nftables_table_alone():
    assert bench_durability.firewalld_reload("nftables", 1) == {
        "firewall-cmd --reload": "untouched"
    }


def test_firewall_cmd_state_answers_once_a_hup_reload_is_done(tmp_path):
    """What the role's firewalld drop-in relies on: its ExecReload is a kill -HUP that
    returns at once, so the drop-in first runs `firewall-cmd --state`, which firewalld
    answers only after the reload (here: after a chain firewalld's reload removes is
    gone); the restore that follows is not undone by the reload."""
    ns = bench_durability.Namespace()
    try:
        fwd = bench_durability.Firewalld(ns, tmp_path)
        try:
            assert ns.run(["iptables", "-N", "BEFORE_RELOAD"]).returncode == 0
            fwd.daemon.send_signal(signal.SIGHUP)
            assert fwd.cmd("--state").stdout.strip() == "running"
            assert ns.run(["iptables", "-S", "BEFORE_RELOAD"]).returncode != 0
        finally:
            fwd.close()
    finally:
        ns.close()
