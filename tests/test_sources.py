"""banpipe.sources.FirstReads: which source files changed between their first read and
their watch, told by stat identity, with the stat and the clock passed in."""

from __future__ import annotations

import io
import os
import time
from types import SimpleNamespace

import pytest

from banpipe import judge, sources
from banpipe.cli import Reporter
from banpipe.sources import COARSE_NS, FirstReads

SECOND = 1_000_000_000
READ_AT = 1_800_000_000 * SECOND  # the clock (ns) at the first read


class FakeFiles:
    """``os.stat`` over a dict: path -> (inode, size, mtime_ns); missing: no such file."""

    def __init__(self, **files):
        self.files = {f"/etc/{name}": ident for name, ident in files.items()}

    def stat(self, path):
        if path not in self.files:
            raise FileNotFoundError(path)
        ino, size, mtime = self.files[path]
        return SimpleNamespace(st_ino=ino, st_size=size, st_mtime_ns=mtime)


OLD = READ_AT - 3600 * SECOND  # modified an hour before the first read


def first_reads(fs: FakeFiles, *names: str) -> FirstReads:
    first = FirstReads(stat=fs.stat, clock=lambda: READ_AT)
    first.note([f"/etc/{n}" for n in names])
    return first


def test_files_as_they_were_are_not_read_again():
    fs = FakeFiles(a=(1, 10, OLD), b=(2, 20, OLD))
    first = first_reads(fs, "a", "b", "missing")
    assert first.changed() == set()


@pytest.mark.parametrize(
    "now",
    [
        (9, 10, OLD),  # replaced (an atomic rename: a new inode)
        (1, 11, OLD),  # written in place, another size
        (1, 10, OLD + 1),  # written in place, same size, a later stamp
        None,  # removed
    ],
)
def test_a_new_identity_is_a_change_and_only_that_file_is_named(now):
    fs = FakeFiles(a=(1, 10, OLD), b=(2, 20, OLD))
    first = first_reads(fs, "a", "b")
    if now is None:
        del fs.files["/etc/a"]
    else:
        fs.files["/etc/a"] = now
    assert first.changed() == {"/etc/a"}


def test_a_file_that_appeared_is_a_change():
    fs = FakeFiles()
    first = first_reads(fs, "wan.json")
    fs.files["/etc/wan.json"] = (5, 40, READ_AT + SECOND)
    assert first.changed() == {"/etc/wan.json"}


def test_a_file_modified_just_before_its_first_read_is_read_again():
    # Its stamp may not move on a second write in place within the same clock tick.
    fs = FakeFiles(a=(1, 10, READ_AT - COARSE_NS + 1), b=(2, 20, READ_AT - COARSE_NS))
    first = first_reads(fs, "a", "b")
    assert first.changed() == {"/etc/a"}


def test_empty_names_are_not_sources():
    first = FirstReads(stat=FakeFiles().stat, clock=lambda: READ_AT)
    first.note(["", "/etc/x"])
    assert set(first.seen) == {"/etc/x"}


def test_alertfilter_reads_again_only_the_source_that_changed(tmp_path, monkeypatch):
    """Loader.catch_up: a WAN state written between the first read and the watch is
    applied; the config and the whitelist file, unchanged since, are not read again."""
    from banpipe.statefile import write_json_atomic

    wan, wl, cfg = tmp_path / "wan.json", tmp_path / "wl.txt", tmp_path / "banpipe.toml"
    wl.write_text("10.9.0.0/16\n")
    write_json_atomic(wan, {"v": 1, "type": "wan", "addresses": []})
    cfg.write_text(f'[network]\nwan_state = "{wan}"\n[filter]\nwhitelist_files = ["{wl}"]\n')
    long_ago = time.time_ns() - 3600 * SECOND  # not within COARSE_NS of the first read
    for path in (wan, wl, cfg):
        os.utime(path, ns=(long_ago, long_ago))
    loader = judge.Loader(str(cfg), Reporter("alertfilter", io.StringIO()))
    loader.start()
    assert loader.catch_up() is False  # nothing changed: nothing read again
    write_json_atomic(wan, {"v": 1, "type": "wan", "addresses": ["198.51.100.77"]})
    reads = []
    real_list, real_config = sources.read_list, judge.load_config
    monkeypatch.setattr(sources, "read_list", lambda *a: reads.append(a[0]) or real_list(*a))
    monkeypatch.setattr(judge, "load_config", lambda *a: reads.append(a[0]) or real_config(*a))
    assert loader.catch_up() is True
    assert loader.sources.wan == {"198.51.100.77"}
    assert reads == []
