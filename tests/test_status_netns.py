"""banctl status --json against a running ``banctl apply`` in a network namespace.

The daemon runs in the gateway namespace with a real firewall; status is asked from
the same namespace while it runs (running, pid, backend, counts, last alert, firewall
read live and matching), after an external flush (firewall differs), and after the
daemon stopped (not running). The metrics textfile it wrote is compared too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_banctl_netns import BIN, FLUSH, LIB, Banctl, alert, stop, wait_for, write_config

pytestmark = pytest.mark.root

V4, V6 = "203.0.113.7", "2001:db8:66::7"


@pytest.fixture
def pair():
    from netns import NetnsPair

    with NetnsPair("st") as p:
        yield p


def status(b: Banctl) -> dict:
    """`banctl status --json` as a real process inside the gateway namespace."""
    env = {**os.environ, "PYTHONPATH": str(LIB)}
    out = subprocess.run(
        [*b.pair.gateway.prefix, sys.executable, str(BIN), "--config", b.config, "status",
         "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("backend", ["nftables"])
def test_status_json_against_a_running_apply(tmp_path, pair, backend):
    prom = tmp_path / "banpipe.prom"
    extra = f'[metrics]\ntextfile = "{prom}"\ninterval = 1\n'
    b = Banctl(pair, write_config(tmp_path, backend, extra))
    proc = b.spawn()
    try:
        assert wait_for(lambda: proc.stderr.readline().startswith("banctl: started"))
        before = status(b)
        assert before["daemon"]["running"] is True and before["daemon"]["pid"] == proc.pid
        assert before["last_alert"] is None
        proc.stdin.write(alert(V4) + "\n" + alert(V6) + "\n" + alert(V4, 2004) + "\n")
        proc.stdin.flush()
        assert wait_for(lambda: b.active() == {V4, V6})
        assert wait_for(lambda: status(b)["last_alert"] is not None)
        s = status(b)
        assert s["backend"] == backend
        assert s["active"] == {"total": 2, "v4": {"automated": 1, "manual": 0},
                               "v6": {"automated": 1, "manual": 0}}  # fmt: skip
        assert s["last_hour"] == {"added": 2, "extended": 1, "lifted": 0}
        assert s["firewall"]["checked"] == "live" and s["firewall"]["matches"] is True
        assert s["firewall"]["entries"] == 2
        assert s["spoof_brake"]["engaged"] is False and s["ledger"]["offenders"] == 2
        assert s["last_drift_repair"] is None
        for cmd in FLUSH[backend]:
            pair.gateway.run(cmd, check=True)
        # The running apply hears the kernel announce the flush and repairs at once
        # (banpipe.fwevents); status shows the repair and the firewall whole again.
        assert wait_for(lambda: status(b)["last_drift_repair"] is not None)
        s = status(b)
        assert "2 missing" in s["last_drift_repair"]["summary"], s["last_drift_repair"]
        assert s["firewall"]["matches"] is True and s["firewall"]["entries"] == 2
        rc, _, err = b("check", "--repair")
        assert rc == 0, err
        assert wait_for(lambda: prom.exists())
        text = prom.read_text()
        values = {
            (x.name, tuple(sorted(x.labels.items()))): x.value
            for fam in text_string_to_metric_families(text)
            for x in fam.samples
        }
        assert values[("banpipe_active_bans", (("family", "v4"), ("kind", "automated")))] == 1
        assert values[("banpipe_bans_added_total", ())] == 2
    finally:
        err = stop(proc)
    assert proc.returncode == 0, err
    after = status(b)
    assert after["daemon"] == {"running": False, "pid": None, "started": None, "updated": None}
    assert after["last_alert"] is not None  # from the ledger
