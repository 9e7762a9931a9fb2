"""The terminal a tool writes to: whether there is one, and how wide it is.

Output for people may adapt to a terminal (cut to its width, a progress line); output
into a pipe or a file never does, so ``banctl list | grep`` and a journal see it whole.
"""

from __future__ import annotations

import os
from typing import IO


def width(stream: IO[str]) -> int | None:
    """Columns of the terminal ``stream`` writes to; None for a pipe or file."""
    try:
        if not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


def fit(line: str, columns: int | None) -> str:
    """``line`` cut to ``columns`` with an ellipsis; whole when ``columns`` is None."""
    if columns is None or len(line) <= columns:
        return line
    return line[: max(columns - 1, 0)] + "…"
