"""A sample ban request (one line of alertfilter's output, banctl's input) for tests
and benches: one home for its keys and values."""

from __future__ import annotations

from typing import Any


def ban_request(offender: str = "203.0.113.7", **changes: Any) -> dict[str, Any]:
    """A plain ban request as alertfilter writes it: ``offender`` (also the source)
    against 198.51.100.8, an MS-SQL worm alert of priority 2; ``changes`` replace or
    add keys."""
    return {
        "v": 1,
        "ts": "2026-11-28T10:00:00.000000",
        "gid": 1,
        "sid": 2003,
        "rev": 8,
        "msg": "MS-SQL Worm propagation attempt",
        "classification": "Misc Attack",
        "priority": 2,
        "proto": "UDP",
        "src": offender,
        "sport": 1434,
        "dst": "198.51.100.8",
        "dport": 1434,
        "action": None,
        "refs": [],
        "format": "snort2-fast",
        "offender": offender,
        "victim": "198.51.100.8",
        "reversed": False,
        "reason": "priority 2",
        **changes,
    }
