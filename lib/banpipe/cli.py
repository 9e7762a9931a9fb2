"""What every banpipe tool shares: exit codes, error lines, argument parsing, signals.

Error lines have one shape everywhere: ``TOOL: PLACE: REASON`` (PLACE is a file and
line such as ``alert:12`` or ``<stdin>:3``, or the thing concerned), so a person can
grep them and a test can compare them exactly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_CONFIG = 78


class ToolError(Exception):
    """A failure that ends the tool with a message and a sysexits code."""

    def __init__(self, message: str, code: int = EX_SOFTWARE) -> None:
        super().__init__(message)
        self.code = code


# syslog severities, as sd-daemon(3) prefixes read by journald: `journalctl -p warning`
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6
#: Reporter.error() kinds that are warnings (input skipped, a problem worked around);
#: every other kind is an error.
WARNING_KINDS = frozenset({"warning", "bad", "refused", "held"})


def stream_is_journal(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM``
    names its device and inode); a redirect or pipe of ours gets plain lines."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError):
        return False


class Reporter:
    """Writes ``tool: place: reason`` lines and counts them by kind.

    Every line has a severity; when stderr is the journal (see ``stream_is_journal``)
    it is written as an sd-daemon ``<N>`` prefix, so ``journalctl -p warning`` finds the
    warnings and errors; elsewhere lines stay plain.
    """

    def __init__(
        self, tool: str, stream: IO[str] | None = None, *, journal: bool | None = None
    ) -> None:
        self.tool = tool
        self.stream = stream if stream is not None else sys.stderr
        self.counts: Counter[str] = Counter()
        self.journal = stream_is_journal(self.stream) if journal is None else journal

    def error(self, place: str | None, reason: str, kind: str = "error") -> None:
        self.counts[kind] += 1
        self.say(place, reason, level=WARNING if kind in WARNING_KINDS else ERR)

    def say(self, place: str | None, reason: str, *, level: int = INFO) -> None:
        self.emit(f"{self.tool}: {place}: {reason}" if place else f"{self.tool}: {reason}", level)

    def emit(self, line: str, level: int = INFO) -> None:
        """Write ``line`` as it is (no tool prefix), e.g. a JSON summary."""
        if self.journal:
            line = f"<{level}>{line}"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone: nothing better to do than keep working


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with EX_USAGE (64) instead of 2 on bad usage."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: {message}\n")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="banpipe.toml (default /etc/banpipe/banpipe.toml; missing default is fine)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")


def restore_sigpipe() -> None:
    """Die quietly on a closed pipe, like a C filter (`fasttail | head`)."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


class StopFlag:
    """Set by SIGTERM/SIGINT (and SIGHUP when asked); checked by the main loops.

    Handlers only record the signal: re-entrant and idempotent, since systemd may
    deliver SIGTERM twice within milliseconds.
    """

    def __init__(self) -> None:
        self.stop = False
        self.hup = False
        self.signals: list[int] = []

    def _on_stop(self, signum: int, _frame: Any) -> None:
        self.stop = True
        self.signals.append(signum)

    def _on_hup(self, signum: int, _frame: Any) -> None:
        self.hup = True
        self.signals.append(signum)

    def install(self, *, hup: bool = False) -> StopFlag:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        if hup:
            signal.signal(signal.SIGHUP, self._on_hup)
        return self


def run_tool(
    tool: str,
    body: Callable[[], int],
    *,
    debug: bool,
    stderr: IO[str] | None = None,
) -> int:
    """Run a tool's body, turning failures into one error line and an exit code."""
    err = stderr if stderr is not None else sys.stderr
    try:
        return body()
    except ToolError as exc:
        Reporter(tool, err).say(None, str(exc), level=ERR)
        return exc.code
    except BrokenPipeError:
        # Reader went away (`| head`): quiet exit; stop Python's own flush complaint.
        _silence_stdout()
        return EX_OK
    except KeyboardInterrupt:
        return EX_OK
    except Exception as exc:  # noqa: BLE001 - last-resort guard, see --debug
        if debug:
            raise
        Reporter(tool, err).say(None, f"internal error: {type(exc).__name__}: {exc}", level=ERR)
        return EX_SOFTWARE


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def resolve_streams(
    stdin: IO[Any] | None, stdout: IO[Any] | None, stderr: IO[str] | None
) -> tuple[IO[Any], IO[Any], IO[str]]:
    return (
        stdin if stdin is not None else sys.stdin,
        stdout if stdout is not None else sys.stdout,
        stderr if stderr is not None else sys.stderr,
    )


def format_counts(counts: Counter[str] | dict[str, int], order: Sequence[str] = ()) -> str:
    keys = [k for k in order if counts.get(k)] + sorted(k for k in counts if k not in order)
    return ", ".join(f"{counts[k]} {k}" for k in keys if counts[k]) or "nothing"
