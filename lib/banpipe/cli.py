"""What every banpipe tool shares: exit codes, error lines, argument parsing, signals.

Error lines have one shape everywhere: ``TOOL: PLACE: REASON`` (PLACE is a file and
line such as ``alert:12`` or ``<stdin>:3``, or the thing concerned), so a person can
grep them and a test can compare them exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

from . import __version__

#: The injectable clock of every tool: seconds since the epoch (tests pass a fake one).
Clock = Callable[[], float]

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


class UsageError(Exception):
    """Bad command line; :func:`parse_args` turns it into one line and exit 64."""


class _Shown(Exception):
    """``--help`` or ``--version`` was given: :func:`parse_args` writes ``text`` to
    stdout and exits 0 (argparse itself would print to sys.stdout and exit)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Help(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(default=argparse.SUPPRESS, nargs=0)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        raise _Shown(parser.format_help())


class _Version(_Help):
    def __init__(self, option_strings: list[str], dest: str, version: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, **kw)
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        raise _Shown(self.version.replace("%(prog)s", parser.prog) + "\n")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and EX_USAGE (64), never exit 2, and
    that never prints or exits by itself: :func:`parse_args` does both.

    Every tool's parser gets ``--version``. ``error()`` raises :class:`UsageError`
    instead of printing the whole usage block: :func:`parse_args` writes the single
    line ``TOOL: REASON (see TOOL --help)``. ``--help`` and ``--version`` hand their
    text to :func:`parse_args` (to the tool's own stdout, which a test may inject).
    """

    def __init__(self, *args: Any, add_help: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, add_help=False, **kwargs)
        self.register("action", "help", _Help)
        self.register("action", "version", _Version)
        if add_help:
            self.add_argument("-h", "--help", action="help", help="show this help message and exit")
        # Subcommand parsers share the top parser's --version.
        if not any(a.dest == "version" for a in self._actions) and " " not in self.prog:
            self.add_argument(
                "--version",
                action="version",
                version=f"%(prog)s (banpipe) {__version__}",
                help="print the version and exit",
            )

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_args(
    parser: ArgumentParser,
    argv: Sequence[str] | None,
    stdout: IO[Any] | None = None,
    stderr: IO[str] | None = None,
    check: Callable[[argparse.Namespace], None] | None = None,
) -> tuple[argparse.Namespace | None, int]:
    """Parse ``argv``; ``(args, 0)``, or ``(None, code)`` when the tool should exit now.

    ``--help`` and ``--version`` print to ``stdout`` and give code 0; a usage error
    prints one line ``TOOL: REASON (see TOOL --help)`` to ``stderr``: code 64.
    ``check(args)`` may add rules argparse cannot express by calling ``parser.error``.
    ``parser`` is a :class:`ArgumentParser`.
    """
    tool = parser.prog.split()[0]
    try:
        args = parser.parse_args(argv)
        if check is not None:
            check(args)
        return args, EX_OK
    except UsageError as exc:
        Reporter(tool, stderr).say(None, f"{exc} (see {tool} --help)")
        return None, EX_USAGE
    except _Shown as shown:
        _write_text(stdout if stdout is not None else sys.stdout, shown.text)
        return None, EX_OK


def _write_text(stream: IO[Any], text: str) -> None:
    try:
        stream.write(text)
    except TypeError:  # a binary stream (tests pass BytesIO as stdout)
        stream.write(text.encode())
    stream.flush()


def add_common_arguments(parser: argparse.ArgumentParser, *, again: bool = False) -> None:
    """``--config`` and ``--debug``; ``again=True`` on a subcommand's parser, so both
    are accepted after the subcommand too without overriding what came before it."""
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if again else {}
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="banpipe.toml (default /etc/banpipe/banpipe.toml; missing default is fine)",
        **extra,
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for internal errors", **extra
    )


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


def fileno(stream: Any) -> int | None:
    """The stream's file descriptor, or None for an in-memory stream (tests)."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class Signals:
    """The one signal set-up of the tools' main loops: SIGTERM and SIGINT (SIGHUP too
    with ``hup``) set :attr:`flag`, and every handled signal (SIGCHLD too with
    ``chld``: a finished child) writes to a pipe whose read end :attr:`fd` a select()
    waits on; PEP 475 would otherwise retry the select() and sleep through the signal.

    A context manager: on exit the previous handlers and wakeup fd are restored and
    the pipe closed. Off the main thread (an embedding caller, a test) no handler can be
    installed: the pipe is still there, the caller stops the tool by end of input.
    """

    def __init__(self, flag: StopFlag | None = None, *, hup: bool = False, chld: bool = False):
        self.flag = flag if flag is not None else StopFlag()
        self.hup, self.chld = hup, chld
        self.fd = -1
        self._w = -1
        self._saved: list[tuple[int, Any]] = []
        self._old_fd: int | None = None

    def __enter__(self) -> Signals:
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if threading.current_thread() is not threading.main_thread():
            return self
        sigs = [signal.SIGTERM, signal.SIGINT]
        sigs += [signal.SIGHUP] if self.hup else []
        sigs += [signal.SIGCHLD] if self.chld else []
        self._saved = [(sig, signal.getsignal(sig)) for sig in sigs]
        self.flag.install(hup=self.hup)
        if self.chld:
            signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select()
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        return self

    def drain(self) -> None:
        """Empty the pipe (after select() said it is readable)."""
        with contextlib.suppress(OSError):
            while os.read(self.fd, 512):
                pass

    def __exit__(self, *exc: object) -> None:
        if self._old_fd is not None:
            signal.set_wakeup_fd(self._old_fd)
            self._old_fd = None
        for sig, handler in self._saved:
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._saved = []
        os.close(self.fd)
        os.close(self._w)


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


def exit_status(code: int) -> str:
    """How a child process ended, from its ``returncode`` (negative: killed by a signal)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 line``, ``2 lines``, ``0 lines`` (``nouns`` for irregular plurals)."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


def times(n: int) -> str:
    """``once``, ``twice``, ``3 times``."""
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def format_counts(counts: Counter[str] | dict[str, int], order: Sequence[str] = ()) -> str:
    keys = [k for k in order if counts.get(k)] + sorted(k for k in counts if k not in order)
    return ", ".join(f"{counts[k]} {k}" for k in keys if counts[k]) or "nothing"
