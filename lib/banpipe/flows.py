"""Repeats of one flow: Suricata gives every alert of a connection the same ``flow_id``.

A flow that set off one ban sets off many alerts (every packet of a scan, each rule that
matched); the first one bans, the rest only repeat it.  :class:`FlowWindow` remembers
the flows seen in the last ``window`` seconds so alertfilter can drop the repeats
(``[filter] flow_window``).  Time is passed in: the caller's clock, not the alerts'.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class FlowWindow:
    """Flows seen within the last ``window`` seconds, at most ``size`` of them.

    ``repeat(key, now)`` is True when ``key`` was first seen less than ``window``
    seconds before ``now`` (and then it is not recorded again: the window runs from the
    first alert of the flow); otherwise it records ``key`` at ``now`` and is False.
    ``now`` must not go backwards (a monotonic clock).  When more than ``size`` flows
    are inside the window the oldest are forgotten first, so memory stays bounded and a
    forgotten flow at worst passes one alert more.
    """

    def __init__(self, window: float, size: int = 65536) -> None:
        if window < 0:
            raise ValueError("window must not be negative")
        self.window = window
        self.size = size
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def repeat(self, key: Hashable, now: float) -> bool:
        seen = self._seen
        # Entries are in the order first seen, so the expired ones are at the front.
        limit = now - self.window
        while seen:
            first, t = next(iter(seen.items()))
            if t > limit:
                break
            del seen[first]
        if key in seen:
            return True
        seen[key] = now
        if len(seen) > self.size:
            seen.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._seen)
