"""The pipe contract: what crosses every pipe between banpipe's tools.

Version 1 (see docs/pipe-format.md): one JSON object per line, UTF-8, ``\\n``-terminated,
``"v": 1`` in every object. Unknown keys pass through every tool unchanged, so a tool
only ever adds keys to the objects it forwards.

Writers flush before their tool waits for more input: a line never sits in a buffer
while the producer is idle, yet a burst costs one write per batch, not per line.

Everything a tool writes to or reads from a pipe goes through this module: one line
splitter (:class:`Lines`), one encoder (:func:`encode`, :func:`encode_batch`) and one
decoder (:func:`loads`, :func:`decode` and :class:`PipeReader` with the reasons for a bad
line). orjson is
used when installed because it is several times faster on this hot path; ``json`` is the
fallback and writes the same bytes (bench/README.md has the figures). The validation of
an alert's keys is :mod:`banpipe.alert`'s.

A ban request (alertfilter's output line) can also be read by :data:`decode_ban`
(msgspec, when installed): the keys banctl reads, typed, without building a dict. It
accepts only a line whose every key is one the contract names, each with its usual type,
so whatever it accepts, :func:`loads` decodes to the same values; anything else raises
:data:`NotABanRequest` and the reader takes the general way (:func:`loads`). An alert
(alertfilter's input line) the same: :data:`decode_alert`, :data:`NotAnAlert`.
"""

from __future__ import annotations

import io
import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Annotated, Any, Literal

from banpipe.memo import Memo

try:  # optional speed-up, same output
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None
try:  # optional speed-up of banctl's reading, same values (decode_ban)
    import msgspec
except ImportError:  # pragma: no cover - exercised where msgspec is absent
    msgspec = None

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

MAX_LINE = 1 << 20  # a longer pipe line is garbage, not an alert

#: ``"type"`` of a position record (docs/pipe-format.md, "Positions").
POSITION = "position"


def position_record(position: dict[str, Any] | None) -> dict[str, Any]:
    """The pipe record saying: every alert read before ``position`` precedes this line.

    ``None`` opens a positional stream before any file was read.
    """
    return {"v": VERSION, "type": POSITION, "position": position}


def is_position(obj: Any) -> bool:
    """Whether a decoded pipe object is a position record (not an alert)."""
    return type(obj) is dict and obj.get("type") == POSITION and obj.get("v") == VERSION


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
# The first try of dumps, without its wrapper call: what encode_batch maps over a batch.
_plain_dumps: Callable[[Any], bytes] = orjson.dumps if orjson is not None else _json_dumps


#: Keys alertfilter adds to an alert it passes on: a ban request (docs/pipe-format.md,
#: boundary 2).
BAN_KEYS: tuple[str, ...] = ("offender", "victim", "reversed", "reason")


class NoTypedDecoder(Exception):
    """:data:`NotABanRequest` and :data:`NotAnAlert` where msgspec is absent: then
    :data:`decode_alert` raises it for every line."""


def _no_typed_decoder(raw: bytes) -> Any:
    raise NoTypedDecoder


