"""Bounded memos for hot paths.

Moved here from parsers.py so that address.py (below parsers) can use it too: one memo
type in one place.
"""

from __future__ import annotations


class TwoGen(dict):
    """A bounded cache in two generations (the current one is the dict itself).

    When the current generation is full it becomes the old one and a new one starts; a
    key found only in the old generation is copied into the current one.  So at most
    ``2 * size`` entries are held, and what is still in use survives a turnover (a cache
    that is simply cleared when full misses everything at once when the working set
    outgrows it).  The hot path calls ``get`` (dict's own: the dict keeps its identity, so
    a caller may hold it) and ``recall`` on a miss.  Values must not be None.
    """

    __slots__ = ("old", "size")

    def __init__(self, size: int) -> None:
        super().__init__()
        self.old: dict = {}
        self.size = size

    def recall(self, key: object) -> object:
        value = self.old.get(key)
        if value is not None:
            self.put(key, value)
        return value

    def put(self, key: object, value: object) -> None:
        if len(self) >= self.size:
            self.old = dict(self)
            dict.clear(self)
        self[key] = value

    def clear(self) -> None:
        dict.clear(self)
        self.old.clear()
