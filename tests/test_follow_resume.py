"""banpipe.follow.Follower stepped by hand: rotations between opening a file and reading it.

No inotify, no processes, no sleeping: every file operation happens between two
``step()`` calls, so the order of events is exactly the one written here.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from banpipe.follow import Follower
from banpipe.parsers import AlertParser

NOW = datetime(2026, 11, 28, 12, 0, 0)


def line(n: int) -> str:
    return (
        f"11/17-10:46:59.{n % 1000000:06d}  [**] [1:{n}:1] test alert {n} [**] "
        f"[Priority: 2] {{TCP}} 192.0.2.1:1234 -> 198.51.100.2:80\n"
    )


class ListOutput:
    def __init__(self) -> None:
        self.items: list = []

    def emit(self, items, name) -> None:
        self.items += items

    def flush(self) -> None:
        pass


def follower(path: Path, out: ListOutput, notes: list[str]) -> Follower:
    return Follower(
        str(path),
        new_parser=lambda: AlertParser(now=NOW),
        output=out,
        note=notes.append,
        clock=lambda: 1000.0,
    )


def sids(out: ListOutput) -> list[int]:
    return [x["sid"] for x in out.items]


def resumed(f: Path, saved) -> ListOutput:
    """A restart at ``saved``: what one step reads."""
    out: ListOutput = ListOutput()
    fo = follower(f, out, [])
    fo.start(saved=saved, from_start=True)
    fo.step()
    return out


def copytruncate(f: Path, copy: Path) -> None:
    copy.write_bytes(f.read_bytes())
    with open(f, "r+") as fh:
        fh.truncate(0)


def test_copytruncate_of_a_file_opened_but_not_read_yet_reads_it_from_the_copy(tmp_path):
    f = tmp_path / "alert"
    f.write_text(line(1) + line(2))
    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=None, from_start=True)  # opened: nothing read yet
    copytruncate(f, tmp_path / "alert-20261128")
    with open(f, "a") as fh:
        fh.write(line(3))
    fo.step()
    assert sids(out) == [1, 2, 3]
    assert notes == [
        f"{f}: copied to {tmp_path / 'alert-20261128'}; reading the rest of the copy",
        f"{f}: file truncated; reading from the start",
    ]


def test_restart_in_a_rotated_file_then_copytruncate_of_the_new_one_loses_nothing(tmp_path):
    """The soak's sequence (bench/soak.py rotate): stopped, dated rotation, restart; the
    restart resumes in the rotated file and opens the new file at the name, which is
    copied and truncated before fasttail gets to it."""
    f = tmp_path / "alert"
    f.write_text(line(1) + line(2))
    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=None, from_start=True)
    fo.step()
    saved = fo.position()
    assert saved is not None and sids(out) == [1, 2]
    with open(f, "a") as fh:  # written after the last recorded position
        fh.write(line(3))
    fo.cur.close()
    f.rename(tmp_path / "alert-20261127")
    f.write_text(line(4) + line(5))

    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=saved, from_start=True)
    assert fo.cur.name == str(tmp_path / "alert-20261127") and fo.next is not None
    copytruncate(f, tmp_path / "alert-20261128")
    with open(f, "a") as fh:
        fh.write(line(6))
    fo.step()
    assert sids(out) == [3, 4, 5, 6]
    assert f"{f}: copied to {tmp_path / 'alert-20261128'}; reading the rest of the copy" in notes


def test_rename_rotation_after_a_restart_moves_no_queued_file_out_of_reach(tmp_path):
    """A restart queues the files rotated while it was down (alert.1 here) and opens the
    file at the name; a rename rotation before they are read renames alert.1 to alert.2
    and the name's file to alert.1. The queued file is still the one read (not whatever
    is called alert.1 by then), and so is the file that was at the name."""
    f = tmp_path / "alert"
    f.write_text(line(1) + line(2))
    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=None, from_start=True)
    fo.step()
    saved = fo.position()
    with open(f, "a") as fh:
        fh.write(line(3))
    fo.cur.close()
    dated = tmp_path / "alert-20261127"
    f.rename(dated)
    f.write_text(line(4) + line(5))
    f.rename(tmp_path / "alert.1")
    f.write_text(line(6))
    os.utime(dated, (1_000_000_000, 1_000_000_000))  # rotated in this order
    os.utime(tmp_path / "alert.1", (1_000_000_010, 1_000_000_010))

    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=saved, from_start=True)
    assert notes[-1] == f"{tmp_path / 'alert.1'}: rotated while nobody was reading; reading it too"
    (tmp_path / "alert.1").rename(tmp_path / "alert.2")
    f.rename(tmp_path / "alert.1")
    f.write_text(line(7))
    fo.step()
    assert sids(out) == [3, 4, 5, 6, 7]


def test_copytruncate_while_a_restart_looks_for_rotated_files_reads_the_copy_once(
    tmp_path, monkeypatch
):
    """The file at the name is opened first, then its rotated siblings are listed: a
    copytruncate in between queues the copy (read whole) and truncates the file opened
    with the copy's head. The copy must not be read a second time as "the rest"."""
    from banpipe import openfiles as openfiles_mod

    f = tmp_path / "alert"
    f.write_text(line(1) + line(2))
    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=None, from_start=True)
    fo.step()
    saved = fo.position()
    fo.cur.close()
    dated = tmp_path / "alert-20261127"
    f.rename(dated)
    f.write_text(line(3) + line(4))
    os.utime(dated, (1_000_000_000, 1_000_000_000))
    listing = openfiles_mod.rotated_since

    def copytruncate_first(path, old):
        copy = tmp_path / "alert-20261128"
        copytruncate(f, copy)
        os.utime(copy, (1_000_000_010, 1_000_000_010))
        with open(f, "a") as fh:
            fh.write(line(5))
        return listing(path, old)

    monkeypatch.setattr(openfiles_mod, "rotated_since", copytruncate_first)
    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=saved, from_start=True)
    fo.step()
    assert sids(out) == [3, 4, 5]


