"""banctl: the ban ledger and the firewall, as a pipe consumer and an admin tool.

``... | alertfilter | banctl apply`` records every violation in the ledger, bans each
offender once, extends its ban on new violations and lifts it when it expires.
The admin commands (``list``, ``show``, ``ban``, ``unban``, ``pin``, ``restore``,
``teardown``, ``check``, ``expire``, ``status``, ``report``) work while ``apply`` runs;
what people and monitoring see (status, pages, metrics) lives in ``status.py``,
``report.py``, ``metrics.py`` and ``monitor.py``.

How the pieces stay consistent:

* Every change is committed to the ledger first, then applied to the firewall, both
  under the ledger's cross-process lock (``<ledger>.lock``, flock): whichever process
  changes a ban also changes the firewall, in commit order. Backends are idempotent,
  so doing a change twice is harmless, and a crash between commit and firewall is
  repaired by the next start (or check).
* Controlling the running daemon needs no pidfile and no signal. The daemon keeps no
  ban state of its own: it asks the ledger for the next due expiry whenever it wakes.
  It wakes on input, at the next expiry, at the periodic check, and on inotify events
  for the ledger's ``-wal`` file (every commit by an admin command writes it) and the
  WAN state file; ``PRAGMA data_version`` tells it whether another process committed.
  So ``banctl ban --for 1m`` or ``unban`` takes effect at once (the command touches
  the firewall itself) and the daemon's schedule follows within milliseconds.
* ``check`` compares the ledger's active bans with the live firewall; the daemon runs
  it every ``[banctl] check_interval`` and repairs (an external ``iptables -F`` or
  ``nft flush ruleset``), as does ``banctl check --repair``.
* Start: firewall ``init()``, lapsed bans lifted, bans of our own WAN addresses lifted,
  then one bulk ``block()`` of everything missing. Orderly stop (SIGTERM, SIGINT;
  idempotent): with ``[ban] on_stop = "remove"`` the automated entries leave the
  firewall (all of banpipe's structure when no manual ban is left), manual bans stay;
  ``banctl teardown`` does the same from outside. End of input (also what a crash
  upstream looks like), an error or a full disk never takes an entry out.
* Positions (``fasttail --ledger``): the alerts between two position records are
  recorded with the closing position in one transaction, or not at all; what the
  ledger already holds is ignored (banpipe.positions).
* The ledger cannot be written (disk full, read-only): the batch is kept, input is not
  read, the firewall stays as it is; retried every STALL_RETRY seconds.
* Firewall change events (banpipe.fwevents): our structure vanishing is repaired at
  once, not at the next periodic check.
* Spoof brake: more than ``[ban] spoof_max`` new automated bans within
  ``spoof_window`` (counted from the ledger, so a restart does not reset it) stops new
  bans; violations are still recorded and existing bans still extended.
  ``spoof_max = 0`` turns the brake off.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import select
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from banpipe import cli, pipe, positions, term
from banpipe.bantime import BanPolicy, format_expiry, format_until, parse_duration
from banpipe.config import Config, ConfigError, load_config
from banpipe.ledger import Ledger, LedgerError, Violation
from banpipe.monitor import Monitor
from banpipe.pipe import PipeError, PipeReader
from banpipe.protect import Protection, canonical, read_address_file

TOOL = "banctl"
BATCH_MAX_BYTES = 8 << 20  # one transaction per burst, but bounded
BATCH_MAX_LINES = 50_000
FLOOD_BYTES = 32 << 10  # a burst this big is a flood: batch harder (see _read_burst)
FLOOD_LINGER = 0.005
FLOOD_SPAN = 0.1
CACHE_MAX = 100_000  # per-address memos of the hot path (canonical form, protection)
SIG_CACHE = 4096  # per generation: rules that fire at all are few
EX_DRIFT = 1  # `banctl check`: drift found (documented exit status, not a sysexit)
EX_NOT_FOUND = 1  # `banctl show`: address not in the ledger (like grep without a match)
POSITION_EVERY = 1.0  # s: positions of filtered-out alerts need no fsync each
STALL_RETRY = 1.0  # s: how often a ledger that cannot be written is tried again
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

Clock = Callable[[], float]


# --------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog=TOOL,
        description="Durable ban ledger and firewall driver for banpipe.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "The admin commands work while `banctl apply` runs: each one changes the\n"
            "ledger and the firewall itself, under the ledger's lock (<ledger>.lock), so\n"
            "it takes effect at once; the daemon watches the ledger's -wal file and\n"
            "picks up new expiries immediately (no pidfile, no signal needed).\n"
            "\n"
            "Exit status: 0 ok, 1 drift found (check) or address not in the ledger\n"
            "(show), 64 usage, 65 bad data (bad or protected address), 69 firewall\n"
            "unavailable, 73 cannot write the ledger, 78 config error."
        ),
    )
    _add_global_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubParser)
    sub.required = True
    sub.add_parser("apply", help="read alertfilter's JSON lines on stdin and ban (daemon)")
    s = sub.add_parser("list", help="active bans: address, expiry, violations, reason")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--all", action="store_true", help="include offenders not banned now")
    s = sub.add_parser("show", help="one address and every violation recorded for it")
    s.add_argument("addr", metavar="ADDR")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s = sub.add_parser("ban", help="ban an address by hand (permanent unless --for)")
    s.add_argument("addr", metavar="ADDR")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 90s, 15m, 2h, 7d")
    g.add_argument("--permanent", action="store_true", help="until unbanned (default)")
    s.add_argument("--reason", metavar="TEXT", help="why (shown by list/show)")
    s.add_argument("--force", action="store_true", help="ban even our own/whitelisted addresses")
    _json_flag(s)
    s = sub.add_parser("unban", help="lift a ban now")
    s.add_argument("addr", metavar="ADDR")
    _json_flag(s)
    s = sub.add_parser("pin", help="make an automated ban manual and permanent")
    s.add_argument("addr", metavar="ADDR")
    _json_flag(s)
    sub.add_parser("restore", help="create our firewall structure and put every active ban in")
    s = sub.add_parser(
        "teardown",
        help="remove automated entries from the firewall (ledger intact)",
        description=(
            "Remove the automated bans' firewall entries and any entry the ledger does not "
            "know; manual bans stay. With no manual ban left, banpipe's chain, sets or "
            "table go too. This is what `banctl apply` does when it stops with [ban] "
            'on_stop = "remove" (safe as ExecStopPost, safe to run twice). The ledger '
            "is not changed: `banctl restore` puts every active ban back."
        ),
    )
    s.add_argument(
        "--all", action="store_true", help="remove manual bans' entries and our structure too"
    )
    s.add_argument(
        "--orderly",
        action="store_true",
        help="only after an orderly stop: do nothing when systemd's $SERVICE_RESULT says the "
        "service failed (for ExecStopPost=; an error must not take bans down)",
    )
    s = sub.add_parser(
        "check",
        help="compare ledger and firewall; exit 1 on drift",
        description=(
            "Compare the ledger's active bans with the live firewall: missing entries, "
            "orphans (ours, not banned), duplicates, broken structure. Exit 0 when "
            "consistent, 1 when drift was found; with --repair, 0 when the firewall is "
            "consistent after the repair, 1 when drift remains. Only banpipe's own "
            'chain, sets or table are ever changed. With [ban] on_stop = "remove", '
            "automated bans are missing on purpose while `banctl apply` is not running."
        ),
    )
    s.add_argument("--repair", action="store_true", help="add missing, remove orphans")
    _json_flag(s)
    s = sub.add_parser("expire", help="lift bans that are due now, prune old history")
    _json_flag(s)
    s = sub.add_parser(
        "status",
        help="daemon, backend, bans, last alert, spoof brake, firewall vs ledger",
        description=(
            "Is `banctl apply` running, which backend, the ledger and its size, active bans "
            "by family and kind, bans added/extended/lifted in the last hour and day, the "
            "last alert, the spoof brake, the last drift repair, and whether the firewall "
            "holds exactly the ledger's bans (read live; the daemon's last check when the "
            "firewall cannot be read)."
        ),
    )
    _json_flag(s, "one JSON object (keys documented in README.md)")
    s = sub.add_parser(
        "report",
        help="write static HTML pages and tracker files from the ledger",
        description=(
            "Write the ban board (index.html, paged), one page per offender (o/ADDR.html) "
            "and the tracker files (tracker/ADDR.txt) into DIR; IPv6 colons are written "
            "as '-' in file names. Only offenders that changed since the last run are "
            "rewritten. `banctl apply` does this by itself with [pages] dir."
        ),
    )
    s.add_argument("--html", metavar="DIR", required=True, help="directory for the pages")
    return p


def _json_flag(parser: argparse.ArgumentParser, text: str = "one JSON object") -> None:
    parser.add_argument("--json", action="store_true", help=text)


def _add_global_options(p: argparse.ArgumentParser, *, again: bool = False) -> None:
    """banctl's global options; ``again`` on each subcommand, so that ``banctl list
    --backend null`` works as well as ``banctl --backend null list``."""
    cli.add_common_arguments(p, again=again)
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if again else {}
    p.add_argument(
        "--ledger", metavar="FILE", help="ledger file (default from [banctl] ledger)", **extra
    )
    p.add_argument(
        "--backend",
        choices=("iptables", "ipset", "nftables", "null"),
        help="firewall backend (default from [firewall] backend)",
        **extra,
    )


class _SubParser(cli.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self, again=True)


@dataclass
class Env:
    """What every command needs; built once per run from config and options."""

    config: Config
    ledger_path: str
    backend: str
    stdout: IO[str]
    stderr: IO[str]
    clock: Clock
    rng: Any
    runner: Any
    report: cli.Reporter
    _ledger: Ledger | None = None
    _fw: Any = None

    @property
    def policy(self) -> BanPolicy:
        try:
            return BanPolicy.from_config(self.config.ban)
        except ValueError as exc:
            raise cli.ToolError(f"[ban]: {exc}", cli.EX_CONFIG)

    @property
    def retention(self) -> float:
        return float(self.config.ban.retention)

    def existing_ledger(self) -> Ledger | None:
        """The ledger, or None when there is none yet: a read-only command (list, show,
        check) on a fresh machine creates nothing."""
        if self._ledger is None and not os.path.exists(self.ledger_path):
            return None
        return self.ledger()

    def ledger(self) -> Ledger:
        if self._ledger is None:
            try:
                self._ledger = Ledger.open(self.ledger_path)
            except LedgerError as exc:
                raise cli.ToolError(str(exc), cli.EX_CANTCREAT)
        return self._ledger

    def firewall(self) -> Any:
        if self._fw is None:
            from banpipe.firewall import FirewallError, make_backend

            try:
                settings = self.config.firewall.settings()
            except ValueError as exc:
                raise cli.ToolError(f"[firewall]: {exc}", cli.EX_CONFIG)
            try:
                self._fw = make_backend(self.backend, settings, self.runner, stream=self.stderr)
            except FirewallError as exc:
                raise cli.ToolError(f"firewall: {exc}", cli.EX_UNAVAILABLE)
        return self._fw

    def wan_addresses(self) -> set[str]:
        from banpipe.wanstate import WanStateError, read_wan_state

        path = self.config.network.wan_state
        if not path:
            return set()
        try:
            return read_wan_state(path)
        except WanStateError as exc:
            self.report.error(path, f"{exc}; using the static [network] wan only", "warning")
            return set()

    def protection(self, wan: Iterable[str] | None = None) -> Protection:
        extra: list[str] = []
        for path in self.config.filter.whitelist_files:
            try:
                nets, errors = read_address_file(path)
            except OSError as exc:
                self.report.error(path, f"cannot read whitelist: {exc.strerror}", "warning")
                continue
            for n, reason in errors:
                self.report.error(f"{path}:{n}", reason, "warning")
            extra.extend(nets)
        wan_now = self.wan_addresses() if wan is None else set(wan)
        return Protection.from_config(self.config, wan_now, extra)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


def main(
    argv: list[str] | None = None,
    stdin: IO[Any] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    *,
    clock: Clock | None = None,
    rng: Any = None,
    runner: Any = None,
) -> int:
    """Run banctl; ``clock``, ``rng`` and ``runner`` are for tests (defaults: real ones)."""
    stdin, stdout, stderr = cli.resolve_streams(stdin, stdout, stderr)
    args, code = cli.parse_args(build_parser(), argv, stdout, stderr)
    if args is None:
        return code
    if args.command != "apply" and argv is None and stdout is sys.stdout:
        # `banctl list | head` as a program; apply must never die of SIGPIPE, and a
        # caller that passes argv (a test, a script) keeps its own SIGPIPE handling.
        cli.restore_sigpipe()

    def body() -> int:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise cli.ToolError(str(exc), cli.EX_CONFIG)
        env = Env(
            config=config,
            ledger_path=args.ledger or config.banctl.ledger,
            backend=args.backend or config.firewall.backend,
            stdout=stdout,
            stderr=stderr,
            clock=clock or time.time,
            # Seeded from os.urandom once; per-draw urandom cost 2 us per alert in a flood.
            rng=rng if rng is not None else random.Random(),
            runner=runner,
            report=cli.Reporter(TOOL, stderr),
        )
        try:
            return COMMANDS[args.command](env, args, stdin)
        except _firewall_error() as exc:
            raise cli.ToolError(f"firewall: {exc}{firewall_hint(str(exc))}", cli.EX_UNAVAILABLE)
        except LedgerError as exc:
            raise cli.ToolError(str(exc), cli.EX_CANTCREAT)
        finally:
            env.close()

    return cli.run_tool(TOOL, body, debug=args.debug, stderr=stderr)


def firewall_hint(message: str) -> str:
    """What to do next after a firewall command failed, when the message tells."""
    if "No such file or directory" in message:
        return " (install it, or choose another [firewall] backend; --backend null only prints)"
    if "Permission denied" in message or "Operation not permitted" in message:
        return " (changing the firewall needs root)"
    return ""


def _firewall_error() -> type[Exception]:
    from banpipe.firewall import FirewallError

    return FirewallError


# --------------------------------------------------------------------------------------
# ledger <-> firewall: the operations shared by the daemon and the admin commands


@dataclass
class Drift:
    missing: set[str] = field(default_factory=set)  # banned in the ledger, not in firewall
    orphans: set[str] = field(default_factory=set)  # in our firewall part, not banned
    duplicates: dict[str, int] = field(default_factory=dict)
    structure_ok: bool = True
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.orphans and not self.duplicates and self.structure_ok

    def summary(self) -> str:
        parts = [
            f"{len(self.missing)} missing",
            f"{len(self.orphans)} orphans",
            f"{len(self.duplicates)} duplicates",
            "structure ok" if self.structure_ok else "structure broken",
        ]
        return ", ".join(parts)


def compare(ledger: Ledger, fw: Any) -> Drift:
    """Ledger's active bans versus what the firewall holds for us.

    Drift is confirmed by a second listing: right after a large change the kernel can
    list a big nftables set partially (seen: 98,115 of 100,000 elements, no error), and
    a false "missing" must not make ``banctl check`` report drift. Entries count as
    missing or orphaned only when both listings agree.
    """
    want = ledger.active_addresses()
    drift = _drift(want, fw.check())
    # A missing table, chain or set is no artefact of a partial listing: no second one.
    if not drift.clean and drift.structure_ok:
        again = _drift(want, fw.check())
        drift.missing &= again.missing
        drift.orphans &= again.orphans
        drift.duplicates = {a: n for a, n in drift.duplicates.items() if a in again.duplicates}
        drift.structure_ok = drift.structure_ok or again.structure_ok
        if again.structure_ok:
            drift.problems = again.problems
    return drift


def _drift(want: set[str], state: Any) -> Drift:
    have = set(state.entries)
    return Drift(
        missing=want - have,
        orphans=have - want,
        duplicates=dict(state.duplicates),
        structure_ok=bool(state.structure_ok),
        problems=list(state.problems),
    )


def reconcile(ledger: Ledger, fw: Any) -> Drift:
    """Make the firewall match the ledger; returns the drift found before repairing.

    The caller holds ``ledger.locked()``. Missing entries go in with ONE bulk
    ``block()``; orphans out with one ``release()``. A duplicate is released (all of
    its copies) and blocked again once.
    """
    drift = compare(ledger, fw)
    if not drift.structure_ok:
        fw.init()
        # One listing: a partial one could only make entries look missing, and
        # block() of a present entry changes nothing (a firewall reload is repaired
        # in the time of one listing less).
        drift_after_init = _drift(ledger.active_addresses(), fw.check())
        drift_after_init.structure_ok = False
        drift_after_init.problems = drift.problems
        drift = drift_after_init
    if drift.duplicates:
        dups = sorted(drift.duplicates)
        fw.release(dups)
        fw.block([a for a in dups if a not in drift.orphans])
    if drift.missing:
        fw.block(sorted(drift.missing))
    if drift.orphans:
        fw.release(sorted(drift.orphans))
    return drift


def restore(env: Env, ledger: Ledger, fw: Any) -> tuple[list[str], list[str], Drift]:
    """Start-up: create our structure, lift lapsed bans and our WAN addresses, restore.

    Returns (lapsed, lifted WAN addresses, drift before repair).
    """
    now = env.clock()
    with ledger.locked():
        fw.init()
        lapsed = ledger.expire(now, retention=env.retention)
        wan = lift_wan_bans(env, ledger, fw, env.wan_addresses(), release=False)
        drift = reconcile(ledger, fw)  # lapsed/WAN entries are orphans here
    return lapsed, wan, drift


def remove_automated(ledger: Ledger, fw: Any, *, thorough: bool) -> tuple[int, int]:
    """Take the automated bans out of the firewall, keep the manual ones.

    Returns (entries removed, manual bans kept). With no manual ban, all of banpipe's
    firewall part goes (``close(teardown=True)``: no empty chain, sets or table left).
    ``thorough`` also removes entries the ledger does not know, at the cost of reading
    the firewall. The caller holds ``ledger.locked()``. The ledger is not changed.
    """
    if not ledger.count_active(manual_only=True):
        fw.close(teardown=True)  # one bulk removal, no need to list anything
        return ledger.count_active(), 0
    automated = ledger.active_addresses(automated_only=True)
    manual = ledger.active_addresses() - automated
    drop = set(automated)
    if thorough:
        drop |= fw.check().entries - manual
    if drop:
        fw.release(sorted(drop))
    fw.close(teardown=False)
    return len(drop), len(manual)


def lift_wan_bans(
    env: Env, ledger: Ledger, fw: Any, wan: Iterable[str], *, release: bool = True
) -> list[str]:
    """Unban any of ``wan`` (our own addresses now, e.g. a recycled DHCP lease)."""
    banned = [a for a in sorted(set(wan)) if (o := ledger.get(a)) is not None and o.active]
    if not banned:
        return []
    with ledger.locked():
        lifted = ledger.unban(banned, env.clock(), retention=env.retention)
        if release and lifted:
            fw.release(lifted)
    for a in lifted:
        env.report.say(a, "ban lifted: it is our WAN address now", level=cli.WARNING)
    return lifted


# --------------------------------------------------------------------------------------
# apply: the daemon


@dataclass
class SpoofBrake:
    """At most ``limit`` new automated bans per ``window`` seconds; ``limit <= 0``: off.

    The count comes from the ledger's ban periods, so a restart (or a crash loop) does
    not reset the brake.
    """

    limit: int
    window: float
    engaged: bool = False
    held: int = 0
    _clears: float | None = None

    def budget(self, ledger: Ledger, now: float) -> int | None:
        if self.limit <= 0:
            return None
        starts = ledger.bans_started_since(now - self.window)
        room = self.limit - len(starts)
        # When the oldest ban that keeps us at the limit leaves the window.
        self._clears = starts[room] + self.window if room <= 0 and starts else None
        return max(0, room)

    def clears_at(self) -> float | None:
        """When the window frees room again (for the select timeout), if engaged."""
        return self._clears if self.engaged else None


def canonical_addr(text: str) -> str | None:
    """protect.canonical(), with a fast path for text that is canonical already.

    inet_pton/inet_ntop are several times faster than ``ipaddress``, which matters in a
    10,000-offender burst; anything they would spell differently (IPv4-mapped or
    dotted IPv6, upper case, leading zeros) goes to ``ipaddress`` as the judge.
    """
    v6 = ":" in text
    if not (v6 and "." in text):
        fam = socket.AF_INET6 if v6 else socket.AF_INET
        try:
            if socket.inet_ntop(fam, socket.inet_pton(fam, text)) == text:
                return text
        except (OSError, ValueError):
            if "%" in text or "/" in text or not text.isprintable():
                return None
    return canonical(text)


def violation_from(obj: dict[str, Any]) -> tuple[Violation | None, str | None]:
    """The violation an alertfilter line describes, or (None, why it is unusable).

    The reference for ``Daemon.handle``, which makes the same checks inline, with
    memos, on its hot path.
    """
    raw = obj.get("offender")
    if type(raw) is not str or not raw:
        return None, "no offender address"
    addr = canonical_addr(raw.strip())
    if addr is None:
        return None, _not_an_address(raw)
    get = obj.get
    gid, sid, rev = get("gid"), get("sid"), get("rev")
    # exact types (True is not a number here)
    if type(gid) is not int or type(sid) is not int:
        sig = None
    elif type(rev) is int:
        sig = f"{gid}:{sid}:{rev}"
    else:
        sig = f"{gid}:{sid}"
    msg, priority, reason = get("msg"), get("priority"), get("reason")
    victim = get("victim")
    return (
        Violation(
            addr,
            sig,
            msg[:1000] if type(msg) is str else None,
            priority if type(priority) is int else None,
            _victim(victim) if type(victim) is str else None,
            get("reversed") is True,
            reason[:1000] if type(reason) is str else None,
            _alert_ts(get("ts")),
        ),
        None,
    )


def _ledger_reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if isinstance(exc, LedgerError) and ": " in text else text


def _not_an_address(raw: str) -> str:
    return f"offender is not an IP address: {raw[:64]!r}"


def _victim(text: str) -> str:
    return canonical_addr(text) or text[:64]


def _sig(ids: tuple[int, int, int]) -> str:
    return f"{ids[0]}:{ids[1]}:{ids[2]}"


def _alert_ts(ts: Any) -> str | None:
    if type(ts) is str:
        return ts[:64]
    return str(ts) if type(ts) in (int, float) else None


class _Memo:
    """A bounded memo of the hot path: raw text (or another key) -> ``make(text)``.

    Two generations of at most ``size`` entries: when the new one is full it becomes
    the old one (and the old one is dropped); a hit in the old generation moves back.
    Memory stays flat, and a steady set of sources never falls off a cliff the way a
    memo that is cleared when full does. Look up with ``memo.new.get(text)`` (None:
    ask ``miss(text)``, then look ``new`` up again, it may be a fresh dict).
    """

    __slots__ = ("make", "new", "old", "size")

    def __init__(self, make: Callable[[Any], Any], size: int) -> None:
        self.make = make
        self.size = size
        self.new: dict[Any, Any] = {}
        self.old: dict[Any, Any] = {}

    def miss(self, text: Any) -> Any:
        value = self.old.pop(text, None)
        if value is None:
            value = self.make(text)
        if len(self.new) >= self.size:
            self.old, self.new = self.new, {}
        self.new[text] = value
        return value


class Daemon:
    """``banctl apply``: the main loop and its handlers (all I/O wired in ``run``)."""

    def __init__(self, env: Env, ledger: Ledger, fw: Any) -> None:
        self.env = env
        self.ledger = ledger
        self.fw = fw
        self.policy = env.policy
        self.report = env.report
        self.wan = env.wan_addresses()
        self.protection = env.protection(self.wan)
        # Raw offender text -> (canonical address or None, why it is refused or None);
        # a new one whenever the protection changes. Raw victim text -> its stored form.
        self._offenders = _Memo(self._judge, CACHE_MAX // 2)
        self._victims = _Memo(_victim, CACHE_MAX // 2)
        self._sigs = _Memo(_sig, SIG_CACHE)  # (gid, sid, rev) -> "gid:sid:rev"
        ban = env.config.ban
        self.brake = SpoofBrake(int(ban.spoof_max), float(ban.spoof_window))
        self.check_interval = max(1.0, float(env.config.banctl.check_interval))
        self.counts: Counter[str] = Counter()
        self.recorded = positions.Recorded(ledger.recorded_positions())
        self.positional = False  # the input carries position records
        self.unit: dict[tuple, list] = {}  # violations of the open unit
        self.last_pos_commit = time.monotonic()
        self.stalled: dict[tuple, list] | None = None  # a batch the ledger did not take
        self.retry_at = 0.0  # when to try the stalled batch again
        self.watcher: Any = None
        self.events: Any = None  # fwevents.FirewallEvents, when the kernel has them
        self.next_check = 0.0
        self.data_version = 0
        self.started = False
        self.stopped = False
        self.monitor = Monitor(env, ledger, self.counts, self.brake)
        self.fw = self.monitor.firewall(fw)

    # -- start and stop ----------------------------------------------------------

    def start(self) -> None:
        lapsed, _wan, drift = restore(self.env, self.ledger, self.fw)
        self.started = True
        active = self.ledger.count_active()
        self.report.say(
            None,
            f"started: {cli.plural(active, 'active ban')} in the firewall "
            f"({len(drift.missing)} restored), "
            f"{len(lapsed)} lapsed lifted, backend {self.fw.name}",
            level=cli.NOTICE,
        )
        self.monitor.started(self.fw.name, drift)
        self.prune()
        self.next_check = time.monotonic() + self.check_interval
        self.data_version = self.ledger.data_version()

    def stop(self, why: str, *, orderly: bool = False) -> None:
        """Idempotent: after an orderly stop (SIGTERM/SIGINT) remove automated entries
        or keep them by ``[ban] on_stop``; after anything else keep them.

        End of input is not an orderly stop: it is also what a crash of fasttail or
        alertfilter looks like from here, and the bans must outlive that.
        """
        if self.stopped or not self.started:
            return
        self.stopped = True
        if self.stalled is None:
            self.commit({}, force=True)  # positions still waiting
        if orderly and self.env.config.ban.on_stop == "remove":
            with self.ledger.locked():
                removed, manual = remove_automated(self.ledger, self.fw, thorough=False)
            kept = (
                f", {cli.plural(manual, 'manual ban')} kept"
                if manual
                else ", with banpipe's chain/sets/table (no manual ban left)"
            )
            firewall = (
                f"{cli.plural(removed, 'automated entry', 'automated entries')} removed{kept}"
            )
        else:
            self.fw.close(teardown=False)
            firewall = (
                'firewall entries kept (on_stop = "keep")'
                if orderly
                else "firewall entries kept (no orderly stop)"
            )
        c = self.counts
        self.report.say(
            None,
            f"stopped ({why}): {cli.plural(c['lines'], 'line')}, {cli.plural(c['banned'], 'ban')}, "
            f"{c['extended']} extended, {c['expired']} expired, {c['bad']} bad, "
            f"{c['refused']} refused, {c['held']} held by the spoof brake; {firewall}",
            level=cli.NOTICE,
        )
        self.monitor.stopped()

    # -- input ---------------------------------------------------------------------

    def _judge(self, raw: str) -> tuple[str | None, str | None]:
        """(canonical address, None) for an offender that may be banned; (address, why)
        for a protected one; (None, "") for text that is no address."""
        addr = canonical_addr(raw.strip())
        if addr is None:
            return None, ""
        return addr, self.protection.reason(addr)

    def handle(self, items: Iterable[tuple[int, dict[str, Any] | PipeError]]) -> int:
        """One burst: validate, record in one transaction, block new bans in one call.

        Returns the number of lines consumed.
        """
        groups: dict[tuple, list] = {}
        lines = self.gather(items, groups)
        self.commit(groups)
        return lines

    def gather(
        self, items: Iterable[tuple[int, dict[str, Any] | PipeError]], groups: dict[tuple, list]
    ) -> int:
        """Validate lines into ``groups`` (``Violation[:7]`` -> [alert_ts, count, last
        line, last alert_ts], what ``Ledger.record_groups`` takes); bad and refused lines are
        reported and counted. Returns the number of lines consumed.

        This is the hot path of a flood, so the checks of ``violation_from`` are made
        inline, with memos for the addresses, and each line is reduced at once to its
        violation's group: no parsed object outlives its line (a list of them made the
        cyclic GC walk it again and again).
        """
        counts, report = self.counts, self.report
        offenders, victims = self._offenders, self._victims
        judged, victim_of = offenders.new.get, victims.new.get
        sigs = self._sigs
        sig_of = sigs.new.get
        # A positional stream's alerts wait in the open unit until its position arrives.
        target = self.unit if self.positional else groups
        lines = 0
        for lineno, obj in items:
            lines += 1
            if obj.__class__ is PipeError:
                counts["bad"] += 1
                report.error(f"<stdin>:{lineno}", obj.reason, "bad")
                continue
            get = obj.get
            raw = get("offender")
            if type(raw) is not str or not raw:
                if get("type") == pipe.POSITION and get("v") == pipe.VERSION:
                    target = self.close_unit(obj, lineno, groups)
                    continue
                counts["bad"] += 1
                report.error(f"<stdin>:{lineno}", "no offender address", "bad")
                continue
            verdict = judged(raw)
            if verdict is None:
                verdict = offenders.miss(raw)
                judged = offenders.new.get
            addr, refused = verdict
            if refused is not None:
                if addr is None:
                    counts["bad"] += 1
                    report.error(f"<stdin>:{lineno}", _not_an_address(raw), "bad")
                else:
                    counts["refused"] += 1
                    report.error(
                        f"<stdin>:{lineno}", f"refusing to ban {addr}: {refused}", "refused"
                    )
                continue
            # exact types (True is not a number here), as in violation_from
            gid, sid, rev = get("gid"), get("sid"), get("rev")
            if type(gid) is not int or type(sid) is not int:
                sig = None
            elif type(rev) is int:
                sig = sig_of((gid, sid, rev))  # all exact ints: 1 and True never meet here
                if sig is None:
                    sig = sigs.miss((gid, sid, rev))
                    sig_of = sigs.new.get
            else:
                sig = f"{gid}:{sid}"
            msg, priority, victim, reason = (
                get("msg"),
                get("priority"),
                get("victim"),
                get("reason"),
            )
            if type(priority) is int and not _INT64_MIN <= priority <= _INT64_MAX:
                counts["bad"] += 1  # SQLite stores 64 bits: this line's error, not the batch's
                report.error(f"<stdin>:{lineno}", f"priority out of range: {priority}", "bad")
                continue
            if type(victim) is str:
                text = victim
                victim = victim_of(text)
                if victim is None:
                    victim = victims.miss(text)
                    victim_of = victims.new.get
            else:
                victim = None
            key = (
                addr,
                sig,
                msg[:1000] if type(msg) is str else None,
                priority if type(priority) is int else None,
                victim,
                get("reversed") is True,
                reason[:1000] if type(reason) is str else None,
            )
            ts = get("ts")
            if type(ts) is not str or len(ts) > 64:
                ts = _alert_ts(ts)
            group = target.get(key)
            if group is None:
                target[key] = [ts, 1, lineno, ts]
            else:
                group[1] += 1
                group[2] = lineno
                group[3] = ts
        counts["lines"] += lines
        if lines:
            self.monitor.input_seen()
        return lines

    def close_unit(self, obj: dict[str, Any], lineno: int, groups: dict[tuple, list]) -> dict:
        """A position record closes the open unit: its violations join ``groups`` (to
        be recorded with the position) unless the ledger already holds them. Returns
        the new open unit."""
        self.positional = True
        try:
            pos = positions.parse(obj)
        except ValueError as exc:
            self.counts["bad"] += 1
            self.report.error(f"<stdin>:{lineno}", f"bad position: {exc}", "bad")
            return self.unit  # the unit stays open until a valid position closes it
        if pos is None or self.recorded.is_new(pos):
            positions.merge(groups, self.unit)
            if pos is not None:
                self.recorded.advance(pos)
        else:
            self.counts["repeated"] += sum(g[1] for g in self.unit.values())
        self.unit = {}
        return self.unit

    def drop_open_unit(self) -> None:
        """End of input inside a unit: its alerts come again when fasttail resumes."""
        n = sum(g[1] for g in self.unit.values())
        if n:
            self.report.say(
                None,
                f"end of input after {n} violations without their position: not "
                "recorded (they come again from the recorded position)",
            )
        self.unit = {}

    def commit(self, groups: dict[tuple, list], *, force: bool = False) -> bool:
        """Record gathered violations and the positions of their units in one durable
        transaction, then block the new bans in one firewall call.

        Positions without violations (every alert of their units was filtered out)
        are recorded at most every POSITION_EVERY seconds, unless ``force``. When the
        ledger cannot be written (disk full, read-only), nothing is lost: the batch is
        kept in ``self.stalled`` and input is not read until a retry succeeds; the
        firewall keeps enforcing what the ledger holds. Returns False while stalled.
        """
        rows = self.recorded.rows() if self.recorded.pending else []
        if not groups and (
            not rows
            or not (force or self.recorded.urgent)
            and time.monotonic() - self.last_pos_commit < POSITION_EVERY
        ):
            return True
        counts = self.counts
        now = self.env.clock()
        try:
            budget = self.brake.budget(self.ledger, now)
            with self.ledger.locked():
                with self.ledger.transaction():
                    out = self.ledger.record_groups(
                        groups, now, self.policy, self.env.rng, new_ban_budget=budget
                    )
                    if rows:
                        self.ledger.record_positions(rows)
                self.recorded.pending.clear()
                self.recorded.urgent = False
                self.last_pos_commit = time.monotonic()
                if out.new_bans:
                    self._firewall(self.fw.block, out.new_bans)
        except (LedgerError, sqlite3.Error) as exc:
            self.stall(groups, exc)
            return False
        if self.stalled is not None:
            self.stalled = None
            self.report.say(None, "the ledger is writable again; reading input again")
        counts["banned"] += len(out.new_bans)
        counts["extended"] += len(out.extended)
        counts["held"] += len(out.held)
        self.log_bans(out.new_bans, groups)
        if out.held and not self.brake.engaged:
            self.brake.engaged = True
            self.report.say(
                None,
                f"SPOOF BRAKE: more than {self.brake.limit} new bans within "
                f"{self.brake.window:g} s; not adding new bans (still recording violations "
                f"and extending existing bans); first held: {out.held[0]}",
                level=cli.WARNING,
            )
            self.monitor.brake_tripped()
        self.brake.held += len(out.held)
        self.data_version = self.ledger.data_version()
        self.monitor.changed()
        return True

    def stall(self, groups: dict[tuple, list], exc: Exception) -> None:
        """The ledger cannot be written: keep the batch, stop reading, say so once."""
        self.retry_at = time.monotonic() + STALL_RETRY
        if self.stalled is None:
            self.report.say(
                self.ledger.path,
                f"cannot write the ledger ({_ledger_reason(exc)}): not reading input "
                f"until it can; the firewall keeps enforcing {self.ledger.count_active()} "
                f"active bans; retrying every {STALL_RETRY:g} s",
                level=cli.ERR,
            )
        self.stalled = groups

    def log_bans(self, new: list[str], groups: dict[tuple, list]) -> None:
        if not new:
            return
        if len(new) > 20:
            self.report.say(None, f"banned {len(new)} new offenders (first {new[0]})")
            return
        first: dict[str, tuple] = {}
        for key in groups:
            first.setdefault(key[0], key)  # the violation that caused the ban
        for a in new:
            k = first.get(a)
            what = f"{k[1] or '?'} {k[2] or ''}".strip() if k else ""
            o = self.ledger.get(a)
            until = format_expiry(o.expires if o else None, self.env.clock())
            self.report.say(a, f"banned until {until}: {what}")

    def brake_tick(self, now: float) -> None:
        if self.brake.engaged and self.brake.budget(self.ledger, now):
            self.brake.engaged = False
            self.report.say(
                None,
                f"spoof brake released: {self.brake.held} new bans were held back",
                level=cli.NOTICE,
            )
            self.brake.held = 0

    # -- time ----------------------------------------------------------------------

    def expire_due(self) -> None:
        now = self.env.clock()
        nxt = self.ledger.next_expiry()
        if nxt is None or nxt > now:
            return
        try:
            with self.ledger.locked():
                due = self.ledger.expire(now, retention=self.env.retention)
                if due:
                    self._firewall(self.fw.release, due)
        except (LedgerError, sqlite3.Error):
            return  # cannot write: the bans stay, in the ledger and the firewall alike
        self.counts["expired"] += len(due)
        if 0 < len(due) <= 20:
            for a in due:
                self.report.say(a, "ban expired, lifted")
        elif due:
            self.report.say(None, f"{len(due)} bans expired, lifted")
        self.data_version = self.ledger.data_version()
        self.monitor.changed()

    def periodic(self) -> None:
        """Drift check and repair (an external flush), then history pruning."""
        self.repair("firewall drift repaired")
        self.prune()

    def repair(self, said: str) -> None:
        with self.ledger.locked():
            drift = reconcile(self.ledger, self.fw)
        self.monitor.checked(drift)
        self.own_events()
        if not drift.clean:
            self.report.say(None, f"{said}: {drift.summary()}", level=cli.WARNING)

    def open_events(self) -> None:
        """Listen for our part of the firewall being taken away (banpipe.fwevents)."""
        if self.fw.name not in ("iptables", "ipset", "nftables"):
            return
        from banpipe.fwevents import Concern, FirewallEvents

        s = self.env.config.firewall.settings()
        try:
            self.events = FirewallEvents(Concern(self.fw.name, s.table, s.chain, s.hooks))
        except OSError as exc:
            self.report.say(
                None,
                f"no firewall change events ({exc.strerror or exc}); drift is repaired "
                "at the periodic check only",
                level=cli.WARNING,
            )

    def own_events(self) -> None:
        """Forget the notifications of our own changes (they were queued before the
        change returned): only changes by others should trigger a repair."""
        if self.events is not None:
            self.events.read()

    def firewall_changed(self) -> None:
        """A notification: something of ours vanished (flush, reload). Repair now."""
        if self.events is not None and self.events.read():
            self._guarded(lambda: self.repair("firewall changed from outside; repaired"))

    def prune(self) -> None:
        ban = self.env.config.ban
        with contextlib.suppress(LedgerError, sqlite3.Error):  # a full disk: next time
            self.ledger.prune(
                self.env.clock(),
                retention=float(ban.retention),
                recidive_window=float(ban.recidive_window),
            )

    def timeout(self) -> float:
        """Seconds until something is due: next expiry, periodic check, brake release."""
        now, mono = self.env.clock(), time.monotonic()
        deadlines = [self.next_check - mono]
        nxt = self.ledger.next_expiry()
        if nxt is not None:
            deadlines.append(nxt - now)
        clears = self.brake.clears_at()
        if clears is not None:
            deadlines.append(clears - now)
        writes = self.monitor.deadline()
        if writes is not None:
            deadlines.append(writes)
        if self.stalled is not None:
            deadlines.append(self.retry_at - mono)
        elif self.recorded.pending:
            deadlines.append(self.last_pos_commit + POSITION_EVERY - mono)
        return min(max(0.0, d) for d in deadlines)

    def wan_first(self) -> None:
        """Apply a WAN change that happened before the input just read (an alert that
        names the new address must meet the new protection, not the old one)."""
        watcher = self.watcher
        if watcher is None or not self.env.config.network.wan_state:
            return
        if select.select([watcher], [], [], 0)[0]:
            wan = os.path.abspath(self.env.config.network.wan_state)
            if wan in watcher.changed():
                self.wan_changed()

    def wan_changed(self) -> None:
        wan = self.env.wan_addresses()
        if wan == self.wan:
            return
        added = wan - self.wan
        self.wan = wan
        self.protection = self.env.protection(wan)
        self._offenders = _Memo(self._judge, CACHE_MAX // 2)
        self.report.say(None, f"WAN addresses now {', '.join(sorted(wan)) or 'none'}")
        lift_wan_bans(self.env, self.ledger, self.fw, added)
        self.monitor.changed()

    def ledger_changed(self) -> bool:
        """True when another process committed (an admin command) since we last looked."""
        version = self.ledger.data_version()
        changed = version != self.data_version
        self.data_version = version
        if changed:
            self.monitor.changed()
        return changed

    # -- the loop ------------------------------------------------------------------

    def run(self, stdin: IO[Any]) -> None:
        """Start, consume input until end of input or SIGTERM/SIGINT, then stop.

        Signal handlers go in before start-up (a restore of 100,000 bans takes a
        moment) and only set a flag and wake select() through a pipe, so a second
        SIGTERM during the teardown changes nothing.
        """
        fd = _fileno(stdin)
        if fd is None:
            self._run_stream(stdin)
            return
        from banpipe.watch import PathWatcher

        flag = cli.StopFlag()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old = _install_signals(flag, wake_w)
        watcher = None
        why = "error"
        try:
            self.open_events()  # before the restore: a flush from now on is noticed
            self.start()
            self.own_events()
            wan_path = self.env.config.network.wan_state
            watched = [self.ledger.path + "-wal", self.ledger.path]
            watcher = PathWatcher([*watched, *([wan_path] if wan_path else [])])
            self.watcher = watcher
            self._loop(fd, flag, wake_r, watcher)
            why = "end of input"
            if flag.stop:
                why = "signal " + signal.Signals(flag.signals[0]).name
        finally:
            try:
                self.stop(why, orderly=flag.stop)
            finally:
                if watcher is not None:
                    watcher.close()
                if self.events is not None:
                    self.events.close()
                _restore_signals(old)
                os.close(wake_r)
                os.close(wake_w)

    def _run_stream(self, stdin: IO[Any]) -> None:
        """Injected in-memory input (tests): read it all, in bounded bursts."""
        why = "error"
        try:
            self.start()
            reader = PipeReader()
            data = stdin.read()
            reader.feed(data.encode() if isinstance(data, str) else data)
            reader.finish()
            objects = reader.objects()
            while self.handle(itertools.islice(objects, BATCH_MAX_LINES)):
                pass
            self.drop_open_unit()
            self.commit({}, force=True)
            self.expire_due()
            why = "end of input"
        finally:
            self.stop(why)

    def _loop(self, fd: int, flag: cli.StopFlag, wake_r: int, watcher: Any) -> None:
        wan_path = self.env.config.network.wan_state
        wan_abs = os.path.abspath(wan_path) if wan_path else None
        reader = PipeReader()
        while not flag.stop:
            self.brake_tick(self.env.clock())
            # While the ledger cannot take a batch, input waits in the pipe: upstream
            # blocks and nothing is read past what is recorded.
            inputs = [fd] if self.stalled is None else []
            if self.events is not None:
                inputs.append(self.events)
            ready, _, _ = select.select([*inputs, watcher, wake_r], [], [], self.timeout())
            if wake_r in ready:
                _drain(wake_r)
            if flag.stop:
                return
            if self.events is not None and self.events in ready:
                self.firewall_changed()
            if watcher in ready:
                if wan_abs and wan_abs in watcher.changed():
                    self.wan_changed()
                # An admin commit needs nothing else: timeout() asks the ledger for the
                # next expiry on every pass.
                self.ledger_changed()
            if self.stalled is not None:
                # Not on every wake-up: a failed write touches the -wal file, whose
                # inotify event would wake us again at once.
                if time.monotonic() >= self.retry_at:
                    self.commit(self.stalled, force=True)
            elif fd in ready:
                groups: dict[tuple, list] = {}
                eof = self._read_burst(fd, reader, groups)
                if eof:
                    reader.finish()
                    self.gather(reader.objects(), groups)
                    self.drop_open_unit()
                self.commit(groups, force=eof)
                if eof:
                    return
            else:
                self.commit({})  # positions of filtered-out alerts, when due
            self.expire_due()
            if time.monotonic() >= self.next_check:
                self.next_check = time.monotonic() + self.check_interval
                self._guarded(self.periodic)
                self.wan_changed()  # in case /run/banpipe appeared only now
            self.monitor.tick()

    def _read_burst(self, fd: int, reader: PipeReader, groups: dict[tuple, list]) -> bool:
        """Read and gather what is available now (one burst); True at end of input.

        A single alert is handled at once. In a flood (the burst already holds more
        than FLOOD_BYTES) banctl lingers up to FLOOD_LINGER for the producer's next
        write, up to FLOOD_SPAN in all: one durable commit then covers thousands of
        alerts instead of a few hundred, which is what keeps up with a flood. Each
        chunk is gathered as soon as it is read, so the producer keeps writing into
        the pipe while banctl works instead of waiting for the whole burst.
        """
        total = 0
        started = time.monotonic()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            reader.feed(chunk)
            self.wan_first()
            self.gather(reader.objects(), groups)
            total += len(chunk)
            if total >= BATCH_MAX_BYTES:
                return False
            if select.select([fd], [], [], 0)[0]:
                continue
            if total < FLOOD_BYTES or time.monotonic() - started > FLOOD_SPAN:
                return False
            if not select.select([fd], [], [], FLOOD_LINGER)[0]:
                return False

    def _firewall(self, action: Callable[[list[str]], None], addrs: list[str]) -> None:
        """A firewall change after its ledger commit. On failure the ledger already
        holds the truth: report it and let the periodic check repair within seconds."""
        try:
            action(addrs)
        except _firewall_error() as exc:
            self.report.error("firewall", f"{exc}; repairing at the next check", "firewall")
            self.next_check = min(self.next_check, time.monotonic() + 2.0)
        self.own_events()

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run a periodic action; a firewall hiccup is reported and retried soon."""
        try:
            action()
        except _firewall_error() as exc:
            self.report.error("firewall", f"{exc}; retrying", "firewall")
            self.next_check = time.monotonic() + min(5.0, self.check_interval)


