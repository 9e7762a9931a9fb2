"""Static HTML pages and tracker files from the ledger (``banctl report --html DIR``).

What is written under DIR:

* ``index.html``: the ban board (:mod:`banpipe.board`): totals, charts and tops, the
  first ``PAGE_ROWS`` active bans to end and a link to every list page;
* ``bans-ID.html``: the active bans by expiry, about ``PAGE_ROWS`` a page (a leaf of
  :mod:`banpipe.pagestate`; ID stays while the page lasts);
* ``o/NAME.html``: one page per offender: every violation kept, its ban history and
  the exact ``banctl unban``/``pin`` commands;
* ``tracker/NAME.txt``: the original thread's tracker file, one line per violation
  record, present while the ledger keeps violations of that address (``[ban]
  retention``: with 0 the file goes when the ban ends).

NAME is the address with ``:`` written as ``-`` (:func:`banpipe.pagehtml.safe_name`).
Each file is replaced atomically (temporary file + rename), so a web server never
serves half a page; no fsync, since pages can always be generated again. Two runs on
one DIR never overlap: a run holds ``DIR/.banpipe-pages.lock`` (flock) and the next
one waits for it (``banctl report --html DIR`` while ``banctl apply`` writes DIR
says so and waits, then makes its own run).

A run does work in proportion to what changed: ``.banpipe-pages.sqlite3``
(:mod:`banpipe.pagestate`) finds the changed offenders in SQL; their pages and
tracker files are written again, and the list pages their rows left or joined, or
whose rough times left changed text. Creating and renaming 200,000 small files is
what makes a first run over 100,000 offenders take a minute or more (figures in
bench/README.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from banpipe import board, overview
from banpipe.ledger import Ledger
from banpipe.pagehtml import OFFENDER_DIR, Stamps, esc, msg, page_maker, safe_name
from banpipe.pagestate import FIRST, Leaf, PageState, key
from banpipe.statefile import replace_file

PAGE_ROWS = 500
SUMMARY_EVERY = 300.0  # seconds the index's totals, charts and tops are kept
OLD_MANIFEST = ".banpipe-pages.json"  # before the state file (pagestate)
LOCK_FILE = ".banpipe-pages.lock"  # held (flock) for a run: two never overlap
TRACKER_DIR = "tracker"
_ENCODE = ("utf-8", "surrogateescape")


_VIOLATIONS_HEAD = (
    "<tr><th>alert time</th><th>recorded</th><th>gid:sid:rev</th><th>msg</th>"
    "<th class=n>priority</th><th>victim</th><th>reversed</th><th class=n>count</th>"
    "<th>reason</th></tr>"
)
_VIOLATION_ROW = "<tr><td>{}</td><td>{}</td>{}<td class=n>{}</td><td>{}</td></tr>".format
_PERIODS_HEAD = "<tr><th>banned</th><th>lifted</th><th>kind</th><th>origin</th><th>reason</th></tr>"
_PERIOD_ROW = "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format
# state, first seen, last seen, violations, bans, last reason, address (twice), records
# kept, the violations table, the ban history table
_OFFENDER_BODY = (
    "<p>{0}</p><p>first seen {1}, last seen {2}, {3} violations, banned {4} times{5}</p>"
    "<p>lift the ban: <code>banctl unban {6}</code><br>"
    "keep it for good: <code>banctl pin {6}</code></p>"
    "<h2>Violations ({7} records kept)</h2>{8}<h2>Ban history</h2>{9}"
).format


def _span(first: str | None, last: str | None, count: int) -> str | None:
    """``first``, or ``first to last`` for a record of several that differ."""
    if count < 2 or not last or last == first:
        return first
    return f"{first} to {last}"


class OffenderFiles:
    """Offender pages and tracker files of one run at ``now``.

    A history is a list of rows of ``ledger.SELECT_RECORDS`` (a ViolationRecord's
    fields in order, then the address), oldest first: a first run makes 200,000 files
    from 200,000 records, and building a frozen dataclass per record cost more than
    the page. What repeats from one offender to the next (stamps, a rule's cells, JSON
    strings) is remembered for the run.
    """

    def __init__(self, now: float) -> None:
        self.now = now
        self.stamp = Stamps()
        self._page = page_maker(now, up="../")
        self._left: dict[int, str] = {}
        self._cells: dict[tuple, str] = {}
        self._texts: dict[str | None, str] = {}
        self._json: dict[str | None, str] = {}

    def _rule_cells(self, sig: str | None, text: str | None, prio: int | None,
                    victim: str | None, rev: int) -> str:  # fmt: skip
        key = (sig, text, prio, victim, rev)
        cells = self._cells.get(key)
        if cells is None:
            cells = self._cells[key] = (
                f"<td>{esc(sig or '?')}</td><td>{msg(text)}</td>"
                f"<td class=n>{esc('-' if prio is None else prio)}</td>"
                f"<td><code>{esc(victim or '-')}</code></td><td>{'yes' if rev else 'no'}</td>"
            )
        return cells

    def page(self, o: overview.OffenderRow, history: Sequence[tuple],
             periods: Sequence[overview.BanPeriod]) -> str:  # fmt: skip
        """One offender's page: its state, every violation record, its ban history and
        the exact commands to lift or keep the ban."""
        now, st, texts = self.now, self.stamp, self._texts
        if not o.active:
            state = "not banned now"
        else:
            until = board.until(o.expires, now, st, self._left)
            state = f"banned ({o.kind}, origin {esc(o.origin)}) until {until}"
        addr = esc(o.addr)
        rows = []
        for ts, alert_ts, sig, text, prio, victim, rev, why, n, last_ts, alert_last, *_ in history:
            cell = texts.get(why)
            if cell is None:
                cell = texts[why] = msg(why)
            alert = _span(alert_ts, alert_ts if alert_last is None else alert_last, n)
            recorded = _span(st(ts), st(ts if last_ts is None else last_ts), n)
            rule = self._rule_cells(sig, text, prio, victim, rev)
            rows.append(_VIOLATION_ROW(esc(alert or "-"), recorded, rule, n, cell))
        violations = (
            f'<div class="t"><table>{_VIOLATIONS_HEAD}{"".join(rows)}</table></div>'
            if rows
            else "<p>none</p>"
        )
        bans = "".join(
            _PERIOD_ROW(
                st(p.start),
                st(p.end) if p.end else "still banned",
                "manual" if p.manual else "automated",
                esc(p.origin),
                texts.get(p.reason) or texts.setdefault(p.reason, msg(p.reason)),
            )
            for p in periods
        )
        return self._page(
            f"banpipe: {o.addr}",
            _OFFENDER_BODY(
                state,
                st(o.first_seen),
                st(o.last_seen),
                o.violations,
                o.bans,
                "" if not o.reason else ", last reason: " + esc(o.reason),
                addr,
                len(history),
                violations,
                f'<div class="t"><table>{_PERIODS_HEAD}{bans}</table></div>'
                if bans
                else "<p>none</p>",
            ),
        )

    def tracker(self, addr: str, history: Sequence[tuple]) -> str:
        """The tracker file: one line per violation record, tab-separated, oldest first:
        alert time, gid:sid:rev, priority, offender -> victim, msg (JSON string), flags
        (``reversed``, ``xN`` for N identical ones within five minutes, then
        ``last=TIME``, the last one's alert time, when it differs from the first's),
        reason (JSON string)."""
        st, js = self.stamp, self._json
        lines = []
        for ts, alert_ts, sig, text, prio, victim, rev, why, n, last_ts, alert_last, *_ in history:
            first = alert_ts or st(ts)
            flags = "reversed" if rev else ""
            if n > 1:
                flags += f" x{n}" if flags else f"x{n}"
                last = alert_ts if alert_last is None else alert_last
                last = last or st(ts if last_ts is None else last_ts)
                if last != first:
                    flags += f" last={last}"
            m = js.get(text)
            if m is None:
                m = js[text] = json.dumps(text or "", ensure_ascii=False)
            r = js.get(why)
            if r is None:
                r = js[why] = json.dumps(why or "", ensure_ascii=False)
            lines.append(
                f"{first}\t{sig or '?'}\tprio {'-' if prio is None else prio}\t"
                f"{addr} -> {victim or '-'}\t{m}\t{flags or '-'}\t{r}\n"
            )
        return "".join(lines)


@dataclass
class PagesResult:
    """What one ``write_pages`` run did."""

    index_pages: int = 0
    offender_pages: int = 0
    tracker_files: int = 0
    removed: int = 0
    unchanged: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts (``banctl report --json``)."""
        return {
            "index_pages": self.index_pages,
            "offender_pages": self.offender_pages,
            "tracker_files": self.tracker_files,
            "unchanged": self.unchanged,
            "removed": self.removed,
        }


