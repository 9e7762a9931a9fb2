"""alertfilter: pass on only the alerts that should lead to a ban, each saying whom to ban.

    fasttail /var/log/snort/alert | alertfilter | banctl apply
    fasttail --once alert | alertfilter --dry-run --explain

Reads pipe-contract alert objects (JSON lines, ``"v": 1``) from stdin or FILE and writes
each alert that leads to a ban unchanged (unknown keys included, in order) plus
``offender``, ``victim``, ``reversed`` and ``reason``; the decision itself is
:func:`banpipe.rules.decide`, applied per alert by :class:`banpipe.judge.Filter`. This
module is the command line and the read loop.

``--dry-run`` writes a readable line per ban instead::

    BAN 203.0.113.7  1:2003:8 "MS-SQL Worm propagation attempt" prio 2 -> 198.51.100.8

and ``--explain`` (implies ``--dry-run``) also one line per skipped alert::

    skip 10.1.2.3: whitelisted 10.0.0.0/8

Summary at the end (EOF, SIGTERM, SIGINT): counts per decision kind, ``summary: 7
alerts: 2 ban, 1 ignored, ...; 1 bad input line``. In JSON mode it goes to stderr
(prefixed ``alertfilter:``) so stdout stays pure JSON; in dry-run mode it is the last
line of the human report on stdout.

Live reload: the config file, the whitelist files and the wan_state file are watched
with inotify in the same select() loop as the input; SIGHUP reloads everything. A reload
takes effect for the next line read. A broken new config (or a whitelist file it names
that cannot be read) is reported and the previous configuration kept; an unreadable
whitelist file or WAN state file keeps its previous content.

Exit codes: 0 (EOF or SIGTERM/SIGINT), 64 usage, 66 input file missing, 78 config
(also a whitelist file or WAN state file unusable at start).
"""

from __future__ import annotations

import os
import select
import sys
from typing import IO, Any

from banpipe import metrics, pipe
from banpipe.cli import (
    EX_IOERR,
    EX_NOINPUT,
    EX_OK,
    ArgumentParser,
    Reporter,
    Signals,
    ToolError,
    add_common_arguments,
    fileno,
    parse_args,
    resolve_streams,
    restore_sigpipe,
    run_tool,
)
from banpipe.judge import Filter, Loader, nothing_ours_hint
from banpipe.rules import K_NOT_OURS

TOOL = "alertfilter"
CHUNK = 1 << 16


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=TOOL,
        description="Pass on only the alerts (JSON lines) that should lead to a ban.",
        epilog=(
            "Summary: stderr in JSON mode, last stdout line with --dry-run. "
            "Exit codes: 0 ok, 64 usage, 66 no input file, 78 config."
        ),
    )
    parser.add_argument(
        "input", nargs="?", metavar="FILE", help="alert JSON lines (default: stdin)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print a readable line per ban instead of JSON",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="with --dry-run (implied), also print a line per skipped alert and why",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="the summary as one JSON object (keys: alerts, ban, skipped, bad_lines)",
    )
    add_common_arguments(parser)
    return parser


# --- main ------------------------------------------------------------------------------


