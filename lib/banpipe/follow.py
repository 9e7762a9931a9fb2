"""Following an alert file by name, loss-free, with a resumable position.

Three layers, each usable alone, each in its module:

``Cursor`` (banpipe.cursor)
    Pure reading logic for one file: bytes in (any split), parser results out, and the
    *committed* offset (the first byte not yet turned into emitted output).

``Position`` (banpipe.positions) and ``find_rotated`` (banpipe.rotation)
    What ``--state`` saves and how a saved position is found again, also in a rotated
    copy (``alert.1``, ``alert-20261128``) when the file was rotated while nobody was
    reading; banpipe.rotation holds the one rule for which names are rotated copies.

``Follower`` (here)
    The loop: inotify (pyinotify, through banpipe.watch.FollowWatches) on the directory
    for the name and on the open file itself; follows by name across rename rotation (the
    old file is drained to its end, and kept until the new file has data or the old one
    has been quiet for ``switch_after`` seconds), copytruncate (size or fingerprint shows
    it; restart at 0 with a note), delete-and-recreate and a file that does not exist yet.
    A select() timeout (2 s) re-checks the name as a safety net only, and finds a file
    whose directory did not exist yet.

Stale blocks: Snort ends every alert_full block with an empty line, so a block is held
until that line arrives. An odd writer that leaves the last block open would hold it
forever; in follow mode a block that stays pending with no new data for
``pending_timeout`` seconds (default 2) is completed as it is.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from typing import Any, Protocol

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
from .watch import FollowWatches


def _same_file(path: str, cur: Cursor) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_ino, st.st_dev) == (cur.ino, cur.dev)


# -- the loop --------------------------------------------------------------------------------


class Output(Protocol):
    def emit(self, items: list, name: str) -> None: ...
    def flush(self) -> None: ...


class Follower:
    """Follow ``path`` by name; results go to ``output.emit``, notes to ``note``.

    ``save(position)`` is called after ``output.flush()`` (never before: a saved position
    only ever covers lines already written), when the position changed, before every
    wait and at most every ``save_every`` seconds during a burst.
    """

    def __init__(
        self,
        path: str,
        *,
        new_parser: Callable[[], Parser],
        output: Output,
        note: Callable[[str], None],
        save: Callable[[Position], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
        wake_fd: int | None = None,
        max_line: int = 65536,
        pending_timeout: float = 2.0,
        recheck: float = 2.0,
        save_every: float = 0.25,
        switch_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        renew: Callable[[Any], None] | None = None,
        renew_every: float = 60.0,
        mark: Callable[[Position | None], None] | None = None,
    ) -> None:
        self.path = path
        self.abspath = os.path.abspath(path)
        self.new_parser = new_parser
        self.output = output
        self.note = note
        self.stop = stop
        self.wake_fd = wake_fd
        self.max_line = max_line
        self.pending_timeout = pending_timeout
        self.recheck = recheck
        self.switch_after = switch_after
        self.clock = clock
        # Called with each parser now and then: a long run moves the year-inference
        # anchor (AlertParser.set_now) so yearless stamps stay right across New Year.
        self.renew = renew
        self.renew_every = renew_every
        self.last_renew = clock()
        self.cur: Cursor | None = None  # the file being read
        self.next: Cursor | None = None  # a new file at the name, read once cur is done
        self.watches: FollowWatches | None = None  # while run() runs
        self.said_unreadable: set[str] = set()
        # Rotated files written after the one being read, read before the name's file.
        # Opened when found: a rename rotation meanwhile moves names (alert.1 becomes
        # alert.2), not the files we hold.
        self.queue: list[Cursor] = []
        # (inode, device) of every file queued (read whole) and of every copytruncate
        # copy read: never read again, as a copy or as a file rotated before we looked.
        self.queued: set[tuple[int, int]] = set()
        # Positional output (``mark``) and saving (``save``): banpipe.positions.
        self.points = Checkpoints(
            self.abspath, output=output, save=save, mark=mark, clock=clock, every=save_every
        )

    # -- opening -----------------------------------------------------------------------

    def _open(self, path: str, name: str, offset: int = 0, lineno: int = 0) -> Cursor:
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

    def start(self, *, saved: Position | None, from_start: bool) -> None:
        """Choose the first file and offset: saved position, start, or end of the file."""
        if saved is not None and saved.path != self.abspath:
            self.note(f"{self.path}: saved position is for {saved.path}; ignoring it")
            saved = None
        self.points.saved = saved
        try:
            cur = self._open(self.path, self.path)
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
            self._seek(cur, saved)
            self.cur = cur
            return
        old = find_rotated(self.path, saved)
        if old is not None:
            self.note(f"{self.path}: rotated since the saved position; reading the rest of {old}")
            try:
                oc = self._open(old, old)
            except OSError as exc:
                self.note(f"{old}: {exc.strerror}")
            else:
                self._seek(oc, saved)
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
                qc = self._open(p, p)
            except OSError as exc:
                self.note(f"{p}: {exc.strerror or exc}; not read")
                continue
            self.queue.append(qc)
            self.queued.add((qc.ino, qc.dev))
            self.note(f"{p}: rotated {when}; reading it too")
        for p in compressed:
            self.note(f"{p}: rotated {when}, but compressed: not read")

    def _seek(self, cur: Cursor, pos: Position) -> None:
        cur.read_pos = cur.block_pos = pos.offset
        cur.lineno = cur.block_lineno = pos.lineno

    # -- reading -----------------------------------------------------------------------

    def drain(self, cur: Cursor) -> bool:
        """Read ``cur`` to its current end, emitting as we go; False when stopped."""
        while True:
            if self.stop():
                return False
            chunk = cur.read()
            if not chunk:
                return True
            cur.last_data = self.clock()
            # Checked after the read: a chunk read before a truncation is old content
            # (fed), one read after it is new content (dropped; read again from 0).
            if self._truncated(cur):
                continue
            if cur.siblings is not None and self._copied_before_read(cur):
                continue
            cur.extend_head(chunk)
            items = cur.feed(chunk)
            if items:
                self.output.emit(items, cur.name)
            self.mark()
            # Out at once with their position, not after the read that finds the end (an
            # alert's latency; a flood's chunk outgrows the buffer and is written anyway).
            self.output.flush()
            if self.points.due():
                self.checkpoint()

    def _truncated(self, cur: Cursor) -> bool:
        """Restart ``cur`` at 0 when it shrank below our position or its head changed."""
        if cur.size() >= cur.read_pos and cur.head_holds():
            return False
        self._rest_from_copy(cur)
        self.note(f"{cur.name}: file truncated; reading from the start")
        items = cur.restart(self.new_parser())
        if items:
            self.output.emit(items, cur.name)
        return True

    def _emitter(self, cur: Cursor) -> Callable[[list], None]:
        return lambda items: self.output.emit(items, cur.name)

    def _rest_from_copy(self, cur: Cursor) -> None:
        """copytruncate: read what we had not read yet from the copy (banpipe.rotation)."""
        self.points.prior = None  # truncated without a copy: no file holds what came before
        read_rest_from_copy(
            self.path,
            cur,
            self.queued,
            self._emitter(cur),
            self.note,
            read=self.queued,
            done=self.points.copy_read,
        )

    def _copied_before_read(self, cur: Cursor) -> bool:
        """copytruncate of a file opened empty, before its first read (banpipe.rotation)."""
        known, cur.siblings = cur.siblings or set(), None
        if cur.read_pos or cur.head or cur.fd is None:
            return False
        ours = {(c.ino, c.dev) for c in (self.cur, self.next, *self.queue) if c is not None}
        return read_copies_of_unread(
            self.path,
            cur,
            known | ours | self.queued,
            self._emitter(cur),
            self.note,
            self.new_parser,
            read=self.queued,
            done=self.points.copy_read,
        )

    def _finish(self, cur: Cursor) -> None:
        items = cur.end()
        if items:
            self.output.emit(items, cur.name)

    def step(self, *, once: bool = False) -> bool:
        """Read what is there and follow the name; False when stopped."""
        if self.renew is not None and self.clock() - self.last_renew >= self.renew_every:
            self.last_renew = self.clock()
            for c in (self.cur, self.next):
                if c is not None:
                    self.renew(c.parser)
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        cur = self.cur
        if cur is None:
            if st is None:
                return True
            try:
                self.cur = cur = self._open(self.path, self.path)
            except OSError as exc:
                self._unreadable(self.path, exc)
                return True
            self._watch()
        same = st is not None and (st.st_ino, st.st_dev) == (cur.ino, cur.dev)
        if same:
            if self.next is not None:
                self._drop_next()
            self._truncated(cur)
            return self.drain(cur)
        # The name no longer leads to our file: rotated, deleted or replaced.
        if not self.drain(cur):
            return False
        if self.queue:
            self._finish(cur)
            self._next_in_queue()
            return self.step(once=once)
        nxt = self._next_at_name(st)
        if self.queue:  # files rotated away before we looked: read them first
            self._finish(cur)
            self._next_in_queue()
            return self.step(once=once)
        if nxt is None:
            if once:
                self._finish(cur)
            return True
        if nxt.size() == 0 and not once and self.clock() - cur.last_data < self.switch_after:
            # The writer may still append to the old file until it reopens the name;
            # once the new file has data, the old one gets no more. A writer that stays
            # quiet for switch_after seconds has let go of it (and a deleted file's
            # space is freed once we close it).
            return True
        if not self.drain(cur):
            return False
        self._finish(cur)
        self._switch(nxt)
        return self.step(once=once)

    def _next_at_name(self, st: os.stat_result | None) -> Cursor | None:
        nxt = self.next
        if nxt is not None:
            # Opened at the name after ours; a rotation may have moved it on since (a
            # restart reads the files rotated while it was down first). Whatever is at
            # the name now was written after it: it is read before, never dropped.
            return nxt
        if st is None:
            return None
        try:
            nxt = self._open(self.path, self.path)
        except OSError as exc:
            self._unreadable(self.path, exc)
            return None
        self.next = nxt
        self._watch()
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

    def _switch(self, nxt: Cursor) -> None:
        old = self.cur
        self.points.finished(self.cur)
        if self.watches is not None:
            self.watches.promote_next()
        if old is not None:
            old.close()
        self.next = None
        self.cur = nxt
        self.note(f"{self.path}: file replaced (rotated); reading the new file")

    def _next_in_queue(self) -> None:
        """Go on with the oldest rotated file not read yet (start-up after rotations)."""
        nxt = self.queue.pop(0)
        self.points.finished(self.cur)
        if self.watches is not None:
            self.watches.drop_cur()
        if self.cur is not None:
            self.cur.close()
        self.cur = nxt
        self._watch()

    def _drop_next(self) -> None:
        if self.next is not None:
            if self.watches is not None:
                self.watches.drop_next()  # before the close: the watch is by descriptor
            self.next.close()
            self.next = None

    def _unreadable(self, path: str, exc: OSError) -> None:
        if path not in self.said_unreadable:
            self.said_unreadable.add(path)
            self.note(f"{path}: {exc.strerror or exc}")

    # -- position (banpipe.positions.Checkpoints) -----------------------------------

    def position(self) -> Position | None:
        return self.points.position(self.cur)

    def mark(self) -> None:
        self.points.mark(self.cur)

    def checkpoint(self) -> None:
        self.points.checkpoint(self.cur)

    # -- run ---------------------------------------------------------------------------

    def run_once(self) -> None:
        """Read to the current end (the rest of a rotated file, then the file) and stop."""
        if self.cur is None:
            return
        if self.step(once=True) and self.cur is not None and self.next is None:
            self._finish(self.cur)
        self.checkpoint()

    def run(self) -> None:
        """Follow until ``stop()``; flushes and saves before every wait and at the end.

        An exception (a closed pipe, a state file that cannot be written) ends the run
        without a last save: the saved position then only covers delivered alerts.
        """
        self.watches = FollowWatches(os.path.dirname(self.abspath))
        try:
            self._watch()
            if self.cur is None:
                self.note(f"{self.path}: No such file or directory; waiting for it")
            while not self.stop():
                if not self.step():
                    break
                self._stale_block()
                self.checkpoint()
                if self.stop():
                    break
                self._wait(self._timeout())
            self.checkpoint()
        finally:
            self.watches.close()
            self.watches = None

    def _stale_block(self) -> None:
        cur = self.cur
        if cur is None or not cur.parser.pending():
            return
        if self.clock() - cur.last_data >= self.pending_timeout:
            items = cur.flush_block()
            if items:
                self.output.emit(items, cur.name)

    def _timeout(self) -> float:
        timeout = self.recheck
        cur = self.cur
        if cur is not None and cur.parser.pending():
            left = cur.last_data + self.pending_timeout - self.clock()
            timeout = max(0.0, min(timeout, left))
        return timeout

    def _wait(self, timeout: float) -> None:
        assert self.watches is not None
        self.watches.wait(timeout, self.wake_fd)
        self._watch()  # a directory that did not exist yet, a file opened meanwhile

    def _watch(self) -> None:
        """Watch what is not watched yet (while run() runs)."""
        if self.watches is not None:
            cur, nxt = self.cur, self.next
            self.watches.watch(cur and cur.fd, nxt and nxt.fd)
