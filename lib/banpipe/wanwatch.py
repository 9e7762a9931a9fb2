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
import ipaddress
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from banpipe import cli, netlink
from banpipe.config import ConfigError, load_config, parse_duration
from banpipe.netlink import Addr, Link, Message, NetlinkOverflow, RouteSocket, RouteTable
from banpipe.pipe import Writer, binary_output
from banpipe.wanstate import WanStateError, _sort_key, read_wan_state, write_wan_state

TOOL = "wanwatch"
DEFAULT_HOOK_TIMEOUT = 30.0
HOOK_KILL_GRACE = 2.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------
# pure decisions


def why_not_wan(addr: Addr) -> str | None:
    """Why ``addr`` is not one of our WAN addresses, or None when it is."""
    if addr.family not in (socket.AF_INET, socket.AF_INET6):
        return "not IPv4/IPv6"
    if addr.scope != netlink.RT_SCOPE_UNIVERSE:
        return f"scope {_scope_name(addr.scope)}"
    if addr.flags & netlink.IFA_F_DADFAILED:
        return "duplicate address detection failed"
    if addr.flags & netlink.IFA_F_TENTATIVE:
        # Optimistic addresses (RFC 4429) are tentative too: not ours until DAD passes.
        return "tentative"
    try:
        ip = ipaddress.ip_address(addr.address)
    except ValueError:
        return "not an address"
    # The kernel's scope is set by whoever added the address; the value itself decides
    # for ranges that are never a WAN address whatever the scope says.
    if ip.is_link_local:
        return "link-local"
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified:
        return "not a unicast address"
    return None


def is_wan(addr: Addr) -> bool:
    return why_not_wan(addr) is None


def _scope_name(scope: int) -> str:
    return {
        netlink.RT_SCOPE_SITE: "site",
        netlink.RT_SCOPE_LINK: "link",
        netlink.RT_SCOPE_HOST: "host",
    }.get(scope, str(scope))


def wan_addresses(addrs: Iterable[Addr]) -> frozenset[str]:
    return frozenset(a.address for a in addrs if is_wan(a))


def current_set(table: RouteTable, name: str) -> frozenset[str]:
    """The WAN addresses of the interface called ``name`` (empty when there is none)."""
    link = table.find(name)
    if link is None:
        return frozenset()
    return wan_addresses(table.addresses_of(link.index))


def sort_addresses(addrs: Iterable[str]) -> list[str]:
    """IPv4 first, then IPv6: the state file's order (banpipe.wanstate)."""
    return sorted(set(addrs), key=_sort_key)


def diff(old: Iterable[str], new: Iterable[str]) -> tuple[list[str], list[str]]:
    """(added, removed), each sorted."""
    old_s, new_s = set(old), set(new)
    return sort_addresses(new_s - old_s), sort_addresses(old_s - new_s)


def make_event(interface: str, old: Iterable[str], new: Iterable[str], ts: str) -> dict[str, Any]:
    added, removed = diff(old, new)
    return {
        "v": 1,
        "type": "wan",
        "interface": interface,
        "added": added,
        "removed": removed,
        "addresses": sort_addresses(new),
        "ts": ts,
    }


def link_notes(name: str, before: Link | None, after: Link | None, table: RouteTable) -> list[str]:
    """What to tell the operator when the interface called ``name`` changes identity or
    state; ``table`` is the state after the change (to tell a rename from a removal)."""
    if before is None and after is None:
        return []
    if before is None:
        assert after is not None
        return [f"interface appeared (index {after.index}, {after.state}); watching it"]
    if after is None or after.index != before.index:
        now = table.links.get(before.index)
        if now is not None and now.name != name:
            gone = f"renamed to {now.name} (index {before.index})"
        else:
            gone = f"interface removed (index {before.index})"
        if after is None:
            return [f"{gone}; waiting for an interface named {name}"]
        return [gone, f"interface appeared (index {after.index}, {after.state}); watching it"]
    if before.state != after.state:
        return [_STATE_NOTE[after.state]]
    return []


_STATE_NOTE = {"up": "link up", "down": "link down", "no-carrier": "link up, no carrier"}


_IFNAME_BAD = re.compile(r"[\s/:]")


