"""What wakes ``banctl apply`` besides input: its inotify watch on the ledger's files
and the WAN state file (banpipe.daemon)."""

from __future__ import annotations

import os
import select
import time
from types import SimpleNamespace

from banpipe.config import parse_config
from banpipe.daemon import Daemon
from banpipe.statefile import write_json_atomic
from banpipe.watch import PathWatcher
from test_banctl import _wait_for, alert, fixed_env, lines
from test_daemon_commits import _apply_driven, _recorded


def test_without_a_wan_state_file_the_ledger_watch_does_not_spin(tmp_path, monkeypatch):
    """With ``wan_state = ""`` the daemon never read its watch's events: the -wal file's
    stayed pending and select() returned at once, thousands of passes a second."""
    ledger = tmp_path / "ledger.sqlite3"
    path = tmp_path / "banpipe.toml"
    path.write_text(
        '[network]\nwan_state = ""\n[firewall]\nbackend = "null"\n'
        f'[banctl]\nledger = "{ledger}"\n[ban]\nspoof_max = 0\n'
    )
    woken = []  # select() passes that the watch (the ledger's files) woke
    real = select.select

    def counting(rlist, *rest):
        ready = real(rlist, *rest)
        woken.append(any(isinstance(x, PathWatcher) for x in ready[0]))
        return ready

    monkeypatch.setattr(select, "select", counting)
    seen = {}

    def drive(write):
        write(alert("203.0.113.7"))
        where = SimpleNamespace(ledger=str(ledger))  # what _recorded needs of a config
        seen["banned"] = _wait_for(lambda: ledger.exists() and _recorded(where, "203.0.113.7"))
        before = sum(woken)
        # A window to watch the loop in: the commit's few writes wake it a few times,
        # a spin thousands (this can only pass wrongly, on a machine too busy to spin).
        time.sleep(0.5)
        seen["wake-ups"] = sum(woken) - before

    assert _apply_driven(None, drive, ["--config", str(path)]) == 0
    assert seen["banned"]
    assert seen["wake-ups"] < 20


def test_a_wan_change_before_the_watch_exists_is_not_missed(tmp_path):
    """The daemon reads the WAN state when it is made and watches it only once it runs:
    a change in between (wanwatch writing its first state at the same boot, or during a
    long restore) raised no event, and our new address could be banned until the next
    periodic check (an hour here)."""
    wan = tmp_path / "wan.json"
    config = parse_config(
        f'[network]\nwan_state = "{wan}"\n[firewall]\nbackend = "null"\n'
        '[banctl]\ncheck_interval = "1h"\n[ban]\nspoof_max = 0\n'
    )
    env = fixed_env(config, str(tmp_path / "ledger.sqlite3"))
    ledger = env.ledger()
    d = Daemon(env, ledger, env.firewall())
    assert d.wan == set()
    write_json_atomic(wan, {"v": 1, "type": "wan", "addresses": ["198.51.100.77"]})
    r, w = os.pipe()
    os.write(w, lines(alert("198.51.100.77")).encode())
    os.close(w)
    with open(r, "rb", buffering=0) as stdin:
        d.run(stdin)
    assert ledger.active_addresses() == set()
    assert "refusing to ban 198.51.100.77: our WAN address" in env.stderr.getvalue()
    env.close()


def test_an_unchanged_wan_state_is_not_read_again_once_watched(tmp_path, monkeypatch):
    """The catch-up above reads the file again only when its identity (inode, size,
    modification time: banpipe.sources.FirstReads) changed since the first read."""
    wan = tmp_path / "wan.json"
    write_json_atomic(wan, {"v": 1, "type": "wan", "addresses": ["198.51.100.77"]})
    old = time.time_ns() - 3600 * 10**9  # written long before the daemon started
    os.utime(wan, ns=(old, old))
    config = parse_config(
        f'[network]\nwan_state = "{wan}"\n[firewall]\nbackend = "null"\n'
        '[banctl]\ncheck_interval = "1h"\n[ban]\nspoof_max = 0\n'
    )
    env = fixed_env(config, str(tmp_path / "ledger.sqlite3"))
    d = Daemon(env, env.ledger(), env.firewall())
    assert d.wan == {"198.51.100.77"}
    reads = []  # the WAN state read again to be applied (the restore's own read aside)
    real = d.wan_state.changed
    monkeypatch.setattr(d.wan_state, "changed", lambda: reads.append(1) or real())
    r, w = os.pipe()
    os.close(w)
    with open(r, "rb", buffering=0) as stdin:
        d.run(stdin)
    assert reads == []
    env.close()
