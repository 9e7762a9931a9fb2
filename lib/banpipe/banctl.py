"""banctl: the ban ledger and the firewall, as a pipe consumer and an admin tool.

``... | alertfilter | banctl apply`` runs the daemon (banpipe.daemon): it records
every violation in the ledger, bans each offender once, extends its ban on new
violations and lifts it when it expires. The admin commands here (``list``, ``show``,
``ban``, ``unban``, ``pin``, ``restore``, ``teardown``, ``check``, ``expire``,
``status``, ``report``) work while ``apply`` runs: each changes the ledger and the
firewall itself under the ledger's lock. Ledger versus firewall (drift, repair,
restore, removal) lives in banpipe.reconcile; what every command needs in
banpipe.ctlenv; the command line (options, help) in banpipe.ctlargs; ``list`` and
``show`` as text in banpipe.listing; what people and monitoring see in ``status.py``,
``report.py``, ``metrics.py`` and ``monitor.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import IO, Any

from banpipe import cli, listing, term
from banpipe.address import entry
from banpipe.bantime import format_until
from banpipe.config import ConfigError, load_config
from banpipe.convert import parse_duration
from banpipe.ctlargs import TOOL, build_parser
from banpipe.ctlenv import Clock, Env
from banpipe.ledger import LedgerError
from banpipe.reconcile import (
    block,
    compare,
    firewall_error,
    firewall_hint,
    lift,
    nothing_of_ours,
    reconcile,
    remove_automated,
    restore,
)

__all__ = ["COMMANDS", "TOOL", "build_parser", "main"]

EX_DRIFT = 1  # `banctl check`: drift found (documented exit status, not a sysexit)
EX_NOT_FOUND = 1  # `banctl show`: address not in the ledger (like grep without a match)


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
        env = Env.build(
            config, args, stdout, stderr, tool=TOOL, clock=clock, rng=rng, runner=runner
        )
        try:
            return COMMANDS[args.command](env, args, stdin)
        except firewall_error() as exc:
            raise cli.ToolError(f"firewall: {exc}{firewall_hint(str(exc))}", cli.EX_UNAVAILABLE)
        except LedgerError as exc:
            raise cli.ToolError(str(exc), cli.EX_CANTCREAT)
        finally:
            env.close()

    return cli.run_tool(TOOL, body, debug=args.debug, stderr=stderr)


def cmd_apply(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger, fw = env.ledger(), env.firewall()
    # Imported here: the admin commands do without the daemon's modules (list's first
    # page sooner).
    from banpipe.daemon import Daemon

    Daemon(env, ledger, fw).run(getattr(stdin, "buffer", stdin))
    return cli.EX_OK


# --------------------------------------------------------------------------------------
# admin commands


def _address(env: Env, text: str) -> str:
    """The ledger key ADDR names: an address, or a range in CIDR form (203.0.113.0/24;
    host bits are cleared, a /32 or /128 is the address)."""
    addr = entry(text.strip())
    if addr is None:
        raise cli.ToolError(f"{text}: not an IP address or network", cli.EX_DATAERR)
    return addr


def cmd_list(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger = env.existing_ledger()
    rows = ledger.iter_offenders(active_only=not args.all) if ledger is not None else iter(())
    out = env.stdout
    if args.json:
        for o in rows:
            out.write(json.dumps(o.as_dict(), ensure_ascii=False) + "\n")
        return cli.EX_OK
    # ORIGIN (the gateway whose decision banned it, through banshare) only in a fleet.
    fleet = ledger is not None and ledger.any_origin(active_only=not args.all)
    width = term.width(out)
    for text in listing.table(rows, env.clock(), every=args.all, fleet=fleet, width=width):
        out.write(text)
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
    out = env.stdout
    if args.json:
        out.write(json.dumps(o.as_dict(), ensure_ascii=False) + "\n")
        for h in history:
            out.write(json.dumps(h.as_dict(), ensure_ascii=False) + "\n")
        return cli.EX_OK
    out.write(listing.offender(o, history, env.clock()))
    return cli.EX_OK


def cmd_ban(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    addr = _address(env, args.addr)
    if not args.force:
        # A range: refused when it holds any protected address.
        why = env.protection().range_reason(addr)
        if why is not None:
            raise cli.ToolError(
                f"{addr}: refusing to ban: {why} (use --force to ban anyway)", cli.EX_DATAERR
            )
    now = env.clock()
    expires = None
    if args.duration:
        try:
            expires = now + parse_duration(args.duration, positive=True)
        except ValueError as exc:
            raise cli.ToolError(f"--for: {exc}", cli.EX_USAGE)
    ledger, fw = env.ledger(), env.firewall()
    with ledger.locked():
        fresh = ledger.ban(addr, now, expires=expires, reason=args.reason or "manual ban")
        fw.init()
        block(env, ledger, fw, [addr])
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
            lift(fw, [addr], ledger)  # also clears a stray entry the ledger did not know
        except firewall_error():
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
        block(env, ledger, fw, [addr])
    if args.json:
        return _json(env, {"addr": addr, "result": "pinned", "expires": None, "manual": True})
    env.stdout.write(f"{addr}: pinned (manual, permanent)\n")
    return cli.EX_OK


def cmd_restore(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger, fw = env.ledger(), env.firewall()
    lapsed, wan, drift = restore(env, ledger, fw)
    if args.json:
        return _json(
            env,
            {
                "active": ledger.count_active(),
                "added": len(drift.missing),
                "orphans_removed": len(drift.orphans),
                "lapsed": sorted(lapsed),
                "wan_lifted": sorted(wan),
            },
        )
    env.stdout.write(
        f"restored: {cli.plural(ledger.count_active(), 'active ban')}, {len(drift.missing)} added, "
        f"{len(drift.orphans)} orphans removed, {len(lapsed)} lapsed lifted\n"
    )
    return cli.EX_OK


def cmd_teardown(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    result = os.environ.get("SERVICE_RESULT")
    if args.orderly and result not in (None, "success"):
        if args.json:
            return _json(env, {"result": "skipped", "service_result": result})
        env.stdout.write(f"teardown skipped: the service ended with {result}; entries stay\n")
        return cli.EX_OK
    ledger, fw = env.ledger(), env.firewall()
    with ledger.locked():
        if args.all:
            fw.close(teardown=True)
            removed, manual = None, 0
            what = "all of banpipe's firewall entries and structure removed"
        else:
            removed, manual = remove_automated(ledger, fw, thorough=True)
            what = (
                f"{cli.plural(removed, 'automated entry', 'automated entries')} removed, "
                f"{cli.plural(manual, 'manual ban')} kept"
            )
    active = ledger.count_active()
    if args.json:
        result = "all_removed" if args.all else "removed"
        return _json(
            env, {"result": result, "removed": removed, "manual_kept": manual, "active": active}
        )
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
        if not args.repair and not ledger.count_active() and nothing_of_ours(fw):
            out.write(
                "consistent: 0 active bans; banpipe's firewall part is not set up yet "
                "(banctl apply or banctl restore creates it)\n"
            )
            return cli.EX_OK
        drift = reconcile(ledger, fw, env) if args.repair else compare(ledger, fw)
        after = compare(ledger, fw) if args.repair else drift
    if args.json:
        _json(env, drift.as_json(after, ledger.count_active(), repair=args.repair))
        return cli.EX_OK if after.clean else EX_DRIFT
    out.write(drift.as_text())
    if drift.clean:
        out.write(f"consistent: {cli.plural(ledger.count_active(), 'active ban')}\n")
        return cli.EX_OK
    if args.repair:
        status = "repaired" if after.clean else f"still drifting ({after.summary()})"
        out.write(f"drift: {drift.summary()}; {status}\n")
        return cli.EX_OK if after.clean else EX_DRIFT
    out.write(f"drift: {drift.summary()} (banctl check --repair fixes it)\n")
    return EX_DRIFT


def cmd_expire(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger, fw = env.ledger(), env.firewall()
    now = env.clock()
    with ledger.locked():
        due = ledger.expire(now, retention=env.retention)
        if due:
            lift(fw, due, ledger)
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


def cmd_status(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    from banpipe import status

    ledger = env.ledger()
    live = None
    try:
        with ledger.locked():
            drift = compare(ledger, env.firewall())
        entries = ledger.count_active() - len(drift.missing) + len(drift.orphans)
        live = {"entries": entries, "missing": len(drift.missing), "orphans": len(drift.orphans)}
    except (cli.ToolError, firewall_error()):
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

    def waiting() -> None:
        env.report.say(None, f"{args.html}: another page run (banctl apply's, [pages] dir) "
                       "is writing here; waiting for it to end")  # fmt: skip

    try:
        done = write_pages(env.ledger(), args.html, env.clock(), on_wait=waiting)
    except OSError as exc:
        raise cli.ToolError(f"{args.html}: {exc.strerror or exc}", cli.EX_CANTCREAT)
    except sqlite3.Error as exc:  # the pages' state held by a stranger past the timeout
        raise cli.ToolError(f"{args.html}: {exc}", cli.EX_CANTCREAT)
    if args.json:
        return _json(env, done.as_dict())
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