def check_ifname(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name, or None (IFNAMSIZ is 16)."""
    if not name:
        return "empty interface name"
    if len(name.encode()) > 15:
        return f"interface name longer than 15 bytes: {name!r}"
    if name in (".", "..") or _IFNAME_BAD.search(name):
        return f"not a valid interface name: {name!r}"
    return None


def hook_call(
    command: Sequence[str], interface: str, old: Iterable[str], new: Iterable[str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment of one hook run."""
    old_l, new_l = sort_addresses(old), sort_addresses(new)
    added, removed = diff(old_l, new_l)
    argv = [*command, "--old", ",".join(old_l), "--new", ",".join(new_l)]
    env = {
        "BANPIPE_WAN_INTERFACE": interface,
        "BANPIPE_WAN_OLD": ",".join(old_l),
        "BANPIPE_WAN_NEW": ",".join(new_l),
        "BANPIPE_WAN_ADDED": ",".join(added),
        "BANPIPE_WAN_REMOVED": ",".join(removed),
    }
    return argv, env


def retry_delay(failures: int) -> float:
    """Seconds before retrying a failed state write: 1, 2, 4 ... capped at 30."""
    return min(RETRY_MAX, RETRY_MIN * 2 ** max(0, failures - 1))


# --------------------------------------------------------------------------------------
# hooks


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    label: str
    deadline: float
    killed_at: float | None = None


@dataclass
class Hooks:
    """Runs the --exec command, one at a time, never blocking the event loop."""

    command: tuple[str, ...]
    interface: str
    report: cli.Reporter
    timeout: float = DEFAULT_HOOK_TIMEOUT
    output_fd: int | None = None
    monotonic: Callable[[], float] = time.monotonic
    running: _Running | None = None
    pending: tuple[frozenset[str], frozenset[str]] | None = None
    runs: int = 0
    failures: int = 0
    _env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def submit(self, old: frozenset[str], new: frozenset[str]) -> None:
        if not self.command:
            return
        if self.pending is not None:
            old = self.pending[0]  # merge: the hook sees the whole step it missed
        self.pending = (old, new)
        self.poll()

    def poll(self) -> float | None:
        """Reap, enforce timeouts, start the next run; seconds until it needs a look."""
        now = self.monotonic()
        if self.running is not None:
            self._check(now)
        if self.running is None and self.pending is not None:
            old, new = self.pending
            self.pending = None
            if old != new:
                self._start(old, new, now)
        if self.running is None:
            return None
        r = self.running
        due = (r.killed_at + HOOK_KILL_GRACE) if r.killed_at is not None else r.deadline
        return max(0.0, due - now)

    def _start(self, old: frozenset[str], new: frozenset[str], now: float) -> None:
        argv, extra = hook_call(self.command, self.interface, old, new)
        label = self.command[0]
        out = self.output_fd if self.output_fd is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,  # never our stdout: that is the event pipe
                stderr=out,
                env={**self._env, **extra},
                start_new_session=True,  # its own process group, killed as one on timeout
                close_fds=True,
            )
        except OSError as exc:
            self.failures += 1
            self.report.error("hook", f"{label}: cannot run: {exc.strerror or exc}", "hook")
            return
        self.runs += 1
        self.running = _Running(proc, label, now + self.timeout)

    def _check(self, now: float) -> None:
        r = self.running
        assert r is not None
        code = r.proc.poll()
        if code is not None:
            self.running = None
            if r.killed_at is not None:
                return  # already reported as timed out
            if code != 0:
                self.failures += 1
                self.report.error("hook", f"{r.label}: {_status(code)}", "hook")
            return
        if r.killed_at is None and now >= r.deadline:
            self.failures += 1
            self.report.error(
                "hook", f"{r.label}: timed out after {self.timeout:g}s; terminating it", "hook"
            )
            _signal_group(r.proc, signal.SIGTERM)
            r.killed_at = now
        elif r.killed_at is not None and now >= r.killed_at + HOOK_KILL_GRACE:
            _signal_group(r.proc, signal.SIGKILL)
            r.proc.wait()
            self.running = None

    def wait(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Run what is pending to the end (bounded by the timeout); for --once."""
        while not stop():
            left = self.poll()
            if left is None:
                return
            try:
                self.running.proc.wait(timeout=min(left, 0.2) or 0.01)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------------------
# the watcher: folds netlink messages, publishes changes


@dataclass
class Watcher:
    """The interface's current WAN set and what has been published of it."""

    name: str
    state_path: str
    out: Writer
    report: cli.Reporter
    hooks: Hooks
    clock: Clock = _utcnow
    monotonic: Callable[[], float] = time.monotonic
    debug: bool = False
    table: RouteTable = field(default_factory=RouteTable)
    link: Link | None = None
    published: frozenset[str] = frozenset()
    write_failures: int = 0
    retry_at: float | None = None
    events: int = 0

    def start(self, table: RouteTable, previous: frozenset[str]) -> frozenset[str]:
        """Adopt the first dump, write the state (ToolError 73 if impossible), print."""
        self.table = table
        self.link = table.find(self.name)
        if self.link is None:
            self.report.say(self.name, "no such interface; waiting for it to appear")
        elif self.link.state != "up":
            self.report.say(self.name, _STATE_NOTE[self.link.state])
        new = current_set(table, self.name)
        try:
            state = write_wan_state(self.state_path, self.name, sort_addresses(new), self.clock())
        except OSError as exc:
            raise cli.ToolError(
                f"{self.state_path}: cannot write state: {_reason(exc, self.state_path)}",
                cli.EX_CANTCREAT,
            )
        self._emit(previous, new, state["ts"])
        self.published = new
        self.hooks.submit(previous, new)
        return new

    def handle(self, messages: Iterable[Message]) -> None:
        """Apply a batch of messages, report link changes, publish if the set changed."""
        for msg in messages:
            self.table.apply(msg)
            if self.debug:
                self._debug(msg)
            if msg.kind in ("new-link", "del-link"):
                self._follow_link()
        self.update()

    def resync(self, table: RouteTable) -> None:
        """Replace the table by a fresh dump (after lost notifications)."""
        self.table = table
        self._follow_link()
        self.update()

    def _follow_link(self) -> None:
        after = self.table.find(self.name)
        for note in link_notes(self.name, self.link, after, self.table):
            self.report.say(self.name, note)
        self.link = after

    def update(self) -> None:
        new = current_set(self.table, self.name)
        if new == self.published and self.retry_at is None:
            return
        if new != self.published:
            old = self.published
            now = self.clock()
            self._write(new, now)
            self._emit(old, new, now.isoformat())
            self.published = new
            self.hooks.submit(old, new)
        elif self.retry_at is not None and self.monotonic() >= self.retry_at:
            self._write(new, self.clock())

    def _write(self, new: frozenset[str], now: datetime) -> None:
        try:
            write_wan_state(self.state_path, self.name, sort_addresses(new), now)
        except OSError as exc:
            self.write_failures += 1
            delay = retry_delay(self.write_failures)
            self.retry_at = self.monotonic() + delay
            self.report.error(
                self.state_path,
                f"cannot write state: {_reason(exc, self.state_path)}; retrying in {delay:g}s",
                "write",
            )
            return
        if self.write_failures:
            self.report.say(self.state_path, "state written again")
        self.write_failures = 0
        self.retry_at = None

    def retry_in(self) -> float | None:
        if self.retry_at is None:
            return None
        return max(0.0, self.retry_at - self.monotonic())

    def _emit(self, old: Iterable[str], new: Iterable[str], ts: str) -> None:
        self.out.write(make_event(self.name, old, new, ts))
        self.out.flush()
        self.events += 1

    def _debug(self, msg: Message) -> None:
        item = msg.item
        if isinstance(item, Addr):
            link = self.table.links.get(item.index)
            if link is None or link.name != self.name:
                return
            why = why_not_wan(item) if msg.kind == "new-addr" else None
            flags = ",".join(item.flag_names()) or "-"
            verdict = f"not counted: {why}" if why else "counted"
            if msg.kind == "del-addr":
                verdict = "gone"
            self.report.say(
                self.name,
                f"debug: {msg.kind} {item.address}/{item.prefixlen} flags {flags} "
                f"preferred {_life(item.preferred)} valid {_life(item.valid)}: {verdict}",
            )
        elif isinstance(item, Link) and item.name == self.name:
            self.report.say(self.name, f"debug: {msg.kind} index {item.index} {item.state}")


def _life(seconds: int | None) -> str:
    return "forever" if seconds is None else f"{seconds}s"


def _reason(exc: OSError, path: str | None = None) -> str:
    """strerror, naming the file when it is not ``path`` itself (a parent that is not a
    directory fails with a bare "File exists" otherwise)."""
    text = exc.strerror or str(exc)
    name = exc.filename
    if isinstance(exc, FileExistsError) and isinstance(name, str) and not os.path.isdir(name):
        text = "exists and is not a directory"
    if exc.strerror and isinstance(name, str) and name != path:
        return f"{name}: {text}"
    return text


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
    clock: Clock,
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
            raise cli.ToolError(f"netlink: {_reason(exc)}", cli.EX_UNAVAILABLE)
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
            if s.once:
                hooks.wait()
                return cli.EX_OK
            assert wake is not None
            _loop(sock, watcher, hooks, wake, report)
        return cli.EX_OK


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
    clock: Clock | None = None,
) -> int:
    """Run wanwatch; ``clock`` is for tests (default: the real UTC time)."""
    _stdin, out_stream, err = cli.resolve_streams(stdin, stdout, stderr)
    args, code = cli.parse_args(build_parser(), argv, out_stream, err)
    if args is None:
        return code
    if out_stream is sys.stdout:
        cli.restore_sigpipe()

    def body() -> int:
        settings = settings_from(args)
        writer = Writer(binary_output(out_stream))
        return run(settings, writer, err, clock or _utcnow)

    return cli.run_tool(TOOL, body, debug=args.debug, stderr=err)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
