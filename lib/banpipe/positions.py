"""Read positions on the recording side: units of a positional stream and their repeats.

``fasttail --ledger`` puts a position record into its output after the alerts it
covers (docs/pipe-format.md, "Positions"). The alerts between two records form a
*unit*: banctl records a unit's violations and its closing position in one
transaction, or neither, so what the ledger holds is always a whole number of units
and the recorded position is exactly where the next unit starts. fasttail resumes
there, so nothing is lost and nothing is recorded twice; a unit whose closing
position the ledger already covers (fasttail resumed from an older point than
banctl's last commit) is a repeat and is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from banpipe import pipe

if TYPE_CHECKING:  # banpipe.follow imports pyinotify: not for every banctl command
    from banpipe.follow import Position


def ident(pos: Position) -> str:
    """Which file a position is in: inode, device and the fingerprint of its head."""
    return f"{pos.inode}:{pos.device}:{pos.fp_len}:{pos.fingerprint}"


def parse(obj: Any) -> Position | None:
    """The position of a position record; None for the opening ``"position": null``.

    Raises ValueError when the record's position is malformed.
    """
    from banpipe.follow import Position

    value = obj.get("position")
    if value is None:
        return None
    return Position.from_json(value)


class Recorded:
    """Positions known to be recorded (or about to be, in the pending commit).

    ``known`` maps ``(path, ident)`` to the offset recorded for that file; a later
    position in the same file is new, any other file is new too (rotation goes to a
    file never read before).
    """

    def __init__(self, known: Mapping[tuple[str, str], int]) -> None:
        self.known: dict[tuple[str, str], int] = dict(known)
        self.pending: dict[tuple[str, str], Position] = {}
        # A pending position for a file never recorded before: the first point a
        # restart can resume from, worth recording at once.
        self.urgent = False

    def is_new(self, pos: Position) -> bool:
        return pos.offset > self.known.get((pos.path, ident(pos)), -1)

    def advance(self, pos: Position) -> None:
        """``pos`` closes a unit that goes into the next commit."""
        key = (pos.path, ident(pos))
        self.urgent = self.urgent or key not in self.known
        self.known[key] = pos.offset
        self.pending.pop(key, None)  # keep commit order: newest last
        self.pending[key] = pos

    def rows(self) -> list[tuple[str, str, int, str]]:
        """The pending positions as ledger rows, oldest first."""
        return [
            (path, key, pos.offset, pipe.dumps(pos.to_json()).decode())
            for (path, key), pos in self.pending.items()
        ]


def merge(into: dict[tuple, list], unit: Mapping[tuple, list]) -> None:
    """Add a unit's violation groups (``[alert_ts, count, last line, last alert_ts]``)
    to ``into``."""
    for key, group in unit.items():
        have = into.get(key)
        if have is None:
            into[key] = group
        else:
            have[1] += group[1]
            have[2] = group[2]
            have[3] = group[3]