def _run(args: Any, stdin: IO[Any], stdout: IO[Any], stderr: IO[str], reporter: Reporter) -> int:
    loader = Loader(args.config, reporter)
    loader.start()
    close_input = False
    if args.input and args.input != "-":
        try:
            source: IO[Any] = open(args.input, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ToolError(f"{args.input}: no such file", EX_NOINPUT) from None
        except OSError as exc:
            raise ToolError(
                f"{args.input}: cannot open: {exc.strerror or exc}", EX_NOINPUT
            ) from None
        name, close_input = args.input, True
    else:
        source, name = pipe.binary_stream(stdin), "<stdin>"
    out = pipe.binary_output(stdout)
    filt = Filter(loader, out, reporter, name, dry_run=args.dry_run, explain=args.explain)

    from banpipe.watch import PathWatcher  # pyinotify import is not free; only here

    watcher = PathWatcher(loader.watch_paths())
    if loader.catch_up():  # what changed before the watch existed raised no event
        watcher.set_paths(loader.watch_paths())
    try:
        with Signals(hup=True) as signals:
            _loop(source, filt, loader, watcher, signals, name)
        out.flush()
    finally:
        watcher.close()
        if close_input:
            source.close()
    _write_metrics(filt, loader, reporter)
    summary = pipe.dumps(filt.summary_json()).decode() if args.json else filt.summary()
    hint = nothing_ours_hint(loader.rules, filt.counts.get(K_NOT_OURS, 0))
    if hint:
        reporter.say(loader.config.path or loader.config_file, hint)
    if filt.dry_run:
        out.write(summary.encode() + b"\n")
        out.flush()
    elif args.json:
        reporter.emit(summary)
    else:
        reporter.say(None, summary)
    return EX_OK


def _write_metrics(filt: Filter, loader: Loader, reporter: Reporter) -> None:
    """alertfilter's counters beside banctl's textfile (``[metrics] textfile``)."""
    textfile = loader.config.metrics.textfile
    if not textfile:
        return
    path = metrics.sibling(textfile, TOOL)
    try:
        metrics.write_textfile(path, filt.metrics())
    except OSError as exc:
        reporter.error(path, f"cannot write metrics: {exc.strerror or exc}", "warning")


def _loop(
    source: IO[Any], filt: Filter, loader: Loader, watcher: Any, signals: Signals, name: str
) -> None:
    lines = pipe.Lines()
    stop = signals.flag
    throttle = metrics.Throttle(loader.config.metrics.interval)
    fd = fileno(source)
    watch_fd = watcher.fileno()
    read_chunk = getattr(source, "read1", source.read)

    watched = loader.watch_paths()

    def reload(changed: set[str]) -> None:
        nonlocal watched
        everything = stop.hup
        if everything:
            stop.hup = False
            filt.reporter.say(None, "SIGHUP: reloading")
        loader.reload(changed, everything=everything)
        while True:
            paths = loader.watch_paths()
            if paths == watched:
                return
            # Directories that appeared (their placeholder paths are gone from the
            # list): watch them afresh, then read what they hold once more, since a
            # file written there before the watch existed raised no event for us.
            appeared = set(watched) - set(paths)
            watcher.set_paths([p for p in paths if os.path.dirname(p) not in appeared])
            watcher.set_paths(paths)
            watched = paths
            if appeared:
                loader.reload(appeared)

    waiting = [fd, watch_fd, signals.fd]
    ready: list[int] = []
    while not stop.stop:
        if fd is not None:
            filt.out.flush()  # never leave output in a buffer while we wait
            ready, _, _ = select.select(waiting, [], [])
            if signals.fd in ready:
                signals.drain()
            if stop.stop:
                break
            if fd not in ready:
                changed = watcher.changed() if watch_fd in ready else set()
                if changed or stop.hup:
                    reload(changed)
                continue
        try:
            chunk = os.read(fd, CHUNK) if fd is not None else read_chunk(CHUNK)
        except OSError as exc:
            raise ToolError(f"{name}: cannot read: {exc.strerror or exc}", EX_IOERR) from None
        # A change noticed before this chunk is judged applies to it: "the next line
        # read". Noticed by the select() that woke us for the chunk; polling the watch
        # again here cost a system call before every line's write (an alert's latency,
        # issue 12), and a change made while we read is in the next select(), as one
        # made while we judge always was. An input select() cannot wait on: polled.
        changed = watcher.changed() if fd is None or watch_fd in ready else set()
        if changed or stop.hup:
            reload(changed)
        if not chunk:
            # End of input: a last line without newline is still a line. (Not so on
            # SIGTERM, where the tail may be half an alert still being written.)
            filt.process(*lines.finish())
            break
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8", "surrogateescape")
        filt.process(*lines.feed(chunk))
        if loader.config.metrics.textfile and throttle.due():
            _write_metrics(filt, loader, filt.reporter)


def main(
    argv: list[str] | None = None,
    stdin: IO[Any] | None = None,
    stdout: IO[Any] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    real_process = stdin is None and stdout is None
    stdin_, stdout_, stderr_ = resolve_streams(stdin, stdout, stderr)
    args, code = parse_args(build_parser(), argv, stdout_, stderr_)
    if args is None:
        return code
    if real_process:
        restore_sigpipe()
    reporter = Reporter(TOOL, stderr_)
    return run_tool(
        TOOL,
        lambda: _run(args, stdin_, stdout_, stderr_, reporter),
        debug=args.debug,
        stderr=stderr_,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
