"""wanwatch: follow our own WAN addresses through DHCP and SLAAC changes.

    wanwatch [--config F] [--interface IFACE] [--state FILE] [--once] [--debug]
             [--exec-timeout SECONDS] [--exec CMD [ARG...]]

Listens to the kernel's rtnetlink address and link notifications (no polling) and keeps
the set of the interface's WAN addresses: scope global, IPv4 and IPv6, not tentative
(an IPv6 address counts once duplicate address detection has passed, never when it
failed), never link-local. Deprecated addresses still count: the kernel still accepts
traffic for them, so alerts against them are still against us.

At start and whenever the set changes, it writes the state file atomically (see
banpipe.wanstate; alertfilter and banctl watch it) and prints one line::

    {"v": 1, "type": "wan", "interface": "eth0", "added": ["203.0.113.9"],
     "removed": ["198.51.100.7"], "addresses": ["203.0.113.9"], "ts": "..."}

At start, "added" and "removed" are relative to the state file a previous run left
(none: empty). A lease renewal that keeps the address changes nothing and prints nothing.

Started by systemd as a ``Type=notify`` unit (``$NOTIFY_SOCKET`` set), it says
``READY=1`` once that first state file is written, so units ordered after it
(banpipe.service) never judge an alert before our WAN addresses are known.

The interface is followed by name: when it is missing, deleted, or renamed away, the set
is empty (and the state file says so) until an interface of that name exists again.
Going down empties the set only as far as the kernel removes addresses (IPv6 ones, with
the default keep_addr_on_down=0; IPv4 ones stay).

--exec CMD [ARG...] (must come last; config: ``exec = ["/path/hook", "arg"]``) runs on
every change, including one found at start, as::

    CMD ARG... --old OLD --new NEW

OLD and NEW are comma-separated address lists (an empty string for none); the
environment also carries BANPIPE_WAN_INTERFACE, BANPIPE_WAN_OLD, BANPIPE_WAN_NEW,
BANPIPE_WAN_ADDED and BANPIPE_WAN_REMOVED. No shell is involved. One hook runs at a
time; changes that arrive meanwhile are merged into one later call (old of the first,
new of the last). A hook still running after --exec-timeout (default 30s) gets SIGTERM,
two seconds later SIGKILL (its whole process group). Its output goes to stderr. A
hook still running when wanwatch stops is left to finish; a call not yet started is
dropped (the state file already holds the new set).

--debug also logs every address and link message for the interface, with its verdict
(counted, or why not), and shows tracebacks.

Exit codes: 0 (also on SIGTERM/SIGINT), 64 usage, 69 no netlink socket, 73 state file
not writable at start (later failures are reported and retried with backoff, and on the
next change), 78 config. A closed stdout ends it quietly (SIGPIPE), like any filter.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from banpipe import cli, sdnotify
from banpipe.config import ConfigError, load_config
from banpipe.convert import parse_duration
from banpipe.netlink import NetlinkOverflow, RouteSocket, RouteTable
from banpipe.pipe import Writer, binary_output
from banpipe.wanhooks import DEFAULT_HOOK_TIMEOUT, Hooks
from banpipe.wanstate import WanStateError, read_wan_state
from banpipe.wanwatcher import Watcher, check_ifname, os_reason

TOOL = "wanwatch"


# --------------------------------------------------------------------------------------
# I/O wiring


def fresh_dump(sock: RouteSocket, report: cli.Reporter, stop: Callable[[], bool]) -> RouteTable:
    """A complete table; dumps again while notifications keep getting lost."""
    attempt = 0
    while True:
        attempt += 1
        table = RouteTable()
        if sock.dump(table) or stop():
            return table
        # A queue too small for one dump plus the changes racing it: make room.
        grown = sock.grow()
        if grown or attempt % 10 == 0:
            report.say(
                "netlink",
                f"changes lost during the dump; dumping again (receive queue "
                f"{sock.buffer_size() // 1024} KiB)",
            )


def read_previous(path: str, report: cli.Reporter) -> frozenset[str]:
    if not os.path.isfile(path):
        return frozenset()  # nothing to compare with (or not even a directory: see start)
    try:
        return frozenset(read_wan_state(path))
    except WanStateError as exc:
        report.say(path, f"previous state unusable ({exc}); replacing it")
        return frozenset()


def _stderr_fd(stderr: IO[str]) -> int | None:
    try:
        stderr.flush()
        return stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(
        prog=TOOL,
        usage="%(prog)s [--config FILE] [--interface IFACE] [--state FILE] [--once] "
        "[--debug] [--version] [--exec-timeout SECONDS] [--exec CMD [ARG...]]",
        description="Follow the WAN interface's global addresses via netlink; write "
        "the state file and print one JSON line per change.",
        epilog="Hook call: CMD ARG... --old A,B --new C (comma-separated, empty for none), "
        "environment BANPIPE_WAN_INTERFACE/_OLD/_NEW/_ADDED/_REMOVED. Exit codes: 0 ok "
        "(also SIGTERM), 64 usage, 66 no such interface (--once), 69 no netlink, "
        "73 state not writable, 78 config.",
    )
    cli.add_common_arguments(p)
    p.add_argument(
        "--interface", metavar="IFACE", help="interface to follow ([wanwatch] interface)"
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help="state file to write ([network] wan_state, default /run/banpipe/wan.json)",
    )
    p.add_argument("--once", action="store_true", help="write the current state, print, exit")
    p.add_argument(
        "--exec-timeout",
        metavar="SECONDS",
        default=None,
        help=f"kill a hook still running after this long (default {DEFAULT_HOOK_TIMEOUT:g}s)",
    )
    p.add_argument(
        "--exec",
        dest="exec_cmd",
        nargs="...",
        metavar="CMD [ARG...]",
        help="run CMD on every change (must come last; [wanwatch] exec)",
    )
    return p


@dataclass(frozen=True)
class Settings:
    interface: str
    state: str
    command: tuple[str, ...]
    timeout: float
    once: bool
    debug: bool


def settings_from(args: Any) -> Settings:
    """Merge flags over the config; ToolError 64 (flags) or 78 (config) when unusable."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise cli.ToolError(str(exc), cli.EX_CONFIG)
    interface, from_config = args.interface, False
    if interface is None:
        interface, from_config = config.wanwatch.interface, True
    if interface is None:
        raise cli.ToolError(
            "no interface: give --interface IFACE or set [wanwatch] interface", cli.EX_USAGE
        )
    problem = check_ifname(interface)
    if problem:
        where = f"{config.path}: [wanwatch] interface: " if from_config else "--interface: "
        raise cli.ToolError(where + problem, cli.EX_CONFIG if from_config else cli.EX_USAGE)
    if args.exec_cmd is not None:
        command, from_config = tuple(args.exec_cmd), False
        if not command or not command[0]:
            raise cli.ToolError("--exec: missing command", cli.EX_USAGE)
    else:
        command, from_config = tuple(config.wanwatch.exec), True
    if command:
        problem = _check_command(command[0])
        if problem:
            where = f"{config.path}: [wanwatch] exec: " if from_config else "--exec: "
            raise cli.ToolError(where + problem, cli.EX_CONFIG if from_config else cli.EX_USAGE)
    timeout = DEFAULT_HOOK_TIMEOUT
    if args.exec_timeout is not None:
        try:
            timeout = parse_duration(args.exec_timeout)
        except ValueError as exc:
            raise cli.ToolError(f"--exec-timeout: {exc}", cli.EX_USAGE)
        if timeout <= 0:
            raise cli.ToolError("--exec-timeout: must be more than 0", cli.EX_USAGE)
    state = args.state if args.state is not None else config.network.wan_state
    if not state:
        raise cli.ToolError("--state: empty path", cli.EX_USAGE)
    return Settings(interface, state, command, timeout, args.once, args.debug)


