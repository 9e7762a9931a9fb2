"""banpipe.watch: quiet about missing directories, and noticing them when they appear."""

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
