"""The ledger: schema and migrations, durability, one row per offender, retention."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

from banpipe.bantime import BanPolicy
from banpipe.ledger import BUCKET_S, MIGRATIONS, Ledger, LedgerError, Violation, check_sqlite
from ledgerutil import Low, record

NOW = 1_800_000_000.0
POLICY = BanPolicy(
    base=3600,
    extend_min=60,
    extend_max=600,
    max=86400,
    recidive_window=7 * 86400,
    recidive_factor=2,
)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ledger.sqlite3")


@pytest.fixture
def ledger(path):
    with Ledger.open(path) as led:
        yield led


def v(addr, **kw):
    return Violation(addr=addr, **kw)


def rows(led, table):
    return led.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


rows_of = rows


# -- schema and migrations ------------------------------------------------------------


def test_new_ledger_is_migrated_from_version_0(path):
    sqlite3.connect(path).close()  # an empty database file: user_version 0
    with Ledger.open(path) as led:
        assert led.version == len(MIGRATIONS)
        names = {r[0] for r in led.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"offenders", "hits", "texts", "bans"} <= names
        # the history keeps its old name and columns, as a view over hits and texts
        views = {r[0] for r in led.db.execute("SELECT name FROM sqlite_master WHERE type='view'")}
        assert "violations" in views


def test_an_sqlite_too_old_for_the_ledger_is_refused_at_open(path, monkeypatch):
    check_sqlite()  # the one these tests run on is new enough
    check_sqlite((3, 33, 0))
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    with pytest.raises(LedgerError, match=r"SQLite 3\.31\.1 is too old: .* needs 3\.33\.0"):
        Ledger.open(path)
    assert not os.path.exists(path)


def test_pragmas_wal_and_full_sync(ledger):
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert ledger.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_v1_ledger_migrates_to_counted_history(path):
    with Ledger.open(path, migrations=MIGRATIONS[:1]) as led:
        assert led.version == 1
        led.db.execute(
            "INSERT INTO violations (addr, ts, sig) VALUES ('203.0.113.1', 1.0, '1:2:3')"
        )
    with Ledger.open(path) as led:
        assert led.version == len(MIGRATIONS) >= 2
        (h,) = led.history("203.0.113.1")
        assert (h.sig, h.count) == ("1:2:3", 1)


def test_migrations_apply_in_order_and_keep_data(path):
    with Ledger.open(path) as led:
        led.ban("203.0.113.1", NOW, expires=None, reason="x")

    def add_note(db):
        db.execute("ALTER TABLE offenders ADD COLUMN note TEXT")

    def fill_note(db):
        db.execute("UPDATE offenders SET note = 'migrated'")

    with Ledger.open(path, migrations=(*MIGRATIONS, add_note, fill_note)) as led:
        assert led.version == len(MIGRATIONS) + 2
        assert led.db.execute("SELECT addr, note FROM offenders").fetchall() == [
            ("203.0.113.1", "migrated")
        ]
        assert led.migrate((*MIGRATIONS, add_note, fill_note)) == 0  # idempotent


def test_failed_migration_rolls_back_and_keeps_version(path):
    Ledger.open(path).close()

    def broken(db):
        db.execute("CREATE TABLE half (x)")
        raise sqlite3.OperationalError("boom")

    with pytest.raises(LedgerError, match="boom"):
        Ledger.open(path, migrations=(*MIGRATIONS, broken))
    with Ledger.open(path) as led:
        assert led.version == len(MIGRATIONS)
        assert not led.db.execute("SELECT name FROM sqlite_master WHERE name='half'").fetchall()


def test_newer_schema_is_refused(path):
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 5}")
    db.close()
    with pytest.raises(LedgerError, match="newer than this banctl"):
        Ledger.open(path)


def test_unwritable_location_is_a_ledger_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LedgerError):
        Ledger.open(str(blocker / "sub" / "ledger.sqlite3"))


# -- recording, banning, extending -----------------------------------------------------


def test_first_violation_bans_for_base(ledger):
    out = record(ledger, [v("203.0.113.7", sig="1:2003:8", msg="worm")], NOW, POLICY, Low())
    assert out.new_bans == ["203.0.113.7"] and out.extended == [] and out.recorded == 1
    o = ledger.get("203.0.113.7")
    assert (o.active, o.manual, o.expires, o.violations, o.bans) == (True, False, NOW + 3600, 1, 1)
    assert ledger.next_expiry() == NOW + 3600


def test_violation_while_banned_extends(ledger):
    record(ledger, [v("203.0.113.7")], NOW, POLICY, Low())
    out = record(ledger, [v("203.0.113.7")], NOW + 10, POLICY, Low())
    assert out.new_bans == [] and out.extended == ["203.0.113.7"]
    o = ledger.get("203.0.113.7")
    assert o.expires == NOW + 3600 + 60
    assert o.violations == 2 and o.bans == 1


def test_duplicates_in_one_burst_ban_once(ledger):
    out = record(ledger, [v("203.0.113.7")] * 5 + [v("2001:db8::1")], NOW, POLICY, Low())
    assert out.new_bans == ["203.0.113.7", "2001:db8::1"]
    assert ledger.get("203.0.113.7").violations == 5
    assert rows(ledger, "bans") == 2


def test_one_row_per_offender_whatever_happens(ledger):
    a = "198.51.100.4"
    for i in range(3):
        record(ledger, [v(a)] * 3, NOW + i, POLICY, Low())
        ledger.unban([a], NOW + i + 0.5)
    ledger.ban(a, NOW + 10, expires=None, reason="manual")
    ledger.pin(a)
    record(ledger, [v(a)], NOW + 11, POLICY, Low())
    ledger.expire(NOW + 1e9)
    assert ledger.db.execute("SELECT count(*) FROM offenders WHERE addr=?", (a,)).fetchone() == (1,)
    assert ledger.get(a).violations == 10


def test_recidive_starts_longer(ledger):
    a = "203.0.113.9"
    record(ledger, [v(a)], NOW, POLICY, Low())
    ledger.expire(NOW + 3600)
    out = record(ledger, [v(a)], NOW + 4000, POLICY, Low())
    assert out.new_bans == [a]
    assert ledger.get(a).expires == NOW + 4000 + 7200
    ledger.unban([a], NOW + 5000)
    record(ledger, [v(a)], NOW + 6000, POLICY, Low())
    assert ledger.get(a).expires == NOW + 6000 + 14400
    assert ledger.get(a).bans == 3


def test_recidive_window_forgets_old_bans(ledger):
    a = "203.0.113.9"
    record(ledger, [v(a)], NOW, POLICY, Low())
    ledger.expire(NOW + 3600)
    later = NOW + POLICY.recidive_window + 1
    record(ledger, [v(a)], later, POLICY, Low())
    assert ledger.get(a).expires == later + 3600


def test_budget_holds_new_bans_but_records_and_extends(ledger):
    record(ledger, [v("203.0.113.1")], NOW, POLICY, Low())
    batch = [v("203.0.113.1"), v("203.0.113.2"), v("203.0.113.3"), v("203.0.113.3")]
    out = record(ledger, batch, NOW + 1, POLICY, Low(), new_ban_budget=1)
    assert out.new_bans == ["203.0.113.2"]
    assert out.held == ["203.0.113.3"]
    assert out.extended == ["203.0.113.1"]
    held = ledger.get("203.0.113.3")
    assert not held.active and held.violations == 2
    assert sum(h.count for h in ledger.history("203.0.113.3")) == 2


def test_history_keeps_every_field(ledger):
    record(
        ledger,
        [
            v(
                "203.0.113.7",
                sig="1:2003:8",
                msg="MS-SQL Worm propagation attempt",
                priority=2,
                victim="198.51.100.8",
                reversed=True,
                reason="prio 2",
                alert_ts="2026-11-28T10:00:00",
            )
        ],
        NOW,
        POLICY,
        Low(),
    )
    (h,) = ledger.history("203.0.113.7")
    assert h.as_dict() == {
        "ts": NOW,
        "alert_time": datetime(2026, 11, 28, 10, 0, 0).timestamp(),
        "alert_ts": "2026-11-28T10:00:00",
        "sig": "1:2003:8",
        "msg": "MS-SQL Worm propagation attempt",
        "priority": 2,
        "victim": "198.51.100.8",
        "reversed": True,
        "reason": "prio 2",
        "count": 1,
        "last_ts": NOW,  # a single violation: its first time is its last
        "alert_last_time": datetime(2026, 11, 28, 10, 0, 0).timestamp(),
        "alert_last": "2026-11-28T10:00:00",
    }


def test_identical_violations_in_one_bucket_share_a_counted_row(ledger):
    a = "203.0.113.7"
    burst = [v(a, sig="1:1:1", alert_ts=f"t{i}") for i in range(5)]
    burst += [v(a, sig="1:2:1"), v(a, sig="1:1:1", victim="198.51.100.9")]
    record(ledger, burst, NOW, POLICY, Low())
    # a later transaction in the same bucket adds to the row; the next bucket starts one
    record(ledger, [v(a, sig="1:1:1", alert_ts="t5")], NOW + 1, POLICY, Low())
    record(ledger, [v(a, sig="1:1:1", alert_ts="t6")], NOW + BUCKET_S, POLICY, Low())
    rows = [
        (h.ts, h.last, h.sig, h.victim, h.count, h.alert_ts, h.alert_last_ts)
        for h in ledger.history(a)
    ]
    assert rows == [
        (NOW, NOW + 1, "1:1:1", None, 6, "t0", "t5"),
        (NOW, NOW, "1:2:1", None, 1, None, None),
        (NOW, NOW, "1:1:1", "198.51.100.9", 1, None, None),
        (NOW + BUCKET_S, NOW + BUCKET_S, "1:1:1", None, 1, "t6", "t6"),
    ]
    assert ledger.get(a).violations == 9  # every violation counts
    # texts are stored once however often they occur
    assert rows_of(ledger, "texts") == 4  # the address, two rules, one victim
    assert rows_of(ledger, "hits") == 4


def test_bucket_rows_survive_another_connection_pruning_them(path):
    a = "203.0.113.7"
    with Ledger.open(path) as one, Ledger.open(path) as other:
        record(one, [v(a, sig="1:1:1")], NOW, POLICY, Low())
        other.db.execute("DELETE FROM hits")  # what a prune in another process may do
        record(one, [v(a, sig="1:1:1"), v(a, sig="1:1:1")], NOW + 1, POLICY, Low())
        assert [(h.ts, h.count) for h in one.history(a)] == [(NOW + 1, 2)]


def test_a_rolled_back_batch_leaves_no_remembered_row_or_text(ledger):
    a = "203.0.113.7"
    record(ledger, [v(a, sig="1:1:1")], NOW, POLICY, Low())
    with pytest.raises(RuntimeError), ledger.transaction():
        record(ledger, [v(a, sig="1:1:1"), v("203.0.113.8", msg="new text")], NOW, POLICY, Low())
        raise RuntimeError("disk gone")
    record(ledger, [v("203.0.113.8", msg="new text")], NOW, POLICY, Low())
    record(ledger, [v(a, sig="1:1:1")], NOW, POLICY, Low())
    assert [(h.count, h.msg) for h in ledger.history("203.0.113.8")] == [(1, "new text")]
    # the rolled-back count is not there; after a rollback the connection no longer
    # trusts what it remembered, so the next violation starts a row of its own
    assert [h.count for h in ledger.history(a)] == [1, 1]


def test_v4_ledger_converts_to_interned_bucketed_rows(path):
    with Ledger.open(path, migrations=MIGRATIONS[:4]) as led:
        assert led.version == 4
        led.db.executemany(
            "INSERT INTO violations (addr, ts, alert_ts, sig, msg, priority, victim, reversed, "
            "reason, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("203.0.113.1", NOW + 5, "t1", "1:2:3", "m", 2, "198.51.100.8", 1, "r", 3),
                ("203.0.113.1", NOW, None, None, None, None, None, 0, None, 1),
                ("2001:db8::1", NOW + 1, "t2", "1:2:3", "m", None, None, 0, "r", 1),
            ],
        )
    with Ledger.open(path) as led:
        assert led.version == len(MIGRATIONS)
        h1 = [h.as_dict() for h in led.history("203.0.113.1")]
        assert [(h["ts"], h["last_ts"], h["count"], h["sig"]) for h in h1] == [
            (NOW, NOW, 1, None),
            (NOW + 5, NOW + 5, 3, "1:2:3"),
        ]
        assert (h1[1]["alert_ts"], h1[1]["alert_last"], h1[1]["msg"], h1[1]["victim"]) == (
            "t1",
            "t1",
            "m",
            "198.51.100.8",
        )
        assert (h1[1]["priority"], h1[1]["reversed"], h1[1]["reason"]) == (2, True, "r")
        (h2,) = led.history("2001:db8::1")
        assert (h2.ts, h2.alert_ts, h2.count) == (NOW + 1, "t2", 1)
        # ids follow time, so retention cuts a range
        assert [r[0] for r in led.db.execute("SELECT first FROM hits ORDER BY id")] == [
            NOW,
            NOW + 1,
            NOW + 5,
        ]
        assert rows_of(led, "texts") == 6  # 2 addresses, 1:2:3, m, 198.51.100.8, r


# -- manual bans, unban, pin, expiry -------------------------------------------------------


def test_manual_ban_is_permanent_and_never_expires(ledger):
    assert ledger.ban("203.0.113.5", NOW, expires=None, reason="by hand")
    assert ledger.expire(NOW + 1e9) == []
    o = ledger.get("203.0.113.5")
    assert o.active and o.manual and o.expires is None and o.reason == "by hand"
    # violations while permanently banned are recorded, never shorten it
    record(ledger, [v("203.0.113.5")], NOW + 5, POLICY, Low())
    assert ledger.get("203.0.113.5").expires is None


def test_manual_ban_of_an_active_ban_converts_it(ledger):
    record(ledger, [v("203.0.113.5")], NOW, POLICY, Low())
    assert not ledger.ban("203.0.113.5", NOW + 1, expires=NOW + 60, reason="shorter")
    o = ledger.get("203.0.113.5")
    assert o.manual and o.expires == NOW + 60 and o.bans == 1


def test_pin(ledger):
    assert not ledger.pin("203.0.113.5")
    record(ledger, [v("203.0.113.5")], NOW, POLICY, Low())
    assert ledger.pin("203.0.113.5")
    o = ledger.get("203.0.113.5")
    assert o.manual and o.expires is None
    assert ledger.expire(NOW + 1e9) == []


def test_expire_lifts_only_due_bans(ledger):
    record(ledger, [v("203.0.113.1")], NOW, POLICY, Low())
    record(ledger, [v("203.0.113.2")], NOW + 100, POLICY, Low())
    assert ledger.expire(NOW + 3599) == []
    assert ledger.expire(NOW + 3600) == ["203.0.113.1"]
    assert ledger.active_addresses() == {"203.0.113.2"}
    assert ledger.next_expiry() == NOW + 3700


def test_unban_reports_only_active(ledger):
    record(ledger, [v("203.0.113.1")], NOW, POLICY, Low())
    assert ledger.unban(["203.0.113.1", "203.0.113.2"], NOW + 1) == ["203.0.113.1"]
    assert ledger.unban(["203.0.113.1"], NOW + 2) == []


def test_active_addresses_automated_only(ledger):
    record(ledger, [v("203.0.113.1")], NOW, POLICY, Low())
    ledger.ban("203.0.113.2", NOW, expires=None, reason="m")
    assert ledger.active_addresses(automated_only=True) == {"203.0.113.1"}
    assert ledger.active_addresses() == {"203.0.113.1", "203.0.113.2"}
    assert (ledger.count_active(), ledger.count_active(manual_only=True)) == (2, 1)


# -- retention -----------------------------------------------------------------------


def test_history_kept_after_unban_until_retention(ledger):
    record(ledger, [v("203.0.113.1")], NOW, POLICY, Low())
    ledger.unban(["203.0.113.1"], NOW + 10, retention=30 * 86400)
    assert len(ledger.history("203.0.113.1")) == 1
    ledger.prune(NOW + 29 * 86400, retention=30 * 86400, recidive_window=7 * 86400)
    assert len(ledger.history("203.0.113.1")) == 1
    counts = ledger.prune(NOW + 31 * 86400, retention=30 * 86400, recidive_window=7 * 86400)
    assert counts["violations"] == 1
    assert ledger.history("203.0.113.1") == []
    assert ledger.get("203.0.113.1") is None  # nothing left to remember it by


def test_retention_zero_deletes_history_at_unban_and_expiry(ledger):
    record(ledger, [v("203.0.113.1"), v("203.0.113.2")], NOW, POLICY, Low())
    ledger.unban(["203.0.113.1"], NOW + 10, retention=0)
    assert ledger.history("203.0.113.1") == []
    assert len(ledger.history("203.0.113.2")) == 1
    ledger.expire(NOW + 3600, retention=0)
    assert ledger.history("203.0.113.2") == []


def test_prune_keeps_active_offenders_and_recent_bans(ledger):
    ledger.ban("203.0.113.1", NOW, expires=None, reason="m")
    record(ledger, [v("203.0.113.2")], NOW, POLICY, Low())
    ledger.expire(NOW + 3600)
    ledger.prune(NOW + 86400, retention=3600, recidive_window=7 * 86400)
    assert ledger.get("203.0.113.1").active
    assert ledger.get("203.0.113.2") is not None  # its ban counts for recidive for 7 days
    assert ledger.recent_bans("203.0.113.2", NOW - 1) == 1


# -- durability and concurrency -------------------------------------------------------------


def test_committed_ban_survives_kill_9(path):
    code = f"""
