"""``banctl status``: is it running, which backend, how many bans, is the brake on?

:func:`collect` gathers one dict with stable keys (``banctl status --json`` prints it,
README.md documents it) from the ledger, the daemon's runtime file and lock
(:mod:`banpipe.monitor`) and, when the caller can read it, the live firewall;
:func:`format_status` words it for people. Times are Unix seconds (null: never).
"""

from __future__ import annotations

import time
from typing import Any

from banpipe import monitor, overview
from banpipe.bantime import format_remaining


def collect(
    ledger: Any,
    now: float,
    *,
    backend: str,
    spoof_max: int,
    spoof_window: float,
    firewall: dict[str, Any] | None,
) -> dict[str, Any]:
    """The status dict. ``firewall`` is a live comparison (``{"entries", "missing",
    "orphans"}``) or None when the firewall could not be read; then the daemon's last
    check stands in."""
    path = ledger.path
    running = monitor.daemon_running(path)
    runtime = monitor.read_runtime(path) or {}
    counts = overview.active_counts(ledger)
    active = {
        fam: {kind: counts[(fam, kind)] for kind in ("manual", "automated")} for fam in ("v4", "v6")
    }
    recent = len(ledger.bans_started_since(now - spoof_window)) if spoof_max > 0 else 0
    brake = runtime.get("brake") or {}
    last_input = runtime.get("last_input") if runtime else None
    last_violation = overview.last_violation(ledger)
    last_alert = max((t for t in (last_input, last_violation) if t is not None), default=None)
    check = runtime.get("last_check") or None
    total = ledger.count_active()
    if firewall is not None:
        fw = {
            "checked": "live",
            "at": now,
            "entries": firewall["entries"],
            "missing": firewall["missing"],
            "orphans": firewall["orphans"],
        }
    elif check:
        fw = {
            "checked": "daemon",
            "at": check.get("at"),
            "entries": check.get("firewall_entries"),
            "missing": check.get("missing"),
            "orphans": check.get("orphans"),
        }
    else:
        fw = {"checked": None, "at": None, "entries": None, "missing": None, "orphans": None}
    fw["matches"] = None if fw["checked"] is None else not fw["missing"] and not fw["orphans"]
    return {
        "v": 1,
        "daemon": {
            "running": running,
            "pid": runtime.get("pid") if running else None,
            "started": runtime.get("started") if running else None,
            "updated": runtime.get("updated") if running else None,
        },
        "backend": runtime.get("backend") if running and runtime.get("backend") else backend,
        "ledger": {
            "path": path,
            "bytes": overview.ledger_bytes(path),
            "offenders": overview.totals(ledger)["offenders"],
        },
        "active": {"total": total, **active},
        "last_hour": overview.ban_events(ledger, now - 3600),
        "last_day": overview.ban_events(ledger, now - 86400),
        "last_alert": last_alert,
        "spoof_brake": {
            "limit": spoof_max,
            "window": spoof_window,
            "recent_new_bans": recent,
            "engaged": bool(brake.get("engaged")) if running else False,
            "held": int(brake.get("held", 0)) if running else 0,
        },
        "last_drift_repair": runtime.get("last_repair"),
        "firewall": fw,
    }


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f"{stamp} ({format_remaining(now - ts)} ago)" if ts <= now else stamp


def format_status(s: dict[str, Any], now: float) -> str:
    """``banctl status`` for people: one fact a line."""
    d, a, b, fw = s["daemon"], s["active"], s["spoof_brake"], s["firewall"]
    lines = [
        "daemon:      "
        + (
            f"running (pid {d['pid']}, since {_when(d['started'], now)})"
            if d["running"]
            else "not running"
        ),
        f"backend:     {s['backend']}",
        f"ledger:      {s['ledger']['path']} ({s['ledger']['bytes']} bytes, "
        f"{s['ledger']['offenders']} offenders)",
        f"active bans: {a['total']} (IPv4 {a['v4']['automated']} automated "
        f"{a['v4']['manual']} manual, IPv6 {a['v6']['automated']} automated "
        f"{a['v6']['manual']} manual)",
    ]
    for label, key in (("last hour", "last_hour"), ("last day", "last_day")):
        e = s[key]
        lines.append(
            f"{label + ':':<13}{e['added']} added, {e['extended']} extended, {e['lifted']} lifted"
        )
    lines.append(f"last alert:  {_when(s['last_alert'], now)}")
    if b["limit"] <= 0:
        brake = "off (spoof_max = 0)"
    else:
        state = f"ENGAGED, {b['held']} held" if b["engaged"] else "not engaged"
        brake = f"{state}; {b['recent_new_bans']} of {b['limit']} new bans within {b['window']:g} s"
    lines.append(f"spoof brake: {brake}")
    rep = s["last_drift_repair"]
    lines.append(
        "last repair: " + (f"{_when(rep['at'], now)}: {rep['summary']}" if rep else "none")
    )
    if fw["checked"] is None:
        lines.append("firewall:    not checked (no access and no daemon check)")
    else:
        src = "now" if fw["checked"] == "live" else f"daemon check {_when(fw['at'], now)}"
        verdict = (
            "matches the ledger"
            if fw["matches"]
            else (f"DIFFERS from the ledger ({fw['missing']} missing, {fw['orphans']} orphans)")
        )
        lines.append(f"firewall:    {fw['entries']} entries, {verdict} ({src})")
    return "".join(line + "\n" for line in lines)
