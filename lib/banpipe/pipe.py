"""The pipe contract: what crosses every pipe between banpipe's tools.

Version 1 (see docs/pipe-format.md): one JSON object per line, UTF-8, ``\\n``-terminated,
``"v": 1`` in every object. Unknown keys pass through every tool unchanged, so a tool
only ever adds keys to the objects it forwards.

Writers flush before their tool waits for more input: a line never sits in a buffer
while the producer is idle, yet a burst costs one write per batch, not per line.

Encoding and decoding go through jsonlines; orjson, when installed, is plugged into its
``dumps``/``loads`` hooks because it is several times faster on this hot path
(bench/README.md has the figures).
"""

from __future__ import annotations

import io
import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import jsonlines

try:  # optional speed-up, same output
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None

VERSION = 1

#: Keys of an alert as fasttail writes it, in output order.
ALERT_KEYS: tuple[str, ...] = (
    "v",
    "ts",
    "gid",
    "sid",
    "rev",
    "msg",
    "classification",
    "priority",
    "proto",
    "src",
    "sport",
    "dst",
    "dport",
    "action",
    "refs",
    "format",
)

#: Keys a producer adds to an alert when its input has them, after ALERT_KEYS in this
#: order (fasttail from Suricata EVE; docs/pipe-format.md): optional, no version change.
OPTIONAL_ALERT_KEYS: tuple[str, ...] = ("iface", "flow_id", "direction", "target")

#: Keys alertfilter adds to an alert it forwards.
BAN_KEYS: tuple[str, ...] = ("offender", "victim", "reversed", "reason")

MAX_LINE = 1 << 20  # a longer pipe line is garbage, not an alert


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _orjson_dumps(obj: Any) -> bytes:
    try:
        # Plain orjson is about 3x faster than with OPT_NON_STR_KEYS (bench/README.md,
        # fasttail); the bytes are the same whenever every key is a string.
        return orjson.dumps(obj)
    except TypeError:
        # OPT_NON_STR_KEYS keeps parity with json for odd pass-through keys.
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


dumps: Callable[[Any], bytes] = _orjson_dumps if orjson is not None else _json_dumps
loads: Callable[[bytes | str], Any] = orjson.loads if orjson is not None else json.loads


def encode(obj: dict[str, Any]) -> bytes:
    """One pipe line (with its newline) for ``obj``."""
    return dumps(obj) + b"\n"


@dataclass(frozen=True)
class PipeError:
    """A pipe line that is not a version-1 JSON object; the reader skips it."""

    lineno: int
    reason: str


def check_object(value: Any) -> str | None:
    """Why ``value`` is not a valid v1 pipe object, or None when it is."""
    if not isinstance(value, dict):
        return "not a JSON object"
    version = value.get("v")
    if version != VERSION:
        return f"unsupported pipe version {version!r} (expected {VERSION})"
    return None


class _Feed:
    """A resumable line iterator: jsonlines' Reader pulls from it, we push into it."""

    def __init__(self) -> None:
        self.lines: deque[bytes] = deque()

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> bytes:
        if self.lines:
            return self.lines.popleft()
        raise StopIteration


class PipeReader:
    """Incremental reader for select()-driven tools: feed raw bytes, take objects.

    ``feed(chunk)`` accepts any split of the input; ``objects()`` yields
    ``(lineno, dict | PipeError)`` for every complete line; ``finish()`` handles a last
    line without newline at end of input.
    """

    def __init__(self) -> None:
        self._feed = _Feed()
        self._reader = jsonlines.Reader(self._feed, loads=loads)
        self._tail = b""
        self._lineno = 0  # lines handed to jsonlines so far
        self._too_long: set[int] = set()

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        lines = data.split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > MAX_LINE:
            # Keep counting lines but do not hoard memory for a runaway line.
            self._tail = b"x"
        self._feed.lines.extend(lines)

    def finish(self) -> None:
        if self._tail:
            self._feed.lines.append(self._tail)
            self._tail = b""

    def objects(self) -> Iterator[tuple[int, dict[str, Any] | PipeError]]:
        read = self._reader.read
        while self._feed.lines:
            raw = self._feed.lines[0]
            self._lineno += 1
            lineno = self._lineno
            if not raw.strip():
                self._feed.lines.popleft()
                continue  # blank lines carry nothing; not worth an error
            if len(raw) > MAX_LINE:
                self._feed.lines.popleft()
                yield lineno, PipeError(lineno, f"line longer than {MAX_LINE} bytes")
                continue
            try:
                value = read(allow_none=True)
            except jsonlines.InvalidLineError as exc:
                yield lineno, PipeError(lineno, _short_reason(exc))
                continue
            problem = check_object(value)
            yield lineno, (PipeError(lineno, problem) if problem else value)


def _short_reason(exc: jsonlines.InvalidLineError) -> str:
    text = str(exc).split(":", 1)[0]
    if "utf-8" in text:
        return "not valid UTF-8"
    return "not JSON"


def read_objects(
    stream: IO[bytes], chunk_size: int = 1 << 16
) -> Iterator[tuple[int, dict[str, Any] | PipeError]]:
    """Blocking convenience: every object of a binary stream until EOF."""
    reader = PipeReader()
    read = getattr(stream, "read1", stream.read)
    while True:
        chunk = read(chunk_size)
        if not chunk:
            break
        reader.feed(chunk)
        yield from reader.objects()
    reader.finish()
    yield from reader.objects()


class Writer:
    """Pipe writer: jsonlines with our encoder; ``flush()`` before waiting for input."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._writer = jsonlines.Writer(stream, dumps=dumps, flush=False)
        self.count = 0

    def write(self, obj: dict[str, Any]) -> None:
        self._writer.write(obj)
        self.count += 1

    def flush(self) -> None:
        self._stream.flush()


def binary_stream(stream: Any) -> IO[bytes]:
    """The byte stream under a text stream (sys.stdin), or the stream itself."""
    return getattr(stream, "buffer", stream)


def binary_output(stream: Any) -> IO[bytes]:
    """A buffered byte stream for pipe output; the tools flush it before they wait.

    Under PYTHONUNBUFFERED (set on some machines, and by some service managers) the
    byte stream under sys.stdout is raw, which would cost one write() per line; a
    buffer of our own on the same descriptor (not closing it) keeps batches batched.
    """
    out = binary_stream(stream)
    if isinstance(out, io.RawIOBase):
        raw = io.FileIO(out.fileno(), "wb", closefd=False)
        return io.BufferedWriter(raw, 1 << 16)
    return out
