"""Positions through the pipe: banctl records them with the violations, exactly once."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sqlite3
import threading

from banpipe import banctl, fasttail, pipe, record
from banpipe.ledger import Ledger, resume_position
from banpipe.positions import Position
from test_banctl import Low, _wait_for, alert, ledger_of, lines, run

pytest_plugins = ["test_banctl"]  # its fixtures cfg and fw

PATH = "/var/log/snort/alert"


def pos(offset: int, inode: int = 11, path: str = PATH) -> str:
    p = Position(path, inode, 2049, offset, offset // 100, 256, "ab" * 32, offset, "")
    return json.dumps(pipe.position_record(p.to_json()))


def violations(cfg, addr: str) -> int:
    with ledger_of(cfg) as led:
        o = led.get(addr)
        return o.violations if o else 0


def recorded_offset(cfg) -> int | None:
    text = resume_position(cfg.ledger, PATH)
    return None if text is None else json.loads(text)["offset"]


def test_units_recorded_with_their_position_open_unit_dropped(cfg, fw):
    rc, _, err = run(
        [*cfg(), "apply"],
        lines(pos(0), alert("203.0.113.1"), alert("203.0.113.2"), pos(100), alert("203.0.113.3")),
    )
    assert rc == 0, err
    assert violations(cfg, "203.0.113.1") == 1 and violations(cfg, "203.0.113.2") == 1
    assert violations(cfg, "203.0.113.3") == 0  # its position never came: read again later
    assert recorded_offset(cfg) == 100
    assert "1 violations without their position: not recorded" in err
    assert fw.entries == {"203.0.113.1", "203.0.113.2"}


def test_repeated_units_are_ignored(cfg, fw):
    args = [*cfg(), "apply"]
    run(args, lines(pos(0), alert("203.0.113.1"), pos(100)))
    # fasttail resumed from an older point than banctl's last commit: the first unit again
    rc, _, err = run(
        args, lines(pos(0), alert("203.0.113.1"), pos(100), alert("203.0.113.9"), pos(150))
    )
    assert rc == 0, err
    assert violations(cfg, "203.0.113.1") == 1
    assert violations(cfg, "203.0.113.9") == 1
    assert recorded_offset(cfg) == 150


def test_a_new_file_is_new_whatever_its_offset(cfg, fw):
    args = [*cfg(), "apply"]
    run(args, lines(pos(0), alert("203.0.113.1"), pos(5000)))
    run(args, lines(pos(0, inode=12), alert("203.0.113.1"), pos(50, inode=12)))
    assert violations(cfg, "203.0.113.1") == 2
    assert recorded_offset(cfg) == 50


def test_position_of_filtered_out_alerts_is_recorded(cfg, fw):
    rc, _, err = run([*cfg(), "apply"], lines(pos(0), pos(300)))
    assert rc == 0, err
    assert recorded_offset(cfg) == 300


def test_bad_position_is_that_lines_error_and_keeps_the_unit_open(cfg, fw):
    bad = json.dumps({"v": 1, "type": "position", "position": {"offset": "x"}})
    rc, _, err = run([*cfg(), "apply"], lines(pos(0), alert("203.0.113.1"), bad, pos(100)))
    assert rc == 0
    assert "banctl: <stdin>:3: bad position: not a fasttail state (version 1)" in err
    assert violations(cfg, "203.0.113.1") == 1 and recorded_offset(cfg) == 100


def test_stream_without_positions_is_recorded_as_before(cfg, fw):
    rc, _, _ = run([*cfg(), "apply"], lines(alert("203.0.113.1"), alert("203.0.113.2")))
    assert rc == 0
    assert violations(cfg, "203.0.113.1") == 1 and violations(cfg, "203.0.113.2") == 1
    assert recorded_offset(cfg) is None


def test_priority_beyond_64_bits_is_that_lines_error(cfg, fw):
    rc, _, err = run(
        [*cfg(), "apply"],
        lines(alert("203.0.113.1", priority=2**63), alert("203.0.113.2"), alert("203.0.113.3")),
    )
    assert rc == 0, err
    assert f"banctl: <stdin>:1: priority out of range: {2**63}" in err
    assert violations(cfg, "203.0.113.1") == 0
    assert violations(cfg, "203.0.113.2") == 1 and violations(cfg, "203.0.113.3") == 1
    assert fw.entries == {"203.0.113.2", "203.0.113.3"}


def test_unwritable_ledger_stalls_input_and_resumes(cfg, fw, monkeypatch):
    """Disk full: the batch is kept, input waits, the firewall keeps its entries."""
    args = [*cfg(), "apply"]
    run(args, lines(alert("203.0.113.1")))  # one ban before the disk fills
    monkeypatch.setattr(record, "STALL_RETRY", 0.02)
    real = Ledger.plan_groups
    failures = {"left": 5}

    def full(self, *a, **kw):
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *a, **kw)

    monkeypatch.setattr(Ledger, "plan_groups", full)
    r, w = os.pipe()
    os.write(w, lines(pos(0), alert("203.0.113.2"), pos(100)).encode())
    err = io.StringIO()

    def closer():
        _wait_for(lambda: failures["left"] == 0 and violations(cfg, "203.0.113.2") == 1)
        os.close(w)

    t = threading.Thread(target=closer)
    t.start()
    with os.fdopen(r, "rb") as stdin:
        rc = banctl.main(args, stdin=stdin, stdout=io.StringIO(), stderr=err, rng=Low())
    t.join()
    text = err.getvalue()
    assert rc == 0, text
    assert text.count("cannot write the ledger (database or disk is full)") == 1
    assert "the firewall keeps enforcing 1 active bans" in text
    assert "the ledger is writable again" in text
    assert fw.entries == {"203.0.113.1", "203.0.113.2"}
    assert fw.named("release") == []
    assert recorded_offset(cfg) == 100


def test_fasttail_ledger_resumes_from_the_recorded_position(cfg, fw, tmp_path):
    log = tmp_path / "alert"
    line = (
        "11/28-10:00:0{n}.000000  [**] [1:2003:8] SQL Worm [**] [Classification: Misc Attack] "
        "[Priority: 2] {{UDP}} 203.0.113.{n}:1090 -> 198.51.100.2:1434\n"
    )
    log.write_text("".join(line.format(n=n) for n in range(1, 4)))

    def tail() -> list[dict]:
        out = io.BytesIO()
        rc = fasttail.main(
            ["--once", "--from-start", "--ledger", cfg.ledger, "--year", "2026", str(log)],
            stdout=out,
            stderr=io.StringIO(),
        )
        assert rc == 0
        return [json.loads(x) for x in out.getvalue().splitlines()]

    def bans(objs: list[dict]) -> str:
        extra = {"reversed": False, "reason": "test"}
        return "".join(
            json.dumps(o | {"offender": o["src"], "victim": o["dst"], **extra} if "src" in o else o)
            + "\n"
            for o in objs
        )

    first = tail()
    assert [o.get("type") for o in first] == ["position", None, None, None, "position"]
    assert first[0]["position"]["offset"] == 0
    assert first[-1]["position"]["offset"] == log.stat().st_size
    run([*cfg(), "apply"], bans(first[:3]))  # banctl got the first unit only partly: none
    assert tail() == first  # nothing recorded yet: the same again from the start
    run([*cfg(), "apply"], bans(first))
    with log.open("a") as f:
        f.write(line.format(n=7))
    again = tail()
    assert again[0]["position"] == first[-1]["position"] | {"size": log.stat().st_size}
    assert [o["src"] for o in again if "src" in o] == ["203.0.113.7"]


def test_a_stalled_ledger_is_retried_now_and_then_not_in_a_loop(cfg, fw, monkeypatch):
    """Each failed write touches the -wal file, whose inotify event wakes banctl: the
    retry must still wait for its time (a loop on that event burnt a CPU)."""
    args = [*cfg(), "apply"]
    run(args, "")
    monkeypatch.setattr(record, "STALL_RETRY", 0.25)
    real = Ledger.plan_groups
    attempts = {"n": 0, "full": True}

    def full(self, *a, **kw):
        attempts["n"] += 1
        with open(self.path + "-wal", "ab"):  # as a failed write does: an inotify event
            pass
        if attempts["full"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *a, **kw)

    monkeypatch.setattr(Ledger, "plan_groups", full)
    r, w = os.pipe()
    os.write(w, lines(alert("203.0.113.2")).encode())

    def later():
        _wait_for(lambda: attempts["n"] >= 1)
        threading.Event().wait(1.0)  # a second of stall
        attempts["stalled"] = attempts["n"]
        attempts["full"] = False
        _wait_for(lambda: violations(cfg, "203.0.113.2") == 1)
        os.close(w)

    t = threading.Thread(target=later)
    t.start()
    with os.fdopen(r, "rb") as stdin:
        rc = banctl.main(args, stdin=stdin, stdout=io.StringIO(), stderr=io.StringIO(), rng=Low())
    t.join()
    assert rc == 0
    assert attempts["stalled"] <= 8, attempts  # about one per STALL_RETRY, not thousands


def test_position_to_json_holds_every_field():
    p = Position(PATH, 1, 2, 3, 4, 5, "f", 6, "b")
    assert p.to_json() == dataclasses.asdict(p)
