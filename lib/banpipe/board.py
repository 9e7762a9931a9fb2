"""The ban board: ``index.html`` and the paged lists of active bans (``bans-N.html``).

The index has the totals, bans and alerts over 24 hours and 7 days (inline SVG), the
top signatures, offenders and victims, the recently lifted bans and the first page of
active bans; ``bans-2.html``... hold the rest, so no page grows with the ledger
(100,000 bans: 200 pages of 500 rows).

The list is the hot part at 100,000 bans: every row is rendered again on each run
(the time left changes), so a row is one ``str.format`` of a fixed template with its
stamps remembered by the minute, times left by the minute and signature cells by rule
(few rules fire), addresses checked safe once per page (bench/README.md).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from banpipe import overview
from banpipe.bantime import format_remaining
from banpipe.ledger import Ledger
from banpipe.pagehtml import (
    OFFENDER_DIR,
    Stamps,
    esc,
    link,
    msg,
    page,
    plain_name,
    plain_names,
    safe_name,
    stamp,
    table,
)

_HEAD = (
    "<tr><th>address</th><th>first seen</th><th>last seen</th><th>expires</th>"
    "<th class=n>violations</th><th class=n>bans</th><th>last signature</th><th>kind</th>"
    "<th>origin</th></tr>"
)
# address (safe name, text), first seen, last seen, expiry, violations, bans, the rest
_ROW = (
    f'<tr><td><a href="{{}}{OFFENDER_DIR}/{{}}.html"><code>{{}}</code></a></td><td>{{}}</td>'
    "<td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td>{}</tr>"
).format


def chart_svg(buckets: Sequence[tuple[int, int]], label: str, step_label: str) -> str:
    """An inline SVG bar chart: bans (dark) and alerts (light) per bucket, oldest left."""
    w, h, pad = 600, 140, 20
    n = max(1, len(buckets))
    top = max([1] + [max(b, a) for b, a in buckets])
    bw = (w - 2 * pad) / n
    bars = []
    for i, (bans, alerts) in enumerate(buckets):
        x = pad + i * bw
        for j, (v, colour) in enumerate(((alerts, "#9ecae1"), (bans, "#08519c"))):
            bh = (h - 2 * pad) * v / top
            bars.append(
                f'<rect x="{x + j * bw / 2:.1f}" y="{h - pad - bh:.1f}" width="{bw / 2:.1f}" '
                f'height="{bh:.1f}" fill="{colour}"><title>{n - i} {step_label} ago: '
                f"{bans} bans, {alerts} alerts</title></rect>"
            )
    return (
        f'<figure><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>'
        f'<text x="{pad}" y="12" font-size="11">max {top}</text>'
        f'<text x="{w - pad}" y="{h - 4}" font-size="11" text-anchor="end">now</text>'
        f"{''.join(bars)}</svg><figcaption>{esc(label)}: "
        f"{sum(b for b, _ in buckets)} bans (dark), {sum(a for _, a in buckets)} alerts "
        "(light)</figcaption></figure>"
    )


def _remaining(left: float, memo: dict[int, str]) -> str:
    """``format_remaining(left)``, remembered: from 10 minutes on it shows no seconds,
    so one text serves a whole minute (tests/test_report.py checks that premise)."""
    s = round(left)
    key = s if s < 600 else -(s // 60)
    text = memo.get(key)
    if text is None:
        text = memo[key] = format_remaining(left)
    return text


class _Rows:
    """Renders rows of active bans; remembers stamps, times left and signature cells
    across pages."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.stamp = Stamps()
        self.left: dict[int, str] = {}
        self.seen: dict[float, str] = {}
        self.tails: dict[tuple, str] = {}

    def tail(self, o: overview.OffenderRow) -> str:
        key = (o.last_sig, o.last_msg, o.manual, o.origin)
        text = self.tails.get(key)
        if text is None:
            text = self.tails[key] = (
                f"<td>{esc(o.last_sig or '-')} {msg(o.last_msg)}</td>"
                f"<td>{o.kind}</td><td>{esc(o.origin)}</td>"
            )
        return text

    def render(self, rows: Sequence[overview.OffenderRow], prefix: str = "") -> str:
        if not rows:
            return "<p>none</p>"
        now, st, left, tails = self.now, self.stamp, self.left, self.tails
        seen = self.seen  # first/last seen: the same few recording times, by value
        plain = plain_names([o.addr for o in rows])
        out = []
        for o in rows:
            addr, first, last, expires = o[:4]
            if expires is None:
                until = "permanent"
            elif expires <= now:
                until = st(expires) + " (lapsed)"
            else:
                until = f"{st(expires)} (in {_remaining(expires - now, left)})"
            if plain:
                name, text = plain_name(addr), addr
            else:
                name, text = safe_name(addr), html.escape(addr)
            first = seen.get(first) or seen.setdefault(first, st(first))
            last = seen.get(last) or seen.setdefault(last, st(last))
            tail = tails.get((o.last_sig, o.last_msg, o.manual, o.origin)) or self.tail(o)
            out.append(_ROW(prefix, name, text, first, last, until, o.violations, o.bans, tail))
        return f'<div class="t"><table>{_HEAD}{"".join(out)}</table></div>'


