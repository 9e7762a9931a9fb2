"""Following an alert file by name, loss-free, with a resumable position.

Three layers, each usable alone:

``Cursor``
    Pure reading logic for one file: bytes in (any split), parser results out. It splits
    lines itself, keeps an unterminated last line until its newline arrives, caps a runaway
    line at ``max_line`` bytes, and knows the *committed* offset: the first byte not yet
    turned into emitted output (never inside a pending alert_full block or a partial line).

``Position`` and ``find_rotated``
    What ``--state`` saves (path, inode, device, committed offset and line number,
    fingerprints of the first 256 bytes and of the 256 before the offset, size) and how a
    saved position is found again, also in a rotation sibling (``alert.1``,
    ``alert-20261128``) when the file was rotated while nobody was reading.

``Follower``
    The loop: inotify (pyinotify, through banpipe.watch.InotifyWatcher) on the directory
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
import hashlib
import os
import re
import select
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, count
from typing import Any, Protocol

import pyinotify

from .watch import InotifyWatcher

# Bytes per read: a burst is parsed and written in batches of about 80 alerts. Bigger reads
# are slower here: each batch's garbage then outgrows pymalloc's arenas, which are unmapped
# and mapped again every batch (1 << 16: ~1 page fault per alert, +50% system time; see
# bench/README.md).
CHUNK = 1 << 14
FP_BYTES = 256  # fingerprint: sha256 of the first FP_BYTES bytes (fewer in a shorter file)
HEADER_B = b"[**] ["  # an alert_full block header starts with this
DIR_EVENTS = (
    pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO | pyinotify.IN_MOVED_FROM | pyinotify.IN_DELETE
)
FILE_EVENTS = (
    pyinotify.IN_MODIFY | pyinotify.IN_MOVE_SELF | pyinotify.IN_DELETE_SELF | pyinotify.IN_ATTRIB
)

# pyinotify's logger is silenced in banpipe.watch: it logs an ERROR when a watched file
# moves out of a watched directory (we watch open files through /proc/self/fd/N, whose
# "directory" is never watched). Expected here.


class Parser(Protocol):
    def feed(self, line: str, lineno: int) -> list: ...
    def flush(self) -> list: ...
    def pending(self) -> bool: ...


# -- one file --------------------------------------------------------------------------------


class Cursor:
    """Lines of one file through a parser, with the committed offset and line number.

    ``feed(chunk)`` takes the next bytes of the file (any split) and returns the parser's
    results (alert dicts and ParseErrors) for every complete line. ``end()`` is the end of
    the file for good (rotated away, or ``--once``): an unterminated last line counts as a
    line and an open block is completed. ``flush_block()`` completes an open block only.
    """

    def __init__(
        self,
        parser: Parser,
        *,
        name: str,
        offset: int = 0,
        lineno: int = 0,
        max_line: int = 65536,
        fd: int | None = None,
    ) -> None:
        self.parser = parser
        self.name = name
        self.fd = fd
        self.max_line = max_line
        self.read_pos = offset  # bytes of the file consumed by feed()
        self.lineno = lineno  # complete lines fed to the parser
        self.partial = b""  # unterminated last line, at most max_line + 1 bytes kept
        self.partial_len = 0  # its true length (bytes beyond the cap are dropped)
        # Start of the open alert_full block (offset, line count before it).
        self.block_pos = offset
        self.block_lineno = lineno
        self.ino = self.dev = 0
        # The file's first bytes as we read them (at most FP_BYTES): compared with the
        # file now to notice copytruncate, hashed into the saved fingerprint.
        self.head = b""
        # The last bytes fed (at most FP_BYTES): where a copy of this file must agree
        # with it before its rest is read (copytruncate).
        self.recent = b""
        self._fp: tuple[bytes, str] = (b"", hashlib.sha256(b"").hexdigest())
        self.last_data = 0.0  # Follower.clock() at the last non-empty read
        # Opened empty: the rotation siblings there were then, (inode, device). A sibling
        # that appears before our first read may be a copytruncate copy (Follower).
        self.siblings: set[tuple[int, int]] | None = None
        if fd is not None:
            st = os.fstat(fd)
            self.ino, self.dev = st.st_ino, st.st_dev
            self.head = os.pread(fd, FP_BYTES, 0)

    # -- the pure part -----------------------------------------------------------------

    def committed(self) -> tuple[int, int]:
        """(offset, lineno) of the first byte not yet turned into output."""
        if self.parser.pending():
            return self.block_pos, self.block_lineno
        return self.read_pos - self.partial_len, self.lineno

    def feed(self, chunk: bytes) -> list:
        if not chunk:
            return []
        start = self.read_pos - self.partial_len  # file offset of the first line
        self.read_pos += len(chunk)
        self.recent = (
            (self.recent + chunk)[-FP_BYTES:] if len(chunk) < FP_BYTES else chunk[-FP_BYTES:]
        )
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._grow_partial(chunk)
            return []
        dropped = self.partial_len - len(self.partial)  # bytes cut off an over-long line
        data = self.partial + chunk[:cut] if self.partial else chunk[:cut]
        self.partial = b""
        self.partial_len = 0
        self._grow_partial(chunk[cut + 1 :])
        text = data.decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        # Lines longer than max_line *bytes* are too long, however they arrived (whole in
        # one chunk or cut off in the partial buffer): padded so the parser says so.
        if dropped:
            lines[0] = self._pad(lines[0])
        if len(text) != len(data):  # non-ASCII: characters and bytes differ
            limit = self.max_line
            for i, ln in enumerate(lines):
                if (
                    limit // 4 < len(ln) <= limit
                    and (i or not dropped)
                    and len(ln.encode("utf-8", "surrogateescape")) > limit
                ):
                    lines[i] = self._pad(ln)
        first = self.lineno + 1
        self.lineno += len(lines)
        feed = self.parser.feed
        if not data.startswith(HEADER_B) and b"\n" + HEADER_B not in data:
            # Fast path (alert_fast and friends): no block can open in this batch.
            return list(chain.from_iterable(map(feed, lines, count(first))))
        # alert_full: header lines are found in the bytes (C speed), which also gives their
        # file offsets; the lines between them go through the same map() as above.
        out: list = []
        pending = self.parser.pending
        heads = [0] if data.startswith(HEADER_B) else []
        o = data.find(b"\n" + HEADER_B)
        while o >= 0:
            heads.append(o + 1)
            o = data.find(b"\n" + HEADER_B, o + 1)
        fed = 0  # lines fed so far
        known, at = 0, 0  # a line index and the byte offset in data where it starts
        for o in heads:
            k = known + data.count(b"\n", at, o)  # index of the header line
            if k > fed:
                out.extend(chain.from_iterable(map(feed, lines[fed:k], count(first + fed))))
            was = pending()
            res = feed(lines[k], first + k)
            if pending() and (res or not was):
                # The first line may be longer in the file than in data (cut: dropped).
                self.block_pos = start + o + (dropped if o else 0)
                self.block_lineno = first + k - 1
            if res:
                out.extend(res)
            fed = k + 1
            known, at = k, o
        if fed < len(lines):
            out.extend(chain.from_iterable(map(feed, lines[fed:], count(first + fed))))
        return out

    def _grow_partial(self, piece: bytes) -> None:
        if not piece:
            return
        room = self.max_line + 1 - len(self.partial)
        # Past max_line only the report's prefix is kept: memory stays bounded.
        if room > 0:
            self.partial += piece[:room] if len(piece) > room else piece
        self.partial_len += len(piece)

    def _pad(self, text: str) -> str:
        if len(text) <= self.max_line:
            # Cut inside multi-byte characters: pad so the parser still sees "too long".
            text += "\ufffd" * (self.max_line + 1 - len(text))
        return text

    def end(self) -> list:
        """End of this file for good: the unterminated last line, then an open block."""
        out: list = []
        if self.partial_len:
            self.lineno += 1
            out.extend(self.parser.feed(self._partial_text(), self.lineno))
            self.partial = b""
            self.partial_len = 0
        out.extend(self.parser.flush())
        return out

    def flush_block(self) -> list:
        """Complete an open block now (stale: no new data for a while)."""
        return self.parser.flush() if self.parser.pending() else []

    def _partial_text(self) -> str:
        text = self.partial.decode("utf-8", "surrogateescape")
        return self._pad(text) if self.partial_len > self.max_line else text

    # -- the file ----------------------------------------------------------------------

    def read(self, size: int = CHUNK) -> bytes:
        """The next bytes of the file (not fed yet); see also extend_head()."""
        assert self.fd is not None
        return os.pread(self.fd, size, self.read_pos)

    def extend_head(self, chunk: bytes) -> None:
        """Grow ``head`` with a chunk read at read_pos (call once it is known valid)."""
        have = len(self.head)
        if have < FP_BYTES and self.read_pos <= have < self.read_pos + len(chunk):
            self.head += chunk[have - self.read_pos : FP_BYTES - self.read_pos]

    def restart(self, parser: Parser) -> list:
        """The file was truncated or rewritten: complete the open block, read from 0."""
        out = self.parser.flush()
        self.parser = parser
        self.read_pos = self.lineno = self.block_pos = self.block_lineno = 0
        self.partial = b""
        self.partial_len = 0
        self.head = self.recent = b""
        return out

    @property
    def fp_len(self) -> int:
        return len(self.head)

    @property
    def fp(self) -> str:
        # Asked for every position record (fasttail --ledger): hashed once per head.
        if self._fp[0] != self.head:
            self._fp = (self.head, hashlib.sha256(self.head).hexdigest())
        return self._fp[1]

    def head_holds(self) -> bool:
        """Whether the file still starts with ``head`` (no copytruncate, no rewrite)."""
        assert self.fd is not None
        if not self.head:
            return True
        return os.pread(self.fd, len(self.head), 0) == self.head

    def size(self) -> int:
        assert self.fd is not None
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


# -- saved positions -------------------------------------------------------------------------


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


def _key(pos: Position) -> tuple:
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


def _same_file(path: str, cur: Cursor) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_ino, st.st_dev) == (cur.ino, cur.dev)


def rotation_siblings(path: str) -> list[str]:
    """Files next to ``path`` named like its rotated copies: name.1, name.0, name-20261128."""
    directory, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for n in names:
        if n != base and n.startswith(base) and n[len(base)] in ".-_":
            if n.endswith((".gz", ".xz", ".bz2", ".zst")):
                continue  # compressed: not the bytes we were reading
            out.append(os.path.join(directory, n))
    # Newest rotation first: name.1 before name.2, most recent date first.
    return sorted(out, key=lambda p: (-_mtime(p), p))


COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z")
# What logrotate calls a rotated copy: a number (alert.1) or a date (alert-20261128,
# dateformat variants with - _ . or T), optionally compressed.
_ROTATED = re.compile(r"[.\-_](\d[\d\-_.T]*?)(\.(?:gz|xz|bz2|zst|lz4|Z))?")


def rotated_since(path: str, old: str) -> tuple[list[str], list[str]]:
    """Rotated copies of ``path`` written after its sibling ``old``, oldest first.

    Returns (readable files, compressed files). Only logrotate's names count here
    (numbered or dated), since these are read from their start: a neighbour such as
    ``alert_full`` is not a rotation of ``alert``. Order: modification time, then the
    name (a higher number is older, an earlier date is older).
    """
    directory, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(directory)
        old_st = os.stat(old)
    except OSError:
        return [], []
    found = []
    for n in names:
        m = _ROTATED.fullmatch(n[len(base) :]) if n.startswith(base) else None
        if m is None:
            continue
        p = os.path.join(directory, n)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_dev) == (old_st.st_ino, old_st.st_dev):
            continue
        stamp = m.group(1)
        rank = -int(stamp) if stamp.isdigit() and len(stamp) <= 4 else 0
        found.append(((st.st_mtime_ns, rank, stamp), p))
    old_key = (old_st.st_mtime_ns, 0, "")
    m = _ROTATED.fullmatch(os.path.basename(old)[len(base) :])
    if m is not None:
        stamp = m.group(1)
        old_key = (
            old_st.st_mtime_ns,
            -int(stamp) if stamp.isdigit() and len(stamp) <= 4 else 0,
            stamp,
        )
    newer = [p for key, p in sorted(found) if key > old_key]
    return (
        [p for p in newer if not p.endswith(COMPRESSED)],
        [p for p in newer if p.endswith(COMPRESSED)],
    )


def compressed_siblings(path: str) -> list[str]:
    """Compressed rotated copies of ``path`` (logrotate's names), by name."""
    directory, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(
        os.path.join(directory, n)
        for n in names
        if n.startswith(base)
        and n.endswith(COMPRESSED)
        and _ROTATED.fullmatch(n[len(base) :]) is not None
    )


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
        self.save = save
        self.stop = stop
        self.wake_fd = wake_fd
        self.max_line = max_line
        self.pending_timeout = pending_timeout
        self.recheck = recheck
        self.save_every = save_every
        self.switch_after = switch_after
        self.clock = clock
        # Called with each parser now and then: a long run moves the year-inference
        # anchor (AlertParser.set_now) so yearless stamps stay right across New Year.
        self.renew = renew
        self.renew_every = renew_every
        self.last_renew = clock()
        self.cur: Cursor | None = None  # the file being read
        self.next: Cursor | None = None  # a new file at the name, read once cur is done
        self.saved: Position | None = None
        self.last_save = clock()
        self.watcher: InotifyWatcher | None = None
        self.dir_wd: int | None = None
        self.cur_wd: int | None = None
        self.next_wd: int | None = None
        self.said_unreadable: set[str] = set()
        # Rotated files written after the one being read, read before the name's file.
        # Opened when found: a rename rotation meanwhile moves names (alert.1 becomes
        # alert.2), not the files we hold.
        self.queue: list[Cursor] = []
        # (inode, device) of every file queued: read whole, so never again as the copy
        # of a truncated file (a copytruncate while start() looked for rotated files).
        self.queued: set[tuple[int, int]] = set()
        # Positional output: ``mark(position)`` goes into the output stream after the
        # alerts it covers, whenever the committed position moved (see mark()).
        self.mark_out = mark
        self.marked: tuple | None = None
        self.mark_opened = False

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
                cur.siblings = self._sibling_ids()
            return cur
        except BaseException:
            os.close(fd)
            raise

    def start(self, *, saved: Position | None, from_start: bool) -> None:
        """Choose the first file and offset: saved position, start, or end of the file."""
        if saved is not None and saved.path != self.abspath:
            self.note(f"{self.path}: saved position is for {saved.path}; ignoring it")
            saved = None
        self.saved = saved
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
                readable, compressed = rotated_since(self.path, old)
                if cur is not None:
                    readable = [p for p in readable if not _same_file(p, cur)]
                self.queue = []
                for p in readable:
                    try:
                        qc = self._open(p, p)
                    except OSError as exc:
                        self.note(f"{p}: {exc.strerror or exc}; not read")
                        continue
                    self.queue.append(qc)
                    self.queued.add((qc.ino, qc.dev))
                    self.note(f"{p}: rotated while nobody was reading; reading it too")
                for p in compressed:
                    self.note(f"{p}: rotated while nobody was reading, but compressed: not read")
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
            if self.mark_out is not None:
                self.mark()
            if self.save is not None and self.clock() - self.last_save >= self.save_every:
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

    def _rest_from_copy(self, cur: Cursor) -> None:
        """copytruncate: read what we had not read yet from the copy, if there is one.

        The copy is the rotation sibling (another inode) that starts with the bytes this
        file started with and holds, just before our read offset, the bytes we read
        last; it is read from there to its end with the same parser state.

        That includes a file not read at all yet (offset 0): its head was taken when it
        was opened, and all of it may be in the copy only. A restart that resumes in a
        rotated file opens the file at the name at once but reads it last, so a
        copytruncate in between must not cost everything written to it since.
        """
        if not cur.head or cur.fd is None:
            return
        for p in rotation_siblings(self.path):
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if (
                    (st.st_ino, st.st_dev) == (cur.ino, cur.dev)
                    or (st.st_ino, st.st_dev) in self.queued
                    or not stat.S_ISREG(st.st_mode)
                    or st.st_size < cur.read_pos
                    or os.pread(fd, len(cur.head), 0) != cur.head
                    or os.pread(fd, len(cur.recent), cur.read_pos - len(cur.recent)) != cur.recent
                ):
                    continue
                if st.st_size > cur.read_pos:
                    self.note(f"{cur.name}: copied to {p}; reading the rest of the copy")
                own, cur.fd = cur.fd, fd
                try:
                    while chunk := cur.read():
                        items = cur.feed(chunk)
                        if items:
                            self.output.emit(items, cur.name)
                finally:
                    cur.fd = own
                return
            finally:
                os.close(fd)

    def _sibling_ids(self) -> set[tuple[int, int]]:
        ids = set()
        for p in rotation_siblings(self.path):
            try:
                st = os.stat(p)
            except OSError:
                continue
            ids.add((st.st_ino, st.st_dev))
        return ids

    def _copied_before_read(self, cur: Cursor) -> bool:
        """copytruncate of a file opened empty, before its first read: read the copies.

        With no head there is nothing to recognise the copy by, so a rotation sibling
        that appeared since the file was opened (not one of ours) and that the file
        does not start with any more is taken for it. True when copies were read (the
        file is then read again from 0).
        """
        known, cur.siblings = cur.siblings or set(), None
        if cur.read_pos or cur.head or cur.fd is None:
            return False
        ours = {(c.ino, c.dev) for c in (self.cur, self.next, *self.queue) if c is not None}
        found = []
        for p in rotation_siblings(self.path):
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                continue
            st = os.fstat(fd)
            key = (st.st_ino, st.st_dev)
            head = os.pread(fd, FP_BYTES, 0)
            if (
                key in known
                or key in ours
                or key in self.queued
                or not stat.S_ISREG(st.st_mode)
                or not head
                or os.pread(cur.fd, len(head), 0) == head  # a copy of what is still here
            ):
                os.close(fd)
                continue
            found.append((st.st_mtime_ns, p, fd))
        if not found:
            return False
        for _, p, fd in sorted(found):
            self.note(f"{cur.name}: copied to {p} before it was read; reading the copy")
            own, cur.fd = cur.fd, fd
            try:
                while chunk := cur.read():
                    items = cur.feed(chunk)
                    if items:
                        self.output.emit(items, cur.name)
                items = cur.end()
                if items:
                    self.output.emit(items, cur.name)
            finally:
                cur.fd = own
                os.close(fd)
            cur.restart(self.new_parser())
        self.note(f"{cur.name}: file truncated; reading from the start")
        return True

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
            self._watch_cur()
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
        self.next_wd = self._watch_fd(nxt)
        return nxt

    def _switch(self, nxt: Cursor) -> None:
        old = self.cur
        if self.cur_wd is not None and self.watcher is not None:
            self.watcher.remove(self.cur_wd)
        self.cur_wd, self.next_wd = self.next_wd, None
        if old is not None:
            old.close()
        self.next = None
        self.cur = nxt
        self.note(f"{self.path}: file replaced (rotated); reading the new file")

    def _next_in_queue(self) -> None:
        """Go on with the oldest rotated file not read yet (start-up after rotations)."""
        nxt = self.queue.pop(0)
        if self.cur_wd is not None and self.watcher is not None:
            self.watcher.remove(self.cur_wd)
            self.cur_wd = None
        if self.cur is not None:
            self.cur.close()
        self.cur = nxt
        self._watch_cur()

    def _drop_next(self) -> None:
        if self.next is not None:
            if self.next_wd is not None and self.watcher is not None:
                self.watcher.remove(self.next_wd)
            self.next_wd = None
            self.next.close()
            self.next = None

    def _unreadable(self, path: str, exc: OSError) -> None:
        if path not in self.said_unreadable:
            self.said_unreadable.add(path)
            self.note(f"{path}: {exc.strerror or exc}")

    # -- position ----------------------------------------------------------------------

    def position(self) -> Position | None:
        cur = self.cur
        if cur is None or cur.fd is None:
            return None
        offset, lineno = cur.committed()
        return Position(
            path=self.abspath,
            inode=cur.ino,
            device=cur.dev,
            offset=offset,
            lineno=lineno,
            fp_len=cur.fp_len,
            fingerprint=cur.fp,
            size=cur.size(),
            before=bytes_before(cur.fd, offset),
        )

    def mark(self) -> None:
        """Put the committed position into the output when it moved since the last mark.

        Every alert before the position was emitted before the mark, none after it, so
        the alerts between two marks form a unit that a consumer records together with
        the closing mark; resuming at a recorded mark repeats and skips nothing. The
        first call marks even without a file (position None): the stream is positional.
        """
        if self.mark_out is None:
            return
        pos = self.position()
        key = _key(pos) if pos is not None else None
        if self.mark_opened and key == self.marked:
            return
        if pos is None and self.mark_opened:
            return
        self.mark_opened = True
        self.marked = key
        self.mark_out(pos)

    def checkpoint(self) -> None:
        """Mark and flush the output, then save the position if it moved."""
        self.mark()
        self.output.flush()
        self.last_save = self.clock()
        if self.save is None:
            return
        pos = self.position()
        if pos is None:
            return
        if self.saved is not None and _key(self.saved) == _key(pos):
            return
        self.save(pos)
        self.saved = pos

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
        self.watcher = InotifyWatcher()
        try:
            self._watch_dir()
            self._watch_cur()
            if self.next is not None and self.next_wd is None:
                self.next_wd = self._watch_fd(self.next)
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
            self.watcher.close()

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
        assert self.watcher is not None
        fds = [self.watcher.fileno()]
        if self.wake_fd is not None:
            fds.append(self.wake_fd)
        ready, _, _ = select.select(fds, [], [], timeout)
        if self.wake_fd is not None and self.wake_fd in ready:
            try:
                while os.read(self.wake_fd, 512):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
        if self.watcher.fileno() in ready:
            self.watcher.events(0)  # only to empty the queue: step() looks at the files
        if self.dir_wd is None:
            self._watch_dir()
        if self.cur is not None and self.cur_wd is None:
            self._watch_cur()

    def _watch_dir(self) -> None:
        if self.watcher is None:
            return
        self.dir_wd = self.watcher.add(os.path.dirname(self.abspath), DIR_EVENTS)

    def _watch_fd(self, cur: Cursor) -> int | None:
        if self.watcher is None or cur.fd is None:
            return None
        # Through /proc the watch is on the inode we hold open, even if the name moved on.
        return self.watcher.add(f"/proc/self/fd/{cur.fd}", FILE_EVENTS)

    def _watch_cur(self) -> None:
        if self.cur is not None and self.cur_wd is None:
            self.cur_wd = self._watch_fd(self.cur)