import os, sys
sys.path.insert(0, {os.path.join(os.path.dirname(__file__), "..", "lib")!r})
sys.path.insert(0, {os.path.dirname(__file__)!r})
from banpipe.ledger import Ledger, Violation
from banpipe.bantime import BanPolicy
from ledgerutil import Low, record
led = Ledger.open({path!r})
record(led, [Violation("203.0.113.77")], 1.8e9, BanPolicy(), __import__("random").Random(1))
print("committed", flush=True)
os.kill(os.getpid(), 9)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == "committed\n"
    with Ledger.open(path) as led:
        assert led.get("203.0.113.77").active


def test_second_connection_waits_instead_of_failing(path, ledger):
    done = threading.Event()
    errors = []

    def writer():
        try:
            with Ledger.open(path) as other:
                other.ban("203.0.113.8", NOW, expires=None, reason="other")
        except Exception as exc:  # pragma: no cover - the failure we test against
            errors.append(exc)
        done.set()

    with ledger.transaction():
        ledger.db.execute("UPDATE offenders SET reason = 'x'")
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        assert not done.is_set()  # blocked behind our write transaction
    t.join(10)
    assert errors == [] and done.is_set()
    assert ledger.get("203.0.113.8").active


def test_data_version_changes_on_other_commits(path, ledger):
    before = ledger.data_version()
    ledger.ban("203.0.113.1", NOW, expires=None, reason="own")
    assert ledger.data_version() == before  # own commits do not count
    with Ledger.open(path) as other:
        other.ban("203.0.113.2", NOW, expires=None, reason="other")
    assert ledger.data_version() != before


