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

FORMAT = "suricata-eve"

# Suricata writes compact JSON: the key and value sit side by side without spaces.
_ALERT_MARK = '"event_type":"alert"'
_OTHER_MARK = '"event_type":"'
_TS = re.compile(
    r"(\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)(?:\.(\d{1,6})\d*)?"
    r"(?:Z|([+-])([01]\d):?([0-5]\d))\Z",
    re.ASCII,
)
_ACTIONS = {"allowed": None, "blocked": "drop"}


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


def _int(obj: dict, key: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
    v = obj.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise EveError(f"alert.{key} missing or not an integer")
    return v


def _port(obj: dict, key: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if type(v) is not int or not 0 <= v <= 65535:
        raise EveError(f"bad {key} {v!r}")
    return v


def timestamp(text: Any) -> str:
    """``2026-11-28T09:58:01.104233+0100`` as ``2026-11-28T09:58:01.104233+01:00``."""
    m = _TS.match(text) if type(text) is str else None
    if m is None:
        raise EveError(f"bad timestamp {text!r}")
    base, frac, sign, hh, mm = m.groups()
    zone = "+00:00" if sign is None else f"{sign}{hh}:{mm}"
    return f"{base}.{(frac or '').ljust(6, '0')}{zone}"


def alert(obj: Any, canon: Callable[[str], str]) -> dict[str, Any] | None:
    """The pipe alert for a decoded EVE object; None for another event type.

    ``canon`` canonicalises an address (raises ValueError for a bad one).  Raises
    :class:`EveError` for an alert record that lacks what an alert needs.
    """
    if type(obj) is not dict:
        raise EveError("not a JSON object")
    if obj.get("event_type") != "alert":
        return None
    a = obj.get("alert")
    if type(a) is not dict:
        raise EveError("no alert object")
    msg = a.get("signature")
    if type(msg) is not str:
        raise EveError("alert.signature missing")
    cls = a.get("category")
    if cls is not None and type(cls) is not str:
        raise EveError("bad alert.category")
    proto = obj.get("proto")
    if proto is not None:
        proto = str(proto) if type(proto) is int else proto
        if type(proto) is not str:
            raise EveError("bad proto")
    src, dst = obj.get("src_ip"), obj.get("dest_ip")
    try:
        s = None if src is None else canon(src)
        d = None if dst is None else canon(dst)
    except (TypeError, ValueError) as e:
        raise EveError(f"invalid address {e}") from None
    if (s is None) != (d is None):
        raise EveError("one address missing")
    action = a.get("action")
    out: dict[str, Any] = {
        "v": 1,
        "ts": timestamp(obj.get("timestamp")),
        "gid": _int(a, "gid"),
        "sid": _int(a, "signature_id"),
        "rev": _int(a, "rev"),
        "msg": msg,
        "classification": cls or None,
        "priority": _int(a, "severity", -(2**31), 2**31 - 1) if "severity" in a else None,
        "proto": proto,
        "src": s,
        "sport": _port(obj, "src_port"),
        "dst": d,
        "dport": _port(obj, "dest_port"),
        "action": _ACTIONS[action] if action in _ACTIONS else _lower(action),
        "refs": [],
        "format": FORMAT,
    }
    iface = obj.get("in_iface")
    if type(iface) is str:
        out["iface"] = iface
    flow_id = obj.get("flow_id")
    if type(flow_id) is int:
        out["flow_id"] = flow_id
    direction = obj.get("direction")
    if type(direction) is str:
        out["direction"] = direction
    target = a.get("target")
    if target is not None:
        ip = target.get("ip") if type(target) is dict else None
        try:
            t = canon(ip) if type(ip) is str else None
        except ValueError:
            t = None
        if t is None or t not in (s, d):
            # A target that is neither end of the packet cannot choose the offender.
            raise EveError(f"alert.target {target!r} is not an address of the alert")
        out["target"] = t
    return out


def _lower(action: Any) -> str | None:
    if action is None:
        return None
    if type(action) is not str:
        raise EveError("bad alert.action")
    return action.lower()
