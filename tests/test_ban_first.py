"""banctl apply commits a burst's new bans alone before their firewall call, and the
rest of the burst (violations, positions, extensions) in a second commit after it
(banpipe.record.Recorder.write_rest): the ban is durable before it is in the firewall,
and a crash between the two commits loses no alert of a stream with positions."""

from __future__ import annotations

import json
import os
import sqlite3

from banpipe.config import parse_config
from banpipe.daemon import Daemon
from banpipe.ledger import resume_position
from banpipe.pipe import Lines
from test_banctl import alert, fixed_env, lines
from test_positions import PATH, pos

CONFIG = '[ban]\nspoof_max = 0\n[firewall]\nbackend = "null"\n'
UNIT = lines(pos(0), alert("203.0.113.1"), alert("203.0.113.1"), alert("203.0.113.2"), pos(100))


def daemon_at(path: str) -> Daemon:
    env = fixed_env(parse_config(CONFIG), path)
    daemon = Daemon(env, env.ledger(), env.firewall())
    daemon.start()
    return daemon


def feed(daemon: Daemon, text: str) -> None:
    daemon.handle(*Lines().feed(text.encode()))


def state(path: str) -> dict[str, object]:
    """What another connection reads in the ledger now."""
    db = sqlite3.connect(path)
    try:
        one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "active": sorted(r[0] for r in db.execute("SELECT addr FROM offenders WHERE active")),
            "violations": one("SELECT coalesce(sum(violations), 0) FROM offenders"),
            "hits": one("SELECT coalesce(sum(count), 0) FROM violations"),
            "periods": one("SELECT count(*) FROM bans"),
            "ban decisions": one("SELECT count(*) FROM decisions WHERE kind = 'ban'"),
            "positions": one("SELECT count(*) FROM positions"),
        }
    finally:
        db.close()


def test_the_bans_are_committed_alone_before_the_firewall_call(tmp_path):
    path = str(tmp_path / "ledger.sqlite3")
    daemon = daemon_at(path)
    seen = []
    block = daemon.enforce.block
    daemon.enforce.block = lambda addrs: (seen.append((addrs, state(path))), block(addrs))
    feed(daemon, UNIT)
    ((addrs, at_call),) = seen
    assert addrs == ["203.0.113.1", "203.0.113.2"]
    assert at_call == {
        "active": ["203.0.113.1", "203.0.113.2"],
        "violations": 0,  # the burst's violations count in the second commit
        "hits": 0,
        "periods": 2,
        "ban decisions": 2,
        "positions": 0,
    }
    after = state(path)
    assert after == {**at_call, "violations": 3, "hits": 3, "positions": 1}
    assert daemon.enforce.fw.entries == {"203.0.113.1", "203.0.113.2"}
    # Back to synced commits: the next burst without a new ban is one durable commit.
    assert daemon.ledger.db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_only_the_commit_after_the_firewall_call_skips_the_disk_wait(tmp_path):
    path = str(tmp_path / "ledger.sqlite3")
    daemon = daemon_at(path)
    modes = []
    write_rest = daemon.ledger.write_rest

    def spy(plan):
        modes.append(daemon.ledger.db.execute("PRAGMA synchronous").fetchone()[0])
        write_rest(plan)

    daemon.ledger.write_rest = spy
    feed(daemon, lines(alert("203.0.113.1")))  # a new ban: bans synced, the rest not
    feed(daemon, lines(alert("203.0.113.1")))  # an extension: one synced commit
    assert modes == [1, 2]  # NORMAL, FULL


def test_a_crash_between_the_two_commits_loses_no_alert_and_records_none_twice(tmp_path):
    path = str(tmp_path / "ledger.sqlite3")
    daemon_at(path).ledger.close()  # the schema, before the child
    child = os.fork()
    if child == 0:  # killed right after the firewall call, before the second commit
        try:
            daemon = daemon_at(path)
            block = daemon.enforce.block
            daemon.enforce.block = lambda addrs: (block(addrs), os._exit(9))
            feed(daemon, UNIT)
        finally:
            os._exit(3)  # not reached: the crash point was missed
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    crashed = state(path)
    assert crashed["active"] == ["203.0.113.1", "203.0.113.2"]  # the bans held
    assert crashed["hits"] == 0 and crashed["positions"] == 0  # the rest was lost

    # The restart puts the bans back, and fasttail resends the unit from the recorded
    # position (none: the start of the file): each alert is recorded once.
    daemon = daemon_at(path)
    assert daemon.enforce.fw.entries == {"203.0.113.1", "203.0.113.2"}
    feed(daemon, UNIT)
    assert state(path) == {
        "active": ["203.0.113.1", "203.0.113.2"],
        "violations": 3,
        "hits": 3,
        "periods": 2,  # not a second ban period
        "ban decisions": 2,  # not shared twice
        "positions": 1,
    }
    assert json.loads(resume_position(path, PATH))["offset"] == 100
    feed(daemon, UNIT)  # resent once more: the ledger holds it, ignored
    assert state(path)["hits"] == 3


def test_a_stalled_second_commit_is_retried_without_a_second_ban(tmp_path, monkeypatch):
    """A full disk after the bans' commit: the burst waits and is recorded once later."""
    path = str(tmp_path / "ledger.sqlite3")
    daemon = daemon_at(path)
    real = daemon.ledger.write_rest
    left = [1]

    def full(plan):
        if left[0]:
            left[0] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        real(plan)

    daemon.ledger.write_rest = full
    feed(daemon, UNIT)
    assert daemon.record.stalled is not None
    assert state(path)["active"] == ["203.0.113.1", "203.0.113.2"]
    daemon.record.retry_at = 0.0
    daemon.record.retry()
    assert daemon.record.stalled is None
    assert state(path) == {
        "active": ["203.0.113.1", "203.0.113.2"],
        "violations": 3,
        "hits": 3,
        "periods": 2,
        "ban decisions": 2,
        "positions": 1,
    }
