"""banctl: the ban ledger and the firewall, as a pipe consumer and an admin tool.

``... | alertfilter | banctl apply`` runs the daemon (banpipe.daemon): it records
every violation in the ledger, bans each offender once, extends its ban on new
violations and lifts it when it expires. The admin commands here (``list``, ``show``,
``ban``, ``unban``, ``pin``, ``restore``, ``teardown``, ``check``, ``expire``,
``status``, ``report``) work while ``apply`` runs: each changes the ledger and the
firewall itself under the ledger's lock. Ledger versus firewall (drift, repair,
restore, removal) lives in banpipe.reconcile; what every command needs in
banpipe.ctlenv; what people and monitoring see in ``status.py``, ``report.py``,
``metrics.py`` and ``monitor.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from banpipe import cli, listing, term
from banpipe.bantime import format_expiry, format_until, parse_duration
from banpipe.config import ConfigError, load_config
from banpipe.ctlenv import Clock, Env, add_options
from banpipe.daemon import Daemon
from banpipe.ledger import LedgerError
from banpipe.protect import canonical
from banpipe.reconcile import (
    Drift,
    block,
    compare,
    firewall_error,
    reconcile,
    remove_automated,
    restore,
)

TOOL = "banctl"
EX_DRIFT = 1  # `banctl check`: drift found (documented exit status, not a sysexit)
EX_NOT_FOUND = 1  # `banctl show`: address not in the ledger (like grep without a match)


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
    add_options(p, again=again)


class _SubParser(cli.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self, again=True)


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


def firewall_hint(message: str) -> str:
    """What to do next after a firewall command failed, when the message tells."""
    if "No such file or directory" in message:
        return " (install it, or choose another [firewall] backend; --backend null only prints)"
    if "Permission denied" in message or "Operation not permitted" in message:
        return " (changing the firewall needs root)"
    return ""


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


LIST_PAGE = 500  # rows laid out together; the first page is out before the rest is read


def cmd_list(env: Env, args: argparse.Namespace, stdin: IO[Any]) -> int:
    ledger = env.existing_ledger()
    now = env.clock()
    rows = ledger.iter_offenders(active_only=not args.all) if ledger is not None else iter(())
    out = env.stdout
    width = term.width(out)
    if args.json:
        for o in rows:
            out.write(json.dumps(o.as_dict(), ensure_ascii=False) + "\n")
        return cli.EX_OK
    page = list(itertools.islice(rows, LIST_PAGE))
    if not page:
        out.write("no active bans\n" if not args.all else "no offenders\n")
        return cli.EX_OK
    # ORIGIN (the gateway whose decision banned it, through banshare) only in a fleet.
    fleet = ledger is not None and ledger.any_origin(active_only=not args.all)
    header = ("ADDRESS", "EXPIRES", "VIOL", "BANS", "KIND", *(("ORIGIN",) if fleet else ()))
    n = len(header)
    widths = [0] * n
    active = 0
    first = True
    # A million bans are laid out page by page: columns are as wide as the widest cell
    # so far, so the first page shows at once and later pages never narrow a column.
    while page:
        table = [header] if first else []
        reasons = ["REASON"] if first else []
        first = False
        for o in page:
            expires = format_expiry(o.expires, now) if o.active else "not banned"
            kind = ("manual" if o.manual else "auto") if o.active else "-"
            origin = ((o.origin or "local"),) if fleet else ()
            table.append((o.addr, expires, str(o.violations), str(o.bans), kind, *origin))
            reasons.append(o.reason or "")
            active += o.active
        widths = [max(widths[i], *(len(r[i]) for r in table)) for i in range(n)]
        for r, reason in zip(table, reasons, strict=True):
            cells = [
                r[i].rjust(widths[i]) if i in (2, 3) else r[i].ljust(widths[i]) for i in range(n)
            ]
            out.write(term.fit("  ".join(cells) + "  " + reason, width) + "\n")
        page = list(itertools.islice(rows, LIST_PAGE))
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
            fw.release([addr])  # also clears a stray entry the ledger did not know
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
        drift = reconcile(ledger, fw, env) if args.repair else compare(ledger, fw)
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
    except firewall_error():
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