def test_locked_is_exclusive_across_connections(path, ledger):
    order = []

    def second():
        with Ledger.open(path) as other, other.locked():
            order.append("second")

    with ledger.locked(), ledger.locked():  # re-entrant
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)
        order.append("first")
    t.join(10)
    assert order == ["first", "second"]


def test_the_outcome_does_not_depend_on_how_the_pipe_was_chunked(tmp_path):
    """Violations recorded as one burst or one by one give the same ledger."""
    items = [v("203.0.113.7", sig="1:2003:8"), v("2001:db8::7"), v("203.0.113.7", sig="1:2003:8"),
             v("203.0.113.7", sig="1:9:1"), v("2001:db8::7")]  # fmt: skip
    with Ledger.open(str(tmp_path / "a.sqlite3")) as burst:
        record(burst, items, NOW, POLICY, Low())
        at_once = {a: burst.get(a) for a in ("203.0.113.7", "2001:db8::7")}
    with Ledger.open(str(tmp_path / "b.sqlite3")) as single:
        for item in items:
            record(single, [item], NOW, POLICY, Low())
        one_by_one = {a: single.get(a) for a in ("203.0.113.7", "2001:db8::7")}
    assert at_once == one_by_one
    first = at_once["203.0.113.7"]
    assert first.violations == 3
    assert first.expires == NOW + 3600 + 2 * 60  # two extensions after the banning one


