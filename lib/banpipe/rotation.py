"""Rotated copies of a followed file, by one name rule, and reading from them.

A rotated copy is named like logrotate names one: the followed name, a separator
(``.``, ``-`` or ``_``), then a number or a date (``alert.1``, ``alert-20261128``,
``alert_2026-11-28T10``), optionally compressed (one of :data:`COMPRESSED`). Nothing
else is: a neighbour such as ``alert_full`` next to ``alert`` is another file. Every
listing here (:func:`rotation_siblings`, :func:`rotated_since`,
:func:`compressed_siblings`) applies that one rule (:func:`_rotations`).

Also here: finding the copy that holds a saved position (:func:`find_rotated`), and
reading what copytruncate moved into a copy (:func:`read_rest_from_copy`,
:func:`read_copies_of_unread`), which banpipe.follow calls when a file shrank.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Collection
from typing import Any

from .cursor import Cursor
from .positions import FP_BYTES, Position, matches

COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z")
# The part after the followed name: separator, number or date (dateformat variants with
# - _ . or T), optionally one compressed extension.
_ROTATED = re.compile(
    r"[.\-_](\d[\d\-_.T]*?)(" + "|".join(re.escape(ext) for ext in COMPRESSED) + ")?"
)

Emit = Callable[[list], None]
Note = Callable[[str], None]


def _rotations(path: str) -> list[tuple[str, re.Match[str]]]:
    """Every rotated copy of ``path`` in its directory, with its name's match."""
    directory, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for n in names:
        if n.startswith(base):
            m = _ROTATED.fullmatch(n, len(base))
            if m is not None:
                found.append((os.path.join(directory, n), m))
    return found


def rotation_siblings(path: str) -> list[str]:
    """Uncompressed rotated copies of ``path`` (the bytes we were reading), newest first:
    name.1 before name.2, the most recent date first."""
    plain = [p for p, m in _rotations(path) if m.group(2) is None]
    return sorted(plain, key=lambda p: (-_mtime(p), p))


def compressed_siblings(path: str) -> list[str]:
    """Compressed rotated copies of ``path``, by name."""
    return sorted(p for p, m in _rotations(path) if m.group(2) is not None)


def _rank(m: re.Match[str]) -> tuple[int, str]:
    # A higher number is older (alert.2 before alert.1); dates sort as text.
    stamp = m.group(1)
    return (-int(stamp) if stamp.isdigit() and len(stamp) <= 4 else 0), stamp


def rotated_since(path: str, old: str) -> tuple[list[str], list[str]]:
    """Rotated copies of ``path`` written after its sibling ``old``, oldest first.

    Returns (readable files, compressed files). Order: modification time, then the
    name (a higher number is older, an earlier date is older).
    """
    try:
        old_st = os.stat(old)
    except OSError:
        return [], []
    found = []
    for p, m in _rotations(path):
        try:
            st = os.stat(p)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_dev) == (old_st.st_ino, old_st.st_dev):
            continue
        found.append(((st.st_mtime_ns, *_rank(m)), p, m.group(2) is not None))
    base = os.path.basename(os.path.abspath(path))
    m = _ROTATED.fullmatch(os.path.basename(old), len(base))
    old_key = (old_st.st_mtime_ns, *(_rank(m) if m is not None else (0, "")))
    newer = [(p, packed) for key, p, packed in sorted(found) if key > old_key]
    return [p for p, packed in newer if not packed], [p for p, packed in newer if packed]


def _mtime(p: str) -> float:
    try:
        return os.stat(p).st_mtime
    except OSError:
        return 0.0


def find_rotated(path: str, pos: Position) -> str | None:
    """The rotation sibling holding the saved position: same inode first, then fingerprint."""
    siblings = rotation_siblings(path)
    for same_inode in (True, False):
        if not same_inode and pos.fp_len == 0:
            break  # an empty fingerprint matches anything
        for p in siblings:
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                if matches(fd, pos, same_inode=same_inode):
                    return p
            finally:
                os.close(fd)
    return None


def sibling_ids(path: str) -> set[tuple[int, int]]:
    """(inode, device) of every uncompressed rotated copy of ``path`` now."""
    ids = set()
    for p in rotation_siblings(path):
        try:
            st = os.stat(p)
        except OSError:
            continue
        ids.add((st.st_ino, st.st_dev))
    return ids


