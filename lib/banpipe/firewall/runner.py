"""Command runners for the firewall backends.

Every backend issues its commands through a runner, never through a shell: argv lists of
validated values, optional stdin text. ``SubprocessRunner`` runs them for real (optionally
behind a prefix such as ``ip netns exec NS``); ``RecordingRunner`` records them for the
golden-command tests and answers listing commands with canned text.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

__all__ = [
    "Call",
    "CommandNotFound",
    "FirewallError",
    "FirewallFull",
    "RecordingRunner",
    "Runner",
    "SubprocessRunner",
]


class FirewallError(Exception):
    """The firewall could not be read or changed (banctl maps it to exit 69)."""


class FirewallFull(FirewallError):
    """A set holds ``max_entries`` already: ``addresses`` were not added (all of one
    call's addresses on nftables, whose batch is all or nothing; exactly the ones that
    did not fit on ipset)."""

    def __init__(self, message: str, addresses: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.addresses = list(addresses)


class CommandNotFound(FirewallError):
    """The program to run does not exist (e.g. conntrack not installed)."""


class Runner(Protocol):
    """Runs one command; raises FirewallError on non-zero exit unless ``check=False``."""

    def __call__(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


def _describe(argv: Sequence[str]) -> str:
    return " ".join(argv)


def finish(
    argv: Sequence[str], proc: subprocess.CompletedProcess[str], check: bool
) -> subprocess.CompletedProcess[str]:
    """Return ``proc``, or raise FirewallError (with its stderr) when it failed and check."""
    if check and proc.returncode != 0:
        err = " ".join((proc.stderr or "").split())
        if len(err) > 500:
            err = err[:500] + "..."
        raise FirewallError(f"{_describe(argv)}: exit {proc.returncode}: {err or 'no message'}")
    return proc


class SubprocessRunner:
    """Run commands with subprocess, argv lists only, optionally behind ``prefix``.

    ``prefix`` is prepended to every argv, e.g. ``["ip", "netns", "exec", "bpgw123"]``.
    Output is decoded as text with ``LC_ALL=C`` so listings parse the same everywhere.
    """

    def __init__(self, prefix: Sequence[str] = (), *, timeout: float | None = 120.0) -> None:
        self.prefix = tuple(prefix)
        self.timeout = timeout
        self._env = {**os.environ, "LC_ALL": "C"}

    def __call__(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        full = [*self.prefix, *argv]
        try:
            proc = subprocess.run(
                full,
                input=input,
                capture_output=True,
                text=True,
                check=False,
                timeout=self.timeout,
                env=self._env,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise CommandNotFound(f"{full[0]}: command not found")
        except OSError as exc:  # not executable, too many processes, ...
            raise FirewallError(f"{full[0]}: {exc.strerror or exc}")
        except subprocess.TimeoutExpired:
            raise FirewallError(f"{_describe(argv)}: timed out after {self.timeout} s")
        # `ip netns exec` reports a missing program itself (exit 1), not as an OSError.
        if (
            self.prefix
            and proc.returncode != 0
            and proc.stderr.startswith(f'exec of "{argv[0]}" failed: No such file')
        ):
            raise CommandNotFound(f"{argv[0]}: command not found")
        return finish(argv, proc, check)


class Call(NamedTuple):
    argv: tuple[str, ...]
    input: str | None


class RecordingRunner:
    """Record every command instead of running it.

    ``responses`` answers commands: either a mapping from argv (a tuple, or the argv joined
    with single spaces) to a response, or a callable ``(argv, input) -> response``. A
    response is stdout text, a ``CompletedProcess`` (its returncode counts, so failures can
    be simulated), an exception instance (raised), or None (empty stdout, exit 0).
    """

    def __init__(
        self,
        responses: Mapping[object, object]
        | Callable[[tuple[str, ...], str | None], object]
        | None = None,
    ) -> None:
        self.responses = responses if responses is not None else {}
        self.calls: list[Call] = []

    @property
    def argvs(self) -> list[list[str]]:
        """The recorded argv lists, in order."""
        return [list(c.argv) for c in self.calls]

    def _lookup(self, argv: tuple[str, ...], input: str | None) -> object:
        if callable(self.responses):
            return self.responses(argv, input)
        if argv in self.responses:
            return self.responses[argv]
        return self.responses.get(" ".join(argv))

    def __call__(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        key = tuple(argv)
        self.calls.append(Call(key, input))
        resp = self._lookup(key, input)
        if isinstance(resp, BaseException):
            raise resp
        if isinstance(resp, subprocess.CompletedProcess):
            proc = subprocess.CompletedProcess(
                list(key), resp.returncode, resp.stdout or "", resp.stderr or ""
            )
        else:
            proc = subprocess.CompletedProcess(list(key), 0, "" if resp is None else str(resp), "")
        return finish(key, proc, check)