def test_history_json_gives_the_alert_time_as_epoch_seconds_too(ledger):
    record(
        ledger, [v("203.0.113.7", alert_ts="2026-11-28T10:00:00.500000+02:00")], NOW, POLICY, Low()
    )
    (h,) = ledger.history("203.0.113.7")
    assert h.as_dict()["alert_time"] == 1795852800.5  # 08:00:00.5 UTC
    assert h.as_dict()["alert_ts"] == "2026-11-28T10:00:00.500000+02:00"


def test_alert_time_stamps_come_back_exactly_whatever_their_form(ledger):
    a = "203.0.113.7"
    stamps = [
        ("2026-11-28T10:00:00.123456", "2026-11-28T10:00:59.000001"),  # fasttail's form
        ("2026-11-28T10:00:00.123456+01:00", "2026-11-28T10:00:01.5+01:00"),  # EVE
        ("2026-02-30T00:00:00.000000", "2026-11-28T10:00:00.000000"),  # no such day
        ("1969-12-31T23:59:59.999999", "1970-01-01T00:00:00.000000"),
        ("2026-11-28T10:00:00.000000", "yesterday"),
        # not ASCII digits; a leap second
        ("2026-11-28T1\u0660:00:00.000000", "2026-11-28T10:00:60.000000"),
    ]
    for sig, (first, last) in enumerate(stamps):
        burst = [v(a, sig=str(sig), alert_ts=first), v(a, sig=str(sig), alert_ts=last)]
        record(ledger, burst, NOW, POLICY, Low())
    # and across transactions, within BUCKET_S
    record(ledger, [v(a, sig="x", alert_ts=stamps[0][0])], NOW, POLICY, Low())
    record(ledger, [v(a, sig="x", alert_ts=stamps[0][1])], NOW + 1, POLICY, Low())
    record(ledger, [v(a, sig="y", alert_ts=stamps[0][0])], NOW, POLICY, Low())
    record(ledger, [v(a, sig="y", alert_ts="later")], NOW + 1, POLICY, Low())
    got = [(h.alert_ts, h.alert_last_ts) for h in ledger.history(a)]
    assert got == [*stamps, stamps[0], (stamps[0][0], "later")]
    # fasttail's form costs an integer, not its 26 characters
    kinds = ledger.db.execute("SELECT typeof(alert_first) FROM hits ORDER BY id").fetchall()
    assert [k[0] for k in kinds] == [
        "integer",
        "text",
        "text",
        "text",
        "integer",
        "text",
        "integer",
        "integer",
    ]


