"""The master's database: the narrow interface both backends give (SQLite, PostgreSQL) and the schema.

The ledger and the gap book write their SQL once, with `?` placeholders and only what SQLite (>= 3.35)
and PostgreSQL (>= 12) both read: ON CONFLICT upserts, window functions, RETURNING. A backend turns
the placeholders into its own, opens transactions its way and runs `executemany` in bulk. Each
worker holds one connection, used from one thread (the service's database thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

SCHEMA_VERSION = 1

Row = tuple[Any, ...]


class Sql(Protocol):
    """One connection. `run` returns the rows of a query (empty for other statements) and the
    number of rows a write touched; `many` runs one statement per row; `transaction` commits all
    of its statements or none; `name` is for messages ("sqlite /var/lib/…", "postgresql …").
    `insert_measurements` adds rows in MEASUREMENT_COLUMNS order, in (gw, seq) order, skipping a
    (gw, seq) already stored, inside the caller's transaction, and says how many it added a
    gateway: each backend in its fastest way (executemany on SQLite, COPY on PostgreSQL)."""

    name: str

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]: ...

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...

    def insert_measurements(self, rows: Sequence[Row]) -> dict[str, int]: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None: ...


MEASUREMENT_COLUMNS = ("gw", "seq", "leaf", "prev", "time_ms", "synced", "device", "wire", "worker",
                       "stored_ms")
INSERT_MEASUREMENT = (f"INSERT INTO measurements ({', '.join(MEASUREMENT_COLUMNS)}) VALUES "
                      f"({', '.join('?' * len(MEASUREMENT_COLUMNS))}) "
                      "ON CONFLICT (gw, seq) DO NOTHING")

# {blob} and {serial} are the two words the dialects spell differently.
_TABLES = (
    """CREATE TABLE IF NOT EXISTS measurements (
        gw TEXT NOT NULL, seq BIGINT NOT NULL, leaf {blob} NOT NULL, prev {blob} NOT NULL,
        time_ms BIGINT NOT NULL, synced SMALLINT NOT NULL, device TEXT NOT NULL,
        wire {blob} NOT NULL, worker TEXT NOT NULL, stored_ms BIGINT NOT NULL,
        PRIMARY KEY (gw, seq))""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        id {serial}, gw TEXT NOT NULL, seq BIGINT, reason TEXT NOT NULL, raw {blob} NOT NULL,
        worker TEXT NOT NULL, time_ms BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS gaps (
        gw TEXT NOT NULL, seq_from BIGINT NOT NULL, seq_to BIGINT NOT NULL, state TEXT NOT NULL,
        detected_ms BIGINT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_try_ms BIGINT NOT NULL, lease_owner TEXT, lease_until_ms BIGINT, cmd_id TEXT,
        queued BIGINT, last_error TEXT, reason TEXT, closed_ms BIGINT,
        PRIMARY KEY (gw, seq_from))""",
    """CREATE TABLE IF NOT EXISTS gateways (
        gw TEXT PRIMARY KEY, online SMALLINT, reason TEXT, version TEXT, config_hash TEXT,
        status_seq BIGINT, clock_synced SMALLINT, disk_full SMALLINT, backlog_rows BIGINT,
        health TEXT, last_status_ms BIGINT, last_health_ms BIGINT, last_record_ms BIGINT,
        first_seq BIGINT, max_seq BIGINT, contiguous_to BIGINT, records BIGINT NOT NULL DEFAULT 0,
        duplicates BIGINT NOT NULL DEFAULT 0, forgeries BIGINT NOT NULL DEFAULT 0,
        records_unsynced SMALLINT NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS alerts (
        id {serial}, gw TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
        worker TEXT NOT NULL, time_ms BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS gaps_due ON gaps (state, next_try_ms)",
    "CREATE INDEX IF NOT EXISTS gaps_cmd ON gaps (cmd_id)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def schema(*, blob: str, serial: str) -> list[str]:
    """The CREATE statements in one dialect."""
    return [t.format(blob=blob, serial=serial) for t in _TABLES]


def create(sql: Sql, statements: Sequence[str]) -> None:
    """Create the tables (idempotent) and check the schema version another release may have left."""
    from gateway.errors import ConfigError

    with sql.transaction():
        for statement in statements:
            sql.run(statement)
        sql.run("INSERT INTO meta (key, value) VALUES ('schema', ?) ON CONFLICT (key) DO NOTHING",
                [str(SCHEMA_VERSION)])
        rows, _ = sql.run("SELECT value FROM meta WHERE key = 'schema'")
    if rows[0][0] != str(SCHEMA_VERSION):
        raise ConfigError(f"{sql.name}: the database has master schema {rows[0][0]}, this drgw "
                          f"reads schema {SCHEMA_VERSION}: point [database] at a new database")
