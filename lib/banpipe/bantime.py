"""Ban-duration policy: pure functions of the ``[ban]`` settings, the clock and an rng.

Times are POSIX seconds (float); an expiry of ``None`` means permanent. Nothing here
reads the clock or a random source itself: ``now`` and ``rng`` are parameters, so
tests state exactly what they expect.

The rules (issue 4):

* a first ban lasts ``base``;
* an offender banned ``k`` times within ``recidive_window`` before this ban starts at
  ``base * recidive_factor ** k``;
* each new violation while banned extends the expiry by a random amount drawn from
  ``[extend_min, extend_max]`` (the original thread's rule);
* no automated ban ever reaches beyond ``now + max``; an extension never shortens a ban.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol


class Rng(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class BanPolicy:
    base: float = 3600.0
    extend_min: float = 300.0
    extend_max: float = 1800.0
    max: float = 7 * 86400.0
    recidive_window: float = 30 * 86400.0
    recidive_factor: float = 2.0

    def __post_init__(self) -> None:
        problems = []
        if not self.base > 0:
            problems.append("base must be > 0")
        if self.extend_min < 0 or self.extend_max < self.extend_min:
            problems.append("need 0 <= extend_min <= extend_max")
        if self.max < self.base:
            problems.append("max must be >= base")
        if self.recidive_window < 0:
            problems.append("recidive_window must be >= 0")
        if self.recidive_factor < 1:
            problems.append("recidive_factor must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_config(cls, ban: Any) -> BanPolicy:
        """Build from ``config.ban`` (any object with the six attributes)."""
        return cls(
            base=float(ban.base),
            extend_min=float(ban.extend_min),
            extend_max=float(ban.extend_max),
            max=float(ban.max),
            recidive_window=float(ban.recidive_window),
            recidive_factor=float(ban.recidive_factor),
        )


def first_duration(policy: BanPolicy, previous_bans: int) -> float:
    """Length of a new automated ban after ``previous_bans`` bans within the window."""
    if previous_bans <= 0:
        return min(policy.base, policy.max)
    # log-space guard: factor**k overflows float for large k long before it matters
    if policy.recidive_factor > 1 and previous_bans * math.log(policy.recidive_factor) > 700:
        return policy.max
    return min(policy.base * policy.recidive_factor**previous_bans, policy.max)


def initial_expiry(policy: BanPolicy, now: float, previous_bans: int) -> float:
    """Expiry of a new automated ban starting at ``now``."""
    return now + first_duration(policy, previous_bans)


def extended_expiry(
    policy: BanPolicy, expires: float | None, now: float, rng: Rng, n: int = 1
) -> float | None:
    """Expiry after ``n`` more violations at ``now`` by an offender whose ban ends at
    ``expires``: one random draw per violation (what ``Ledger.record_groups`` applies).

    Permanent stays permanent. The extension counts from the later of ``expires`` and
    ``now``, is capped at ``now + max``, and never moves the expiry earlier (a manual
    ``--for`` longer than ``max`` is left alone). Within one ``now`` the steps add up
    (each counts from the previous expiry) until the cap; past it no draw can change
    anything, so none is made.
    """
    if expires is None or n <= 0:
        return expires
    cap = now + policy.max
    if expires >= cap:
        return expires  # a manual --for beyond max: an extension never shortens it
    later = expires if expires > now else now
    uniform, lo, hi = rng.uniform, policy.extend_min, policy.extend_max
    for _ in range(n):
        later += uniform(lo, hi)
        if later >= cap:
            return cap
    return later


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``15m``, ``2h``, ``1d12h``, ``1w``.

    Raises ValueError with a short reason for anything else (negative, empty, units
    out of this list).
    """
    s = text.strip().lower().replace(" ", "")
    if not s:
        raise ValueError("empty duration")
    try:
        value = float(s)
    except ValueError:
        pos, total = 0, 0.0
        for m in _PART.finditer(s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or pos == 0:
            raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 1d)")
        value = total
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value


def format_remaining(seconds: float) -> str:
    """Compact human duration: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 and s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def format_expiry(expires: float | None, now: float, *, tz_local: bool = True) -> str:
    """``2026-11-28 14:05 (in 3h05m)``, ``permanent`` or ``lapsed``; local time."""
    if expires is None:
        return "permanent"
    when = time.localtime(expires) if tz_local else time.gmtime(expires)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", when)
    if expires <= now:
        return f"{stamp} (lapsed)"
    return f"{stamp} (in {format_remaining(expires - now)})"


def format_until(expires: float | None, now: float) -> str:
    """``until 2026-11-28 14:05:00 (in 3h05m)`` or ``permanently`` (never "until
    permanent")."""
    return "permanently" if expires is None else f"until {format_expiry(expires, now)}"
