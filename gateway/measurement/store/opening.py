"""Opening the store file for the agent: WAL, durability level, a bounded integrity check, migrations.

A damaged file is refused here, before anything is appended to it (`StoreCorrupt`, naming the file and
`drgw store salvage`): a damaged page in the middle of the measurements would otherwise go unnoticed
until a verifier or an export trips over it, and moving the file aside would start seqs again from 1.

The check is `PRAGMA quick_check` (https://www.sqlite.org/pragma.html#pragma_quick_check: every page
of every b-tree is read and its structure checked, without the index-content cross-check of
integrity_check), stopped after `budget_s` by a progress handler so that a multi-GB store on an SD
card cannot hold the start-up past systemd's TimeoutStartSec; a check cut short is logged, and
`drgw doctor` runs the whole one.

On a full disk an existing store still opens (nothing is written at open), with one exception:
after a clean stop the WAL index (`-shm`) is gone, and SQLite cannot size a new one
(SQLITE_IOERR_SHMSIZE). The store is then opened in exclusive locking mode, where SQLite keeps the
WAL index in memory (https://www.sqlite.org/wal.html#noshm), so the agent starts and goes on by
itself once there is space; other processes (`drgw doctor`, `verify`) cannot read it meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from gateway.errors import ConfigError
from gateway.measurement.store.errors import (
    CORRUPT,
    StoreCorrupt,
    classify,
    corrupt_message,
    translate,
)
from gateway.measurement.store.migrations import migrate

log = logging.getLogger(__name__)

SQLITE_INTERRUPT = 9
# SQLITE_IOERR_SHMOPEN, _SHMSIZE, _SHMMAP: no room for the WAL index file (rescode.html)
NO_ROOM_FOR_SHM = frozenset({10 | 18 << 8, 10 | 19 << 8, 10 | 21 << 8})
PROGRESS_STEPS = 20_000  # SQLite VM steps between two looks at the clock (well under 1 ms)
# Checkpoint the WAL into the database once it holds this many pages (SQLite's default is 1000,
# https://www.sqlite.org/pragma.html#pragma_wal_autocheckpoint). A checkpoint syncs the WAL and the
# database file (two fsyncs; https://www.sqlite.org/wal.html, "Checkpointing"); at 10 meters x 1 Hz the
# store appends ~21 pages/s, so 4000 pages is one checkpoint every ~3 min (+0.01 fsync/s) instead of
# every ~48 s (+0.04/s), with a WAL of at most 16 MiB that is reused, not truncated, afterwards
# (journal_size_limit stays -1). Larger would block the event loop longer per checkpoint (docs/storage.md).
WAL_AUTOCHECKPOINT_PAGES = 4000


def open_connection(path: str, *, synchronous: str, check_budget_s: float) -> sqlite3.Connection:
    """An autocommit connection to the store at `path`, checked and migrated to the latest schema."""
    try:
        conn = connect_wal(path, synchronous=synchronous)
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        check_integrity(conn, path=path, budget_s=check_budget_s)
        migrate(conn, path=path)
    except sqlite3.Error as exc:
        raise _opening_error(exc, path) from None
    return conn


def connect_wal(path: str, *, synchronous: str) -> sqlite3.Connection:
    """An autocommit WAL connection that opens on a full disk too (the module docstring: exclusive
    locking mode when there is no room for the WAL index). Also used by the nonce cache."""
    try:
        return _connect(path, synchronous=synchronous, exclusive=False)
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) not in NO_ROOM_FOR_SHM:
            raise
        log.warning("%s: no room on the disk for its WAL index (%s): opened in exclusive locking "
                    "mode until the agent restarts", path, exc)
        return _connect(path, synchronous=synchronous, exclusive=True)


def _connect(path: str, *, synchronous: str, exclusive: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if exclusive:  # before the first WAL access: the WAL index then lives in memory
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the first read
    except BaseException:
        conn.close()
        raise
    return conn


def _opening_error(exc: sqlite3.Error, path: str) -> Exception:
    reason = classify(exc)
    if reason == CORRUPT:  # includes "file is not a database": a damaged header, not a bad path
        return StoreCorrupt(corrupt_message(path, str(exc)))
    if reason is not None and reason != "io_error":
        error = translate(exc, path=path, operation="open")
        assert error is not None
        return error  # disk full or locked: the agent exits 1 and systemd tries again
    return ConfigError(f"cannot open store {path}: {exc}; check the path and that its directory "
                       "is writable by this user")


def check_integrity(conn: sqlite3.Connection, *, path: str, budget_s: float) -> bool:
    """Raise StoreCorrupt when quick_check finds damage. Returns False when the check was cut short
    by `budget_s` (<= 0: no check), True when it covered the whole file."""
    if budget_s <= 0:
        return False
    deadline = time.monotonic() + budget_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
    try:
        rows = conn.execute("PRAGMA quick_check(10)").fetchall()
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) != SQLITE_INTERRUPT:
            raise
        log.warning("store %s: integrity check stopped after %.0f s (not every page was read); "
                    "`drgw doctor` runs the whole check", path, budget_s)
        return False
    finally:
        conn.set_progress_handler(None, 0)
    if rows != [("ok",)]:
        raise StoreCorrupt(corrupt_message(path, "quick_check: " + "; ".join(r[0] for r in rows)))
    return True
