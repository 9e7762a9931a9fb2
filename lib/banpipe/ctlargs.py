"""banctl's command line: every command, its options and its help, declared once.

The bodies of the commands are in banpipe.banctl (``COMMANDS``); docgen reads this
parser (as ``banctl.build_parser``) to write README.md's reference, so what ``--help``
says and what the README says are the same text.
"""

from __future__ import annotations

import argparse
from typing import Any

from banpipe import cli
from banpipe.ctlenv import add_options

TOOL = "banctl"


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
    s = sub.add_parser(
        "ban", help="ban an address or a range (203.0.113.0/24) by hand (permanent unless --for)"
    )
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
    s = sub.add_parser("restore", help="create our firewall structure and put every active ban in")
    _json_flag(s)
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
    _json_flag(s)
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
            "rewritten. `banctl apply` does this by itself with [pages] dir; when its "
            "page run is writing DIR at that moment, report says so, waits for that run "
            "to end, then makes its own (two runs on DIR never overlap)."
        ),
    )
    s.add_argument("--html", metavar="DIR", required=True, help="directory for the pages")
    _json_flag(s, "one JSON object: files written, unchanged and removed")
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
