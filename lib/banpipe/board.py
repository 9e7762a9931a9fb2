"""The ban board: ``index.html`` and the paged lists of active bans (``bans-N.html``).

The index has the totals, bans and alerts over 24 hours and 7 days (inline SVG), the
top signatures, offenders and victims, the recently lifted bans and the first page of
active bans; ``bans-2.html``... hold the rest, so no page grows with the ledger
(100,000 bans: 200 pages of 500 rows).

The list is the hot part at 100,000 bans: a row's HTML is made once, when its
offender changes (one ``str.format`` of a fixed template, its exact expiry included,
stamps remembered by the minute and signature cells by rule, addresses checked safe
once per batch), and kept in the pages' state; a page run joins each row with its
time left, worked out once per text along a page in expiry order, not once per row
(bench/README.md).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

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
from banpipe.pagestate import PERMANENT, Leaf

_HEAD = (
    "<tr><th>address</th><th>first seen</th><th>last seen</th><th>expires</th>"
    "<th class=n>violations</th><th class=n>bans</th><th>last signature</th><th>kind</th>"
    "<th>origin</th></tr>"
)
# address (safe name, text), first seen, last seen, the expiry | time left |
# violations, bans, the rest
_HEAD_CELLS = (
    f'<tr><td><a href="{OFFENDER_DIR}/{{}}.html"><code>{{}}</code></a></td><td>{{}}</td>'
    "<td>{}</td><td>{}"
).format
_TAIL_CELLS = "</td><td class=n>{}</td><td class=n>{}</td>{}</tr>".format


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


def until(expires: float | None, now: float, stamp: Stamps, memo: dict[int, str]) -> str:
    """``bantime.format_expiry(expires, now)`` with stamps (``stamp``, a run's
    :class:`~banpipe.pagehtml.Stamps`) and times left (``memo``) remembered."""
    if expires is None:
        return "permanent"
    if expires <= now:
        return f"{stamp(expires)} (lapsed)"
    return f"{stamp(expires)} (in {_remaining(expires - now, memo)})"


# (below, step, unit): a time left under ``below`` seconds is shown rounded up to
# ``step``: ``≤30m``, ``≤5h``, ``≤3d``.
_ROUGH = ((3600, 600, "m", 60), (86400, 3600, "h", 3600), (float("inf"), 86400, "d", 86400))


def rough_remaining(left: float) -> tuple[str, float]:
    """A time left as a list page shows it, and for how many more seconds that text
    holds. The expiry beside it is exact; the list pages are rewritten only when a row
    or one of these texts changes (to the minute, every page would change every
    minute), the index shows exact times left."""
    text, lo, _ = _rough(left)
    return text, left - lo


def _rough(left: float) -> tuple[str, float, float]:
    """``rough_remaining``'s text and the times left it holds for: above ``lo``,
    below ``hi``."""
    for below, step, unit, per in _ROUGH:
        if left < below:
            n = -(-left // step)
            return f"≤{int(n * step // per)}{unit}", (n - 1) * step, min(n * step, below)
    raise AssertionError(left)  # inf is above every time left


class Rows:
    """Rows of active bans: made once per offender that changed (:meth:`parts`, kept
    in the pages' state file), put together with their time left for each page
    (:meth:`table`). Stamps, times left and signature cells are remembered across
    pages."""

    def __init__(self, now: float, *, rough: bool = False) -> None:
        self.now = now
        self.rough = rough
        self.fresh_until: float | None = None  # when a rough time left changes text next
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

    def parts(self, rows: Sequence[overview.OffenderRow]) -> list[tuple[str, str]]:
        """Each row's HTML up to its exact expiry (``permanent`` for none) and after its
        time left: :meth:`table` puts ``" (in 3h)"`` or ``" (lapsed)"`` between."""
        st, tails, seen = self.stamp, self.tails, self.seen
        plain = plain_names([o.addr for o in rows])
        out = []
        for o in rows:
            addr, first, last, expires = o[:4]
            if plain:
                name, text = plain_name(addr), addr
            else:
                name, text = safe_name(addr), html.escape(addr)
            # first/last seen: the same few recording times, by value
            first = seen.get(first) or seen.setdefault(first, st(first))
            last = seen.get(last) or seen.setdefault(last, st(last))
            tail = tails.get((o.last_sig, o.last_msg, o.manual, o.origin)) or self.tail(o)
            until = "permanent" if expires is None else st(expires)
            out.append(
                (
                    _HEAD_CELLS(name, text, first, last, until),
                    _TAIL_CELLS(o.violations, o.bans, tail),
                )
            )
        return out

    def table(self, rows: Iterable[Sequence]) -> str:
        """The table of rows given as (expires, :meth:`parts`, anything), in list order
        (by expiry: a rough time left is worked out once per text, not per row)."""
        now, left = self.now, self.left
        out: list[str] = []
        add = out.append
        if not self.rough:
            for r in rows:
                expires = r[0]
                if expires is None:
                    add(r[1] + r[2])
                elif expires <= now:
                    add(f"{r[1]} (lapsed){r[2]}")
                else:
                    add(f"{r[1]} (in {_remaining(expires - now, left)}){r[2]}")
        else:
            first = hi = 0.0  # the rough time left ``text`` holds from ``first`` to ``hi``
            text = ""
            for r in rows:
                expires = r[0]
                if expires is not None and first <= expires < hi:  # most rows
                    add(f"{r[1]} (in {text}){r[2]}")
                elif expires is None:
                    add(r[1] + r[2])
                elif expires <= now:
                    add(f"{r[1]} (lapsed){r[2]}")
                else:
                    text, lo, top = _rough(expires - now)
                    first, hi = expires, now + top
                    change = expires - lo  # when this row's time left reaches lo: another text
                    if self.fresh_until is None or change < self.fresh_until:
                        self.fresh_until = change
                    add(f"{r[1]} (in {text}){r[2]}")
        if not out:
            return "<p>none</p>"
        return f'<div class="t"><table>{_HEAD}{"".join(out)}</table></div>'


def leaf_name(leaf_id: int) -> str:
    """File name of a list page (a leaf of ``banpipe.pagestate``)."""
    return f"bans-{leaf_id}.html"


def render_leaf(rows: Sequence[Sequence], leaf: Leaf, now: float) -> tuple[str, float | None]:
    """One list page of active bans (rows as for :meth:`Rows.table`), and when a time
    left on it changes text next (None: never). It shows nothing of the rest of the
    list (totals, page numbers), so a change elsewhere leaves it as it is."""
    links = ['<a href="index.html">index</a>']
    if leaf.prev is not None:
        links.append(f'<a href="{leaf_name(leaf.prev)}">previous</a>')
    if leaf.next is not None:
        links.append(f'<a href="{leaf_name(leaf.next)}">next</a>')
    nav = f"<nav>{' '.join(links)}</nav>"
    lister = Rows(now, rough=True)
    body = nav + lister.table(rows) + nav
    span = f"{_end(rows[0][0], lister)} to {_end(rows[-1][0], lister)}" if rows else "none"
    return page(f"banpipe: active bans ending {span}", body, now), lister.fresh_until


def _end(expires: float | None, rows: Rows) -> str:
    return "permanent" if expires is None else rows.stamp(expires)


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
    ledger: Ledger,
    first: Sequence[Sequence],
    leaves: Sequence[Leaf],
    now: float,
    summary: str,
) -> str:
    """index.html: the ``summary`` (:func:`summary`), the ``first`` active bans (the
    soonest to end, with exact times left; rows as for :meth:`Rows.table`), links to
    every list page."""
    active = ledger.count_active()
    rows = Rows(now)
    pages = "".join(
        f'<li><a href="{leaf_name(lf.id)}">{lf.n} bans from {_key_text(lf, i, rows)}</a></li>'
        for i, lf in enumerate(leaves)
    )
    listed = (
        f"<h2 id=active>Active bans ({active})</h2>"
        + (
            f"<p>the {len(first)} ending first; every one on the pages below</p>"
            if active > len(first)
            else ""
        )
        + rows.table(first)
        + (f"<h2>All active bans, by expiry</h2><ol>{pages}</ol>" if pages else "")
    )
    return page("banpipe: bans", summary.replace(_LIST_HERE, listed), now)


_LIST_HERE = "<!--list-->"


def summary(ledger: Ledger, now: float) -> str:
    """The index without its list of bans: totals, charts and tops, read from the
    whole ledger (kept for a while by the caller: banpipe.report)."""
    return (
        _summary(ledger, now)
        + _LIST_HERE
        + f"<p><small>totals, charts and top lists as of {esc(stamp(now))}</small></p>"
        + _tops(ledger)
    )


def _key_text(leaf: Leaf, i: int, rows: Rows) -> str:
    if i == 0:
        return "the first"
    exp, addr = leaf.lo
    when = "permanent" if exp >= PERMANENT else rows.stamp(exp)
    return f"{when}, {esc(addr)}"