def page_name(n: int) -> str:
    """File name of the ``n``-th page of active bans (the first is the index)."""
    return "index.html" if n == 1 else f"bans-{n}.html"


def pages_for(active: int, per_page: int) -> int:
    """How many pages ``active`` bans take (at least the index)."""
    return max(1, -(-active // per_page))


def _pager(n: int, pages: int, per_page: int) -> str:
    """Links to the first, previous, nearby, next and last pages (200 links would fill
    a phone's screen)."""
    if pages <= 1:
        return ""
    shown = sorted({1, pages, *range(max(1, n - 2), min(pages, n + 2) + 1)})
    links, last = [], 0
    if n > 1:
        links.append(f'<a href="{page_name(n - 1)}">previous</a>')
    for i in shown:
        if i - last > 1:
            links.append("…")
        links.append(f"<b>{i}</b>" if i == n else f'<a href="{page_name(i)}">{i}</a>')
        last = i
    if n < pages:
        links.append(f'<a href="{page_name(n + 1)}">next</a>')
    return f"<nav>pages of active bans ({per_page} a page): {' '.join(links)}</nav>"


def _summary(ledger: Ledger, now: float) -> str:
    """The index's part above the list: totals, last 24 h, the two charts."""
    counts = overview.active_counts(ledger)
    t = overview.totals(ledger)
    boxes = [
        ("active bans", t["active"]),
        ("IPv4", counts[("v4", "manual")] + counts[("v4", "automated")]),
        ("IPv6", counts[("v6", "manual")] + counts[("v6", "automated")]),
        ("manual", counts[("v4", "manual")] + counts[("v6", "manual")]),
        ("automated", counts[("v4", "automated")] + counts[("v6", "automated")]),
        ("offenders known", t["offenders"]),
        ("violations kept", t["violations"]),
    ]
    day = overview.ban_events(ledger, now - 86400)
    # One pass per table for both charts: the last 7 days by the hour.
    hours = overview.histogram(ledger, now, 3600, 7 * 24)
    days = [
        (sum(b for b, _ in hours[d : d + 24]), sum(a for _, a in hours[d : d + 24]))
        for d in range(0, 7 * 24, 24)
    ]
    return (
        '<div class="k">'
        + "".join(f"<div>{label}<br><b>{n}</b></div>" for label, n in boxes)
        + "</div>"
        + f"<p>last 24 h: {day['added']} bans added, {day['extended']} extended, "
        f"{day['lifted']} lifted</p>"
        + chart_svg(hours[-24:], "last 24 hours, per hour", "h")
        + chart_svg(days, "last 7 days, per day", "d")
    )


def _tops(ledger: Ledger) -> str:
    """The index's part below the list: top signatures, offenders, victims; lifted bans."""
    sigs = table(
        ("signature", "msg", "violations"),
        ((esc(s), msg(m), str(n)) for s, m, n in overview.top_signatures(ledger)),
        numeric=(2,),
    )
    offenders = table(
        ("address", "violations", "bans", "banned now"),
        (
            (link(a), str(v), str(b), "yes" if act else "no")
            for a, v, b, act in overview.top_offenders(ledger)
        ),
        numeric=(1, 2),
    )
    victims = table(
        ("our address", "violations"),
        ((f"<code>{esc(a)}</code>", str(n)) for a, n in overview.top_victims(ledger)),
        numeric=(1,),
    )
    lifted = table(
        ("address", "banned", "lifted", "kind", "origin", "reason"),
        (
            (
                link(p.addr),
                esc(stamp(p.start)),
                esc(stamp(p.end)),
                "manual" if p.manual else "automated",
                esc(p.origin),
                msg(p.reason),
            )
            for p in overview.recently_lifted(ledger)
        ),
    )
    return (
        f"<h2>Top signatures</h2>{sigs}<h2>Top offenders</h2>{offenders}"
        f"<h2>Top victims of ours</h2>{victims}<h2>Recently lifted bans</h2>{lifted}"
    )


def render_index(
    ledger: Ledger, active: Sequence[overview.OffenderRow], now: float, per_page: int
) -> dict[str, str]:
    """index.html and bans-N.html (``per_page`` rows each): file name -> page.

    ``active``: the active bans in list order (``overview.offender_rows``' first rows).
    """
    pages = pages_for(len(active), per_page)
    rows = _Rows(now)
    out = {}
    for n in range(1, pages + 1):
        pager = _pager(n, pages, per_page)
        listed = (
            f"<h2 id=active>Active bans ({len(active)})</h2>{pager}"
            + rows.render(active[(n - 1) * per_page : n * per_page])
            + pager
        )
        if n == 1:
            body = _summary(ledger, now) + listed + _tops(ledger)
            out["index.html"] = page("banpipe: bans", body, now)
        else:
            out[page_name(n)] = page(f"banpipe: active bans, page {n}", listed, now)
    return out
