"""banpipe.watch: quiet about missing directories, noticing them when they appear, and
inotify events read without pyinotify's per-event objects."""

from __future__ import annotations

import logging

from banpipe import watch
from banpipe.watch import PathWatcher


def test_a_missing_directory_is_not_retried_on_every_call(tmp_path, monkeypatch):
    tries: list[str] = []
    real_add = watch.InotifyWatcher.add

    def counting_add(self, path, mask):
        tries.append(str(path))
        return real_add(self, path, mask)

    monkeypatch.setattr(watch.InotifyWatcher, "add", counting_add)
    target = tmp_path / "run" / "banpipe" / "wan.json"
    w = PathWatcher([target])
    try:
        first = len(tries)
        for _ in range(1000):
            assert w.changed() == set()
        assert len(tries) == first  # nothing happened: nothing tried again
        (tmp_path / "run").mkdir()  # an ancestor appears: one more look, not a loop
        assert w.changed() == set()
        (tmp_path / "run" / "banpipe").mkdir()
        target.write_text("{}")
        assert str(target) in w.changed() | w.changed()
        target.write_text("{} ")
        assert w.changed() == {str(target)}
    finally:
        w.close()


def test_pyinotify_says_nothing_about_missing_directories(tmp_path, caplog, capfd):
    # pyinotify logs "[... pyinotify ERROR] add_watch: cannot watch ..." through its own
    # stderr handler: neither that line nor a log record may appear.
    caplog.set_level(logging.DEBUG)
    w = PathWatcher([tmp_path / "absent" / "file"])
    w.changed()
    w.close()
    assert [r for r in caplog.records if r.name == "pyinotify"] == []
    assert capfd.readouterr().err == ""


def test_events_are_read_without_pyinotifys_event_objects(tmp_path, monkeypatch):
    # pyinotify formatted every event for a debug log: a quarter of banctl apply's CPU
    # per ban (its watch on the ledger's -wal file). Events are parsed here instead.
    def no_raw_event(*args, **kwargs):
        raise AssertionError("pyinotify parsed an event")

    monkeypatch.setattr(watch.pyinotify, "_RawEvent", no_raw_event)
    ledger, other = tmp_path / "ledger.sqlite3-wal", tmp_path / "other"
    w = PathWatcher([ledger, tmp_path / "wan.json"])
    try:
        ledger.write_bytes(b"x")
        other.write_bytes(b"y")  # same directory, not watched: not reported
        assert w.changed() == {str(ledger)}
        assert w.changed() == set()
        (tmp_path / "wan.json").write_text("{}")
        ledger.unlink()
        assert w.changed() == {str(ledger), str(tmp_path / "wan.json")}
    finally:
        w.close()


def test_a_lost_event_counts_as_every_path_changed(tmp_path):
    w = PathWatcher([tmp_path / "a", tmp_path / "b"])
    try:
        overflow = watch._EVENT.pack(-1, watch.pyinotify.IN_Q_OVERFLOW, 0, 0)
        out: list[watch.Event] = []
        w._inotify._parse(overflow, out)
        assert out == [watch.Event(None, "", watch.pyinotify.IN_Q_OVERFLOW)]
        (tmp_path / "a").write_text("1")
        real_parse = w._inotify._parse

        def with_overflow(data, out):
            real_parse(data, out)
            real_parse(overflow, out)

        w._inotify._parse = with_overflow
        assert w.changed() == {str(tmp_path / "a"), str(tmp_path / "b")}
    finally:
        w.close()