def write_pages(
    ledger: Ledger,
    directory: str | Path,
    now: float,
    *,
    on_wait: Callable[[], None] | None = None,
) -> PagesResult:
    """Bring DIR up to date with the ledger; returns what was written and removed.

    A run that another one on DIR still holds up waits for it to end (``on_wait`` is
    called once before it waits), then reads the ledger: the two never overlap.

    Work in proportion to what changed: the changed offenders come from the state file
    (:mod:`banpipe.pagestate`) and a list page is written again only when one of its
    rows changed or one of its times left changes text; the index's totals, charts and
    tops, read from the whole ledger, are kept for ``SUMMARY_EVERY`` seconds.

    Raises OSError when DIR cannot be written (the caller reports it).
    """
    root = str(directory)
    for sub in (OFFENDER_DIR, TRACKER_DIR):
        os.makedirs(f"{root}/{sub}", exist_ok=True)
    with _run_lock(root, on_wait):
        return _write(ledger, root, now)


@contextlib.contextmanager
def _run_lock(root: str, on_wait: Callable[[], None] | None) -> Iterator[None]:
    """DIR's run lock held until the block ends (closing the file drops it, as does
    a killed process)."""
    fd = os.open(f"{root}/{LOCK_FILE}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(ledger: Ledger, root: str, now: float) -> PagesResult:
    pages_dir, trackers_dir = f"{root}/{OFFENDER_DIR}", f"{root}/{TRACKER_DIR}"
    with PageState.attached(ledger, root) as state:
        state.begin()
        ch = state.changes()
        if ch.first:
            rows = overview.offender_rows(ledger)
        else:
            rows = overview.offender_rows(ledger, sorted(ch.changed)) if ch.changed else []
        # A handful of changes: their history by address; many: one scan of all.
        wanted = None if len(rows) > 2000 else [o.addr for o in rows]
        histories = overview.violation_history(ledger, wanted) if rows else {}
        periods = overview.ban_history(ledger, wanted) if rows else {}
        active = [o for o in rows if o.active]
        parts = board.Rows(now).parts(active)
        state.set_rows(
            ch.was_listed,
            ((*key(o.expires, o.addr), o.expires, *p) for o, p in zip(active, parts, strict=True)),
        )
        lists = _ListPages(state, now)
        if ch.first:
            lists.build()
        else:
            lists.update([key(o.expires, o.addr) for o in active] + ch.was_listed)
        summary = state.cached("summary", now - SUMMARY_EVERY)
        if summary is None:
            summary = board.summary(ledger, now)
            state.keep("summary", now, summary)
        first = state.listed(None, None, PAGE_ROWS)
        index = board.render_index(ledger, first, state.leaves, now, summary)
        result = PagesResult(1 + len(lists.written), len(rows), unchanged=0)
        for name, text in [("index.html", index), *lists.written.items()]:
            replace_file(f"{root}/{name}", text.encode(*_ENCODE))
        for name in lists.removed:
            _unlink(f"{root}/{name}")
        files = OffenderFiles(now)
        for o in rows:
            name = safe_name(o.addr)
            history = histories.get(o.addr, [])
            text = files.page(o, history, periods.get(o.addr, []))
            replace_file(f"{pages_dir}/{name}.html", text.encode(*_ENCODE))
            tracker = f"{trackers_dir}/{name}.txt"
            if history:
                replace_file(tracker, files.tracker(o.addr, history).encode(*_ENCODE))
                result.tracker_files += 1
            elif not ch.first:
                result.removed += _unlink(tracker)
        result.unchanged = state.known - len(rows)
        if ch.first:
            result.removed += _clear_stray(root, {o.addr for o in rows}, lists.names())
        for addr in ch.gone:
            name = safe_name(addr)
            result.removed += _unlink(f"{pages_dir}/{name}.html")
            result.removed += _unlink(f"{trackers_dir}/{name}.txt")
        state.commit()
    return result


class _ListPages:
    """The list pages (leaves) to write again in one run, and those to remove."""

    def __init__(self, state: PageState, now: float) -> None:
        self.state, self.now = state, now
        self.written: dict[str, str] = {}
        self.removed: list[str] = []

    def names(self) -> set[str]:
        return {board.leaf_name(lf.id) for lf in self.state.leaves}

    def build(self) -> None:
        """Every list page anew, ``PAGE_ROWS`` bans each."""
        rows = self.state.listed(None, None)
        chunks = [rows[i : i + PAGE_ROWS] for i in range(0, len(rows), PAGE_ROWS)]
        for i, chunk in enumerate(chunks):
            self.state.new_leaf((chunk[0][3], chunk[0][4]) if i else FIRST)
        self.state.order()
        for leaf, chunk in zip(self.state.leaves, chunks, strict=True):
            self._write(leaf, chunk)

    def update(self, keys: Sequence[tuple[float, str]]) -> None:
        """Write again the leaves holding one of ``keys`` (of rows that left or joined
        the list, or moved in it) and those with a time left that changed text; split
        the big ones, drop the empty ones."""
        state = self.state
        if keys and not state.leaves:
            state.new_leaf(FIRST)
            state.order()
        dirty = state.stale(self.now) | {state.find(k).id for k in keys}
        if not dirty:
            return
        links = {lf.id: (lf.prev, lf.next) for lf in state.leaves}
        fetched: dict[int, list] = {}
        for leaf in list(state.leaves):
            if leaf.id not in dirty:
                continue
            rows = self._rows(leaf)
            if not rows:
                self.removed.append(board.leaf_name(leaf.id))
                state.drop(leaf)
                continue
            parts = [rows]
            if len(rows) > 2 * PAGE_ROWS:  # split: PAGE_ROWS each, the first keeps its id
                parts = [rows[j : j + PAGE_ROWS] for j in range(0, len(rows), PAGE_ROWS)]
            fetched[leaf.id] = parts[0]
            for part in parts[1:]:
                fetched[state.new_leaf((part[0][3], part[0][4])).id] = part
        state.order()
        for leaf in state.leaves:
            if leaf.id not in fetched and links.get(leaf.id) != (leaf.prev, leaf.next):
                fetched[leaf.id] = self._rows(leaf)
        for leaf in state.leaves:
            if leaf.id in fetched:
                self._write(leaf, fetched[leaf.id])

    def _rows(self, leaf: Leaf) -> list:
        """The rows of ``leaf``'s range (with their keys), as the state has them now."""
        leaves = self.state.leaves
        i = leaves.index(leaf)
        lo = None if i == 0 else leaf.lo
        hi = leaves[i + 1].lo if i + 1 < len(leaves) else None
        return self.state.listed(lo, hi)

    def _write(self, leaf: Leaf, rows: Sequence) -> None:
        leaf.n = len(rows)
        text, leaf.fresh_until = board.render_leaf(rows, leaf, self.now)
        self.written[board.leaf_name(leaf.id)] = text
        self.state.save(leaf)


def _clear_stray(root: str, known: set[str], lists: set[str]) -> int:
    """Remove what a first run finds under DIR and did not write: files of addresses
    the ledger does not know, list pages of another layout, an older manifest."""
    names = {safe_name(a) for a in known}
    removed = 0
    for sub, ext in ((OFFENDER_DIR, ".html"), (TRACKER_DIR, ".txt")):
        for entry in os.scandir(f"{root}/{sub}"):
            stem = entry.name[: -len(ext)]
            if entry.name.endswith(ext) and stem not in names and not stem.startswith("."):
                removed += _unlink(entry.path)
    for entry in os.scandir(root):
        if re.fullmatch(r"bans-\d+\.html", entry.name) and entry.name not in lists:
            _unlink(entry.path)
    _unlink(f"{root}/{OLD_MANIFEST}")
    return removed


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1
