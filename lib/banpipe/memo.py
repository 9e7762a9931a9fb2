"""The one bounded memo of banpipe's hot paths: two generations of a dict.

Used wherever a value is computed per distinct text or key (address judgements, rule
ids, parser templates, canonical addresses) while the stream of keys is unbounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MISSING: Any = object()


class Memo(dict):
    """A bounded memo: a young generation (the dict itself) and an old one.

    When the young generation holds ``size`` entries it becomes the old one and the
    previous old one is dropped; a key found in the old generation moves back to the
    young one. So at most ``2 * size`` entries are held, and hot keys (the few noisy
    scanners, the few line shapes) survive a turnover, unlike a cache that is simply
    cleared when full and then misses everything at once (bench/README.md, alertfilter).

    The hot path is dict's own ``get`` (one C call, no Python frame); only on a miss
    does a caller call :meth:`lookup` (compute with ``make`` when the old generation
    does not have it either) or :meth:`recall` plus :meth:`put` (when the value is made
    elsewhere). Values may be None; ``get(key, default)`` with a sentinel tells a
    stored None from a miss.
    """

    __slots__ = ("old", "size", "make")

    def __init__(self, size: int, make: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        self.old: dict[Any, Any] = {}
        self.size = size
        self.make = make

    def __len__(self) -> int:
        """Entries held in both generations (the memory bound is ``2 * size``)."""
        return dict.__len__(self) + len(self.old)

    def __bool__(self) -> bool:
        return len(self) > 0

    def put(self, key: Any, value: Any) -> None:
        """Store ``value`` in the young generation, turning it over when full."""
        if dict.__len__(self) >= self.size:
            self.old = dict(self)
            dict.clear(self)
        self[key] = value

    def recall(self, key: Any) -> Any:
        """The old generation's value for ``key`` moved back to the young one, or None."""
        value = self.old.pop(key, _MISSING)
        if value is _MISSING:
            return None
        self.put(key, value)
        return value

    def lookup(self, key: Any, make: Callable[[Any], Any] | None = None) -> Any:
        """The value for ``key`` after a miss of ``get``: from the old generation, else
        computed by ``make`` (default: the one given at construction) and kept."""
        value = self.old.pop(key, _MISSING)
        if value is _MISSING:
            value = (make or self.make)(key)  # type: ignore[misc]
        self.put(key, value)
        return value

    def clear(self) -> None:
        dict.clear(self)
        self.old.clear()
