"""fasttail: follow a Snort/Suricata alert file, write one JSON line per alert.

    fasttail [--format F] [--from-start] [--once] [--state FILE | --ledger FILE] [--year YYYY]
             [--config FILE] [--debug] FILE

Output is the pipe contract (banpipe.pipe, docs/pipe-format.md): one JSON object per
line, flushed whenever fasttail is about to wait, so a line never sits in a buffer while
fasttail is idle; a burst is written in batches.

Where it starts: at the end of FILE (like ``tail -F -n 0``); ``--from-start`` reads
what is already there first; ``--once`` reads to the current end and exits; with
``--state`` a saved position wins over both. FILE ``-`` reads standard input to its end.
Starting "at the end" means after the last complete line, so an alert being written at
that moment is read whole. With ``--once`` an unterminated last line counts as a line
(files without a final newline are common) and an open alert_full block is completed.

``--ledger LEDGER``: the resume point is what ``banctl apply`` durably recorded, not what
fasttail wrote. fasttail reads the position banctl recorded last for FILE from the
ledger (read only) and starts there; its output carries position records after the
alerts they cover (docs/pipe-format.md, "Positions"), which banctl records in the same
transaction as those alerts' violations. A crash of any stage at any moment then loses
no alert and records none twice (bench/soak.py). fasttail itself saves nothing.

On resume (either option) every rotated copy written since the saved position is read,
oldest first, before FILE; compressed ones are reported as not read.

``--state`` guarantee (also in bench/README.md):
  * The saved position is the first byte not yet turned into output: never inside a
    partial line or a pending alert_full block. It is handed to the state writer only
    after the alerts before it were written and flushed to stdout, and written atomically
    and durably (banpipe.statefile: temporary file, fsync, rename, fsync of the directory).
  * When: at start-up, whenever fasttail is about to wait for new data, at most every
    0.25 s during a long burst, and on exit. In follow mode a background thread does the
    writing (newest position wins), so an fsync never delays an alert.
  * SIGTERM/SIGINT, or --once reaching the end: flush, save, exit 0. A restart then
    repeats nothing and loses nothing, also across rotation, truncation and rotation
    while fasttail was stopped (the old file is found among its rotation siblings by
    inode, then by a fingerprint of its first 256 bytes and of the 256 bytes before the
    saved offset, and drained from there before the new file is read from its start).
  * SIGKILL, OOM kill, power cut: nothing is lost; the alerts written since the last
    saved position are written again after the restart (at least once). That is at
    most the alerts of the last 0.25 s of a continuous burst plus one batch, and with
    alerts arriving in pauses usually just the last batch (the alerts read in one go).
    The reader may also see the last line before the kill cut short.
  * Not covered: alerts in a file deleted (not rotated) while fasttail was stopped; a
    closed stdout (SIGPIPE) ends fasttail without a last save.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

from . import cli, pipe, progress
from .config import ConfigError, load_config
from .cursor import CHUNK, Cursor
from .follow import Follower
from .parsers import FORMATS, REASONS, AlertParser, Encoded
from .positions import Position
from .progress import Progress

TOOL = "fasttail"
METRICS_EVERY = 15.0  # seconds between textfile writes while alerts flow
MAX_LINE = 65536


def build_parser() -> cli.ArgumentParser:
    ap = cli.ArgumentParser(
        prog=TOOL,
        description="Follow a Snort/Suricata alert file and write one JSON line per alert.",
        epilog="Exit codes: 0 ok, 64 usage, 66 FILE missing (--once) or unreadable, "
        "70 internal error, 73 cannot write the state file, 78 bad config.",
    )
    ap.add_argument(
        "--format",
        choices=FORMATS,
        help="accept only this format (default: detect per line/block)",
    )
    ap.add_argument("--from-start", action="store_true", help="read what FILE already holds first")
    ap.add_argument(
        "--once",
        action="store_true",
        help="read FILE from the start (or the saved position) to its end, then exit",
    )
    ap.add_argument(
        "--state",
        metavar="FILE",
        help="save the read position here and resume from it (survives restarts and rotation)",
    )
    ap.add_argument(
        "--ledger",
        metavar="FILE",
        help="resume from the position `banctl apply` recorded in its ledger FILE and put "
        "position records into the output (exactly once from FILE to the ledger)",
    )
    ap.add_argument("--year", type=int, metavar="YYYY", help="year for time stamps that carry none")
    ap.add_argument(
        "--metrics",
        metavar="FILE",
        help="write counters to this Prometheus textfile (e.g. DIR/banpipe-fasttail.prom)",
    )
    ap.add_argument(
        "--config",
        metavar="FILE",
        help="banpipe config ([fasttail] relay_tags; default /etc/banpipe/banpipe.toml if present)",
    )
    ap.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    ap.add_argument("file", metavar="FILE", help="alert file to follow ('-': standard input)")
    return ap


class JsonOutput:
    """Alerts to the pipe, parse errors to stderr (counted by reason)."""

    def __init__(
        self, stream: IO[bytes], reporter: cli.Reporter, metrics_path: str | None = None
    ) -> None:
        self.stream = stream
        self.reporter = reporter
        self.count = 0
        self.skipped: Counter[str] = Counter()
        self.metrics_path = metrics_path
        self.throttle: Any = None
        if metrics_path:
            # Imported only with --metrics (metrics and statefile: 2% of the start-up).
            from . import metrics

            self.throttle = metrics.Throttle(METRICS_EVERY)
        self.on_batch: Callable[[], None] | None = None  # progress display, if any

    def emit(self, items: list, name: str) -> None:
        """Write the alerts of ``items`` as one batch, report its errors.

        ``items`` are a parser's results (AlertParser with ``encoded``): alert dicts,
        Encoded pipe lines already made, and ParseErrors.
        """
        out: list[bytes] = []
        alerts: list[dict] = []  # consecutive dicts, encoded together
        n = 0
        errors = []
        for x in items:
            t = type(x)
            if t is Encoded:
                if alerts:
                    out.append(pipe.encode_batch(alerts))
                    n += len(alerts)
                    alerts = []
                out.append(x.data)
                n += x.alerts
            elif t is dict:
                alerts.append(x)
            else:
                errors.append(x)
        if alerts:
            out.append(pipe.encode_batch(alerts))
            n += len(alerts)
        if n:
            self.stream.write(out[0] if len(out) == 1 else b"".join(out))  # one write
            self.count += n
            if self.on_batch is not None:
                self.on_batch()
        for x in errors:
            kind = x.reason.split(":", 1)[0]
            self.skipped[kind] += 1
            self.reporter.say(f"{name}:{x.lineno}", x.reason, level=cli.WARNING)
        if self.throttle is not None and self.throttle.due():
            self.write_metrics()

    def write_metrics(self) -> None:
        """The counters to ``--metrics FILE`` (atomically); a failure is a warning."""
        if not self.metrics_path:
            return
        from . import metrics

        families = [
            metrics.counter(
                "banpipe_fasttail_alerts_read_total", "Alerts read and emitted.", self.count
            ),
            metrics.by_label(
                "banpipe_fasttail_parse_errors_total",
                "counter",
                "Lines skipped as not alerts, by reason.",
                "reason",
                {**dict.fromkeys(REASONS, 0), **self.skipped},
            ),
        ]
        try:
            metrics.write_textfile(self.metrics_path, families)
        except OSError as exc:
            self.reporter.error(self.metrics_path, f"cannot write metrics: {exc}", "warning")

    def position(self, pos: Position | None) -> None:
        """A position record after the alerts it covers (docs/pipe-format.md)."""
        record = pipe.position_record(pos.to_json() if pos is not None else None)
        self.stream.write(pipe.encode(record))

    def flush(self) -> None:
        self.stream.flush()

    def summary(self, name: str) -> None:
        self.write_metrics()
        n = sum(self.skipped.values())
        if n:
            what = cli.format_counts(self.skipped, REASONS)
            lines = "line" if n == 1 else "lines"
            self.reporter.say(name, f"{n} {lines} skipped ({what})", level=cli.WARNING)


def _check_args(ap: cli.ArgumentParser) -> Callable[[Any], None]:
    def check(args: Any) -> None:
        if args.year is not None and not 1 <= args.year <= 9999:
            ap.error(f"argument --year: {args.year} is not a year")
        for opt, given in (("--state", args.state), ("--ledger", args.ledger)):
            if args.file == "-" and given:
                ap.error(f"{opt} needs a file, not standard input")
        if args.state and args.ledger:
            ap.error("--state and --ledger exclude each other")

    return check


def load_state(path: str, reporter: cli.Reporter) -> Position | None:
    from . import statefile

    try:
        return Position.from_json(statefile.read_json(path))
    except (FileNotFoundError, NotADirectoryError):
        return None  # first run (an unusable path is reported when writing)
    except OSError as exc:
        raise cli.ToolError(f"{path}: cannot read state: {exc.strerror}", cli.EX_CANTCREAT)
    except ValueError as exc:
        reporter.say(path, f"not a saved position ({exc}); starting afresh", level=cli.WARNING)
        return None


def load_recorded(ledger: str, followed: str, reporter: cli.Reporter) -> Position | None:
    """The position banctl recorded last for ``followed`` in ``ledger``, if any."""
    # Imported here: the ledger and sqlite3 are a tenth of fasttail's start-up, and
    # only --ledger reads them.
    from .ledger import LedgerError, resume_position

    try:
        text = resume_position(ledger, os.path.abspath(followed))
    except LedgerError as exc:
        raise cli.ToolError(f"cannot read the recorded position: {exc}", cli.EX_NOINPUT)
    if text is None:
        return None
    try:
        return Position.from_json(pipe.loads(text))
    except ValueError as exc:
        reporter.say(ledger, f"not a recorded position ({exc}); starting afresh")
        return None


def main(
    argv: list[str] | None = None,
    stdin: IO[Any] | None = None,
    stdout: IO[Any] | None = None,
    stderr: IO[str] | None = None,
    *,
    clock: cli.Clock = time.time,
) -> int:
    def now() -> datetime:  # the parsers' year anchor: local time, like the alerts' stamps
        return datetime.fromtimestamp(clock())

    real = stdout is None
    in_, out, err = cli.resolve_streams(stdin, stdout, stderr)
    ap = build_parser()
    args, code = cli.parse_args(ap, argv, out, err, check=_check_args(ap))
    if args is None:
        return code
    if real:
        cli.restore_sigpipe()
    reporter = cli.Reporter(TOOL, err)
    output = JsonOutput(pipe.binary_output(out), reporter, args.metrics)
    stop = cli.StopFlag()

    relay_tags: tuple[str, ...] = ()

    def new_parser() -> AlertParser:
        return AlertParser(
            now=now(),
            year=args.year,
            force=args.format,
            max_line=MAX_LINE,
            relay_tags=relay_tags,
            encoded=True,
        )

    def body() -> int:
        nonlocal relay_tags
        try:
            relay_tags = load_config(args.config).fasttail.relay_tags
        except ConfigError as exc:
            raise cli.ToolError(str(exc), cli.EX_CONFIG) from None
        with cli.Signals(stop) as signals:
            if args.file == "-":
                _read_stream(pipe.binary_stream(in_), new_parser(), output, stop)
                output.flush()
            else:
                _follow(args, now, new_parser, output, reporter, stop, signals.fd)
        output.summary("<stdin>" if args.file == "-" else args.file)
        return cli.EX_OK

    return cli.run_tool(TOOL, body, debug=args.debug, stderr=err)


def _read_stream(stream: IO[bytes], parser: AlertParser, output: JsonOutput, stop: Any) -> None:
    cursor = Cursor(parser, name="<stdin>", max_line=MAX_LINE)
    read = getattr(stream, "read1", stream.read)
    while not stop.stop:
        chunk = read(CHUNK)
        if not chunk:
            output.emit(cursor.end(), cursor.name)
            break
        items = cursor.feed(chunk)
        if items:
            output.emit(items, cursor.name)


def _follow(
    args: Any,
    now: Callable[[], datetime],
    new_parser: Callable[[], AlertParser],
    output: JsonOutput,
    reporter: cli.Reporter,
    stop: cli.StopFlag,
    wake_fd: int | None,
) -> None:
    state = args.state
    saver = StateSaver(state) if state else None
    saved = load_state(state, reporter) if state else None
    if args.ledger:
        saved = load_recorded(args.ledger, args.file, reporter)
    follower = Follower(
        args.file,
        new_parser=new_parser,
        output=output,
        note=lambda text: reporter.say(None, text),
        save=saver,
        stop=lambda: stop.stop,
        wake_fd=wake_fd,
        max_line=MAX_LINE,
        renew=lambda parser: parser.set_now(now()),
        mark=output.position if args.ledger else None,
    )
    try:
        follower.start(saved=saved, from_start=args.from_start or args.once)
    except OSError as exc:
        raise cli.ToolError(f"{args.file}: {exc.strerror or exc}", cli.EX_NOINPUT)
    if args.once and follower.cur is None:
        raise cli.ToolError(f"{args.file}: No such file or directory", cli.EX_NOINPUT)
    if saver is not None:
        if follower.cur is not None:
            follower.checkpoint()  # written at once: fails early (73) if it cannot be
        elif not os.access(os.path.dirname(os.path.abspath(state)) or ".", os.W_OK):
            raise cli.ToolError(f"{state}: cannot write state: Permission denied", 73)
    follower.checkpoint()  # positional output opens with the position it starts from
    if args.once:
        shown = _progress(follower, output, reporter.stream)
        try:
            follower.run_once()
        finally:
            if shown is not None:
                shown.clear()
        return
    if saver is not None:
        saver.start()
    try:
        follower.run()
    finally:
        if saver is not None:
            saver.close()


def _progress(follower: Follower, output: JsonOutput, stream: IO[str]) -> Progress | None:
    """Progress and rate of a ``--once`` replay on stderr, when that is a terminal."""
    cur = follower.cur
    if cur is None or cur.fd is None or not progress.wanted(stream):
        return None
    total = os.fstat(cur.fd).st_size
    shown = Progress(TOOL, stream, total)

    def update() -> None:
        now = follower.cur
        shown.update(now.read_pos if now is not None else total, output.count)

    output.on_batch = update
    return shown


class StateSaver:
    """Writes positions to the state file; in the background once ``start()`` ran.

    The follower hands over a position only after flushing stdout, so any position
    written is covered by delivered output, whoever writes it. In follow mode a thread
    does the writing, so an fsync (milliseconds, more on a busy disk) never delays the
    next alert; only the newest waiting position is written. ``close()`` writes what is
    still waiting before returning, so a stop by SIGTERM/SIGINT saves the last position.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.cond = threading.Condition()
        self.waiting: Position | None = None
        self.error: cli.ToolError | None = None
        self.thread: threading.Thread | None = None
        self.closing = False

    def write(self, pos: Position) -> None:
        from . import statefile

        try:
            statefile.write_json_atomic(self.path, pos.to_json())
        except OSError as exc:
            raise cli.ToolError(
                f"{self.path}: cannot write state: {exc.strerror or exc}", cli.EX_CANTCREAT
            )

    def __call__(self, pos: Position) -> None:
        if self.error is not None:
            raise self.error
        if self.thread is None:
            self.write(pos)
            return
        with self.cond:
            self.waiting = pos
            self.cond.notify()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="fasttail-state", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.waiting is None and not self.closing:
                    self.cond.wait()
                pos, self.waiting = self.waiting, None
                if pos is None:
                    return
            try:
                self.write(pos)
            except cli.ToolError as exc:
                self.error = exc
                return

    def close(self) -> None:
        """Stop the thread after it wrote the last position; raise a write error."""
        if self.thread is not None:
            with self.cond:
                self.closing = True
                self.cond.notify()
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise self.error
        if self.waiting is not None:  # handed over after the thread stopped
            pos, self.waiting = self.waiting, None
            self.write(pos)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
