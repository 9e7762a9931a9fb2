"""The ban ledger: a durable SQLite record of every offender, ban and violation.

Promises:

* **Durable**: WAL journal with ``synchronous=FULL``; a method that changes bans
  returns only after its transaction is committed to disk. banctl commits first and
  touches the firewall second, so a crash can leave the firewall behind the ledger
  (repaired at the next start) but never a ban that the ledger forgot. The one
  exception is asked for by name: ``transaction(synced=False)``, which banctl apply
  uses for what follows a burst's new bans (its violations, positions and
  extensions; banpipe.record): no entry goes into the firewall after it.
* **One row per offender** (``offenders``, keyed by the canonical address), however
  often it offends or is banned; ``violations`` keeps every violation for
  ``retention`` seconds (kept after unban, for recidive decisions and ``banctl
  show``; ``retention = 0`` deletes an address's violations when its ban ends);
  ``bans`` keeps one row per ban period, used to count recent bans (recidive).
* **Small**: identical violations (same offender, rule, message, priority, victim,
  direction and reason) recorded within ``BUCKET_S`` of the first (banctl's clock) are
  one row of ``hits`` with a ``count`` and the first and last time (banctl's and the
  alerts' own); addresses, rules and texts are stored once (``texts``) and rows refer
  to them by number. ``violations`` is a view with the columns of the old table
  (``ts`` is the first time) plus ``last_ts`` and ``alert_last``. Rows are appended
  in time order, so retention deletes a range of row ids: its cost is the rows that
  aged out since the last prune, not the size of the table.
* **Concurrent**: the daemon and admin commands each open their own connection;
  writers use ``BEGIN IMMEDIATE`` and a busy timeout, so they queue instead of
  failing. ``locked()`` is a cross-process lock that banctl holds from a ledger write
  until the matching firewall change is done, so two processes never apply their
  firewall changes in the opposite order of their commits.
* **Versioned**: ``PRAGMA user_version`` is the schema version; ``MIGRATIONS`` are
  applied in order, each in its own transaction together with the version bump.

Addresses given to this module must already be canonical (``ipaddress`` text form).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence

from banpipe.ledger.fleet import Fleet
from banpipe.ledger.hits import Hits
from banpipe.ledger.model import (
    DECISION_KINDS,
    SELECT_RECORDS,
    BatchOutcome,
    Decision,
    LedgerError,
    Offender,
    RemoteOutcome,
    Violation,
    ViolationRecord,
    violation_record,
)
from banpipe.ledger.reads import resume_position
from banpipe.ledger.schema import (
    BUCKET_S,
    BUSY_TIMEOUT_S,
    DEFAULT_PATH,
    MIGRATIONS,
    Migration,
)

__all__ = [
    "BUCKET_S",
    "BUSY_TIMEOUT_S",
    "DECISION_KINDS",
    "DEFAULT_PATH",
    "MIGRATIONS",
    "SELECT_RECORDS",
    "BatchOutcome",
    "Decision",
    "Ledger",
    "LedgerError",
    "MIN_SQLITE",
    "Migration",
    "Offender",
    "RemoteOutcome",
    "Violation",
    "ViolationRecord",
    "resume_position",
    "violation_record",
]


#: The oldest SQLite the ledger's statements run on: ``UPDATE ... FROM`` (the fold of a
#: flood's growth, ledger/rows.py) came in 3.33. Debian 12 has 3.40, Ubuntu 22.04 3.37.
MIN_SQLITE = (3, 33, 0)


def check_sqlite(version: tuple[int, int, int] | None = None) -> None:
    """LedgerError when the SQLite library Python uses (or ``version``) is older than
    MIN_SQLITE: said at open, not as a syntax error from the first fold in the middle
    of a flood."""
    version = version or sqlite3.sqlite_version_info
    if version < MIN_SQLITE:
        have = ".".join(map(str, version))
        need = ".".join(map(str, MIN_SQLITE))
        raise LedgerError(f"SQLite {have} is too old: the ledger needs {need} or newer")


class Ledger(Hits, Fleet):
    """A connection to the ledger; not shared between threads or processes."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self.db = db
        self.path = path
        self._lock_fd: int | None = None
        self._lock_depth = 0
        # What this connection wrote lately, to add to instead of asking the database:
        # text -> texts.id, and the hits rows that may still grow (violation key, its
        # texts as intake groups them -> row id). Forgotten on rollback; a row deleted
        # meanwhile by another connection (a prune) is noticed before it is added to.
        self._text_ids: dict[str, int] = {}
        # violation key -> (row id, alert_first, when the row began)
        self._open: dict[tuple, tuple[int, int | str | None, float]] = {}
        self._open_swept = 0.0  # rows that began before this are no longer in _open
        self._pending: int | None = None  # rows of hits_more (None: count them)
        self._grown: float | None = None
        self._version: int | None = None
        # Fleet decisions: addr -> when this connection last wrote one, when its
        # extension not yet shared is due (hits.SHARE_EVERY).
        self._shared: dict[str, float] = {}
        self._unshared: dict[str, float] = {}
        self._shared_swept = 0.0

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str = DEFAULT_PATH,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        create: bool = True,
    ) -> Ledger:
        """Open (and create/migrate) the ledger at ``path``; ``":memory:"`` for tests."""
        check_sqlite()
        if path != ":memory:":
            if not create and not os.path.exists(path):
                raise LedgerError(f"{path}: no such ledger")
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, mode=0o750, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"{directory}: {exc.strerror or exc}")
        try:
            db = _connect_wal(path, time.monotonic() + BUSY_TIMEOUT_S)
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            db.execute("PRAGMA foreign_keys=ON")
            ledger = cls(db, path)
            ledger.migrate(migrations)
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: {exc}")
        return ledger

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> int:
        """Bring the schema to ``len(migrations)``; returns the number applied."""
        applied = 0
        if self.version == len(migrations):
            return applied
        while True:
            with self.transaction():
                current = self.version
                if current > len(migrations):
                    raise LedgerError(
                        f"{self.path}: schema version {current} is newer than this "
                        f"banctl knows ({len(migrations)})"
                    )
                if current == len(migrations):
                    return applied
                migrations[current](self.db)
                self.db.execute(f"PRAGMA user_version={current + 1}")
            applied += 1

    # -- transactions and locking ------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (durable on return), rollback on error.

        ``synced=False``: the COMMIT does not wait for the disk (``synchronous=NORMAL``
        for this one): it survives the process (kill -9) at once, a power cut only once
        a later synced commit or checkpoint has synced the WAL; the WAL keeps commit
        order, so a cut never keeps a later commit without this one.
        """
        if self.db.in_transaction:  # nested: part of the outer transaction
            yield self.db
            return
        if not synced:
            self.db.execute("PRAGMA synchronous=NORMAL")
            try:
                with self.transaction() as db:
                    yield db
            finally:
                self.db.execute("PRAGMA synchronous=FULL")
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: {exc}")
        try:
            yield self.db
        except BaseException:
            self._forget()
            self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._forget()
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise LedgerError(f"{self.path}: {exc}")

    def _forget(self) -> None:
        """Drop what this connection remembers of its writes (they were rolled back)."""
        self._text_ids = {}
        self._open = {}
        self._open_swept = 0.0
        self._pending = None
        self._shared = {}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process ledger+firewall lock (``<ledger>.lock``, flock).

        Held from a ledger write until the firewall reflects it, so that concurrent
        banctl processes apply firewall changes in commit order. Re-entrant within
        this object.
        """
        if self.path == ":memory:":
            yield
            return
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(
                    self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            except OSError as exc:
                raise LedgerError(f"{self.path}.lock: {exc.strerror or exc}")
        if self._lock_depth == 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def checkpoint(self) -> None:
        """Copy the pages committed to the WAL into the database file (PASSIVE: never
        waits for a reader; what a reader still needs is copied next time).

        The daemon calls it between bans, when no input waits: SQLite's own
        checkpoint (every 1,000 WAL pages) runs inside the COMMIT that crosses the
        mark, so about one ban in 70 paid for copying the pages of 70 and syncing the
        database file before its firewall entry (the p99 of the append-to-entry
        latency, bench/README.md). It stays on as the backstop for a flood, when
        input never stops. A WAL kept short is also rewritten in place: a file that
        grows makes each commit's fdatasync update its size as well.

        When every frame made it into the file, the WAL is restarted here too: the
        first write after a complete checkpoint starts the WAL over, writing and
        syncing a new WAL header before its own frames, so the ban that came next
        paid two fdatasyncs instead of one (one ban in 16, bench/README.md). A
        one-page write (the schema version, unchanged) takes that cost now. Skipped,
        never waited for, when another process holds the write lock.
        """
        busy, frames, copied = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy or frames <= 0 or copied < frames:
            return  # a reader or writer kept frames: the WAL cannot start over yet
        self.db.execute("PRAGMA busy_timeout=0")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # another process writes: it restarts the WAL itself
        finally:
            self.db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        try:
            self.db.execute(f"PRAGMA user_version={self.version}")
            self.db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (PRAGMA data_version)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])


def _connect_wal(path: str, deadline: float) -> sqlite3.Connection:
    """Connect with the journal in WAL mode. Two processes creating the same new
    ledger race for the switch, and SQLite answers the loser "database is locked" at
    once, without its busy handler: retried here until ``deadline``."""
    pause = 0.001
    while True:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            continue
        if path != ":memory:" and str(mode).lower() != "wal":
            db.close()
            raise LedgerError(f"{path}: cannot switch to WAL journal (got {mode})")
        return db
