"""One followed file's bytes through a parser, with the committed offset.

``LineFeed`` is the pure reading logic of banpipe.follow for one file: bytes in (any
split), parser results out. It splits lines itself, keeps an unterminated last line
until its newline arrives, caps a runaway line at ``max_line`` bytes, and knows the
*committed* offset: the first byte not yet turned into emitted output (never inside a
pending alert_full block or a partial line), which is what a saved position holds
(banpipe.positions). ``Cursor`` is a LineFeed on an open file (its reads, identity and
fingerprint).
"""

from __future__ import annotations

import hashlib
import os
from itertools import chain, count
from typing import Protocol

from .positions import FP_BYTES

# Bytes per read: a burst is parsed and written in batches of about 170 alerts. Each read
# costs about 60,000 instructions besides its lines (the follower's checks, the batch's
# lists, joins and writes): 1 << 15 takes 0.25k instructions a line less than 1 << 14
# and makes as few page faults. When alerts were dicts, bigger reads were slower: each
# batch's garbage outgrew pymalloc's arenas, which were unmapped and mapped again every
# batch (1 << 16: ~1 page fault per alert, +50% system time; see bench/README.md).
CHUNK = 1 << 15
HEADER_B = b"[**] ["  # an alert_full block header starts with this


class Parser(Protocol):
    last_line: int  # after feed_text: the number of the text's last line

    def feed(self, line: str, lineno: int) -> list: ...
    def feed_text(self, text: str, first: int) -> list: ...
    def flush(self) -> list: ...
    def pending(self) -> bool: ...


class LineFeed:
    """Bytes of one file through a parser, with the committed offset and line number.

    ``feed(chunk)`` takes the next bytes of the file (any split) and returns the parser's
    results (alert dicts and ParseErrors) for every complete line. ``end()`` is the end of
    the file for good (rotated away, or ``--once``): an unterminated last line counts as a
    line and an open block is completed. ``flush_block()`` completes an open block only.
    Pure: no file is touched (``Cursor`` adds the file).
    """

    def __init__(
        self, parser: Parser, *, name: str, offset: int = 0, lineno: int = 0, max_line: int = 65536
    ) -> None:
        self.parser = parser
        self.name = name
        self.max_line = max_line
        self.read_pos = offset  # bytes of the file consumed by feed()
        self.lineno = lineno  # complete lines fed to the parser
        self.partial = b""  # unterminated last line, at most max_line + 1 bytes kept
        self.partial_len = 0  # its true length (bytes beyond the cap are dropped)
        # Start of the open alert_full block (offset, line count before it).
        self.block_pos = offset
        self.block_lineno = lineno
        # The last bytes fed (at most FP_BYTES): where a copy of this file must agree
        # with it before its rest is read (copytruncate).
        self.recent = b""

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
        first = self.lineno + 1
        padded = bool(dropped)
        lines: list[str] | None = None
        # Lines longer than max_line *bytes* are too long, however they arrived (whole in
        # one chunk or cut off in the partial buffer): padded so the parser says so.
        # Only non-ASCII text can be longer in bytes than in characters, and only when
        # the batch itself is longer than max_line bytes (a read is a quarter of that).
        if dropped or (len(data) > self.max_line and len(text) != len(data)):
            lines = text.split("\n")
            if dropped:
                lines[0] = self._pad(lines[0])
            limit = self.max_line
            for i, ln in enumerate(lines):
                if (
                    limit // 4 < len(ln) <= limit
                    and (i or not dropped)
                    and len(ln.encode("utf-8", "surrogateescape")) > limit
                ):
                    lines[i] = self._pad(ln)
                    padded = True
        if not data.startswith(HEADER_B) and b"\n" + HEADER_B not in data:
            # Fast path (alert_fast and friends): no block can open in this batch, and
            # the parser takes the text whole (one scan instead of a call per line) and
            # counts its lines (a count here cost 5% of an EVE record).
            if not padded:
                out = self.parser.feed_text(text, first)
                self.lineno = self.parser.last_line
                return out
            self.lineno += len(lines)  # type: ignore[arg-type]
            return list(chain.from_iterable(map(self.parser.feed, lines, count(first))))
        self.lineno += text.count("\n") + 1
        if lines is None:
            lines = text.split("\n")
        feed = self.parser.feed
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


class Cursor(LineFeed):
    """A ``LineFeed`` on an open file: reading it at the offset, its identity (inode,
    device) and fingerprint (its first bytes), and restarting it after a truncation."""

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
        super().__init__(parser, name=name, offset=offset, lineno=lineno, max_line=max_line)
        self.fd = fd
        self.ino = self.dev = 0
        # The file's first bytes as we read them (at most FP_BYTES): compared with the
        # file now to notice copytruncate, hashed into the saved fingerprint.
        self.head = b""
        self._fp: tuple[bytes, str] = (b"", hashlib.sha256(b"").hexdigest())
        self.last_data = 0.0  # Follower.clock() at the last non-empty read
        # Opened empty: the rotation siblings there were then, (inode, device). A sibling
        # that appears before our first read may be a copytruncate copy (Follower).
        self.siblings: set[tuple[int, int]] | None = None
        if fd is not None:
            st = os.fstat(fd)
            self.ino, self.dev = st.st_ino, st.st_dev
            self.head = os.pread(fd, FP_BYTES, 0)

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