def read_rest_from_copy(
    path: str,
    cur: Cursor,
    skip: Collection[tuple[int, int]],
    emit: Emit,
    note: Note,
    read: set[tuple[int, int]],
    done: Callable[[Cursor], None] | None = None,
) -> os.stat_result | None:
    """copytruncate: read what we had not read yet from the copy, if there is one;
    returns the copy's status (None: no copy found).

    The copy is the rotation sibling (another inode) that starts with the bytes this
    file started with and holds, just before our read offset, the bytes we read
    last; it is read from there to its end with the same parser state.

    That includes a file not read at all yet (offset 0): its head was taken when it
    was opened, and all of it may be in the copy only. A restart that resumes in a
    rotated file opens the file at the name at once but reads it last, so a
    copytruncate in between must not cost everything written to it since. Copies whose
    (inode, device) is in ``skip`` (files read whole anyway) are not considered; the
    copy read is added to ``read``, and ``done(cur)`` is called at its end while
    ``cur`` still reads the copy.
    """
    if not cur.head or cur.fd is None:
        return None
    for p in rotation_siblings(path):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if (
                (st.st_ino, st.st_dev) == (cur.ino, cur.dev)
                or (st.st_ino, st.st_dev) in skip
                or not stat.S_ISREG(st.st_mode)
                or st.st_size < cur.read_pos
                or os.pread(fd, len(cur.head), 0) != cur.head
                or os.pread(fd, len(cur.recent), cur.read_pos - len(cur.recent)) != cur.recent
            ):
                continue
            if st.st_size > cur.read_pos:
                note(f"{cur.name}: copied to {p}; reading the rest of the copy")
            _read_copy(cur, fd, emit, done)
            read.add((st.st_ino, st.st_dev))
            return st
        finally:
            os.close(fd)
    return None


def read_copies_of_unread(
    path: str,
    cur: Cursor,
    skip: Collection[tuple[int, int]],
    emit: Emit,
    note: Note,
    new_parser: Callable[[], Any],
    read: set[tuple[int, int]],
    done: Callable[[Cursor], None] | None = None,
    between: tuple[int, int] = (-1, 1 << 63),
) -> bool:
    """copytruncate of a file opened empty, before its first read: read the copies.

    With no head there is nothing to recognise the copy by, so a rotation sibling
    that appeared since the file was opened (not one of ours) and that the file
    does not start with any more is taken for it (not one in ``skip``: the siblings
    there were when it was opened, the files being followed and queued; nor one last
    modified outside ``between``, (after, up to) in ns). True when copies were read
    (the file is then read again from 0); they are added to ``read``, and ``done(cur)``
    is called at the end of each while ``cur`` still reads it.

    Also how a file truncated twice between two looks is caught up: what it held
    between the two copies is in the second only, made after the first copy and, the
    file being truncated after it, not after the file's last change (a copy made
    later is of the file at the name after ours was renamed away: not ours).
    """
    if cur.read_pos or cur.head or cur.fd is None:
        return False
    found = []
    for p in rotation_siblings(path):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        st = os.fstat(fd)
        key = (st.st_ino, st.st_dev)
        head = os.pread(fd, FP_BYTES, 0)
        if (
            key in skip
            or not between[0] < st.st_mtime_ns <= between[1]
            or not stat.S_ISREG(st.st_mode)
            or not head
            or os.pread(cur.fd, len(head), 0) == head  # a copy of what is still here
        ):
            os.close(fd)
            continue
        found.append((st.st_mtime_ns, p, fd, key))
    if not found:
        return False
    for _, p, fd, key in sorted(found):
        note(f"{cur.name}: copied to {p} before it was read; reading the copy")
        try:
            _read_copy(cur, fd, emit, done)
        finally:
            os.close(fd)
        read.add(key)
        items = cur.end()
        if items:
            emit(items)
        cur.restart(new_parser())
    note(f"{cur.name}: file truncated; reading from the start")
    return True


def _read_copy(
    cur: Cursor, fd: int, emit: Emit, done: Callable[[Cursor], None] | None = None
) -> None:
    """Feed ``cur`` from ``fd`` (a copy of its file) at its read offset, to the copy's end."""
    own, cur.fd = cur.fd, fd
    try:
        while chunk := cur.read():
            items = cur.feed(chunk)
            if items:
                emit(items)
        if done is not None:
            done(cur)
    finally:
        cur.fd = own
