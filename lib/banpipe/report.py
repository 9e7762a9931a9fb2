"""Static HTML pages and tracker files from the ledger (``banctl report --html DIR``).

What is written under DIR:

* ``index.html``: totals, bans and alerts over 24 h and 7 days (inline SVG), top
  signatures, top offenders, top victims, recently lifted bans and the first
  ``PAGE_ROWS`` active bans; ``bans-2.html``, ``bans-3.html``... hold the rest, so no
  page grows with the ledger (100,000 bans: 200 pages of 500 rows).
* ``o/NAME.html``: one page per offender: every violation kept, its ban history and
  the exact ``banctl unban``/``pin`` commands.
* ``tracker/NAME.txt``: the original thread's tracker file, one line per violation
  record, present while the ledger keeps violations of that address (``[ban]
  retention``: with 0 the file goes when the ban ends).

NAME is the address with ``:`` written as ``-`` (``2001-db8--7``): safe in a file
name and in a relative link (``fe80::1.html`` would read as a URL scheme).

The pages are static: no script, no external asset, one inline stylesheet and a
Content-Security-Policy that allows nothing else, readable on a phone. Every piece of
text from alerts or admins goes through ``html.escape``. Each file is replaced
atomically (temporary file + rename), so a web server never serves half a page; no
fsync, since pages can always be generated again.

Offender pages and tracker files are rewritten only when their offender changed: a
manifest (``.banpipe-pages.json``) keeps a signature per offender. Writing a small file
costs about 150 us here, so the first run over 100,000 offenders takes tens of
seconds, while the index and an update after a burst stay within the 2 s target
(bench/README.md).
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from banpipe import overview
from banpipe.bantime import format_remaining
from banpipe.ledger import Ledger
from banpipe.statefile import replace_file

PAGE_ROWS = 500
MANIFEST = ".banpipe-pages.json"
OFFENDER_DIR = "o"
TRACKER_DIR = "tracker"
_SAFE = re.compile(r"[0-9a-fA-F.:]+(?:/[0-9]{1,3})?")

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:.5rem;
color:#222;background:#fff}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}
.t{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.2rem .4rem;border-bottom:1px solid #ddd;vertical-align:top}
td.n,th.n{text-align:right}td code{white-space:nowrap}
.k{display:flex;flex-wrap:wrap;gap:.5rem}.k div{border:1px solid #ccc;padding:.3rem .6rem}
nav a{margin-right:.5rem}svg{max-width:100%;height:auto}
.msg{display:inline-block;min-width:14rem;word-break:break-word}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def safe_name(addr: str) -> str:
    """File name stem for an address or range: ``203.0.113.7``, ``2001-db8--7``,
    ``203.0.113.0_24``.

    Canonical entries hold only hex digits, dots, colons and one slash, so the mapping
    is one to one; anything else (never expected from the ledger) is spelled in hex.
    """
    if _SAFE.fullmatch(addr):
        return addr.replace(":", "-").replace("/", "_")
    return "x" + addr.encode("utf-8", "surrogateescape").hex()


def _e(text: object) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _stamp(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _expiry(o: overview.OffenderRow, now: float) -> str:
    if not o.active:
        return "not banned"
    if o.expires is None:
        return "permanent"
    if o.expires <= now:
        return f"{_stamp(o.expires)} (lapsed)"
    return f"{_stamp(o.expires)} (in {format_remaining(o.expires - now)})"


def _page(title: str, body: str, now: float, *, up: str = "") -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{body}"
        f"<p><small>generated {_e(_stamp(now))} by banctl report"
        f"{f' · <a href={chr(34)}{up}index.html{chr(34)}>index</a>' if up else ''}"
        "</small></p></body></html>\n"
    )


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table of already-escaped cells (header texts are ours)."""
    ths = "".join(f"<th{' class=n' if i in numeric else ''}>{h}</th>" for i, h in enumerate(head))
    body = []
    for r in rows:
        tds = "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    if not body:
        return "<p>none</p>"
    return f'<div class="t"><table><tr>{ths}</tr>{"".join(body)}</table></div>'


def _link(addr: str, prefix: str = "") -> str:
    return f'<a href="{prefix}{OFFENDER_DIR}/{safe_name(addr)}.html"><code>{_e(addr)}</code></a>'


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
        f'aria-label="{_e(label)}" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>'
        f'<text x="{pad}" y="12" font-size="11">max {top}</text>'
        f'<text x="{w - pad}" y="{h - 4}" font-size="11" text-anchor="end">now</text>'
        f"{''.join(bars)}</svg><figcaption>{_e(label)}: "
        f"{sum(b for b, _ in buckets)} bans (dark), {sum(a for _, a in buckets)} alerts "
        "(light)</figcaption></figure>"
    )


