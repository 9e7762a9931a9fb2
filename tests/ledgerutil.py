"""Recording violations the way banctl does, for tests and benches that fill a ledger.

banctl's intake groups a burst's violations (banpipe.intake) and records the groups
with ``Ledger.record_groups``; :func:`record` does the same for a list of
:class:`~banpipe.ledger.Violation`, so tests exercise the one real path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from banpipe.intake import fold_line
from banpipe.ledger import BatchOutcome, Ledger, Violation


def groups_of(violations: Iterable[Violation]) -> dict[tuple, list]:
    """``Violation[:7]`` -> [alert_ts of the first, count, position of the last,
    alert_ts of the last]."""
    groups: dict[tuple, list] = {}
    for seq, v in enumerate(violations):
        fold_line(groups, v[:7], v.alert_ts, seq)  # the key: every field but alert_ts
    return groups


def record(
    ledger: Ledger,
    violations: Iterable[Violation],
    now: float,
    policy: Any,
    rng: Any,
    *,
    new_ban_budget: int | None = None,
) -> BatchOutcome:
    """Record a batch of violations in one transaction; ban or extend as due."""
    return ledger.record_groups(
        groups_of(violations), now, policy, rng, new_ban_budget=new_ban_budget
    )


class Low:
    """An rng whose every draw is the lowest possible."""

    def uniform(self, a, b):
        return a
