"""The alert: the noun that crosses the first pipe, as a typed value.

Tools pass plain dicts along the pipe for speed and so unknown keys survive untouched;
this module gives the same data a typed shape (``Alert``) for code and tests that want
one, and the validation every consumer applies (``problem``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from banpipe.pipe import ALERT_KEYS, VERSION

FORMATS = (
    "snort2-fast",
    "snort3-fast",
    "suricata-fast",
    "snort2-full",
    "snort3-full",
    "snort-syslog",
    "suricata-eve",
)

_INT = (int,)
_OPT_INT = (int, type(None))
_STR = (str,)
_OPT_STR = (str, type(None))

#: Type of each alert key: the tuple of accepted Python types after JSON decoding.
KEY_TYPES: dict[str, tuple[type, ...]] = {
    "v": _INT,
    "ts": _STR,
    "gid": _INT,
    "sid": _INT,
    "rev": _INT,
    "msg": _STR,
    "classification": _OPT_STR,
    "priority": _OPT_INT,
    "proto": _OPT_STR,
    "src": _OPT_STR,
    "sport": _OPT_INT,
    "dst": _OPT_STR,
    "dport": _OPT_INT,
    "action": _OPT_STR,
    "refs": (list,),
    "format": _STR,
}


class AlertError(ValueError):
    """An object that is not a valid version-1 alert."""


def problem(obj: Any, keys: tuple[str, ...] = ALERT_KEYS) -> str | None:
    """Why ``obj`` is not a valid alert (checking ``keys``), or None when it is."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    missing = [k for k in keys if k not in obj]
    if missing:
        return f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    for key in keys:
        value = obj[key]
        types = KEY_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types):
            if value is None and type(None) in types:
                continue
            return f"key {key!r} has the wrong type ({type(value).__name__})"
    if obj["v"] != VERSION:
        return f"unsupported pipe version {obj['v']!r}"
    if not all(isinstance(r, str) for r in obj["refs"]):
        return "key 'refs' must be a list of strings"
    return None


@dataclass(frozen=True)
class Alert:
    """One IDS alert (pipe contract v1). ``extra`` holds keys this version does not know."""

    ts: datetime
    gid: int
    sid: int
    rev: int
    msg: str
    classification: str | None
    priority: int | None
    proto: str | None
    src: str | None
    sport: int | None
    dst: str | None
    dport: int | None
    action: str | None
    refs: tuple[str, ...]
    format: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": VERSION,
            "ts": self.ts.isoformat(timespec="microseconds"),
            "gid": self.gid,
            "sid": self.sid,
            "rev": self.rev,
            "msg": self.msg,
            "classification": self.classification,
            "priority": self.priority,
            "proto": self.proto,
            "src": self.src,
            "sport": self.sport,
            "dst": self.dst,
            "dport": self.dport,
            "action": self.action,
            "refs": list(self.refs),
            "format": self.format,
        }
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_dict(cls, obj: Any) -> Alert:
        reason = problem(obj)
        if reason:
            raise AlertError(reason)
        try:
            ts = datetime.fromisoformat(obj["ts"])
        except ValueError:
            raise AlertError(f"key 'ts' is not an ISO 8601 time: {obj['ts']!r}") from None
        extra = {k: v for k, v in obj.items() if k not in KEY_TYPES}
        return cls(
            ts=ts,
            gid=obj["gid"],
            sid=obj["sid"],
            rev=obj["rev"],
            msg=obj["msg"],
            classification=obj["classification"],
            priority=obj["priority"],
            proto=obj["proto"],
            src=obj["src"],
            sport=obj["sport"],
            dst=obj["dst"],
            dport=obj["dport"],
            action=obj["action"],
            refs=tuple(obj["refs"]),
            format=obj["format"],
            extra=extra,
        )

    @property
    def rule(self) -> str:
        return f"{self.gid}:{self.sid}:{self.rev}"
