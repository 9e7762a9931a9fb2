"""wanwatch's watcher: which of an interface's addresses are our WAN addresses, and
the set followed through netlink messages, written to the state file and printed
as one JSON line per change.

Pure decisions first (``why_not_wan``, ``current_set``, ``link_notes``), then
``Watcher``, which folds messages into a ``RouteTable`` and publishes the set when
it changes; a failed state write is retried with backoff (``retry_delay``).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from banpipe import address, cli, netlink
from banpipe.netlink import Addr, Link, Message, RouteTable
from banpipe.pipe import Writer
from banpipe.wanhooks import Hooks
from banpipe.wanstate import make_event, sort_addresses, write_wan_state

RETRY_MIN, RETRY_MAX = 1.0, 30.0


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
    ip = address.parse(addr.address)
    if ip is None:
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


def retry_delay(failures: int) -> float:
    """Seconds before retrying a failed state write: 1, 2, 4 ... capped at 30."""
    return min(RETRY_MAX, RETRY_MIN * 2 ** max(0, failures - 1))


@dataclass
class Watcher:
    """The interface's current WAN set and what has been published of it."""

    name: str
    state_path: str
    out: Writer
    report: cli.Reporter
    hooks: Hooks
    clock: cli.Clock = time.time  # the wall clock of the state file's and lines' "ts"
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
            state = write_wan_state(self.state_path, self.name, sort_addresses(new), self._now())
        except OSError as exc:
            raise cli.ToolError(
                f"{self.state_path}: cannot write state: {os_reason(exc, self.state_path)}",
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
            now = self._now()
            self._write(new, now)
            self._emit(old, new, now.isoformat())
            self.published = new
            self.hooks.submit(old, new)
        elif self.retry_at is not None and self.monotonic() >= self.retry_at:
            self._write(new, self._now())

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def _write(self, new: frozenset[str], now: datetime) -> None:
        try:
            write_wan_state(self.state_path, self.name, sort_addresses(new), now)
        except OSError as exc:
            self.write_failures += 1
            delay = retry_delay(self.write_failures)
            self.retry_at = self.monotonic() + delay
            self.report.error(
                self.state_path,
                f"cannot write state: {os_reason(exc, self.state_path)}; retrying in {delay:g}s",
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


def os_reason(exc: OSError, path: str | None = None) -> str:
    """strerror, naming the file when it is not ``path`` itself (a parent that is not a
    directory fails with a bare "File exists" otherwise)."""
    text = exc.strerror or str(exc)
    name = exc.filename
    if isinstance(exc, FileExistsError) and isinstance(name, str) and not os.path.isdir(name):
        text = "exists and is not a directory"
    if exc.strerror and isinstance(name, str) and name != path:
        return f"{name}: {text}"
    return text