NotABanRequest: type[Exception] = NoTypedDecoder
NotAnAlert: type[Exception] = NoTypedDecoder
decode_ban: Callable[[bytes], Any] | None = None
#: An alert line read into a Struct of :data:`ALERT_KEYS` and :data:`OPTIONAL_ALERT_KEYS`
#: (attributes, no dict), or :data:`NotAnAlert` for any other line (raised for every
#: line where msgspec is absent): alertfilter's way for the lines of the contract.
decode_alert: Callable[[bytes], Any] = _no_typed_decoder
if msgspec is not None:
    # Integers as orjson reads them exactly (a larger one is a float there: not here).
    _Int = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
    # Each key of boundary 1 with its type (banpipe.alert.KEY_TYPES; equal by
    # tests/test_alertfilter_typed.py); an optional key may be absent: None then, as
    # alert.get() says.
    _ALERT_TYPES: dict[str, Any] = {
        "v": Literal[1],
        "ts": str,
        "gid": _Int,
        "sid": _Int,
        "rev": _Int,
        "msg": str,
        "classification": str | None,
        "priority": _Int | None,
        "proto": str | None,
        "src": str | None,
        "sport": _Int | None,
        "dst": str | None,
        "dport": _Int | None,
        "action": str | None,
        "refs": list[str],
        "format": str,
    }
    _OPTIONAL_TYPES: dict[str, Any] = {
        "iface": str | None,
        "flow_id": _Int | None,
        "direction": str | None,
        "target": str | None,
    }
    _BAN_TYPES: dict[str, Any] = {
        "offender": Annotated[str, msgspec.Meta(min_length=1)],
        "victim": str | None,
        "reversed": bool,
        "reason": str,
    }

    def _typed(name: str, types: dict[str, Any], optional: dict[str, Any]) -> Any:
        """A Struct of exactly these keys: every one declared, so every value is read
        and checked (UTF-8, escapes, number ranges) as :func:`loads` checks it, and a
        line with any other key is refused. Whatever it accepts, :func:`loads` reads
        to the same values (tests/test_intake.py, tests/test_alertfilter_typed.py)."""
        fields = [*types.items(), *((k, t, None) for k, t in optional.items())]
        return msgspec.defstruct(name, fields, gc=False, forbid_unknown_fields=True, kw_only=True)

    #: A ban request's keys (ALERT_KEYS, OPTIONAL_ALERT_KEYS, BAN_KEYS) with the types
    #: banctl needs: both ends present, refs possibly null.
    BanRequest = _typed(
        "BanRequest",
        {**_ALERT_TYPES, "src": str, "dst": str, "refs": list[str] | None, **_BAN_TYPES},
        _OPTIONAL_TYPES,
    )
    #: An alert's keys, boundary 1 (ALERT_KEYS, OPTIONAL_ALERT_KEYS).
    Alert = _typed("Alert", _ALERT_TYPES, _OPTIONAL_TYPES)

    decode_ban = msgspec.json.Decoder(BanRequest).decode
    decode_alert = msgspec.json.Decoder(Alert).decode
    NotABanRequest = NotAnAlert = msgspec.DecodeError  # also its ValidationError


