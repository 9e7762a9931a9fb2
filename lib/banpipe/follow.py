"""Following an alert file by name, loss-free, with a resumable position.

Four layers, each usable alone, each in its module:

``Cursor`` (banpipe.cursor)
    Pure reading logic for one file: bytes in (any split), parser results out, and the
    *committed* offset (the first byte not yet turned into emitted output).

``Position`` (banpipe.positions) and ``find_rotated`` (banpipe.rotation)
    What ``--state`` saves and how a saved position is found again, also in a rotated
    copy (``alert.1``, ``alert-20261128``) when the file was rotated while nobody was
    reading; banpipe.rotation holds the one rule for which names are rotated copies.

``OpenFiles`` (banpipe.openfiles)
    The files held open in reading order (the one being read, rotated ones not read
    yet, the new file at the name), where to start from a saved position, moving on
    from one to the next, and noticing a copytruncate.

``NameReader`` and ``Follower`` (here)
    Reading by name (``NameReader``) and the loop that waits for more (``Follower``):
    inotify (pyinotify, through banpipe.watch.FollowWatches) on the directory for the
    name and on the open file itself; follows by name across rename rotation (the
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

import os
import time
from collections.abc import Callable
from typing import Any

from .cursor import Cursor, Parser
from .openfiles import OpenFiles, Output
from .positions import Checkpoints, Position


class NameReader:
    """Read the file at ``path`` to its current end, following the name across rotation,
    truncation and replacement; results go to ``output.emit``, notes to ``note``.

    ``save(position)`` is called after ``output.flush()`` (never before: a saved position
    only ever covers lines already written), when the position changed, before every
    wait and at most every ``save_every`` seconds during a burst. ``fasttail --once``
    needs no more than this; :class:`Follower` adds the waiting.
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
        max_line: int = 65536,
        save_every: float = 0.25,
        switch_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        mark: Callable[[Position | None], None] | None = None,
    ) -> None:
        self.path = path
        self.abspath = os.path.abspath(path)
        self.output = output
        self.note = note
        self.stop = stop
        self.switch_after = switch_after
        self.clock = clock
        # Positional output (``mark``) and saving (``save``): banpipe.positions.
        self.points = Checkpoints(
            self.abspath, output=output, save=save, mark=mark, clock=clock, every=save_every
        )
        # The files in hand, in reading order (banpipe.openfiles).
        self.files = OpenFiles(
            path,
            new_parser=new_parser,
            output=output,
            note=note,
            points=self.points,
            max_line=max_line,
            clock=clock,
        )

    @property
    def cur(self) -> Cursor | None:
        """The file being read."""
        return self.files.cur

    @property
    def next(self) -> Cursor | None:
        """A new file at the name, read once ``cur`` is done."""
        return self.files.next

    def start(self, *, saved: Position | None, from_start: bool) -> None:
        """Choose the first file and offset: saved position, start, or end of the file."""
        if saved is not None and saved.path != self.abspath:
            self.note(f"{self.path}: saved position is for {saved.path}; ignoring it")
            saved = None
        self.points.saved = saved
        self.files.start(saved, from_start=from_start)

    # -- reading -----------------------------------------------------------------------

    def drain(self, cur: Cursor) -> bool:
        """Read ``cur`` to its current end, emitting as we go; False when stopped."""
        files = self.files
        checked = False  # a truncation check since this drain's last read found data
        while True:
            if self.stop():
                return False
            chunk = cur.read()
            if not chunk:
                # A file cut below our position reads empty: checked here, at the end,
                # so that a wake-up's new data goes out before this check, not after it
                # (an alert's latency, issue 12). Not again right after a chunk's check:
                # a truncation since then raised an inotify event, and the next drain
                # checks (a truncation that grew past our position gives a chunk).
                if not checked and files.truncated(cur):
                    continue
                return True
            cur.last_data = self.clock()
            # Checked after the read: a chunk read before a truncation is old content
            # (fed), one read after it is new content (dropped; read again from 0).
            checked = True
            if files.truncated(cur):
                continue
            if cur.siblings is not None and files.copied_before_read(cur):
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

    def _finish(self, cur: Cursor) -> None:
        items = cur.end()
        if items:
            self.output.emit(items, cur.name)

    def step(self, *, once: bool = False) -> bool:
        """Read what is there and follow the name; False when stopped."""
        files = self.files
        cur = files.cur
        # The file we hold first: its new data is ours wherever the name leads now, and
        # goes out before the name is looked at (an alert's latency, issue 12).
        if cur is not None and not self.drain(cur):
            return False
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        if cur is None:
            if st is None:
                return True
            try:
                files.cur = cur = files.open(self.path, self.path)
            except OSError as exc:
                files.unreadable(self.path, exc)
                return True
            files.watch()
            if not self.drain(cur):
                return False
        same = st is not None and (st.st_ino, st.st_dev) == (cur.ino, cur.dev)
        if same:
            if files.next is not None:
                files.drop_next()
            return True
        # The name no longer leads to our file: rotated, deleted or replaced; what was
        # appended to it before that is drained (a truncation is checked at its end).
        if not self.drain(cur):
            return False
        if files.queue:
            self._finish(cur)
            files.next_in_queue()
            return self.step(once=once)
        nxt = files.next_at_name(st)
        if files.queue:  # files rotated away before we looked: read them first
            self._finish(cur)
            files.next_in_queue()
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
        files.switch(nxt)
        return self.step(once=once)

    # -- position (banpipe.positions.Checkpoints) -----------------------------------

    def position(self) -> Position | None:
        return self.points.position(self.files.cur)

    def mark(self) -> None:
        self.points.mark(self.files.cur)

    def checkpoint(self) -> None:
        self.points.checkpoint(self.files.cur)

    def run_once(self) -> None:
        """Read to the current end (the rest of a rotated file, then the file) and stop."""
        if self.cur is None:
            return
        if self.step(once=True) and self.cur is not None and self.next is None:
            self._finish(self.cur)
        self.checkpoint()


