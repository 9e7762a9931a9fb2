"""``banctl list`` and ``banctl show`` for people: bans laid out as a table, an
offender and its history worded as text.

Pure functions of the rows and ``now`` (the ``--json`` forms are the rows' own
``as_dict()``); banpipe.banctl only reads the ledger and writes what these return.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from banpipe import cli, term
from banpipe.bantime import format_expiry, format_until
from banpipe.ledger import ViolationRecord

LIST_PAGE = 500  # rows laid out together; the first page is out before the rest is read


def table(
    rows: Iterable[Any], now: float, *, every: bool, fleet: bool, width: int | None
) -> Iterator[str]:
    """``banctl list``: the offenders as aligned columns, page by page, then the count
    of active bans (``every``: offenders not banned now are listed too). ``fleet`` adds
    ORIGIN, the gateway whose decision banned it (through banshare)."""
    rows = iter(rows)
    page = list(itertools.islice(rows, LIST_PAGE))
    if not page:
        yield "no active bans\n" if not every else "no offenders\n"
        return
    header = ("ADDRESS", "EXPIRES", "VIOL", "BANS", "KIND", *(("ORIGIN",) if fleet else ()))
    n = len(header)
    widths = [0] * n
    active = 0
    first = True
    # A million bans are laid out page by page: columns are as wide as the widest cell
    # so far, so the first page shows at once and later pages never narrow a column.
    while page:
        grid = [header] if first else []
        reasons = ["REASON"] if first else []
        first = False
        for o in page:
            expires = format_expiry(o.expires, now) if o.active else "not banned"
            kind = ("manual" if o.manual else "auto") if o.active else "-"
            origin = ((o.origin or "local"),) if fleet else ()
            grid.append((o.addr, expires, str(o.violations), str(o.bans), kind, *origin))
            reasons.append(o.reason or "")
            active += o.active
        widths = [max(widths[i], *(len(r[i]) for r in grid)) for i in range(n)]
        lines = []
        for r, reason in zip(grid, reasons, strict=True):
            cells = [
                r[i].rjust(widths[i]) if i in (2, 3) else r[i].ljust(widths[i]) for i in range(n)
            ]
            lines.append(term.fit("  ".join(cells) + "  " + reason, width) + "\n")
        yield "".join(lines)
        page = list(itertools.islice(rows, LIST_PAGE))
    yield f"{cli.plural(active, 'active ban')}\n"


def offender(o: Any, history: Sequence[ViolationRecord], now: float) -> str:
    """``banctl show ADDR``: the offender and every violation kept for it."""
    kind = ("manual" if o.manual else "auto") + (f", from {o.origin}" if o.origin else "")
    state = f"banned ({kind}) {format_until(o.expires, now)}" if o.active else "not banned"
    lines = [
        f"{o.addr}: {state}\n",
        f"  first seen {_stamp(o.first_seen)}, last seen {_stamp(o.last_seen)}, "
        f"{cli.plural(o.violations, 'violation')}, banned {cli.times(o.bans)}\n",
    ]
    if o.reason:
        lines.append(f"  last reason: {o.reason}\n")
    for h in history:
        flag = " (reversed)" if h.reversed else ""
        prio = f" prio {h.priority}" if h.priority is not None else ""
        victim = f" -> {h.victim}" if h.victim else ""
        msg = f" {json.dumps(h.msg, ensure_ascii=False)}" if h.msg else ""
        flag += f" x{h.count}" if h.count > 1 else ""
        lines.append(f"  {_alert_time(h)}  {h.sig or '?'}{msg}{prio}{victim}{flag}\n")
    if not history:
        lines.append("  (no violations kept; see [ban] retention)\n")
    return "".join(lines)


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _alert_time(v: ViolationRecord) -> str:
    """When the alert happened (its own time stamp, the IDS's local time), not when
    banctl recorded it; the record time only for an alert without a usable stamp. For
    a record of several (within five minutes): ``first to last`` (the last without its
    date when it is the same day)."""
    first = v.alert_ts.replace("T", " ")[:19] if v.alert_ts else _stamp(v.ts)
    if v.count < 2:
        return first
    last = v.alert_last_ts.replace("T", " ")[:19] if v.alert_last_ts else _stamp(v.last)
    if last == first:
        return first
    return f"{first} to {last[11:] if last[:11] == first[:11] else last}"