def decoded_keys(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` as the very str objects :func:`loads` gives a decoded object's keys.

    orjson returns the same key object for a key on every line; a lookup with that
    object finds the key by identity instead of comparing strings, which takes about
    two fifths off each lookup in a decoded alert (bench/README.md, issue 12). Equal
    strings either way: only the speed depends on it.
    """
    own = {key: key for key in loads(dumps(dict.fromkeys(names)))}
    return tuple(own[name] for name in names)


def encode(obj: dict[str, Any]) -> bytes:
    """One pipe line (with its newline) for ``obj``."""
    try:
        # dumps' first try without its wrapper's call: one Python call a line less
        # on alertfilter's hot path (bench/README.md, issue 12)
        return _plain_dumps(obj) + b"\n"
    except TypeError:
        return dumps(obj) + b"\n"


def encode_batch(objs: list[dict[str, Any]]) -> bytes:
    """The pipe lines for ``objs`` as one write: the bytes of :func:`encode` per object.

    A batch costs one join instead of a call per object (about a tenth of fasttail's
    time, bench/README.md); a batch with an odd pass-through key takes the slow way.
    """
    if not objs:
        return b""
    try:
        return b"\n".join(map(_plain_dumps, objs)) + b"\n"
    except TypeError:
        return b"\n".join(map(dumps, objs)) + b"\n"


class BanRequests:
    """Boundary 2's lines: an alert as read, plus :data:`BAN_KEYS`.

    ``line(raw, alert, offender, victim, reversed_, reason)`` splices the four members
    into ``raw`` (the line ``alert`` was decoded from) before its closing brace instead
    of encoding the whole alert again (a tenth of alertfilter's instructions,
    bench/README.md, issue 12): the alert's own keys stay byte for byte as read, which
    is what the contract asks ("the alert object, unchanged, plus"), and decoding the
    line gives what :func:`encode` of the alert with the keys set would. A line that does
    not end in ``}`` (trailing blanks, a CR) or already holds one of the keys takes
    :func:`encode`, which replaces a value in place as a dict does. ``alert`` is None for
    a line read by :data:`decode_alert`, which refuses every key of :data:`BAN_KEYS`.

    The JSON texts of the addresses and reasons are kept in a bounded memo: a flood
    repeats the same few of each, as the same str objects whose hash is kept.
    """

    __slots__ = ("_texts",)

    def __init__(self, size: int = 1 << 15) -> None:
        self._texts = Memo(size, _kept_json)

    def line(
        self,
        raw: bytes,
        alert: dict[str, Any] | None,
        offender: str,
        victim: str | None,
        reversed_: bool,
        reason: str,
    ) -> bytes:
        if raw[-1:] != b"}" or (alert is not None and not alert.keys().isdisjoint(BAN_KEYS)):
            if alert is None:  # read by decode_alert: what loads reads, as a dict
                alert = loads(raw)
            alert.update(zip(BAN_KEYS, (offender, victim, reversed_, reason), strict=True))
            return encode(alert)
        texts = self._texts
        o = texts.get(offender) or texts.lookup(offender)
        v = b"null" if victim is None else texts.get(victim) or texts.lookup(victim)
        r = texts.get(reason) or texts.lookup(reason)
        return b"".join(
            (
                raw[:-1],
                b',"offender":',
                o,
                b',"victim":',
                v,
                b',"reversed":true,"reason":' if reversed_ else b',"reversed":false,"reason":',
                r,
                b"}\n",
            )
        )


def _kept_json(value: Any) -> bytes:
    """``dumps(value)`` to keep in a memo: orjson's bytes hold on to its whole buffer
    (about 4 KiB for an address), a copy holds just the text."""
    return bytes(memoryview(dumps(value)))


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


def undecodable(raw: bytes) -> str:
    """Why a line that :func:`loads` refused is no JSON: the reason a reader reports."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not valid UTF-8"
    return "not JSON"


def decode(raw: bytes, lineno: int) -> dict[str, Any] | PipeError | None:
    """Pipe line number ``lineno`` (without its newline): its object, a PipeError saying
    why it is none, or None for a blank line (it carries nothing; not worth an error)."""
    if len(raw) > MAX_LINE:
        return PipeError(lineno, f"line longer than {MAX_LINE} bytes")
    try:
        value = loads(raw)
    except ValueError:
        return PipeError(lineno, undecodable(raw)) if raw.strip() else None
    problem = check_object(value)
    return PipeError(lineno, problem) if problem else value


class Lines:
    """The one pipe line splitter: feed chunks split anywhere, take complete lines.

    ``feed(chunk)`` and ``finish()`` (at end of input: a last line without newline)
    return ``(lines, first)``: the lines without their newlines, and the number of lines
    before them (so line N of the input is ``first + i + 1``). A runaway line is kept
    only up to ``MAX_LINE + 1`` bytes, enough to be reported as too long.
    """

    __slots__ = ("_tail", "count")

    def __init__(self) -> None:
        self._tail = b""
        self.count = 0

    def feed(self, chunk: bytes) -> tuple[list[bytes], int]:
        data = self._tail + chunk if self._tail else chunk
        lines = data.split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > MAX_LINE:
            self._tail = self._tail[: MAX_LINE + 1]  # reported as too long; no hoarding
        first = self.count
        self.count += len(lines)
        return lines, first

    def finish(self) -> tuple[list[bytes], int]:
        lines, self._tail = ([self._tail] if self._tail else []), b""
        first = self.count
        self.count += len(lines)
        return lines, first


class PipeReader:
    """Incremental reader for select()-driven tools: feed raw bytes, take objects.

    ``feed(chunk)`` accepts any split of the input; ``objects()`` yields
    ``(lineno, dict | PipeError)`` for every complete line (blank lines are skipped);
    ``finish()`` handles a last line without newline at end of input.
    """

    def __init__(self) -> None:
        self._lines = Lines()
        self._queue: deque[bytes] = deque()
        self._lineno = 0  # lines handed out so far

    def feed(self, chunk: bytes) -> None:
        self._queue.extend(self._lines.feed(chunk)[0])

    def finish(self) -> None:
        self._queue.extend(self._lines.finish()[0])

    def objects(self) -> Iterator[tuple[int, dict[str, Any] | PipeError]]:
        """The objects of the complete lines fed so far; a line is taken off the queue
        as it is handed out, so a consumer may stop early and ask again later."""
        queue = self._queue
        while queue:
            raw = queue.popleft()
            self._lineno += 1
            value = decode(raw, self._lineno)
            if value is not None:
                yield self._lineno, value


class Writer:
    """Pipe writer: :func:`encode` per object; ``flush()`` before waiting for input."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.count = 0

    def write(self, obj: dict[str, Any]) -> None:
        self._stream.write(encode(obj))
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
