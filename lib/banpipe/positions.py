"""Read positions of a followed alert file: what fasttail saves and where banctl records.

The reading side: a :class:`Position` is what ``fasttail --state`` saves (path, inode,
device, committed offset and line number, fingerprints of the first 256 bytes and of
the 256 before the offset, size) and what a position record carries; :func:`matches`
says whether an open file is the one a position was saved for (banpipe.rotation finds
it among the rotated copies); :func:`start_of_last_line` is where following "from the
end" starts.

The recording side: units of a positional stream and their repeats.

``fasttail --ledger`` puts a position record into its output after the alerts it
covers (docs/pipe-format.md, "Positions"). The alerts between two records form a
*unit*: banctl records a unit's violations and its closing position in one
transaction, or neither, so what the ledger holds is always a whole number of units
and the recorded position is exactly where the next unit starts. fasttail resumes
there, so nothing is lost and nothing is recorded twice; a unit whose closing
position the ledger already covers (fasttail resumed from an older point than
banctl's last commit) is a repeat and is dropped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from banpipe import pipe

FP_BYTES = 256  # fingerprint: sha256 of the first FP_BYTES bytes (fewer in a shorter file)


@dataclass(frozen=True)
class Position:
    """A resumable read position: which file (identity + fingerprint) and where in it."""

    path: str
    inode: int
    device: int
    offset: int
    lineno: int
    fp_len: int
    fingerprint: str
    size: int
    # sha256 of the (up to FP_BYTES) bytes just before ``offset``: with the head
    # fingerprint, tells a copy of our file from another file that starts the same way.
    before: str = ""
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        # Spelled out: asdict() copies recursively, and this runs for every position
        # record fasttail --ledger writes.
        return {
            "path": self.path,
            "inode": self.inode,
            "device": self.device,
            "offset": self.offset,
            "lineno": self.lineno,
            "fp_len": self.fp_len,
            "fingerprint": self.fingerprint,
            "size": self.size,
            "before": self.before,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Position:
        """Raises ValueError when ``obj`` is not a saved position."""
        if not isinstance(obj, dict) or obj.get("version") != 1:
            raise ValueError("not a fasttail state (version 1)")
        try:
            pos = cls(
                path=str(obj["path"]),
                inode=int(obj["inode"]),
                device=int(obj["device"]),
                offset=int(obj["offset"]),
                lineno=int(obj["lineno"]),
                fp_len=int(obj["fp_len"]),
                fingerprint=str(obj["fingerprint"]),
                size=int(obj["size"]),
                before=str(obj.get("before", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad state: {exc}") from None
        if pos.offset < 0 or pos.lineno < 0 or not 0 <= pos.fp_len <= FP_BYTES:
            raise ValueError("bad state: negative offset or bad fingerprint length")
        return pos


def place(pos: Position) -> tuple:
    """What makes two positions the same place (size and line count follow from it)."""
    return pos.inode, pos.device, pos.offset, pos.fp_len, pos.fingerprint


def matches(fd: int, pos: Position, *, same_inode: bool) -> bool:
    """Whether the open file ``fd`` is the file ``pos`` was saved for."""
    st = os.fstat(fd)
    if same_inode and (st.st_ino, st.st_dev) != (pos.inode, pos.device):
        return False
    if st.st_size < pos.offset:
        return False
    head = os.pread(fd, pos.fp_len, 0)
    if len(head) != pos.fp_len or hashlib.sha256(head).hexdigest() != pos.fingerprint:
        return False
    return not pos.before or bytes_before(fd, pos.offset) == pos.before


def bytes_before(fd: int, offset: int) -> str:
    """sha256 (hex) of the up to FP_BYTES bytes before ``offset``."""
    lo = max(0, offset - FP_BYTES)
    return hashlib.sha256(os.pread(fd, offset - lo, lo)).hexdigest()


def start_of_last_line(fd: int, size: int, limit: int = 1 << 16) -> int:
    """Offset just after the last newline before ``size`` (0 if none in the last ``limit``).

    Starting "at the end" there means an alert being written at start-up is read whole.
    """
    if size == 0:
        return 0
    lo = max(0, size - limit)
    tail = os.pread(fd, size - lo, lo)
    i = tail.rfind(b"\n")
    if i >= 0:
        return lo + i + 1
    return size if lo > 0 else 0


def count_lines(fd: int, end: int, chunk: int = 1 << 20) -> int:
    """Newlines in the first ``end`` bytes, read in chunks (memory stays flat)."""
    n = pos = 0
    while pos < end:
        data = os.pread(fd, min(chunk, end - pos), pos)
        if not data:
            break
        n += data.count(b"\n")
        pos += len(data)
    return n


# -- the recording side (banctl apply) ---------------------------------------------------


class Checkpoints:
    """Where a follower's output stands: marked into the output, saved.

    ``mark(position)`` puts a position record into the output after the alerts it
    covers, whenever the committed position moved; ``save(position)`` (``--state``) is
    called after ``output.flush()``, never before: a saved position only ever covers
    lines already written. ``cur`` is the follower's Cursor (None: no file yet).
    """

    def __init__(
        self,
        abspath: str,
        *,
        output: Any,
        save: Callable[[Position], None] | None,
        mark: Callable[[Position | None], None] | None,
        clock: Callable[[], float],
        every: float,
    ) -> None:
        self.abspath = abspath
        self.output = output
        self.save = save
        self.mark_out = mark
        self.clock = clock
        self.every = every
        self.saved: Position | None = None
        self.last_save = clock()
        self.marked: tuple | None = None
        self.mark_opened = False
        # The end of the last file finished (switched from, or a copytruncate copy read
        # to its end): the position while the file being read holds nothing we know of.
        # A position at 0 of an empty file cannot tell it from the same inode copied
        # and truncated while we are down (soak seed 2, bench/README.md); from the end
        # of the file before, a restart finds the copies made after it by their times
        # (banpipe.rotation: find_rotated, rotated_since).
        self.prior: Position | None = None

    def of(self, cur: Any) -> Position:
        """Where ``cur`` is committed, in the file its descriptor is open on now."""
        st = os.fstat(cur.fd)
        offset, lineno = cur.committed()
        return Position(
            path=self.abspath,
            inode=st.st_ino,
            device=st.st_dev,
            offset=offset,
            lineno=lineno,
            fp_len=cur.fp_len,
            fingerprint=cur.fp,
            size=st.st_size,
            before=bytes_before(cur.fd, offset),
        )

    def position(self, cur: Any) -> Position | None:
        if cur is None or cur.fd is None:
            return None
        if cur.fp_len == 0 and self.prior is not None:
            return self.prior  # nothing read from this file yet (see ``prior``)
        return self.of(cur)

    def finished(self, cur: Any) -> None:
        """``cur`` was read to its end and is left for the next file."""
        self.prior = self.position(cur)

    def copy_read(self, cur: Any) -> None:
        """``cur`` (its descriptor the copy's) was read to the copy's end."""
        self.prior = self.of(cur)

    def due(self) -> bool:
        return self.save is not None and self.clock() - self.last_save >= self.every

    def mark(self, cur: Any) -> None:
        """Put the committed position into the output when it moved since the last mark.

        Every alert before the position was emitted before the mark, none after it, so
        the alerts between two marks form a unit that a consumer records together with
        the closing mark; resuming at a recorded mark repeats and skips nothing. The
        first call marks even without a file (position None): the stream is positional.
        """
        if self.mark_out is None:
            return
        pos = self.position(cur)
        key = place(pos) if pos is not None else None
        if self.mark_opened and (key == self.marked or pos is None):
            return
        self.mark_opened = True
        self.marked = key
        self.mark_out(pos)

    def checkpoint(self, cur: Any) -> None:
        """Mark and flush the output, then save the position if it moved."""
        self.mark(cur)
        self.output.flush()
        self.last_save = self.clock()
        if self.save is None:
            return
        pos = self.position(cur)
        if pos is None:
            return
        if self.saved is not None and place(self.saved) == place(pos):
            return
        self.save(pos)
        self.saved = pos


def ident(pos: Position) -> str:
    """Which file a position is in: inode, device and the fingerprint of its head."""
    return f"{pos.inode}:{pos.device}:{pos.fp_len}:{pos.fingerprint}"


def parse(obj: Any) -> Position | None:
    """The position of a position record; None for the opening ``"position": null``.

    Raises ValueError when the record's position is malformed.
    """
    value = obj.get("position")
    if value is None:
        return None
    return Position.from_json(value)


class Recorded:
    """Positions known to be recorded (or about to be, in the pending commit).

    ``known`` maps ``(path, ident)`` to the offset recorded for that file; a later
    position in the same file is new, any other file is new too (rotation goes to a
    file never read before).
    """

    def __init__(self, known: Mapping[tuple[str, str], int]) -> None:
        self.known: dict[tuple[str, str], int] = dict(known)
        self.pending: dict[tuple[str, str], Position] = {}
        # A pending position for a file never recorded before: the first point a
        # restart can resume from, worth recording at once.
        self.urgent = False

    def is_new(self, pos: Position) -> bool:
        return pos.offset > self.known.get((pos.path, ident(pos)), -1)

    def advance(self, pos: Position) -> None:
        """``pos`` closes a unit that goes into the next commit."""
        key = (pos.path, ident(pos))
        self.urgent = self.urgent or key not in self.known
        self.known[key] = pos.offset
        self.pending.pop(key, None)  # keep commit order: newest last
        self.pending[key] = pos

    def rows(self) -> list[tuple[str, str, int, str]]:
        """The pending positions as ledger rows, oldest first."""
        return [
            (path, key, pos.offset, pipe.dumps(pos.to_json()).decode())
            for (path, key), pos in self.pending.items()
        ]


def merge(into: dict[tuple, list], unit: Mapping[tuple, list]) -> None:
    """Add a unit's violation groups (``[alert_ts, count, last line, last alert_ts]``)
    to ``into``."""
    for key, group in unit.items():
        have = into.get(key)
        if have is None:
            into[key] = group
        else:
            have[1] += group[1]
            have[2] = group[2]
            have[3] = group[3]
