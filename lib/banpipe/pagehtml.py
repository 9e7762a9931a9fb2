"""The pieces every HTML page of ``banctl report`` is made of.

A page is static: no script, no external asset, one inline stylesheet and a
Content-Security-Policy that allows nothing else, readable on a phone. Every piece of
text from alerts or admins goes through :func:`esc` (``html.escape``); the tables take
cells already escaped.

File names: NAME is the address with ``:`` written as ``-`` (``2001-db8--7``), safe in
a file name and in a relative link (``fe80::1.html`` would read as a URL scheme).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterable, Sequence

OFFENDER_DIR = "o"
_ENTRY = r"[0-9a-fA-F.:]+(?:/[0-9]{1,3})?"  # an address, or a range with its prefix length
_SAFE = re.compile(_ENTRY)
_ALL_SAFE = re.compile(f"{_ENTRY}(?:\n{_ENTRY})*")
_SPECIAL = re.compile("[&<>\"']")
_SECONDS = [f"{s:02d}" for s in range(60)]

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
_TOP = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
)
_STYLE = f"<style>{_CSS}</style></head><body>"


def safe_name(addr: str) -> str:
    """File name stem for an address or range: ``203.0.113.7``, ``2001-db8--7``,
    ``203.0.113.0_24``.

    Canonical entries hold only hex digits, dots, colons and one slash, so the mapping
    is one to one (and such a name needs no HTML escaping); anything else (never
    expected from the ledger) is spelled in hex.
    """
    if _SAFE.fullmatch(addr):
        return plain_name(addr)
    return "x" + addr.encode("utf-8", "surrogateescape").hex()


def plain_name(addr: str) -> str:
    """``safe_name`` of an entry known to be canonical (see :func:`plain_names`)."""
    return addr.replace(":", "-").replace("/", "_")


def plain_names(addrs: Sequence[str]) -> bool:
    """True when every address is canonical (:func:`plain_name` is its safe name, and it
    needs no escaping): one regex over a page's addresses, not one each."""
    return not addrs or _ALL_SAFE.fullmatch("\n".join(addrs)) is not None


def esc(text: object) -> str:
    """``text`` escaped for HTML text and attribute values (None: empty)."""
    s = "" if text is None else str(text)
    # Most texts need nothing: one search instead of html.escape's five replaces.
    return html.escape(s, quote=True) if _SPECIAL.search(s) else s


def stamp(ts: float | None) -> str:
    """Local time to the second, ``-`` for none."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


class Stamps:
    """:func:`stamp`, remembered by the minute: a page run over 100,000 bans asks for
    300,000 stamps, and localtime + strftime cost about 1.5 us each."""

    def __init__(self) -> None:
        self._minutes: dict[float, str | None] = {}

    def __call__(self, ts: float | None) -> str:
        if ts is None:
            return "-"
        minute, sec = divmod(ts, 60)  # floors, as localtime does
        head = self._minutes.get(minute, "")
        if head == "":
            lt = time.localtime(minute * 60)
            # A zone offset of whole minutes (every zone since 1972) keeps the seconds.
            head = time.strftime("%Y-%m-%d %H:%M:", lt) if lt.tm_sec == 0 else None
            self._minutes[minute] = head
        return stamp(ts) if head is None else head + _SECONDS[int(sec)]


def page(title: str, body: str, now: float, *, up: str = "") -> str:
    """A whole page: ``body`` is HTML already; ``up`` the way to index.html, if any."""
    return page_maker(now, up=up)(title, body)


def page_maker(now: float, *, up: str = "") -> Callable[[str, str], str]:
    """:func:`page` for many pages of one run: the parts they share made once (a first
    run makes 100,000 offender pages)."""
    back = f' · <a href="{up}index.html">index</a>' if up else ""
    foot = (
        f"<p><small>generated {esc(stamp(now))} by banctl report{back}</small></p></body></html>\n"
    )

    def make(title: str, body: str) -> str:
        title = esc(title)
        return f"{_TOP}<title>{title}</title>{_STYLE}<h1>{title}</h1>{body}{foot}"

    return make


def table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table of already-escaped cells (header texts are ours)."""
    ths = "".join(f"<th{' class=n' if i in numeric else ''}>{h}</th>" for i, h in enumerate(head))
    body = []
    for r in rows:
        tds = "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    if not body:
        return "<p>none</p>"
    return f'<div class="t"><table><tr>{ths}</tr>{"".join(body)}</table></div>'


def link(addr: str, prefix: str = "") -> str:
    """A link to an offender's page, from a page ``prefix`` below the top."""
    return f'<a href="{prefix}{OFFENDER_DIR}/{safe_name(addr)}.html"><code>{esc(addr)}</code></a>'


def msg(text: str | None) -> str:
    """A cell of free text (msg, reason): escaped, wrapping."""
    return f'<span class="msg">{esc(text or "")}</span>'