def _check_command(cmd: str) -> str | None:
    if os.sep in cmd:
        if not os.path.isfile(cmd):
            return f"{cmd}: no such file"
        if not os.access(cmd, os.X_OK):
            return f"{cmd}: not executable"
        return None
    if shutil.which(cmd) is None:
        return f"{cmd}: command not found in PATH"
    return None


def run(
    s: Settings,
    out: Writer,
    stderr: IO[str],
    clock: cli.Clock,
) -> int:
    report = cli.Reporter(TOOL, stderr)
    hooks = Hooks(
        command=s.command,
        interface=s.interface,
        report=report,
        timeout=s.timeout,
        output_fd=_stderr_fd(stderr),
    )
    with contextlib.ExitStack() as stack:
        wake = None if s.once else stack.enter_context(cli.Signals(chld=True))
        stop = (lambda: wake.flag.stop) if wake else (lambda: False)
        try:
            sock = RouteSocket()
        except OSError as exc:
            raise cli.ToolError(f"netlink: {os_reason(exc)}", cli.EX_UNAVAILABLE)
        with sock:
            watcher = Watcher(s.interface, s.state, out, report, hooks, clock, debug=s.debug)
            previous = read_previous(s.state, report)
            table = fresh_dump(sock, report, stop)
            if s.once and table.find(s.interface) is None:
                # Following waits for it to appear; a one-shot answer cannot.
                raise cli.ToolError(
                    f"{s.interface}: no such interface (`ip -br link` lists them)",
                    cli.EX_NOINPUT,
                )
            watcher.start(table, previous)
            if not s.once:
                _ready(report)
            if s.once:
                hooks.wait()
                return cli.EX_OK
            assert wake is not None
            _loop(sock, watcher, hooks, wake, report)
        return cli.EX_OK


