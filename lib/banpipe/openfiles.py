"""The files a Follower holds open, in the order it reads them, and what happens to them.

:class:`OpenFiles` keeps the file being read (``cur``), a new file at the name read once
``cur`` is done (``next``) and, between them, rotated files written after ``cur`` that
nobody read yet (``queue``). It opens them (regular files only), finds where to start
from a saved position (also in a rotated copy), moves on from one file to the next, and
notices a copytruncate (banpipe.rotation reads the copy). The loop that reads them and
decides when to move on is banpipe.follow.NameReader (Follower adds the waiting).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol

from .cursor import Cursor, Parser
from .positions import Checkpoints, Position, count_lines, matches, start_of_last_line
from .rotation import (
    compressed_siblings,
    find_rotated,
    read_copies_of_unread,
    read_rest_from_copy,
    rotated_since,
    rotation_siblings,
    sibling_ids,
)

if TYPE_CHECKING:  # imported by Follower.run (pyinotify is not free; --once needs none)
    from .watch import FollowWatches


class Output(Protocol):
    def emit(self, items: list, name: str) -> None: ...
    def flush(self) -> None: ...


def _same_file(path: str, cur: Cursor) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_ino, st.st_dev) == (cur.ino, cur.dev)


def _seek(cur: Cursor, pos: Position) -> None:
    cur.read_pos = cur.block_pos = pos.offset
    cur.lineno = cur.block_lineno = pos.lineno


class OpenFiles:
    """The files followed at ``path``: ``cur``, then ``queue`` (oldest first), then ``next``.

    Longer than our usual 200 lines, kept whole on purpose: opening and resuming, noticing a
    copytruncate and moving on all read and change the same state (the files in hand and
    ``queued``, the inodes already read), and each must see the others' changes at once;
    split, that state would be passed back and forth on every step.
    """

    def __init__(
        self,
        path: str,
        *,
        new_parser: Callable[[], Parser],
        output: Output,
        note: Callable[[str], None],
        points: Checkpoints,
        max_line: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.new_parser = new_parser
        self.output = output
        self.note = note
        self.points = points
        self.max_line = max_line
        self.clock = clock
        self.cur: Cursor | None = None  # the file being read
        self.next: Cursor | None = None  # a new file at the name, read once cur is done
        self.watches: FollowWatches | None = None  # while Follower.run() runs
        self.said_unreadable: set[str] = set()
        # Rotated files written after the one being read, read before the name's file.
        # Opened when found: a rename rotation meanwhile moves names (alert.1 becomes
        # alert.2), not the files we hold.
        self.queue: list[Cursor] = []
        # (inode, device) of every file queued (read whole) and of every copytruncate
        # copy read: never read again, as a copy or as a file rotated before we looked.
        self.queued: set[tuple[int, int]] = set()

    # -- opening -----------------------------------------------------------------------

    def open(self, path: str, name: str, offset: int = 0, lineno: int = 0) -> Cursor:
        """Open ``path`` as a Cursor; raises OSError."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            if not stat.S_ISREG(mode):
                # Positions, rotation and truncation only mean something for files.
                raise OSError(errno.EINVAL, "not a regular file (use - for a pipe)", path)
            cur = Cursor(
                self.new_parser(),
                name=name,
                offset=offset,
                lineno=lineno,
                max_line=self.max_line,
                fd=fd,
            )
            cur.last_data = self.clock()
            if not cur.head:
                cur.siblings = sibling_ids(self.path)
            return cur
        except BaseException:
            os.close(fd)
            raise

    def start(self, saved: Position | None, *, from_start: bool) -> None:
        """Choose the first file and offset: ``saved`` (a position for this path), the
        start, or the end of the file."""
        try:
            cur = self.open(self.path, self.path)
        except FileNotFoundError:
            cur = None
        if saved is None:
            if cur is not None and not from_start:
                fd = cur.fd
                assert fd is not None
                cur.read_pos = cur.block_pos = start_of_last_line(fd, cur.size())
                # Line numbers in error reports stay true to the file.
                cur.lineno = cur.block_lineno = count_lines(fd, cur.read_pos)
            self.cur = cur
            return
        if cur is not None and matches(cur.fd, saved, same_inode=True):  # type: ignore[arg-type]
            _seek(cur, saved)
            self.cur = cur
            return
        old = find_rotated(self.path, saved)
        if old is not None:
            self.note(f"{self.path}: rotated since the saved position; reading the rest of {old}")
            try:
                oc = self.open(old, old)
            except OSError as exc:
                self.note(f"{old}: {exc.strerror}")
            else:
                _seek(oc, saved)
                self.cur = oc
                self.next = cur
                self.queue = []
                self._queue_rotated_after(old, cur, "while nobody was reading")
                return
        for p in compressed_siblings(self.path):
            self.note(f"{p}: compressed rotation, may hold the saved position: not read")
        if cur is not None:
            st = os.fstat(cur.fd)  # type: ignore[arg-type]
            if (st.st_ino, st.st_dev) == (saved.inode, saved.device):
                why = "truncated or rewritten since the saved position"
            else:
                why = "replaced since the saved position and the old file was not found"
            self.note(f"{self.path}: {why}; reading from the start")
        self.cur = cur

    def _queue_rotated_after(self, old: str, name_file: Cursor | None, when: str) -> None:
        """Queue, oldest first, the rotated copies written after ``old`` (our file's
        name now) that are not the name's file: files that came and went by rotation
        before we got to them."""
        readable, compressed = rotated_since(self.path, old)
        for p in readable:
            try:
                st = os.stat(p)
            except OSError:
                continue
            if (st.st_ino, st.st_dev) in self.queued or (
                name_file is not None and (st.st_ino, st.st_dev) == (name_file.ino, name_file.dev)
            ):
                continue
            try:
                qc = self.open(p, p)
            except OSError as exc:
                self.note(f"{p}: {exc.strerror or exc}; not read")
                continue
            self.queue.append(qc)
            self.queued.add((qc.ino, qc.dev))
            self.note(f"{p}: rotated {when}; reading it too")
        for p in compressed:
            self.note(f"{p}: rotated {when}, but compressed: not read")

    def unreadable(self, path: str, exc: OSError) -> None:
        if path not in self.said_unreadable:
            self.said_unreadable.add(path)
            self.note(f"{path}: {exc.strerror or exc}")

    # -- truncation (copytruncate) -----------------------------------------------------

    def truncated(self, cur: Cursor) -> bool:
        """Restart ``cur`` at 0 when it shrank below our position or its head changed."""
        if cur.size() >= cur.read_pos and cur.head_holds():
            return False
        copy = self._rest_from_copy(cur)
        items = cur.restart(self.new_parser())
        if items:
            self.output.emit(items, cur.name)
        # Copied and truncated again before we looked (soak seed 2, bench/README.md):
        # the generation in between is only in the later copies.
        changed = os.fstat(cur.fd).st_mtime_ns  # type: ignore[arg-type]
        if copy is None or not self._copies_of_unread(cur, (copy.st_mtime_ns, changed)):
            self.note(f"{cur.name}: file truncated; reading from the start")
        return True

    def _emitter(self, cur: Cursor) -> Callable[[list], None]:
        return lambda items: self.output.emit(items, cur.name)

    def _rest_from_copy(self, cur: Cursor) -> os.stat_result | None:
        """copytruncate: read what we had not read yet from the copy (banpipe.rotation)."""
        self.points.prior = None  # truncated without a copy: no file holds what came before
        return read_rest_from_copy(
            self.path,
            cur,
            self.queued,
            self._emitter(cur),
            self.note,
            read=self.queued,
            done=self.points.copy_read,
        )

    def copied_before_read(self, cur: Cursor) -> bool:
        """copytruncate of a file opened empty, before its first read (banpipe.rotation)."""
        known, cur.siblings = cur.siblings or set(), None
        return self._copies_of_unread(cur, (-1, 1 << 63), known)

    def _copies_of_unread(self, cur: Cursor, between: tuple, known: Collection = ()) -> bool:
        """Read the copies of ``cur``'s content we never saw (banpipe.rotation)."""
        if cur.read_pos or cur.head or cur.fd is None:
            return False
        ours = {(c.ino, c.dev) for c in (self.cur, self.next, *self.queue) if c is not None}
        return read_copies_of_unread(
            self.path,
            cur,
            {*known, *ours, *self.queued},
            self._emitter(cur),
            self.note,
            self.new_parser,
            read=self.queued,
            done=self.points.copy_read,
            between=between,
        )

    # -- moving on ---------------------------------------------------------------------

    def next_at_name(self, st: os.stat_result | None) -> Cursor | None:
        """The file at the name after ours (opened now if ``st`` says one is there)."""
        nxt = self.next
        if nxt is not None:
            # Opened at the name after ours; a rotation may have moved it on since (a
            # restart reads the files rotated while it was down first). Whatever is at
            # the name now was written after it: it is read before, never dropped.
            return nxt
        if st is None:
            return None
        try:
            nxt = self.open(self.path, self.path)
        except OSError as exc:
            self.unreadable(self.path, exc)
            return None
        self.next = nxt
        self.watch()
        # Several rotations between two of our looks leave files that were at the name
        # only meanwhile (soak, bench/README.md): they come after ours, before this one.
        old = self._rotated_name_of(self.cur)
        if old is not None:
            self._queue_rotated_after(old, nxt, "before it was read")
        return nxt

    def _rotated_name_of(self, cur: Cursor | None) -> str | None:
        """The rotated copy's name our file has now, if it has one."""
        if cur is None:
            return None
        for p in rotation_siblings(self.path):
            if _same_file(p, cur):
                return p
        return None

    def switch(self, nxt: Cursor) -> None:
        """Go on with the file at the name (``cur`` is finished)."""
        old = self.cur
        self.points.finished(self.cur)
        if self.watches is not None:
            self.watches.promote_next()
        if old is not None:
            old.close()
        self.next = None
        self.cur = nxt
        self.note(f"{self.path}: file replaced (rotated); reading the new file")

    def next_in_queue(self) -> None:
        """Go on with the oldest rotated file not read yet (start-up after rotations)."""
        nxt = self.queue.pop(0)
        self.points.finished(self.cur)
        if self.watches is not None:
            self.watches.drop_cur()
        if self.cur is not None:
            self.cur.close()
        self.cur = nxt
        self.watch()

    def drop_next(self) -> None:
        if self.next is not None:
            if self.watches is not None:
                self.watches.drop_next()  # before the close: the watch is by descriptor
            self.next.close()
            self.next = None

    def watch(self) -> None:
        """Watch what is not watched yet (while Follower.run() runs)."""
        if self.watches is not None:
            cur, nxt = self.cur, self.next
            self.watches.watch(cur and cur.fd, nxt and nxt.fd)
