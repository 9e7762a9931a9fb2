"""Fleet decisions: what banshare sends to and takes from the other gateways.

A decision crosses the fleet as one JSON object (``"v": 1``, encoded by banpipe.pipe),
published on the subject ``<stream>.<gateway>`` with the message id
``<gateway>:<decision id>`` (JetStream drops a repeat within its duplicate window):

    {"v":1,"id":42,"ts":1796000000.5,"kind":"ban","addr":"203.0.113.7",
     "expires":1796003600.5,"manual":false,"reason":"1:2003:8 ...","origin":"gw-a"}

Everything here is pure: the wire form and the local judgement of a remote decision.
The ledger applies what ``judge`` lets through (``Ledger.apply_remote``), which is
where idempotence and ordering live.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from banpipe.address import entry
from banpipe.ledger import DECISION_KINDS, Decision
from banpipe.pipe import VERSION, dumps, loads
from banpipe.protect import Protection

REASON_MAX = 1000
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def gateway_name(configured: str, hostname: str | None = None) -> str:
    """The configured name, else the short hostname made a valid subject token."""
    if configured:
        return configured
    host = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", host)[:64] or "gateway"


def subject(stream: str, gateway: str) -> str:
    return f"{stream}.{gateway}"


def msg_id(origin: str, decision_id: int) -> str:
    return f"{origin}:{decision_id}"


def encode(d: Decision, origin: str) -> bytes:
    """The message body for this gateway's decision ``d``."""
    return dumps(
        {
            "v": VERSION,
            "id": d.id,
            "ts": d.ts,
            "kind": d.kind,
            "addr": d.addr,
            "expires": d.expires,
            "manual": d.manual,
            "reason": d.reason,
            "origin": origin,
        }
    )


def _number(value: Any) -> bool:
    return type(value) in (int, float) and value == value and abs(value) != float("inf")


def decode(data: bytes) -> Decision:
    """The decision in a message body; ValueError with a short reason when unusable."""
    try:
        obj = loads(data)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if obj.get("v") != VERSION:
        raise ValueError(f"unsupported version {obj.get('v')!r}")
    ident, ts, kind = obj.get("id"), obj.get("ts"), obj.get("kind")
    if type(ident) is not int or ident <= 0:
        raise ValueError("no decision id")
    if not _number(ts):
        raise ValueError("no timestamp")
    if kind not in DECISION_KINDS:
        raise ValueError(f"unknown kind {str(kind)[:20]!r}")
    raw = obj.get("addr")
    addr = entry(raw)  # an address, or a range (banctl ban NET, an escalated prefix)
    if addr is None:
        raise ValueError(f"not an IP address or network: {str(raw)[:64]!r}")
    expires = obj.get("expires")
    if expires is not None and not _number(expires):
        raise ValueError("bad expiry")
    origin = obj.get("origin")
    if type(origin) is not str or not _TOKEN.match(origin):
        raise ValueError("no origin gateway")
    reason = obj.get("reason")
    return Decision(
        ident,
        float(ts),
        kind,
        addr,
        None if expires is None else float(expires),
        obj.get("manual") is True,
        reason[:REASON_MAX] if type(reason) is str else None,
        origin,
    )


@dataclass(frozen=True)
class Policy:
    """What this gateway accepts from the others ([fleet] accept, max_duration)."""

    accept: Collection[str] = ("automated", "manual")
    max_duration: float = 0.0  # 0: no cap


def judge(
    d: Decision, *, now: float, policy: Policy, protection: Protection
) -> tuple[Decision | None, str | None]:
    """(decision to apply, None), or (None, why not) for a refused or skipped one.

    Refused whatever the sender: bans of an address this gateway protects (its WAN,
    gateways, networks, whitelist, special ranges). Skipped: ban kinds not in
    ``accept``, and bans that have expired already. Unbans always pass: lifting a ban
    never harms this gateway. With a cap, a longer or permanent ban ends at
    ``now + max_duration`` here.
    """
    if d.kind == "unban":
        return d, None
    why = protection.range_reason(d.addr)
    if why is not None:
        return None, f"refused: {why}"
    manual = d.manual or d.kind == "pin"
    kind = "manual" if manual else "automated"
    if kind not in policy.accept:
        return None, f"skipped: {kind} decisions are not accepted ([fleet] accept)"
    if d.expires is not None and d.expires <= now:
        return None, "skipped: expired already"
    if policy.max_duration > 0:
        cap = now + policy.max_duration
        if d.expires is None or d.expires > cap:
            d = d._replace(expires=cap)
    return d, None