class Follower(NameReader):
    """A :class:`NameReader` that waits for more: inotify (banpipe.watch.FollowWatches)
    and the ``recheck`` timeout wake it; a block left pending for ``pending_timeout``
    seconds is completed; ``renew`` gets each parser every ``renew_every`` seconds.
    ``reading``: :class:`NameReader`'s arguments."""

    def __init__(
        self,
        path: str,
        *,
        wake_fd: int | None = None,
        pending_timeout: float = 2.0,
        recheck: float = 2.0,
        renew: Callable[[Any], None] | None = None,
        renew_every: float = 60.0,
        **reading: Any,
    ) -> None:
        super().__init__(path, **reading)
        self.wake_fd = wake_fd
        self.pending_timeout = pending_timeout
        self.recheck = recheck
        # Called with each parser now and then: a long run moves the year-inference
        # anchor (AlertParser.set_now) so yearless stamps stay right across New Year.
        self.renew = renew
        self.renew_every = renew_every
        self.last_renew = self.clock()

    def step(self, *, once: bool = False) -> bool:
        """:meth:`NameReader.step`, the parsers renewed first when it is time."""
        if self.renew is not None and self.clock() - self.last_renew >= self.renew_every:
            self.last_renew = self.clock()
            for c in (self.cur, self.next):
                if c is not None:
                    self.renew(c.parser)
        return super().step(once=once)

    def run(self) -> None:
        """Follow until ``stop()``; flushes and saves before every wait and at the end.

        An exception (a closed pipe, a state file that cannot be written) ends the run
        without a last save: the saved position then only covers delivered alerts.
        """
        # Imported here: pyinotify (and logging) are a sixth of fasttail's start-up, and
        # --once never waits.
        from .watch import FollowWatches

        watches = self.files.watches = FollowWatches(os.path.dirname(self.abspath))
        try:
            self.files.watch()
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
            watches.close()
            self.files.watches = None

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
        watches = self.files.watches
        assert watches is not None
        watches.wait(timeout, self.wake_fd)
        self.files.watch()  # a directory that did not exist yet, a file opened meanwhile
