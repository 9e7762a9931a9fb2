"""Integer ranges merged for bisect lookups: protect.AddressTable's address ranges and
rules' sid ranges."""

from __future__ import annotations

from collections.abc import Iterable


def merged(ranges: Iterable[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """The starts and the ends of ``ranges`` (inclusive ``(first, last)`` pairs), sorted,
    overlapping and adjacent ones merged: a value ``v`` lies in one of them when
    ``i = bisect_right(starts, v) - 1`` is at least 0 and ``v <= ends[i]``."""
    spans: list[list[int]] = []
    for first, last in sorted(ranges):
        if spans and first <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], last)
        else:
            spans.append([first, last])
    return [s[0] for s in spans], [s[1] for s in spans]
