"""alertfilter: pass on only the alerts that should lead to a ban, each saying whom to ban.

    fasttail /var/log/snort/alert | alertfilter | banctl apply
    fasttail --once alert | alertfilter --dry-run --explain

Reads pipe-contract alert objects (JSON lines, ``"v": 1``) from stdin or FILE and writes
each alert that leads to a ban unchanged (unknown keys included, in order) plus
``offender``, ``victim``, ``reversed`` and ``reason``; the decision itself is
:func:`banpipe.rules.decide`.

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
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from banpipe import config as configmod
from banpipe import metrics, pipe, sources
from banpipe.alert import JUDGED, checker, problem
from banpipe.cli import (
    EX_CONFIG,
    EX_IOERR,
    EX_NOINPUT,
    EX_OK,
    WARNING,
    ArgumentParser,
    Reporter,
    Signals,
    ToolError,
    add_common_arguments,
    fileno,
    format_counts,
    parse_args,
    resolve_streams,
    restore_sigpipe,
    run_tool,
)
from banpipe.config import Config, ConfigError, load_config
from banpipe.flows import FlowWindow
from banpipe.rules import BAN, K_NOT_OURS, K_REPEAT, SKIP_KINDS, RuleSet

TOOL = "alertfilter"
CHUNK = 1 << 16
K_BAD = "bad input"


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


# --- configuration state ---------------------------------------------------------------


class Loader:
    """Loads the config and its protection sources (banpipe.sources); keeps the last
    good of each."""

    def __init__(self, config_path: str | None, reporter: Reporter) -> None:
        self.explicit = config_path
        self.config_file = os.path.abspath(config_path or configmod.DEFAULT_PATH)
        self.reporter = reporter
        self.sources = sources.Sources(Config(), {}, frozenset())
        self.rules: RuleSet

    @property
    def config(self) -> Config:
        return self.sources.config

    def start(self) -> RuleSet:
        """First load; any problem is fatal (ToolError, exit 78)."""
        try:
            config = load_config(self.explicit)
        except ConfigError as exc:
            raise ToolError(str(exc), EX_CONFIG) from None
        loaded = sources.load(config, self.reporter, strict=True)
        try:
            rules = self._compile(loaded)
        except ConfigError as exc:
            raise ToolError(str(exc), EX_CONFIG) from None
        self.sources, self.rules = loaded, rules
        return rules

    def watch_paths(self) -> list[str]:
        return sources.watch_paths(self.config_file, self.config)

    def reload(self, changed: Iterable[str], everything: bool = False) -> bool:
        """Apply changes of the ``changed`` paths (all sources when ``everything``).

        Returns True when a new rule set is in force; problems are reported and the
        previous configuration (or the previous content of a file) kept.
        """
        changed = set(changed)
        config = self.config
        if everything or self.config_file in changed:
            if not os.path.exists(self.config_file) and self.config.path is not None:
                # Removed (or mid-way through an editor's save): never fall back to the
                # defaults, which would drop the whitelist and our own addresses.
                self.reporter.say(
                    self.config_file,
                    "no such file; keeping the previous configuration",
                    level=WARNING,
                )
            else:
                try:
                    config = load_config(self.explicit)
                except ConfigError as exc:
                    self.reporter.say(
                        None, f"{exc}; keeping the previous configuration", level=WARNING
                    )
        result = self._attempt(config, changed, everything)
        if result is None and config is not self.config:
            result = self._attempt(self.config, changed, everything)
        if result is None:
            return False
        loaded, rules, notes = result
        new_config = loaded.config is not self.config
        self.sources, self.rules = loaded, rules
        if new_config:
            self.reporter.say(loaded.config.path or self.config_file, "configuration reloaded")
        for note in notes:
            self.reporter.say(*note)
        return True

    def _attempt(
        self, config: Config, changed: set[str], everything: bool
    ) -> tuple[sources.Sources, RuleSet, list[sources.Note]] | None:
        result = sources.reload(self.sources, config, changed, everything, self.reporter)
        if result is None:
            return None
        loaded, notes = result
        try:
            rules = self._compile(loaded)
        except ConfigError as exc:
            self.reporter.say(None, f"{exc}; keeping the previous configuration", level=WARNING)
            return None
        return loaded, rules, notes

    @staticmethod
    def _compile(loaded: sources.Sources) -> RuleSet:
        return RuleSet.from_config(loaded.config, loaded.wan, loaded.whitelist_extra())


# --- the filter ------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``text`` on one line: control characters shown as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def ban_line(alert: dict[str, Any], offender: str, victim: str | None, swapped: bool) -> str:
    """The --dry-run line for a ban."""
    rev = alert.get("rev")
    rule = f"{alert['gid']}:{alert['sid']}" + (f":{rev}" if type(rev) is int else "")
    prio = alert["priority"]
    line = (
        f'BAN {offender}  {rule} "{_printable(alert["msg"])}" '
        f"prio {'none' if prio is None else prio} -> {victim or '-'}"
    )
    return line + " (reversed)" if swapped else line


class Filter:
    """Judges alert objects and writes the output; counts decisions per kind."""

    def __init__(
        self,
        loader: Loader,
        out: IO[bytes],
        reporter: Reporter,
        name: str,
        *,
        dry_run: bool,
        explain: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loader = loader
        self.out = out
        self.reporter = reporter
        self.name = name
        self.dry_run = dry_run or explain
        self.explain = explain
        self.counts: dict[str, int] = dict.fromkeys((BAN, *SKIP_KINDS), 0)
        self.bad = 0
        self.clock = clock
        self.flows: FlowWindow | None = None

    def bad_line(self, lineno: int, reason: str) -> None:
        self.bad += 1
        self.reporter.error(f"{self.name}:{lineno}", reason, kind=K_BAD)

    def process(self, lines: list[bytes], lineno: int) -> None:
        """Judge raw pipe lines; ``lineno`` is the number of the line before the first.

        The common case (a valid alert) costs loads, one compiled check (the contract's,
        banpipe.alert.checker) and decide; anything odd goes to the slow paths that explain.
        """
        decide = self.loader.rules.decide
        counts = self.counts
        flows = self._flows()
        # pipe.encode straight into the buffered stream: the bytes pipe.Writer would
        # write, without its per-line overhead (about a tenth of the run time); the
        # stream is flushed before every wait for input.
        encode = pipe.encode
        dry_run, explain = self.dry_run, self.explain
        out_write = self.out.write
        loads = pipe.loads
        max_line = pipe.MAX_LINE
        judgeable = is_judgeable
        for raw in lines:
            lineno += 1
            if len(raw) > max_line:
                self.bad_line(lineno, f"line longer than {max_line} bytes")
                continue
            try:
                alert = loads(raw)
            except ValueError:
                if raw.strip():
                    self.bad_line(lineno, pipe.undecodable(raw))
                continue  # blank lines carry nothing
            if not judgeable(alert):
                if pipe.is_position(alert):
                    # Passed on after the bans it follows: banctl records the position
                    # with them, also when every alert before it was skipped here.
                    if not dry_run:
                        out_write(raw + b"\n")
                    continue
                self.bad_line(lineno, problem(alert, JUDGED) or "?")
                continue
            d = decide(alert)
            if d.ban and flows is not None and self._repeat(flows, alert):
                d = d._replace(
                    ban=False,
                    reason=f"repeat of flow {alert['flow_id']} within {flows.window:g}s",
                    kind=K_REPEAT,
                )
            counts[d.kind] += 1
            if d.ban:
                if dry_run:
                    line = ban_line(alert, d.offender, d.victim, d.reversed)
                    out_write(line.encode("utf-8", "surrogateescape") + b"\n")
                else:
                    alert["offender"] = d.offender
                    alert["victim"] = d.victim
                    alert["reversed"] = d.reversed
                    alert["reason"] = d.reason
                    out_write(encode(alert))
            elif explain:
                line = f"skip {d.offender or '-'}: {d.reason}"
                out_write(_printable(line).encode("utf-8", "surrogateescape") + b"\n")

    def _flows(self) -> FlowWindow | None:
        """The flow window of the current config (a reload may change or end it)."""
        window = self.loader.config.filter.flow_window
        if window <= 0:
            self.flows = None
        elif self.flows is None or self.flows.window != window:
            self.flows = FlowWindow(window)
        return self.flows

    def _repeat(self, flows: FlowWindow, alert: dict[str, Any]) -> bool:
        flow_id = alert.get("flow_id")
        if type(flow_id) is not int:
            return False  # no flow (text formats): every alert counts
        return flows.repeat(flow_id, self.clock())

    def summary(self) -> str:
        total = sum(self.counts.values())
        text = f"summary: {total} alert{'s' if total != 1 else ''}: "
        text += format_counts(self.counts, (BAN, *SKIP_KINDS))
        if self.bad:
            text += f"; {self.bad} bad input line{'s' if self.bad != 1 else ''}"
        return text

    def summary_json(self) -> dict[str, Any]:
        """The summary with stable keys: ``alerts``, ``ban``, ``skipped`` (per reason,
        every reason present), ``bad_lines``."""
        return {
            "alerts": sum(self.counts.values()),
            "ban": self.counts[BAN],
            "skipped": {k: self.counts[k] for k in SKIP_KINDS},
            "bad_lines": self.bad,
        }

    def metrics(self) -> list[Any]:
        """The counters as Prometheus families (banpipe.metrics)."""
        return [
            metrics.counter(
                "banpipe_alertfilter_alerts_passed_total",
                "Alerts passed on to banctl (a ban requested).",
                self.counts[BAN],
            ),
            metrics.by_label(
                "banpipe_alertfilter_alerts_skipped_total",
                "counter",
                "Alerts not passed on, by reason.",
                "reason",
                {k: self.counts[k] for k in SKIP_KINDS},
            ),
            metrics.counter(
                "banpipe_alertfilter_bad_lines_total",
                "Input lines that were not valid alerts.",
                self.bad,
            ),
        ]


def nothing_ours_hint(rules: RuleSet, not_ours: int) -> str | None:
    """What to set when ``require_ours`` skipped alerts because nothing is ours at all
    (a fresh install: no [network] section, no wanwatch yet); None otherwise."""
    if not not_ours or not rules.require_ours or rules.protection.has_ours():
        return None
    return (
        f"no address is ours, so {not_ours} alert{'s were' if not_ours != 1 else ' was'} "
        "skipped as 'victim not ours': set [network] wan, networks or gateways "
        "(or run wanwatch), or [filter] require_ours = false"
    )


# alert.problem(alert, JUDGED) is None, compiled once: the hot loop's one check.
is_judgeable = checker(JUDGED)


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

    while not stop.stop:
        if fd is not None:
            filt.out.flush()  # never leave output in a buffer while we wait
            waiting = [fd, watch_fd, signals.fd]
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
        # A change noticed before this chunk is judged applies to it: "the next line read".
        changed = watcher.changed()
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
