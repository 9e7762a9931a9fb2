"""Suricata EVE JSON records (``eve.json``) as alerts of the pipe contract.

Pure code: :func:`alert` maps one decoded EVE object onto the alert dict fasttail emits,
:func:`skip` tells from the raw line, before any decoding, that it is another event type.

What Suricata writes (src/output-json.c ``CreateEveHeader``, src/output-json-alert.c
``AlertJsonHeader``; Suricata 7 and 8): one compact JSON object per line with
``timestamp`` (``2026-11-28T09:58:01.104233+0100``: local time with its offset),
``flow_id``, ``in_iface``, ``event_type``, ``src_ip``, ``src_port``, ``dest_ip``,
``dest_port``, ``proto`` (a name, or the number for unnamed protocols), ``icmp_type`` and
``icmp_code`` for ICMP, and, from Suricata 7, ``direction`` (``to_server``/``to_client``)
and a ``flow`` object with the flow's own orientation.  ``alert`` holds ``action``
(``allowed``/``blocked``), ``gid``, ``signature_id``, ``rev``, ``signature``,
``category``, ``severity``, and, for a rule with ``target:src_ip``/``target:dest_ip``,
``source`` and ``target`` (``{"ip": ..., "port": ...}``).

Mapping: gid, sid = signature_id, rev, msg = signature, classification = category
(None when empty), priority = severity, proto as written, src/sport/dst/dport from the
packet's addresses as fast.log prints them (ICMP: no ports), action ``drop`` for
``blocked`` and None for ``allowed`` (fast.log prints ``[Drop]`` only for a dropped
packet), ts = the timestamp with its offset kept (``+01:00``), refs ``[]``, format
``suricata-eve``; then the optional keys ``iface``, ``flow_id``, ``direction`` when the
record has them and ``target`` (the target address) when the rule names one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from banpipe import pipe

from .common import R_FORCED, R_MALFORMED, ParseError, _short, new_alert
from .endpoints import _canon

FORMAT = "suricata-eve"

# Suricata writes compact JSON: the key and value sit side by side without spaces.
_ALERT_MARK = '"event_type":"alert"'
_OTHER_MARK = '"event_type":"'
_TS = re.compile(
    r"(\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)(?:\.(\d{1,6})\d*)?"
    r"(?:Z|([+-])([01]\d):?([0-5]\d))\Z",
    re.ASCII,
)
_TS_MATCH = _TS.match


class EveError(ValueError):
    """An alert record that cannot be mapped; ``str()`` says why."""


def skip(line: str) -> bool:
    """True when the raw line is an EVE record of another event type (flow, dns, stats...).

    Decided from the text alone: Suricata writes ``"event_type":"..."`` without spaces, so
    a line without ``"event_type":"alert"`` but with ``"event_type":"`` is another event
    (the exact text cannot occur inside a JSON string, where the quotes are escaped).
    Anything else is decoded and judged by :func:`alert`.
    """
    return _ALERT_MARK not in line and _OTHER_MARK in line


_U32 = 2**32 - 1
_IDS = ("gid", "signature_id", "rev")


def _bad_id(a: dict) -> str:
    """The error for an alert object whose gid/signature_id/rev is not a uint32."""
    for key in _IDS:
        v = a.get(key)
        if type(v) is not int or not 0 <= v <= _U32:
            return f"alert.{key} missing or not an integer"
    return "alert.severity not an integer"


def _bad_port(obj: dict) -> str:
    for key in ("src_port", "dest_port"):
        v = obj.get(key)
        if v is not None and (type(v) is not int or not 0 <= v <= 65535):
            return f"bad {key} {v!r}"
    return "bad port"  # pragma: no cover - only called when one is bad


def timestamp(text: Any) -> str:
    """``2026-11-28T09:58:01.104233+0100`` as ``2026-11-28T09:58:01.104233+01:00``."""
    m = _TS.match(text) if type(text) is str else None
    if m is None:
        raise EveError(f"bad timestamp {text!r}")
    base, frac, sign, hh, mm = m.groups()
    if sign is not None and frac is not None and len(frac) == 6:
        return f"{base}.{frac}{sign}{hh}:{mm}"  # what Suricata writes
    zone = "+00:00" if sign is None else f"{sign}{hh}:{mm}"
    return f"{base}.{(frac or '').ljust(6, '0')}{zone}"


def alert(obj: Any, canon: Callable[[str], str]) -> dict[str, Any] | None:
    """The pipe alert for a decoded EVE object; None for another event type.

    ``canon`` canonicalises an address (raises ValueError for a bad one).  Raises
    :class:`EveError` for an alert record that lacks what an alert needs.
    """
    if type(obj) is not dict:
        raise EveError("not a JSON object")
    get = obj.get
    if get("event_type") != "alert":
        return None
    a = get("alert")
    if type(a) is not dict:
        raise EveError("no alert object")
    aget = a.get
    gid, sid, rev, sev = aget("gid"), aget("signature_id"), aget("rev"), aget("severity")
    if not (
        type(gid) is int
        and type(sid) is int
        and type(rev) is int
        and 0 <= gid <= _U32
        and 0 <= sid <= _U32
        and 0 <= rev <= _U32
        and (sev is None or type(sev) is int)
    ):
        raise EveError(_bad_id(a))
    msg = aget("signature")
    if type(msg) is not str:
        raise EveError("alert.signature missing")
    cls = aget("category")
    if cls is not None and type(cls) is not str:
        raise EveError("bad alert.category")
    proto = get("proto")
    if type(proto) is not str and proto is not None:
        if type(proto) is not int:
            raise EveError("bad proto")
        proto = str(proto)
    src, dst = get("src_ip"), get("dest_ip")
    try:
        s = None if src is None else canon(src)
        d = None if dst is None else canon(dst)
    except (TypeError, ValueError) as e:
        raise EveError(f"invalid address {e}") from None
    if (s is None) is not (d is None):
        raise EveError("one address missing")
    sp, dp = get("src_port"), get("dest_port")
    if (sp is not None and (type(sp) is not int or not 0 <= sp <= 65535)) or (
        dp is not None and (type(dp) is not int or not 0 <= dp <= 65535)
    ):
        raise EveError(_bad_port(obj))
    action = aget("action")
    if action == "allowed":
        action = None
    elif action == "blocked":
        action = "drop"
    elif action is not None:
        if type(action) is not str:
            raise EveError("bad alert.action")
        action = action.lower()
    ts = get("timestamp")
    m = _TS_MATCH(ts) if type(ts) is str else None
    if m is not None and m.end(2) == 26 and m.end() == 31:
        # Suricata's own form, 2026-11-28T09:58:01.104233+0100: no regrouping needed.
        ts = f"{ts[:29]}:{ts[29:]}"
    else:
        ts = timestamp(ts)
    out = new_alert(ts, (gid, sid, rev), msg, cls, sev, proto, (s, sp, d, dp), action, [], FORMAT)
    iface = get("in_iface")
    if type(iface) is str:
        out["iface"] = iface
    flow_id = get("flow_id")
    if type(flow_id) is int:
        out["flow_id"] = flow_id
    direction = get("direction")
    if type(direction) is str:
        out["direction"] = direction
    target = aget("target")
    if target is not None:
        ip = target.get("ip") if type(target) is dict else None
        try:
            t = canon(ip) if type(ip) is str else None
        except ValueError:
            t = None
        if t is None or (t != s and t != d):
            # A target that is neither end of the packet cannot choose the offender.
            raise EveError(f"alert.target {target!r} is not an address of the alert")
        out["target"] = t
    return out


class EveLines:
    """The EVE family of :class:`banpipe.parsers.AlertParser` (a mixin)."""

    _force: str | None
    _fragment: bool

    def _eve(self, line: str, lineno: int) -> list:
        """A Suricata EVE JSON record: an alert, nothing (other event types), or an error."""
        force = self._force
        if force is not None and force != FORMAT:
            return [ParseError(lineno, f"{R_FORCED}: looks like {FORMAT}", _short(line))]
        self._fragment = False
        if skip(line):
            return []  # flow, dns, http, stats...: told from the text, never decoded
        try:
            obj = pipe.loads(line)
        except ValueError:
            return [ParseError(lineno, R_MALFORMED + ": not JSON", _short(line))]
        try:
            a = alert(obj, _canon)
        except EveError as e:
            return [ParseError(lineno, f"{R_MALFORMED}: {e}", _short(line))]
        return [] if a is None else [a]
