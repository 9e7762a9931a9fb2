"""The ledger's hits rows growing across commits: appended to hits_more, folded in bulk.

A commit adds to an open row by appending to ``hits_more`` (pages written in proportion
to the batch); the ``violations`` view shows the row with its growth at every moment,
before and after a fold, and rows about to be deleted are folded first.
"""

from __future__ import annotations

import pytest

from banpipe.bantime import BanPolicy
from banpipe.ledger import MIGRATIONS, Ledger, Violation
from banpipe.ledger import rows as hitsmod
from ledgerutil import Low, record

NOW = 1_800_000_000.0
POLICY = BanPolicy(base=3600, extend_min=60, extend_max=600, max=86400)
A = "203.0.113.7"


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(str(tmp_path / "growth.sqlite3")) as led:
        yield led


def v(ts, **kw):
    return Violation(addr=A, sig="1:1:1", alert_ts=ts, **kw)


def rows(led, table):
    return led.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608


def history(led):
    return [(h.ts, h.last, h.count, h.alert_ts, h.alert_last_ts) for h in led.history(A)]


def test_growth_is_appended_and_shown_with_its_row_before_and_after_a_fold(ledger):
    first, second, third = (f"2026-11-28T10:00:0{i}.000001" for i in range(3))
    record(ledger, [v(first)], NOW, POLICY, Low())
    record(ledger, [v(second), v(second)], NOW + 1, POLICY, Low())
    record(ledger, [v(third)], NOW + 2, POLICY, Low())
    assert rows(ledger, "hits") == 1
    assert rows(ledger, "hits_more") == 2  # a fold is due FOLD_S after NOW + 1
    expected = [(NOW, NOW + 2, 4, first, third)]
    assert history(ledger) == expected
    with ledger.transaction():
        ledger.fold(NOW + 3)
    assert rows(ledger, "hits_more") == 0
    assert history(ledger) == expected
    assert ledger.get(A).violations == 4


def test_a_fold_comes_every_fold_rows_and_every_fold_s(ledger, monkeypatch):
    monkeypatch.setattr(hitsmod, "FOLD_ROWS", 3)
    for i in range(5):
        record(ledger, [v(f"t{i}")], NOW + i, POLICY, Low())
    # NOW: the row; NOW + 1..3: three rows of growth, folded; NOW + 4: one
    assert rows(ledger, "hits_more") == 1
    record(ledger, [v("t5")], NOW + 5, POLICY, Low())
    assert rows(ledger, "hits_more") == 2
    monkeypatch.setattr(hitsmod, "FOLD_ROWS", 100)
    record(ledger, [v("t6")], NOW + 4 + hitsmod.FOLD_S - 1, POLICY, Low())
    assert rows(ledger, "hits_more") == 3
    record(ledger, [v("t7")], NOW + 4 + hitsmod.FOLD_S, POLICY, Low())  # NOW + 4 waited
    assert rows(ledger, "hits_more") == 0
    assert history(ledger) == [(NOW, NOW + 4 + hitsmod.FOLD_S, 8, "t0", "t7")]


def test_rows_deleted_by_retention_take_their_growth_with_them(ledger):
    record(ledger, [v("t0")], NOW, POLICY, Low())
    record(ledger, [v("t1")], NOW + 1, POLICY, Low())
    record(ledger, [v("t2")], NOW + 2, POLICY, Low())
    assert rows(ledger, "hits_more") == 2
    assert ledger.unban([A], NOW + 3, retention=0) == [A]
    assert (rows(ledger, "hits"), rows(ledger, "hits_more")) == (0, 0)
    assert history(ledger) == []


def test_prune_folds_before_it_cuts(ledger):
    record(ledger, [v("t0")], NOW, POLICY, Low())
    record(ledger, [v("t1")], NOW + 1, POLICY, Low())
    record(ledger, [v("t2")], NOW + 2, POLICY, Low())
    assert rows(ledger, "hits_more") == 2
    ledger.prune(NOW + 10, retention=20, recidive_window=0)
    assert rows(ledger, "hits_more") == 0
    assert history(ledger) == [(NOW, NOW + 2, 3, "t0", "t2")]
    ledger.prune(NOW + 100, retention=5, recidive_window=0)
    assert history(ledger) == []


def test_growth_of_a_row_another_connection_deleted_starts_a_new_row(tmp_path):
    path = str(tmp_path / "growth.sqlite3")
    with Ledger.open(path) as one, Ledger.open(path) as other:
        record(one, [v("t0")], NOW, POLICY, Low())
        record(one, [v("t1")], NOW + 1, POLICY, Low())
        record(one, [v("t2")], NOW + 2, POLICY, Low())
        other.db.execute("DELETE FROM hits")  # a prune in another process
        record(one, [v("t3"), v("t4")], NOW + 3, POLICY, Low())
        assert history(one) == [(NOW + 3, NOW + 3, 2, "t3", "t4")]
        with one.transaction():
            one.fold(NOW + 4)  # the orphaned growth goes, nothing else changes
        assert history(one) == [(NOW + 3, NOW + 3, 2, "t3", "t4")]
        assert rows(one, "hits_more") == 0


def test_v6_ledger_gains_the_growth_table_with_its_history_unchanged(tmp_path):
    path = str(tmp_path / "growth.sqlite3")
    with Ledger.open(path, migrations=MIGRATIONS[:6]) as led:
        led.db.execute("INSERT INTO texts (id, text) VALUES (1, ?), (2, '1:1:1')", (A,))
        led.db.execute(
            "INSERT INTO hits (addr, first, last, count, sig, reversed, alert_first, "
            "alert_last) VALUES (1, ?, ?, 2, 2, 0, 't0', 't1')",
            (NOW, NOW + 1),
        )
        before = history(led)
    with Ledger.open(path) as led:
        assert led.version == len(MIGRATIONS) == 7
        assert history(led) == before == [(NOW, NOW + 1, 2, "t0", "t1")]
        record(led, [v("t2")], NOW + 2, POLICY, Low())
        record(led, [v("t3")], NOW + 3, POLICY, Low())
        assert history(led) == [*before, (NOW + 2, NOW + 3, 2, "t2", "t3")]