def test_copytruncate_of_a_file_opened_empty_before_its_first_read_reads_the_copy(tmp_path):
    """Rotated, the new file opened while still empty (no head to know a copy by); then
    written, copied and truncated before fasttail reads it (a slow reader)."""
    f = tmp_path / "alert"
    f.write_text(line(1))
    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=None, from_start=True)
    fo.step()
    f.rename(tmp_path / "alert-20261127")
    f.write_text("")
    fo.step()  # the old file drained; the new one opened, empty: waiting for data
    assert fo.next is not None and fo.next.head == b""
    f.write_text(line(2) + line(3))
    copytruncate(f, tmp_path / "alert-20261128")
    with open(f, "a") as fh:
        fh.write(line(4))
    fo.step()
    assert sids(out) == [1, 2, 3, 4]


def reading(f: Path, text: str) -> tuple[Follower, ListOutput, list[str]]:
    """A follower that has read ``text``, all of ``f`` so far."""
    f.write_text(text)
    out, notes = ListOutput(), []
    fo = follower(f, out, notes)
    fo.start(saved=None, from_start=True)
    fo.step()
    return fo, out, notes


def test_a_file_at_the_name_only_between_two_looks_is_read_in_its_place(tmp_path):
    """Two rename rotations while the follower is busy: the middle file was at the name
    only between two of its looks (the rotation soak's seed 1 lost such files). It is
    read after ours and before the name's, each line once."""
    f = tmp_path / "alert"
    fo, out, notes = reading(f, line(1))
    with open(f, "a") as fh:
        fh.write(line(2))
    f.rename(tmp_path / "alert.1")
    f.write_text(line(3) + line(4))
    (tmp_path / "alert.1").rename(tmp_path / "alert.2")
    f.rename(tmp_path / "alert.1")
    f.write_text(line(5))
    os.utime(tmp_path / "alert.2", (1_000_000_000, 1_000_000_000))
    os.utime(tmp_path / "alert.1", (1_000_000_010, 1_000_000_010))
    fo.step()
    fo.step()
    assert sids(out) == [1, 2, 3, 4, 5]
    assert f"{tmp_path / 'alert.1'}: rotated before it was read; reading it too" in notes