def _active_rows(rows: Sequence[overview.OffenderRow], now: float, prefix: str) -> str:
    # The hot part of a 100,000-ban index: one f-string per row; stamps, expiries and
    # signature cells memoised (they repeat a lot: stamps by the second, few rules).
    stamps: dict[float | None, str] = {}
    sigs: dict[tuple, str] = {}
    esc = html.escape

    def stamp(ts: float | None) -> str:
        key = None if ts is None else int(ts)
        text = stamps.get(key)
        if text is None:
            text = stamps[key] = _stamp(key)
        return text

    def expiry(expires: float | None) -> str:
        if expires is None:
            return "permanent"
        left = expires - now
        return f"{stamp(expires)} ({'lapsed' if left <= 0 else 'in ' + format_remaining(left)})"

    def sig_cell(o: overview.OffenderRow) -> str:
        key = (o.last_sig, o.last_msg, o.kind, o.origin)
        text = sigs.get(key)
        if text is None:
            text = sigs[key] = (
                f'<td>{esc(o.last_sig or "-")} <span class="msg">{esc(o.last_msg or "")}'
                f"</span></td><td>{o.kind}</td><td>{esc(o.origin)}</td>"
            )
        return text

    body = [
        f'<tr><td><a href="{prefix}{OFFENDER_DIR}/{safe_name(o.addr)}.html"><code>'
        f"{esc(o.addr)}</code></a></td><td>{stamp(o.first_seen)}</td>"
        f"<td>{stamp(o.last_seen)}</td><td>{expiry(o.expires)}</td>"
        f"<td class=n>{o.violations}</td><td class=n>{o.bans}</td>{sig_cell(o)}</tr>"
        for o in rows
    ]
    if not body:
        return "<p>none</p>"
    head = "".join(
        f"<th{' class=n' if h in ('violations', 'bans') else ''}>{h}</th>"
        for h in (
            "address",
            "first seen",
            "last seen",
            "expires",
            "violations",
            "bans",
            "last signature",
            "kind",
            "origin",
        )
    )
    return f'<div class="t"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _bans_page_name(n: int) -> str:
    return "index.html" if n == 1 else f"bans-{n}.html"


def _pager(n: int, pages: int) -> str:
    """Links to the first, previous, nearby, next and last pages (200 links would fill
    a phone's screen)."""
    if pages <= 1:
        return ""
    shown = sorted({1, pages, *range(max(1, n - 2), min(pages, n + 2) + 1)})
    links, last = [], 0
    if n > 1:
        links.append(f'<a href="{_bans_page_name(n - 1)}">previous</a>')
    for i in shown:
        if i - last > 1:
            links.append("…")
        links.append(f"<b>{i}</b>" if i == n else f'<a href="{_bans_page_name(i)}">{i}</a>')
        last = i
    if n < pages:
        links.append(f'<a href="{_bans_page_name(n + 1)}">next</a>')
    return f"<nav>pages of active bans ({PAGE_ROWS} a page): {' '.join(links)}</nav>"


