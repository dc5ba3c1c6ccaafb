"""Versioned schema migrations of the gateway store: ordered functions, one per schema version.

`schema_version` holds one row, the version the file is at. Migration N takes a store at version
N - 1 to N; each runs in its own transaction together with the version bump, so a crash mid-upgrade
leaves the file at the old version and the upgrade simply runs again. Never edit a released
migration: add the next one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlite_utils import Database

from gateway.errors import ConfigError


def _v1(db: Database) -> None:
    """Measurements, the MQTT outbox and counters."""
    db["measurements"].create(  # type: ignore[union-attr]
        {"seq": int, "device": str, "time_ms": int, "leaf": bytes, "signature": bytes,
         "wire": bytes}, pk="seq", not_null={"device", "time_ms", "leaf", "signature", "wire"})
    # AUTOINCREMENT: an id is never reused, even after the newest rows were acked or evicted.
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
               "payload BLOB NOT NULL, nbytes INTEGER NOT NULL, seq_first INTEGER NOT NULL, "
               "seq_last INTEGER NOT NULL, created_ms INTEGER NOT NULL)")
    db.execute("CREATE INDEX outbox_created ON outbox(created_ms)")
    db["counters"].create({"name": str, "value": int}, pk="name")  # type: ignore[union-attr]


def _v2(db: Database) -> None:
    """Merkle roots per closed interval, and a time index to find an interval's leaves."""
    db["merkle_roots"].create(  # type: ignore[union-attr]
        {"id": int, "start_ms": int, "end_ms": int, "first_seq": int, "last_seq": int,
         "root": bytes, "leaf_count": int}, pk="id")
    db.execute("CREATE INDEX merkle_roots_seq ON merkle_roots(first_seq, last_seq)")
    db.execute("CREATE INDEX measurements_time ON measurements(time_ms)")


MIGRATIONS: tuple[Callable[[Database], None], ...] = (_v1, _v2)
LATEST = len(MIGRATIONS)


def schema_version(db: Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(db: Database, *, path: str, target: int = LATEST) -> int:
    """Bring the store up to `target`; returns the version it is at. The connection must be in
    autocommit mode (isolation_level=None): each step is an explicit transaction."""
    current = schema_version(db)
    if current > LATEST:
        raise ConfigError(f"store {path} has schema version {current}, newer than this drgw "
                          f"understands ({LATEST}): upgrade drgw, or point the config's store "
                          "path at a new file")
    conn = db.conn
    for version in range(current + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                db.execute("INSERT INTO schema_version VALUES (0)")
            MIGRATIONS[version - 1](db)
            db.execute("UPDATE schema_version SET version = ?", [version])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return max(current, target)
