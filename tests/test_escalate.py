"""Bans that aggregate: several banned IPv6 addresses of one prefix ban the prefix."""

from __future__ import annotations

from banpipe.escalate import Escalation
from banpipe.ledger import Ledger
from banpipe.protect import Protection
from test_banctl import NOW, alert, ledger_of, lines, run

pytest_plugins = ["test_banctl"]  # its fixtures cfg and fw


class Said:
    def __init__(self):
        self.lines = []

    def say(self, where, text, level=None):
        self.lines.append((where, text))


def test_apply_bans_the_prefix_once_enough_addresses_of_it_are_banned(cfg, fw):
    conf = cfg('[ban]\non_stop = "keep"\nescalate_count = 3\nescalate_window = "10m"\n')
    offenders = ["2001:db8:66::1", "2001:db8:66::2", "2001:db8:77::1", "2001:db8:66:0:1::9"]
    rc, _, err = run([*conf, "apply"], lines(*(alert(a) for a in offenders)))
    assert rc == 0, err
    assert fw.entries == {*offenders, "2001:db8:66::/64"}
    assert "2001:db8:66::/64: range banned: escalated: 3 addresses of 2001:db8:66::/64" in err
    with ledger_of(cfg) as led:
        net = led.get("2001:db8:66::/64")
        one = led.get("2001:db8:66::1")
        assert net.active and not net.manual and net.expires == one.expires
        assert net.reason.startswith("escalated: 3 addresses of 2001:db8:66::/64 banned within 10m")
        assert led.get("2001:db8:77::/64") is None
        # The addresses keep their own bans and their violations.
        assert one.active and one.violations == 1
    rc, out, _ = run([*conf, "check"])
    assert rc == 0, out


def test_escalation_is_off_by_default(cfg, fw):
    offenders = [f"2001:db8:66::{i}" for i in range(1, 9)]
    rc, _, err = run([*cfg('[ban]\non_stop = "keep"\n'), "apply"], lines(*map(alert, offenders)))
    assert rc == 0, err
    assert fw.entries == set(offenders)


def _escalation(tmp_path, protection, **kw):
    led = Ledger.open(str(tmp_path / "l.sqlite3"))
    said = Said()
    settings = {"plen": 64, "count": 2, "window": 600.0, **kw}
    return led, said, Escalation(led, lambda: protection, said, **settings)


def test_a_prefix_that_holds_anything_protected_is_never_banned(tmp_path):
    prot = Protection(gateways=["2001:db8:66::fe"])
    led, said, esc = _escalation(tmp_path, prot)
    for a in ("2001:db8:66::1", "2001:db8:66::2", "2001:db8:66::3"):
        led.ban(a, NOW, expires=NOW + 3600, reason="x", manual=False)
        assert esc.consider([a], NOW) == []
    assert led.get("2001:db8:66::/64") is None
    assert said.lines == [
        (
            "2001:db8:66::/64",
            "not escalating to the range: the range holds our gateway 2001:db8:66::fe",
        )
    ]
    led.close()


def test_only_bans_within_the_window_count_and_ipv4_never_escalates(tmp_path):
    led, _, esc = _escalation(tmp_path, Protection())
    assert esc.note([("2001:db8:66::1", NOW - 700)], NOW) == []  # before the window
    assert esc.note([("2001:db8:66::2", NOW - 100)], NOW) == []
    assert esc.note([("2001:db8:66::2", NOW)], NOW) == []  # the same address again
    assert esc.note([("203.0.113.1", NOW), ("203.0.113.2", NOW)], NOW) == []
    assert esc.note([("2001:db8:66::3", NOW)], NOW) == ["2001:db8:66::/64"]
    assert esc.note([("2001:db8:77::3", NOW + 1000)], NOW + 1000) == []
    assert list(esc.recent) == ["2001:db8:77::/64"]  # the old prefix was forgotten
    led.close()


def test_the_range_lasts_as_long_as_the_longest_ban_and_a_restart_keeps_the_count(tmp_path):
    led, _, esc = _escalation(tmp_path, Protection(), plen=48)
    led.ban("2001:db8:66:1::1", NOW, expires=NOW + 100, reason="x", manual=False)
    led.ban("2001:db8:66:2::1", NOW, expires=NOW + 900, reason="x", manual=False)
    # A restart: the count starts from the ledger's recent bans.
    assert esc.note(led.recent_bans_v6(NOW - 600), NOW) == ["2001:db8:66::/48"]
    esc.recent.clear()
    esc.note(led.recent_bans_v6(NOW - 600)[:1], NOW)
    assert esc.consider(["2001:db8:66:2::1"], NOW) == ["2001:db8:66::/48"]
    assert led.get("2001:db8:66::/48").expires == NOW + 900
    assert esc.consider(["2001:db8:66:3::1"], NOW) == []  # already banned
    led.close()
