"""alertfilter with the EVE keys: ``target`` chooses the offender, ``flow_id`` repeats."""

from __future__ import annotations

import io
import json

import pytest

from banpipe.cli import Reporter
from banpipe.flows import FlowWindow
from banpipe.judge import Filter, Loader
from banpipe.protect import Protection
from banpipe.rules import K_NO_OFFENDER, K_REPEAT, RuleSet
from test_alertfilter import WAN, alert, line, make_config, run

EVE = {"format": "suricata-eve", "iface": "eth0", "direction": "to_server"}


def decide(a, **kw):
    rules = RuleSet(protection=Protection(wan=[WAN]), **kw)
    return rules.decide(a)


def test_target_dst_bans_src_even_with_a_reverse_marker():
    d = decide(alert(msg="x BLOCKED DESTINATION", target=WAN, **EVE))
    assert (d.ban, d.offender, d.victim, d.reversed) == (True, "203.0.113.7", WAN, False)
    assert d.reason.endswith(f"(rule target {WAN})")


def test_target_src_bans_dst():
    d = decide(alert(src=WAN, dst="203.0.113.9", target=WAN, **EVE))
    assert (d.ban, d.offender, d.victim, d.reversed) == (True, "203.0.113.9", WAN, True)


def test_target_in_another_spelling_is_recognised():
    d = decide(
        alert(src="2001:db8::7", dst="2001:db8:ffff::1c", target="2001:0db8:ffff::001c", **EVE),
        require_ours=False,
    )
    assert (d.ban, d.offender) == (True, "2001:db8::7")


@pytest.mark.parametrize("target", ["192.0.2.99", "", 5, ["x"]])
def test_target_that_is_neither_end_never_bans(target):
    d = decide(alert(target=target, **EVE))
    assert (d.ban, d.kind, d.offender) == (False, K_NO_OFFENDER, None)


def test_without_target_the_reverse_marker_still_works():
    d = decide(alert(src=WAN, dst="203.0.113.9", msg="x BLOCKED DESTINATION"))
    assert (d.ban, d.offender, d.reversed) == (True, "203.0.113.9", True)


def test_flow_window_remembers_from_the_first_alert():
    w = FlowWindow(60)
    assert [w.repeat(1, t) for t in (0, 1, 59.9)] == [False, True, True]
    assert w.repeat(1, 60) is False  # the window ran out: a new first alert
    assert w.repeat(2, 61) is False and len(w) == 2
    small = FlowWindow(60, size=2)
    for k in (1, 2, 3):
        small.repeat(k, 0)
    assert len(small) == 2 and small.repeat(1, 0) is False  # the oldest was forgotten


def test_flow_window_drops_repeats_of_one_flow(tmp_path):
    cfg = make_config(tmp_path, 'flow_window = "1m"\n')
    data = b"".join(line(alert(flow_id=f, **EVE)) for f in (7, 7, 8, 7)) + line(
        alert()
    )  # no flow_id (a text format): never a repeat
    rc, out, err = run(["--config", str(cfg)], data)
    assert rc == 0
    assert [json.loads(x).get("flow_id") for x in out.splitlines()] == [7, 8, None]
    assert "2 repeated flow" in err
    rc, out, err = run(["--config", str(cfg), "--explain"], data)
    assert "skip 203.0.113.7: repeat of flow 7 within 60s" in out


def test_flow_window_off_by_default(tmp_path):
    cfg = make_config(tmp_path)
    data = line(alert(flow_id=7, **EVE)) * 3
    rc, out, err = run(["--config", str(cfg)], data)
    assert len(out.splitlines()) == 3


def test_flow_window_uses_the_injected_clock(tmp_path):
    cfg = make_config(tmp_path, "flow_window = 10\n")
    loader = Loader(str(cfg), Reporter("alertfilter", io.StringIO()))
    loader.start()
    now = [0.0]
    out = io.BytesIO()
    f = Filter(
        loader, out, loader.reporter, "x", dry_run=False, explain=False, clock=lambda: now[0]
    )
    a = line(alert(flow_id=1, **EVE)).rstrip(b"\n")
    f.process([a, a], 0)
    now[0] = 10.0
    f.process([a], 2)
    assert (f.counts["ban"], f.counts[K_REPEAT]) == (2, 1)
