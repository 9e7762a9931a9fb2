"""banctl apply checkpoints the ledger's WAL itself, between bans, when no input waits
(banpipe.record.Recorder.checkpoint_due): SQLite's own checkpoint ran inside the COMMIT
of the ban that crossed its mark, before that ban's firewall entry. A complete checkpoint
also starts the WAL over (the next ban would have synced a new WAL header first), and
the daemon's own commits do not wake it through its watch on the ledger."""

from __future__ import annotations

import json
import os
import select
import shutil
import sqlite3
import threading
import time

import pytest

from banpipe import banctl, record
from banpipe.config import parse_config
from banpipe.daemon import Daemon
from banpipe.ledger import schema as ledger_schema
from banpipe.pipe import Lines
from test_banctl import NOW, fixed_env


def env_at(path: str) -> banctl.Env:
    return fixed_env(parse_config('[ban]\nspoof_max = 0\n[firewall]\nbackend = "null"\n'), path)


def line(addr: str) -> bytes:
    return json.dumps({"v": 1, "offender": addr, "sid": 1, "gid": 1, "rev": 1}).encode() + b"\n"


def in_main_file(path: str, addr: str, tmp) -> bool:
    """Whether the database file alone (without its WAL) holds ``addr``'s ban."""
    copy = tmp / "copy.sqlite3"
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy)
    try:
        found = db.execute("SELECT count(*) FROM offenders WHERE addr = ?", (addr,)).fetchone()
    except sqlite3.OperationalError:  # not even the schema is there yet
        return False
    else:
        return found[0] > 0
    finally:
        db.close()
        copy.unlink()


def test_due_after_a_second_or_sixteen_commits_never_while_stalled(tmp_path):
    # Each check names its moment relative to the first unchecked commit
    # (``unchecked_since``), not the wall clock at the time of the check: on a loaded
    # machine the copies of the database file and the sixteen durable commits below
    # took more than CHECKPOINT_AFTER, and "not due yet" failed on time alone.
    path = str(tmp_path / "ledger.sqlite3")
    env = env_at(path)
    daemon = Daemon(env, env.ledger(), env.firewall())
    daemon.start()
    rec = daemon.record
    mono = time.monotonic()
    assert not rec.checkpoint_due(mono) and rec.deadlines(NOW, mono) == []
    before = time.monotonic()
    daemon.handle(*Lines().feed(line("203.0.113.1")))
    since = rec.unchecked_since
    assert before <= since <= time.monotonic()
    assert not rec.checkpoint_due(since)
    assert not rec.checkpoint_due(since + record.CHECKPOINT_AFTER - 0.001)
    assert in_main_file(path, "203.0.113.1", tmp_path) is False  # in the WAL only
    (left,) = rec.deadlines(NOW, since)
    assert left == pytest.approx(record.CHECKPOINT_AFTER)
    assert rec.checkpoint_due(since + record.CHECKPOINT_AFTER)
    rec.stalled = {}
    assert not rec.checkpoint_due(since + record.CHECKPOINT_AFTER)
    mono = time.monotonic()
    assert rec.deadlines(NOW, mono) == [rec.retry_at - mono]  # the retry's only
    rec.stalled = None
    rec.checkpoint()
    assert in_main_file(path, "203.0.113.1", tmp_path)
    assert not rec.checkpoint_due(time.monotonic() + record.CHECKPOINT_AFTER)
    for i in range(2, 2 + record.CHECKPOINT_COMMITS):
        assert not rec.checkpoint_due(rec.unchecked_since)
        daemon.handle(*Lines().feed(line(f"203.0.113.{i}")))
    assert rec.checkpoint_due(rec.unchecked_since)  # by count: no time has passed for it
    env.close()