def _fileno(stream: IO[Any]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 512):
            pass


def _install_signals(flag: cli.StopFlag, wake_w: int) -> tuple[Any, Any, int]:
    old = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    flag.install()
    old_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    return old[0], old[1], old_fd


def _restore_signals(old: tuple[Any, Any, int]) -> None:
    signal.signal(signal.SIGTERM, old[0])
    signal.signal(signal.SIGINT, old[1])
    signal.set_wakeup_fd(old[2])


def cmd_apply(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger, fw = env.ledger(), env.firewall()
    Daemon(env, ledger, fw).run(getattr(stdin, "buffer", stdin))
    return cli.EX_OK


# --------------------------------------------------------------------------------------
# admin commands


def _address(env: Env, text: str) -> str:
    addr = canonical(text.strip())
    if addr is None:
        raise cli.ToolError(f"{text}: not an IP address", cli.EX_DATAERR)
    return addr


def cmd_list(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger = env.existing_ledger()
    now = env.clock()
    rows = ledger.offenders(active_only=not args.all) if ledger is not None else []
    out = env.stdout
    width = term.width(out)
    if args.json:
        for o in rows:
            out.write(json.dumps(o.as_dict(), ensure_ascii=False) + "\n")
        return cli.EX_OK
    if not rows:
        out.write("no active bans\n" if not args.all else "no offenders\n")
        return cli.EX_OK
    # ORIGIN (the gateway whose decision banned it, through banshare) only in a fleet.
    fleet = any(o.origin for o in rows)
    table = [("ADDRESS", "EXPIRES", "VIOL", "BANS", "KIND", *(("ORIGIN",) if fleet else ()))]
    reasons = ["REASON"]
    for o in rows:
        expires = format_expiry(o.expires, now) if o.active else "not banned"
        kind = ("manual" if o.manual else "auto") if o.active else "-"
        origin = ((o.origin or "local"),) if fleet else ()
        table.append((o.addr, expires, str(o.violations), str(o.bans), kind, *origin))
        reasons.append(o.reason or "")
    n = len(table[0])
    widths = [max(len(r[i]) for r in table) for i in range(n)]
    for r, reason in zip(table, reasons, strict=True):
        cells = [r[i].rjust(widths[i]) if i in (2, 3) else r[i].ljust(widths[i]) for i in range(n)]
        out.write(term.fit("  ".join(cells) + "  " + reason, width) + "\n")
    active = sum(1 for o in rows if o.active)
    out.write(f"{cli.plural(active, 'active ban')}\n")
    return cli.EX_OK


def cmd_show(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    addr = _address(env, args.addr)
    ledger = env.existing_ledger()
    o = ledger.get(addr) if ledger is not None else None
    if o is None:
        # A question with the answer "no", like grep without a match: exit 1.
        env.stdout.write(f"{addr}: not in the ledger (never banned, or history pruned)\n")
        return EX_NOT_FOUND
    history = ledger.history(addr)
    out, now = env.stdout, env.clock()
    if args.json:
        out.write(json.dumps(o.as_dict(), ensure_ascii=False) + "\n")
        for h in history:
            out.write(json.dumps(h.as_dict(), ensure_ascii=False) + "\n")
        return cli.EX_OK
    kind = ("manual" if o.manual else "auto") + (f", from {o.origin}" if o.origin else "")
    state = f"banned ({kind}) {format_until(o.expires, now)}" if o.active else "not banned"
    out.write(f"{o.addr}: {state}\n")
    out.write(
        f"  first seen {_stamp(o.first_seen)}, last seen {_stamp(o.last_seen)}, "
        f"{cli.plural(o.violations, 'violation')}, banned {cli.times(o.bans)}\n"
    )
    if o.reason:
        out.write(f"  last reason: {o.reason}\n")
    for h in history:
        flag = " (reversed)" if h.reversed else ""
        prio = f" prio {h.priority}" if h.priority is not None else ""
        victim = f" -> {h.victim}" if h.victim else ""
        msg = f" {json.dumps(h.msg, ensure_ascii=False)}" if h.msg else ""
        flag += f" x{h.count}" if h.count > 1 else ""
        out.write(f"  {_alert_time(h)}  {h.sig or '?'}{msg}{prio}{victim}{flag}\n")
    if not history:
        out.write("  (no violations kept; see [ban] retention)\n")
    return cli.EX_OK


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _alert_time(v: Violation) -> str:
    """When the alert happened (its own time stamp, the IDS's local time), not when
    banctl recorded it; the record time only for an alert without a usable stamp."""
    if v.alert_ts:
        return v.alert_ts.replace("T", " ")[:19]
    return _stamp(v.ts)


def cmd_ban(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    addr = _address(env, args.addr)
    if not args.force:
        why = env.protection().reason(addr)
        if why is not None:
            raise cli.ToolError(
                f"{addr}: refusing to ban: {why} (use --force to ban anyway)", cli.EX_DATAERR
            )
    elif canonical(addr) is None:  # pragma: no cover - _address already checked
        raise cli.ToolError(f"{addr}: not an IP address", cli.EX_DATAERR)
    now = env.clock()
    expires = None
    if args.duration:
        try:
            expires = now + parse_duration(args.duration)
        except ValueError as exc:
            raise cli.ToolError(f"--for: {exc}", cli.EX_USAGE)
    ledger, fw = env.ledger(), env.firewall()
    with ledger.locked():
        fresh = ledger.ban(addr, now, expires=expires, reason=args.reason or "manual ban")
        fw.init()
        fw.block([addr])
    if args.json:
        return _json(
            env,
            {
                "addr": addr,
                "result": "banned" if fresh else "changed",
                "expires": expires,
                "manual": True,
            },
        )
    verb = "banned" if fresh else "ban changed to manual"
    env.stdout.write(f"{addr}: {verb} {format_until(expires, now)}\n")
    return cli.EX_OK


def cmd_unban(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    addr = _address(env, args.addr)
    ledger = env.existing_ledger()
    if ledger is None:  # fresh machine: nothing was ever banned, nothing to create
        if args.json:
            return _json(env, {"addr": addr, "result": "not_banned"})
        env.stdout.write(f"{addr}: was not banned\n")
        return cli.EX_OK
    fw = env.firewall()
    with ledger.locked():
        ended = ledger.unban([addr], env.clock(), retention=env.retention)
        try:
            fw.release([addr])  # also clears a stray entry the ledger did not know
        except _firewall_error():
            if ended:
                raise
            # Not banned, and our chain/sets/table are not there to hold a stray entry
            # (nothing was ever applied): the answer stands.
    if args.json:
        return _json(env, {"addr": addr, "result": "unbanned" if ended else "not_banned"})
    env.stdout.write(f"{addr}: {'unbanned' if ended else 'was not banned'}\n")
    return cli.EX_OK


def cmd_pin(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    addr = _address(env, args.addr)
    ledger, fw = env.ledger(), env.firewall()
    with ledger.locked():
        if not ledger.pin(addr, env.clock()):
            raise cli.ToolError(f"{addr}: not banned", cli.EX_DATAERR)
        fw.init()
        fw.block([addr])
    if args.json:
        return _json(env, {"addr": addr, "result": "pinned", "expires": None, "manual": True})
    env.stdout.write(f"{addr}: pinned (manual, permanent)\n")
    return cli.EX_OK


def cmd_restore(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger, fw = env.ledger(), env.firewall()
    lapsed, wan, drift = restore(env, ledger, fw)
    env.stdout.write(
        f"restored: {cli.plural(ledger.count_active(), 'active ban')}, {len(drift.missing)} added, "
        f"{len(drift.orphans)} orphans removed, {len(lapsed)} lapsed lifted\n"
    )
    return cli.EX_OK


def cmd_teardown(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    result = os.environ.get("SERVICE_RESULT")
    if args.orderly and result not in (None, "success"):
        env.stdout.write(f"teardown skipped: the service ended with {result}; entries stay\n")
        return cli.EX_OK
    ledger, fw = env.ledger(), env.firewall()
    with ledger.locked():
        if args.all:
            fw.close(teardown=True)
            what = "all of banpipe's firewall entries and structure removed"
        else:
            removed, manual = remove_automated(ledger, fw, thorough=True)
            what = (
                f"{cli.plural(removed, 'automated entry', 'automated entries')} removed, "
                f"{cli.plural(manual, 'manual ban')} kept"
            )
    active = ledger.count_active()
    env.stdout.write(
        f"teardown: {what}; {cli.plural(active, 'active ban')} "
        f"{'stays' if active == 1 else 'stay'} in the ledger "
        f"(banctl restore puts {'it' if active == 1 else 'them'} back)\n"
    )
    return cli.EX_OK


def cmd_check(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger = env.ledger() if args.repair else env.existing_ledger()
    out = env.stdout
    if ledger is None:
        out.write(f"consistent: no ledger yet ({env.ledger_path}), nothing banned\n")
        return cli.EX_OK
    fw = env.firewall()
    with ledger.locked():
        if not args.repair and not ledger.count_active() and _nothing_of_ours(fw):
            out.write(
                "consistent: 0 active bans; banpipe's firewall part is not set up yet "
                "(banctl apply or banctl restore creates it)\n"
            )
            return cli.EX_OK
        drift = reconcile(ledger, fw) if args.repair else compare(ledger, fw)
        after = compare(ledger, fw) if args.repair else drift
    if args.json:
        _json(env, _check_json(drift, after, ledger.count_active(), args.repair))
        return cli.EX_OK if after.clean else EX_DRIFT
    for a in sorted(drift.missing):
        out.write(f"missing {a}\n")
    for a in sorted(drift.orphans):
        out.write(f"orphan {a}\n")
    for a, n in sorted(drift.duplicates.items()):
        out.write(f"duplicate {a} x{n}\n")
    for p in drift.problems:
        out.write(f"problem {p}\n")
    if drift.clean:
        out.write(f"consistent: {cli.plural(ledger.count_active(), 'active ban')}\n")
        return cli.EX_OK
    if args.repair:
        status = "repaired" if after.clean else f"still drifting ({after.summary()})"
        out.write(f"drift: {drift.summary()}; {status}\n")
        return cli.EX_OK if after.clean else EX_DRIFT
    out.write(f"drift: {drift.summary()} (banctl check --repair fixes it)\n")
    return EX_DRIFT


def _nothing_of_ours(fw: Any) -> bool:
    """True when the firewall holds no entry and none of our structure (a machine where
    nothing was applied yet, or after a full teardown): no drift to speak of."""
    try:
        state = fw.check()
    except _firewall_error():
        return False
    return not state.entries and not state.structure_ok


def cmd_expire(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger, fw = env.ledger(), env.firewall()
    now = env.clock()
    with ledger.locked():
        due = ledger.expire(now, retention=env.retention)
        if due:
            fw.release(due)
    ban = env.config.ban
    pruned = ledger.prune(
        now, retention=float(ban.retention), recidive_window=float(ban.recidive_window)
    )
    if args.json:
        return _json(env, {"expired": due, "pruned": pruned})
    for a in due:
        env.stdout.write(f"expired {a}\n")
    env.stdout.write(
        f"{len(due)} expired; pruned {pruned['violations']} violations, "
        f"{pruned['offenders']} offenders\n"
    )
    return cli.EX_OK


def _json(env: Env, obj: dict[str, Any]) -> int:
    """One JSON object on stdout (the --json form of a command's result)."""
    env.stdout.write(json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n")
    return cli.EX_OK


def _check_json(drift: Drift, after: Drift, active: int, repair: bool) -> dict[str, Any]:
    return {
        "active": active,
        "consistent": drift.clean,
        "missing": sorted(drift.missing),
        "orphans": sorted(drift.orphans),
        "duplicates": dict(sorted(drift.duplicates.items())),
        "problems": list(drift.problems),
        "repaired": bool(repair and not drift.clean and after.clean),
    }


def cmd_status(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    from banpipe import status

    ledger = env.ledger()
    live = None
    try:
        with ledger.locked():
            drift = compare(ledger, env.firewall())
        entries = ledger.count_active() - len(drift.missing) + len(drift.orphans)
        live = {"entries": entries, "missing": len(drift.missing), "orphans": len(drift.orphans)}
    except (cli.ToolError, _firewall_error()):
        pass  # no access to the firewall (not root): the daemon's last check stands in
    ban = env.config.ban
    now = env.clock()
    result = status.collect(
        ledger,
        now,
        backend=env.backend,
        spoof_max=int(ban.spoof_max),
        spoof_window=float(ban.spoof_window),
        firewall=live,
    )
    if args.json:
        return _json(env, result)
    env.stdout.write(status.format_status(result, now))
    return cli.EX_OK


def cmd_report(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    from banpipe.report import write_pages

    try:
        done = write_pages(env.ledger(), args.html, env.clock())
    except OSError as exc:
        raise cli.ToolError(f"{args.html}: {exc.strerror or exc}", cli.EX_CANTCREAT)
    env.stdout.write(
        f"{args.html}: {done.index_pages} index pages, {done.offender_pages} offender pages "
        f"and {done.tracker_files} tracker files written, {done.unchanged} unchanged, "
        f"{done.removed} files removed\n"
    )
    return cli.EX_OK


COMMANDS: dict[str, Callable[[Env, argparse.Namespace, IO[Any]], int]] = {
    "apply": cmd_apply,
    "list": cmd_list,
    "show": cmd_show,
    "ban": cmd_ban,
    "unban": cmd_unban,
    "pin": cmd_pin,
    "restore": cmd_restore,
    "teardown": cmd_teardown,
    "check": cmd_check,
    "expire": cmd_expire,
    "status": cmd_status,
    "report": cmd_report,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
