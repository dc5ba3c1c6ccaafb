"""Versioned schema migrations of the gateway store: ordered functions, one per schema version.

`schema_version` holds one row, the version the file is at. Migration N takes a store at version
N - 1 to N; each runs in its own transaction together with the version bump, so a crash mid-upgrade
leaves the file at the old version and the upgrade simply runs again. Never edit a released
migration: add the next one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Protocol

from gateway.errors import ConfigError

# Plain sqlite3: sqlite-utils was used for two CREATE TABLEs and cost ~25 MB of RSS in the agent
# (it imports numpy when installed). The statements below are the ones sqlite-utils generated for
# versions 1 and 2, verbatim, so stores created before and after the change have the same schema.


def _v1(conn: sqlite3.Connection) -> None:
    """Measurements, the MQTT outbox and counters."""
    conn.execute('CREATE TABLE "measurements" (\n   "seq" INTEGER PRIMARY KEY,\n'
                 '   "device" TEXT NOT NULL,\n   "time_ms" INTEGER NOT NULL,\n'
                 '   "leaf" BLOB NOT NULL,\n   "signature" BLOB NOT NULL,\n'
                 '   "wire" BLOB NOT NULL\n)')
    # AUTOINCREMENT: an id is never reused, even after the newest rows were acked or evicted.
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                 "payload BLOB NOT NULL, nbytes INTEGER NOT NULL, seq_first INTEGER NOT NULL, "
                 "seq_last INTEGER NOT NULL, created_ms INTEGER NOT NULL)")
    conn.execute("CREATE INDEX outbox_created ON outbox(created_ms)")
    conn.execute('CREATE TABLE "counters" (\n   "name" TEXT PRIMARY KEY,\n   "value" INTEGER\n)')


def _v2(conn: sqlite3.Connection) -> None:
    """Merkle roots per closed interval, and a time index to find an interval's leaves."""
    conn.execute('CREATE TABLE "merkle_roots" (\n   "id" INTEGER PRIMARY KEY,\n'
                 '   "start_ms" INTEGER,\n   "end_ms" INTEGER,\n   "first_seq" INTEGER,\n'
                 '   "last_seq" INTEGER,\n   "root" BLOB,\n   "leaf_count" INTEGER\n)')
    conn.execute("CREATE INDEX merkle_roots_seq ON merkle_roots(first_seq, last_seq)")
    conn.execute("CREATE INDEX measurements_time ON measurements(time_ms)")


def _v3(conn: sqlite3.Connection) -> None:
    """The chain's high-water mark in a table of its own, whether an outbox row's time was read from
    a synchronised clock, and the seq ranges a salvage could not read (gateway/measurement/store/salvage.py).

    chain_head is written in every commit's transaction: it is the highest seq ever issued even when
    the pages holding the newest records are damaged, so a salvaged store never issues a seq again.
    Rows queued before this version count as written with a synchronised clock (as they were treated)."""
    conn.execute("CREATE TABLE chain_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
                 "seq INTEGER NOT NULL, leaf BLOB NOT NULL)")
    conn.execute("INSERT INTO chain_head (id, seq, leaf) "
                 "SELECT 1, seq, leaf FROM measurements ORDER BY seq DESC LIMIT 1")
    conn.execute("ALTER TABLE outbox ADD COLUMN clock_synced INTEGER NOT NULL DEFAULT 1")
    conn.execute("CREATE TABLE lost_ranges (seq_first INTEGER NOT NULL, seq_last INTEGER NOT NULL, "
                 "reason TEXT NOT NULL)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3)
LATEST = len(MIGRATIONS)


class _WrapsConnection(Protocol):
    """A wrapper that exposes its sqlite3 connection as `.conn` (sqlite_utils.Database does)."""

    @property
    def conn(self) -> sqlite3.Connection: ...


def _connection(db: sqlite3.Connection | _WrapsConnection) -> sqlite3.Connection:
    return db if isinstance(db, sqlite3.Connection) else db.conn


def schema_version(db: sqlite3.Connection | _WrapsConnection) -> int:
    conn = _connection(db)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                    "name = 'schema_version'").fetchone() is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection | _WrapsConnection, *, path: str, target: int = LATEST) -> int:
    """Bring the store up to `target`; returns the version it is at. The connection must be in
    autocommit mode (isolation_level=None): each step is an explicit transaction."""
    conn = _connection(db)
    current = schema_version(conn)
    if current > LATEST:
        raise ConfigError(f"store {path} has schema version {current}, newer than this drgw "
                          f"understands ({LATEST}): upgrade drgw, or point the config's store "
                          "path at a new file")
    for version in range(current + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                conn.execute("INSERT INTO schema_version VALUES (0)")
            MIGRATIONS[version - 1](conn)
            conn.execute("UPDATE schema_version SET version = ?", [version])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on SQLITE_FULL and I/O errors
                conn.execute("ROLLBACK")
            raise
    return max(current, target)