def test_dated_rotations_between_two_looks_are_read_oldest_first(tmp_path):
    f = tmp_path / "alert"
    fo, out, notes = reading(f, line(1))
    f.rename(tmp_path / "alert-2026112801")
    for n, stamp in ((2, "2026112802"), (3, "2026112803")):
        f.write_text(line(n))
        f.rename(tmp_path / f"alert-{stamp}")
    f.write_text(line(4))
    for i, stamp in enumerate(("2026112801", "2026112802", "2026112803")):
        t = 1_000_000_000 + 10 * i
        os.utime(tmp_path / f"alert-{stamp}", (t, t))
    fo.step()
    fo.step()
    assert sids(out) == [1, 2, 3, 4]


def test_a_copytruncate_copy_already_read_is_not_read_again_after_a_rename(tmp_path):
    """copytruncate (the rest read from the copy), then a rename rotation: the copy is
    older news, not a file skipped between two looks."""
    f = tmp_path / "alert"
    fo, out, notes = reading(f, line(1))
    with open(f, "a") as fh:
        fh.write(line(2))
    copytruncate(f, tmp_path / "alert-2026112801")
    fo.step()
    assert sids(out) == [1, 2]
    with open(f, "a") as fh:
        fh.write(line(3))
    f.rename(tmp_path / "alert.1")
    f.write_text(line(4))
    # The copy is newer than the file the follower holds: only its inode tells.
    os.utime(tmp_path / "alert.1", (1_000_000_000, 1_000_000_000))
    fo.step()
    fo.step()
    assert sids(out) == [1, 2, 3, 4]


def test_resume_at_the_start_of_an_empty_file_copied_and_truncated_meanwhile(tmp_path):
    """Soak seed 2 (bench/README.md): the last recorded position is the start of the new,
    still empty file at the name, just after a rotation. While fasttail is down, that
    file gets alerts and is copied and truncated: same inode, offset 0, nothing to
    fingerprint, so it looked like the saved file, and what the copy holds was lost.
    The position stays at the end of the previous file until the new one has data."""
    f = tmp_path / "alert"
    f.write_text(line(1))
    out, notes = ListOutput(), []
    now = [1000.0]
    fo = Follower(
        str(f),
        new_parser=lambda: AlertParser(now=NOW),
        output=out,
        note=notes.append,
        clock=lambda: now[0],
    )
    fo.start(saved=None, from_start=True)
    fo.step()
    f.rename(tmp_path / "alert.1")
    f.touch()
    now[0] += 60  # the old file quiet for longer than switch_after: switch to the empty one
    fo.step()
    assert fo.cur is not None and fo.cur.ino == f.stat().st_ino and sids(out) == [1]
    saved = fo.position()
    fo.cur.close()
    with open(f, "a") as fh:  # while down
        fh.write(line(2) + line(3))
    copytruncate(f, tmp_path / "alert-20261128")
    with open(f, "a") as fh:
        fh.write(line(4))

    assert sids(resumed(f, saved)) == [2, 3, 4]


def test_resume_after_a_copytruncate_finds_the_copies_made_while_down(tmp_path):
    """The same, the file at the name never renamed: copied and truncated while we
    read it (the rest read from the copy), and again while we are down."""
    f = tmp_path / "alert"
    f.write_text(line(1))
    out = ListOutput()
    fo = follower(f, out, [])
    fo.start(saved=None, from_start=True)  # reads line 1
    fo.step()
    with open(f, "a") as fh:
        fh.write(line(2))
    copytruncate(f, tmp_path / "alert-20261127")
    fo.step()
    assert sids(out) == [1, 2] and fo.cur.fp_len == 0
    saved = fo.position()
    fo.cur.close()
    os.utime(tmp_path / "alert-20261127", ns=(10**18, 10**18))  # copies 1 s apart
    with open(f, "a") as fh:  # while down
        fh.write(line(3))
    copytruncate(f, tmp_path / "alert-20261128")
    os.utime(tmp_path / "alert-20261128", ns=(10**18 + 10**9, 10**18 + 10**9))
    with open(f, "a") as fh:
        fh.write(line(4))

    assert sids(resumed(f, saved)) == [3, 4]


