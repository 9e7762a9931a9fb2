"""alertfilter's judge: the rules in force and the decision per alert, with its output.

:class:`Loader` holds the configuration, its protection sources (banpipe.sources) and the
rule set compiled from them, reloaded live and keeping the last good of each;
:class:`Filter` judges raw pipe lines against it (:func:`banpipe.rules.decide`) and writes
what passes, counting each decision. The tool's command line and its read loop are in
banpipe.alertfilter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from banpipe import config as configmod
from banpipe import metrics, pipe, sources
from banpipe.alert import JUDGED, fetcher, problem
from banpipe.cli import EX_CONFIG, WARNING, Reporter, ToolError, format_counts
from banpipe.config import Config, ConfigError, load_config
from banpipe.flows import FlowWindow
from banpipe.rules import BAN, K_REPEAT, SKIP_KINDS, RuleSet

K_BAD = "bad input"

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
        self.first = sources.FirstReads()

    @property
    def config(self) -> Config:
        return self.sources.config

    def start(self) -> RuleSet:
        """First load; any problem is fatal (ToolError, exit 78)."""
        self.first.note([self.config_file])
        try:
            config = load_config(self.explicit)
        except ConfigError as exc:
            raise ToolError(str(exc), EX_CONFIG) from None
        self.first.note([config.network.wan_state, *config.filter.whitelist_files])
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

    def catch_up(self) -> bool:
        """Call once the sources are watched: a file changed between the first read and
        the watch raised no event (wanwatch writes its first state while the pipe
        starts at boot), and its change would have waited for the next one. Reads again,
        quietly, the sources whose file changed since (sources.FirstReads) and reloads
        those whose content differs, as their event would have. Returns True when a new
        rule set is in force."""
        suspects = self.first.changed()
        changed = sources.differing(self.sources, suspects - {self.config_file}, self.reporter)
        if self.config_file in suspects:
            try:
                config = load_config(self.explicit)
            except ConfigError:
                config = None  # broken since: reload says so and keeps what is in force
            if config != self.config:
                changed.add(self.config_file)
        return bool(changed) and self.reload(changed)

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
        return RuleSet.from_config(loaded.config, loaded.protection())


# --- the filter ------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``text`` on one line: control characters shown as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def ban_line(
    values: tuple[Any, ...], rev: Any, offender: str, victim: str | None, swapped: bool
) -> str:
    """The --dry-run line for a ban of the alert whose values of ``("v", *JUDGED)`` are
    ``values`` (as RuleSet.judge takes them) and whose ``rev`` is ``rev``."""
    _, gid, sid, msg, prio, _, _ = values
    rule = f"{gid}:{sid}" + (f":{rev}" if type(rev) is int else "")
    line = (
        f'BAN {offender}  {rule} "{_printable(msg)}" '
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
        self._requests = pipe.BanRequests()

    def bad_line(self, lineno: int, reason: str) -> None:
        self.bad += 1
        self.reporter.error(f"{self.name}:{lineno}", reason, kind=K_BAD)

    def process(self, lines: list[bytes], lineno: int) -> None:
        """Judge raw pipe lines; ``lineno`` is the number of the line before the first.

        The common case (an alert of the contract's keys alone) costs the typed reader
        (pipe.decode_alert: every value checked, no dict) and the rule set's judge; any
        other line is decoded by loads and checked by the compiled validator that hands
        over the values judged (banpipe.alert.fetcher); anything odd goes to the slow
        paths that explain.
        """
        judge = self.loader.rules.judge
        counts = self.counts
        flows = self._flows()
        # A ban's line straight into the buffered stream (no pipe.Writer: about a tenth
        # of the run time); the stream is flushed before every wait for input.
        ban_json = self._requests.line
        dry_run, explain = self.dry_run, self.explain
        out_write = self.out.write
        loads, typed, not_typed = pipe.loads, pipe.decode_alert, pipe.NotAnAlert
        max_line = pipe.MAX_LINE
        judged_values = judged
        for raw in lines:
            lineno += 1
            if len(raw) > max_line:
                self.bad_line(lineno, f"line longer than {max_line} bytes")
                continue
            try:
                t = typed(raw)  # the typed alert
                alert = None
                # ("v", *JUDGED) read as attributes the interpreter specialises: about
                # 100 ns a line less than an attrgetter (tests/test_rules.py pins JUDGED)
                values = (t.v, t.gid, t.sid, t.msg, t.priority, t.src, t.dst)
                rev, target = t.rev, t.target
            except not_typed:
                try:
                    alert = loads(raw)
                except ValueError:
                    if raw.strip():
                        self.bad_line(lineno, pipe.undecodable(raw))
                    continue  # blank lines carry nothing
                values = judged_values(alert)
                if values is None:
                    if pipe.is_position(alert):
                        # Passed on after the bans it follows: banctl records the position
                        # with them, also when every alert before it was skipped here.
                        if not dry_run:
                            out_write(raw + b"\n")
                        continue
                    self.bad_line(lineno, problem(alert, JUDGED) or "?")
                    continue
                rev, target = alert.get("rev"), alert.get("target")
            d = judge(values, rev, target)
            if d[0] and flows is not None:
                flow_id = t.flow_id if alert is None else alert.get("flow_id")
                if type(flow_id) is int and flows.repeat(flow_id, self.clock()):
                    d = d._replace(
                        ban=False,
                        reason=f"repeat of flow {flow_id} within {flows.window:g}s",
                        kind=K_REPEAT,
                    )
            # by position: a named tuple's fields are descriptors the interpreter
            # does not specialise (about 150 instructions each, a tenth of the loop)
            ban, offender, victim, swapped, reason, kind = d
            counts[kind] += 1
            if ban:
                if dry_run:
                    line = ban_line(values, rev, offender, victim, swapped)
                    out_write(line.encode("utf-8", "surrogateescape") + b"\n")
                else:
                    out_write(ban_json(raw, alert, offender, victim, swapped, reason))
            elif explain:
                line = f"skip {offender or '-'}: {reason}"
                out_write(_printable(line).encode("utf-8", "surrogateescape") + b"\n")

    def _flows(self) -> FlowWindow | None:
        """The flow window of the current config (a reload may change or end it)."""
        window = self.loader.config.filter.flow_window
        if window <= 0:
            self.flows = None
        elif self.flows is None or self.flows.window != window:
            self.flows = FlowWindow(window)
        return self.flows

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


# The values alertfilter judges when alert.problem(alert, JUDGED) is None, else None:
# compiled once, the hot loop's one check.
judged = fetcher(JUDGED)