def test_a_row_of_one_alert_stores_no_last_times_and_a_row_of_several_does(ledger):
    """One statement inserts every new row (ledger.rows): the last times are NULL for
    one alert, banctl's time and the alert's offset for several (NULL when the last
    alert's stamp is the first's), whatever order they come in."""
    a, t1, t2 = "203.0.113.7", "2026-11-28T10:00:00.123456", "2026-11-28T10:00:59.000001"
    burst = [
        v(a, sig="1", alert_ts=t1),
        v(a, sig="2", alert_ts=t1),
        v(a, sig="2", alert_ts=t2),
        v(a, sig="3", alert_ts=t1),
        v(a, sig="3", alert_ts=t1),
        v(a, sig="4", alert_ts="yesterday"),
        v(a, sig="5", alert_ts="yesterday"),
        v(a, sig="5", alert_ts="today"),
        v(a, sig=None, alert_ts=None),
    ]
    record(ledger, burst, NOW, POLICY, Low())
    sql = "SELECT count, last, alert_last FROM hits ORDER BY id"
    assert ledger.db.execute(sql).fetchall() == [
        (1, None, None),
        (2, NOW, 58_876_545),  # microseconds after the first
        (2, NOW, None),
        (1, None, None),
        (2, NOW, "today"),
        (1, None, None),
    ]
    got = [(h.sig, h.count, h.last, h.alert_ts, h.alert_last_ts) for h in ledger.history(a)]
    assert got == [
        ("1", 1, NOW, t1, t1),
        ("2", 2, NOW, t1, t2),
        ("3", 2, NOW, t1, t1),
        ("4", 1, NOW, "yesterday", "yesterday"),
        ("5", 2, NOW, "yesterday", "today"),
        (None, 1, NOW, None, None),
    ]