def test_two_copytruncates_between_two_looks_read_the_middle_copy(tmp_path):
    """Soak seed 2 again (bench/README.md, 391 alerts lost): copytruncate, the file at
    the name grows, is copied and truncated again, all between two of the follower's
    looks. The rest of the first generation was read from its copy and the name read
    from 0, but the middle generation exists only in the second copy and was lost."""
    f = tmp_path / "alert"
    fo, out, notes = reading(f, line(1))
    with open(f, "a") as fh:
        fh.write(line(2) + line(3))
    copytruncate(f, tmp_path / "alert-2026112801")
    os.utime(tmp_path / "alert-2026112801", ns=(10**18, 10**18))
    with open(f, "a") as fh:
        fh.write(line(4))
    copytruncate(f, tmp_path / "alert-2026112802")
    os.utime(tmp_path / "alert-2026112802", ns=(10**18 + 10**8, 10**18 + 10**8))
    with open(f, "a") as fh:
        fh.write(line(5))
    fo.step()
    fo.step()
    assert sids(out) == [1, 2, 3, 4, 5]
    assert (
        f"{f}: copied to {tmp_path / 'alert-2026112802'} before it was read; reading the copy"
        in notes
    )
    # A restart from what was saved reads nothing twice.
    assert sids(resumed(f, fo.position())) == []


def test_a_copy_being_made_of_the_file_at_the_name_is_not_read_as_a_middle_copy(tmp_path):
    """copytruncate, then logrotate copying the new generation (not truncated yet) when
    the follower looks: that copy holds what is still at the name, read from there."""
    f = tmp_path / "alert"
    fo, out, notes = reading(f, line(1) + line(2))
    copytruncate(f, tmp_path / "alert-2026112801")
    os.utime(tmp_path / "alert-2026112801", ns=(10**18, 10**18))
    with open(f, "a") as fh:
        fh.write(line(3))
    (tmp_path / "alert-2026112802").write_bytes(f.read_bytes())  # copied, not truncated yet
    fo.step()
    assert sids(out) == [1, 2, 3]


def test_a_copy_of_the_next_file_is_not_read_as_a_middle_copy_of_ours(tmp_path):
    """Soak seed 2, after the fix above (855 lost): our file copied and truncated, written
    again and renamed away; then the new file at the name copied and truncated, all
    before we looked. That copy is newer than ours, but of the next file: it is read
    after ours, not as a generation of ours (which made a restart skip ours)."""
    f = tmp_path / "alert"
    fo, out, notes = reading(f, line(1))
    with open(f, "a") as fh:
        fh.write(line(2))
    copytruncate(f, tmp_path / "alert-2026112801")
    os.utime(tmp_path / "alert-2026112801", ns=(10**18, 10**18))
    with open(f, "a") as fh:
        fh.write(line(3))
    f.rename(tmp_path / "alert.1")
    os.utime(tmp_path / "alert.1", ns=(10**18 + 10**8, 10**18 + 10**8))
    f.write_text(line(4))
    copytruncate(f, tmp_path / "alert-2026112802")
    os.utime(tmp_path / "alert-2026112802", ns=(10**18 + 2 * 10**8, 10**18 + 2 * 10**8))
    with open(f, "a") as fh:
        fh.write(line(5))
    for _ in range(3):
        fo.step()
    assert sids(out) == [1, 2, 3, 4, 5]