def test_the_daemon_checkpoints_when_input_pauses(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "CHECKPOINT_AFTER", 0.2)
    path = str(tmp_path / "ledger.sqlite3")
    env = env_at(path)
    ledger = env.ledger()
    # SQLite's own checkpoint off: only the daemon's can put the ban in the file.
    ledger.db.execute("PRAGMA wal_autocheckpoint=0")
    r, w = os.pipe()
    os.write(w, line("203.0.113.9"))
    seen = {}

    def in_file_now() -> bool:
        try:
            return in_main_file(path, "203.0.113.9", tmp_path)
        except sqlite3.DatabaseError:  # copied while a checkpoint wrote it: look again
            return False

    def later():
        try:
            # Waits for the checkpoint itself; the limit only ends a failing run.
            deadline = time.monotonic() + 60
            found = in_file_now()
            while not found and time.monotonic() < deadline:
                time.sleep(0.05)
                found = in_file_now()
            seen["in file"] = found
        finally:
            os.close(w)

    t = threading.Thread(target=later)
    t.start()
    with os.fdopen(r, "rb") as stdin:
        Daemon(env, ledger, env.firewall()).run(stdin)
    t.join()
    assert seen["in file"]
    env.close()


def wal_header(path: str) -> bytes:
    """The WAL's checkpoint sequence number and salts: new ones when the WAL starts over."""
    with open(path + "-wal", "rb") as f:
        return f.read(24)[12:24]


def test_a_complete_checkpoint_starts_the_wal_over_before_the_next_ban(tmp_path):
    # The first write after a complete checkpoint writes and syncs a new WAL header
    # before its frames: done by the checkpoint between bans, not by the next ban.
    path = str(tmp_path / "ledger.sqlite3")
    env = env_at(path)
    daemon = Daemon(env, env.ledger(), env.firewall())
    daemon.start()
    daemon.handle(*Lines().feed(line("203.0.113.1")))
    before = wal_header(path)
    daemon.record.checkpoint()
    restarted = wal_header(path)
    assert restarted != before  # the WAL started over in the checkpoint
    assert in_main_file(path, "203.0.113.1", tmp_path)
    daemon.handle(*Lines().feed(line("203.0.113.2")))
    assert wal_header(path) == restarted  # the ban appended to it: no new header
    assert env.ledger().version == len(ledger_schema.MIGRATIONS)
    env.close()


def test_the_wal_restart_never_waits_for_another_writer(tmp_path):
    path = str(tmp_path / "ledger.sqlite3")
    env = env_at(path)
    ledger = env.ledger()
    Daemon(env, ledger, env.firewall()).start()
    ledger.db.execute("CREATE TABLE scratch (x)")  # one commit in the WAL
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # an admin command's write in progress
    before = wal_header(path)
    ledger.checkpoint()  # copies what it can; the restart is left to the next writer
    assert wal_header(path) == before
    assert ledger.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert not ledger.db.in_transaction
    other.execute("ROLLBACK")
    other.close()
    env.close()


def test_the_daemons_own_commits_do_not_wake_it(tmp_path, monkeypatch):
    # Every commit writes the watched -wal file: its inotify events are read in the
    # pass that made them, not by a wake-up (and a second pass) of their own.
    env = env_at(str(tmp_path / "ledger.sqlite3"))
    daemon = Daemon(env, env.ledger(), env.firewall())
    r, w = os.pipe()
    os.write(w, line("203.0.113.7"))
    real = select.select
    self_wakes = []

    def spy(rlist, wlist, xlist, timeout=None):
        watcher = daemon.watcher
        if watcher is not None and watcher in rlist and timeout != 0:  # about to sleep
            ready = real(rlist, wlist, xlist, 0)[0]
            if ready == [watcher]:
                self_wakes.append(daemon.counts["banned"])
            if daemon.counts["banned"] and w in open_w:
                open_w.remove(w)
                os.close(w)  # end of input, once the ban is in
        return real(rlist, wlist, xlist, timeout)

    open_w = [w]
    monkeypatch.setattr(select, "select", spy)
    with os.fdopen(r, "rb") as stdin:
        daemon.run(stdin)
    assert daemon.counts["banned"] == 1
    assert self_wakes == []