def test_a_row_grows_for_bucket_s_from_its_first_violation_not_by_the_clock(ledger):
    a, b = "203.0.113.7", "203.0.113.8"
    record(ledger, [v(a, sig="1:1:1")], NOW + 200, POLICY, Low())
    record(ledger, [v(a, sig="1:1:1")], NOW + 350, POLICY, Low())  # past a round 5 minutes
    record(ledger, [v(a, sig="1:1:1")], NOW + 200 + BUCKET_S, POLICY, Low())  # a new row
    assert [(h.ts, h.last, h.count) for h in ledger.history(a)] == [
        (NOW + 200, NOW + 350, 2),
        (NOW + 200 + BUCKET_S, NOW + 200 + BUCKET_S, 1),
    ]
    # rows that can no longer grow are forgotten: memory follows the recent rows only
    record(ledger, [v(b, sig="1:1:1")], NOW + 200 + 3 * BUCKET_S, POLICY, Low())
    assert len(ledger._open) == 1


def test_a_ban_is_due_at_its_expiry_not_before_and_never_when_permanent(ledger):
    """Due means ``expires <= now``; a permanent ban is never due (Ledger.expire, the
    one place that decides it)."""
    ledger.ban("203.0.113.1", NOW - 10, expires=NOW, reason="r")
    ledger.ban("203.0.113.2", NOW - 10, expires=NOW + 1, reason="r")
    ledger.ban("203.0.113.3", NOW - 10, expires=None, reason="r")
    assert ledger.expire(NOW) == ["203.0.113.1"]
    assert ledger.expire(NOW + 1e9) == ["203.0.113.2"]
    assert ledger.get("203.0.113.3").active


def test_connections_creating_the_same_new_ledger_at_once_all_open_it(tmp_path):
    # SQLite answers the loser of the switch to WAL "database is locked" without
    # waiting; banctl apply and an admin command starting together must both open.
    failures = []

    def open_it(path):
        try:
            Ledger.open(str(path)).close()
        except LedgerError as exc:
            failures.append(exc)

    for round_ in range(25):
        path = tmp_path / f"ledger{round_}.sqlite3"
        openers = [threading.Thread(target=open_it, args=(path,)) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    assert failures == []
