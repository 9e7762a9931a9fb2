"""The spoof brake's budget: counted from the ledger's ban periods (this gateway's own
automated ones), and the time it clears when at or over its limit."""

from __future__ import annotations

from banpipe.ledger import Ledger
from banpipe.record import SpoofBrake

NOW = 1_800_000_000.0


def periods(ledger: Ledger, rows: list[tuple[str, float, int, str | None]]) -> None:
    """Ban periods as (address, start, manual, origin)."""
    with ledger.transaction() as db:
        db.executemany("INSERT INTO bans (addr, start, manual, origin) VALUES (?, ?, ?, ?)", rows)


def test_counts_only_own_automated_bans_within_the_window(tmp_path):
    with Ledger.open(str(tmp_path / "ledger.sqlite3")) as ledger:
        periods(
            ledger,
            [
                ("203.0.113.1", NOW - 20, 0, None),  # before the window
                ("203.0.113.2", NOW - 5, 0, None),
                ("203.0.113.3", NOW - 4, 1, None),  # manual
                ("203.0.113.4", NOW - 3, 0, "gw2"),  # another gateway's
                ("203.0.113.5", NOW - 2, 0, None),
            ],
        )
        brake = SpoofBrake(limit=5, window=10.0)
        assert brake.budget(ledger, NOW) == 3
        brake.engaged = True
        assert brake.clears_at() is None  # room left: nothing to wait for


def test_at_or_over_the_limit_it_clears_when_enough_starts_leave_the_window(tmp_path):
    with Ledger.open(str(tmp_path / "ledger.sqlite3")) as ledger:
        starts = [NOW - 9, NOW - 8, NOW - 7, NOW - 6, NOW - 5]
        periods(ledger, [(f"203.0.113.{i}", s, 0, None) for i, s in enumerate(starts)])
        brake = SpoofBrake(limit=5, window=10.0, engaged=True)
        assert brake.budget(ledger, NOW) == 0
        assert brake.clears_at() == starts[0] + 10  # one leaves: room for one
        brake = SpoofBrake(limit=2, window=10.0, engaged=True)
        assert brake.budget(ledger, NOW) == 0
        # Five in the window, room from one: the four oldest must leave.
        assert brake.clears_at() == starts[3] + 10
        assert brake.budget(ledger, starts[3] + 10.001) == 1
        assert brake.budget(ledger, starts[3] + 9.5) == 0


def test_off_reads_nothing():
    class NoLedger:
        def __getattr__(self, name):
            raise AssertionError(f"the brake read the ledger ({name})")

    assert SpoofBrake(limit=0, window=10.0).budget(NoLedger(), NOW) is None