def render_index(
    ledger: Ledger, active: Sequence[overview.OffenderRow], now: float
) -> dict[str, str]:
    """index.html and bans-N.html: file name -> page."""
    pages = max(1, -(-len(active) // PAGE_ROWS))
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
    summary = (
        '<div class="k">'
        + "".join(f"<div>{label}<br><b>{n}</b></div>" for label, n in boxes)
        + "</div>"
        + f"<p>last 24 h: {day['added']} bans added, {day['extended']} extended, "
        f"{day['lifted']} lifted</p>"
        + chart_svg(overview.histogram(ledger, now, 3600, 24), "last 24 hours, per hour", "h")
        + chart_svg(overview.histogram(ledger, now, 86400, 7), "last 7 days, per day", "d")
    )
    sigs = _table(
        ("signature", "msg", "violations"),
        (
            (_e(s), f'<span class="msg">{_e(m)}</span>', str(n))
            for s, m, n in overview.top_signatures(ledger)
        ),
        numeric=(2,),
    )
    offenders = _table(
        ("address", "violations", "bans", "banned now"),
        (
            (_link(a), str(v), str(b), "yes" if act else "no")
            for a, v, b, act in overview.top_offenders(ledger)
        ),
        numeric=(1, 2),
    )
    victims = _table(
        ("our address", "violations"),
        ((f"<code>{_e(a)}</code>", str(n)) for a, n in overview.top_victims(ledger)),
        numeric=(1,),
    )
    lifted = _table(
        ("address", "banned", "lifted", "kind", "origin", "reason"),
        (
            (
                _link(p.addr),
                _e(_stamp(p.start)),
                _e(_stamp(p.end)),
                "manual" if p.manual else "automated",
                _e(p.origin),
                f'<span class="msg">{_e(p.reason or "")}</span>',
            )
            for p in overview.recently_lifted(ledger)
        ),
    )
    out = {}
    for n in range(1, pages + 1):
        rows = active[(n - 1) * PAGE_ROWS : n * PAGE_ROWS]
        table = (
            f"<h2 id=active>Active bans ({len(active)})</h2>"
            + _pager(n, pages)
            + _active_rows(rows, now, "")
            + _pager(n, pages)
        )
        if n == 1:
            body = (
                summary + table + f"<h2>Top signatures</h2>{sigs}<h2>Top offenders</h2>{offenders}"
                f"<h2>Top victims of ours</h2>{victims}<h2>Recently lifted bans</h2>{lifted}"
            )
            out["index.html"] = _page("banpipe: bans", body, now)
        else:
            out[_bans_page_name(n)] = _page(f"banpipe: active bans, page {n}", table, now, up="")
    return out


def render_offender(
    o: overview.OffenderRow,
    history: Sequence,
    periods: Sequence[overview.BanPeriod],
    now: float,
) -> str:
    """One offender's page (``history``: ledger.ViolationRecord, oldest first)."""
    state = (
        f"banned ({o.kind}, origin {_e(o.origin)}) until {_e(_expiry(o, now))}"
        if o.active
        else "not banned now"
    )
    addr = _e(o.addr)
    facts = (
        f"<p>{state}</p><p>first seen {_e(_stamp(o.first_seen))}, last seen "
        f"{_e(_stamp(o.last_seen))}, {o.violations} violations, banned {o.bans} times"
        f"{'' if not o.reason else ', last reason: ' + _e(o.reason)}</p>"
        f"<p>lift the ban: <code>banctl unban {addr}</code><br>"
        f"keep it for good: <code>banctl pin {addr}</code></p>"
    )
    violations = _table(
        (
            "alert time",
            "recorded",
            "gid:sid:rev",
            "msg",
            "priority",
            "victim",
            "reversed",
            "count",
            "reason",
        ),
        (
            (
                _e(_span(h.alert_ts, h.alert_last_ts, h.count) or "-"),
                _e(_span(_stamp(h.ts), _stamp(h.last), h.count)),
                _e(h.sig or "?"),
                f'<span class="msg">{_e(h.msg or "")}</span>',
                _e("-" if h.priority is None else h.priority),
                f"<code>{_e(h.victim or '-')}</code>",
                "yes" if h.reversed else "no",
                str(h.count),
                f'<span class="msg">{_e(h.reason or "")}</span>',
            )
            for h in history
        ),
        numeric=(4, 7),
    )
    bans = _table(
        ("banned", "lifted", "kind", "origin", "reason"),
        (
            (
                _e(_stamp(p.start)),
                _e(_stamp(p.end) if p.end else "still banned"),
                "manual" if p.manual else "automated",
                _e(p.origin),
                f'<span class="msg">{_e(p.reason or "")}</span>',
            )
            for p in periods
        ),
    )
    body = (
        facts
        + f"<h2>Violations ({len(history)} records kept)</h2>{violations}"
        + f"<h2>Ban history</h2>{bans}"
    )
    return _page(f"banpipe: {o.addr}", body, now, up="../")


def _span(first: str | None, last: str | None, count: int) -> str | None:
    """``first``, or ``first to last`` for a record of several that differ."""
    if count < 2 or not last or last == first:
        return first
    return f"{first} to {last}"


def render_tracker(addr: str, history: Sequence) -> str:
    """The tracker file: one line per violation record, tab-separated, oldest first:
    alert time, gid:sid:rev, priority, offender -> victim, msg (JSON string), flags
    (``reversed``, ``xN`` for N identical ones within five minutes, then
    ``last=TIME``, the last one's alert time, when it differs from the first's),
    reason (JSON string)."""
    lines = []
    for h in history:
        last = (h.alert_last_ts or _stamp(h.last)) if h.count > 1 else None
        if last == (h.alert_ts or _stamp(h.ts)):
            last = None
        flags = " ".join(
            f
            for f in (
                "reversed" if h.reversed else "",
                f"x{h.count}" if h.count > 1 else "",
                f"last={last}" if last else "",
            )
            if f
        )
        lines.append(
            "\t".join(
                (
                    h.alert_ts or _stamp(h.ts),
                    h.sig or "?",
                    f"prio {'-' if h.priority is None else h.priority}",
                    f"{addr} -> {h.victim or '-'}",
                    json.dumps(h.msg or "", ensure_ascii=False),
                    flags or "-",
                    json.dumps(h.reason or "", ensure_ascii=False),
                )
            )
        )
    return "".join(line + "\n" for line in lines)


@dataclass
class PagesResult:
    """What one ``write_pages`` run did."""

    index_pages: int = 0
    offender_pages: int = 0
    tracker_files: int = 0
    removed: int = 0
    unchanged: int = 0
    files: list[str] = field(default_factory=list)


def _signature(o: overview.OffenderRow, kept: tuple, periods: int) -> str:
    return (
        f"{o.last_seen}|{o.active}|{o.expires}|{o.violations}|{o.bans}|{o.manual}|"
        f"{o.origin}|{o.reason}|{kept[0]}|{kept[1]}|{periods}"
    )


def write_pages(
    ledger: Ledger,
    directory: str | Path,
    now: float,
    *,
    write: Callable[[str, bytes], None] = replace_file,
) -> PagesResult:
    """Bring DIR up to date with the ledger; returns what was written and removed.

    Raises OSError when DIR cannot be written (the caller reports it).
    """
    root = Path(directory)
    put = write
    result = PagesResult()
    for sub in (OFFENDER_DIR, TRACKER_DIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    pages_dir, trackers_dir = str(root / OFFENDER_DIR), str(root / TRACKER_DIR)
    kept = overview.last_violations(ledger)
    rows = overview.offenders(ledger, kept=kept)
    active = [o for o in rows if o.active]
    for name, page in render_index(ledger, active, now).items():
        put(str(root / name), page.encode("utf-8", "surrogateescape"))
        result.index_pages += 1
    # Paged lists that shrank leave stale bans-N.html behind; drop them.
    pages = max(1, -(-len(active) // PAGE_ROWS))
    for p in root.glob("bans-*.html"):
        m = re.fullmatch(r"bans-(\d+)\.html", p.name)
        if m and int(m.group(1)) > pages:
            _unlink(str(p))

    manifest_path = root / MANIFEST
    old = _read_manifest(manifest_path)
    period_counts = dict(
        ledger.db.execute("SELECT addr, count(*) FROM bans GROUP BY addr").fetchall()
    )
    new: dict[str, str] = {}
    changed: list[overview.OffenderRow] = []
    for o in rows:
        sig = _signature(o, kept.get(o.addr, (0, 0)), period_counts.get(o.addr, 0))
        new[o.addr] = sig
        if old is None or old.get(o.addr) != sig:
            changed.append(o)
        else:
            result.unchanged += 1
    # A handful of changes: fetch their history by address; many: one scan of all.
    wanted = None if len(changed) > 2000 else [o.addr for o in changed]
    histories = overview.violation_history(ledger, wanted)
    periods = overview.ban_history(ledger, wanted)
    for o in changed:
        name = safe_name(o.addr)
        history = histories.get(o.addr, [])
        page = render_offender(o, history, periods.get(o.addr, []), now)
        put(f"{pages_dir}/{name}.html", page.encode("utf-8", "surrogateescape"))
        result.offender_pages += 1
        tracker = f"{trackers_dir}/{name}.txt"
        if history:
            put(tracker, render_tracker(o.addr, history).encode("utf-8", "surrogateescape"))
            result.tracker_files += 1
        elif old is None or o.addr in old:
            result.removed += _unlink(tracker)
    gone = (set(old) - set(new)) if old is not None else _stray(root, new)
    for addr in gone:
        name = safe_name(addr)
        result.removed += _unlink(f"{pages_dir}/{name}.html")
        result.removed += _unlink(f"{trackers_dir}/{name}.txt")
    put(str(manifest_path), json.dumps(new, separators=(",", ":")).encode())
    return result


def _read_manifest(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stray(root: Path, known: dict[str, str]) -> set[str]:
    """Addresses with files under DIR that the ledger no longer knows (no manifest)."""
    names = {safe_name(a) for a in known}
    stray = set()
    for sub, ext in ((OFFENDER_DIR, ".html"), (TRACKER_DIR, ".txt")):
        for entry in os.scandir(root / sub):
            stem = entry.name[: -len(ext)]
            if entry.name.endswith(ext) and stem not in names and not stem.startswith("."):
                stray.add(stem.replace("-", ":").replace("_", "/"))
    return stray


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1