def _ready(report: cli.Reporter) -> None:
    """Tell systemd (Type=notify) the state file is written: banpipe.service waits for
    this, so it never judges alerts before our WAN addresses are known."""
    try:
        sdnotify.notify(sdnotify.READY)
    except OSError as exc:
        report.say("NOTIFY_SOCKET", f"cannot tell systemd we are ready: {os_reason(exc)}")


def _loop(
    sock: RouteSocket, watcher: Watcher, hooks: Hooks, wake: cli.Signals, report: cli.Reporter
) -> None:
    while not wake.flag.stop:
        waits = [t for t in (hooks.poll(), watcher.retry_in()) if t is not None]
        timeout = min(waits) if waits else None
        try:
            ready, _, _ = select.select([sock, wake.fd], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; belt and braces
            ready = []
        if wake.fd in ready:
            wake.drain()
        if wake.flag.stop:
            break
        if sock in ready:
            try:
                watcher.handle(sock.read_available())
            except NetlinkOverflow as exc:
                report.say("netlink", f"{exc}; reading all addresses again")
                sock.grow()
                watcher.resync(fresh_dump(sock, report, lambda: wake.flag.stop))
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN):
                    continue
                raise
        else:
            watcher.update()  # retry a failed write when due


def main(
    argv: list[str] | None = None,
    stdin: IO[Any] | None = None,
    stdout: IO[Any] | None = None,
    stderr: IO[str] | None = None,
    *,
    clock: cli.Clock | None = None,
) -> int:
    """Run wanwatch; ``clock`` is for tests (default: the real time)."""
    _stdin, out_stream, err = cli.resolve_streams(stdin, stdout, stderr)
    args, code = cli.parse_args(build_parser(), argv, out_stream, err)
    if args is None:
        return code
    if out_stream is sys.stdout:
        cli.restore_sigpipe()

    def body() -> int:
        settings = settings_from(args)
        writer = Writer(binary_output(out_stream))
        return run(settings, writer, err, clock or time.time)

    return cli.run_tool(TOOL, body, debug=args.debug, stderr=err)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
