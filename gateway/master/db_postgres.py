"""The master's shared database: PostgreSQL through psycopg 3, for workers on one or many machines.

psycopg is imported when a PostgreSQL URL is configured (the `master` extra), so a master on
SQLite needs none of it. Placeholders are psycopg's `%s`; `executemany` runs in pipeline mode
(psycopg.org/psycopg3/docs/advanced/pipeline.html), one round trip for a whole batch. New
measurements go in by COPY in binary format into a temporary table of this session, then one
INSERT … SELECT … ON CONFLICT DO NOTHING (psycopg.org/psycopg3/docs/basic/copy.html): a row costs
the server a fraction of what a bound INSERT does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from gateway.errors import ConfigError, RemoteError
from gateway.master.sql import MEASUREMENT_COLUMNS, Row, create, schema

PSYCOPG_FIX = ("PostgreSQL needs psycopg 3: `pip install 'drgw[master]'` (or scripts/setup, which "
               "installs it)")
# Any constant works: all drgw masters take it while creating the tables, so that two workers
# starting at once do not race on CREATE TABLE IF NOT EXISTS (it is not atomic in PostgreSQL).
_SCHEMA_LOCK = 0x64726777
_COLUMNS = ", ".join(MEASUREMENT_COLUMNS)
_STAGE_TYPES = ("text", "int8", "bytea", "bytea", "int8", "int2", "text", "bytea", "text", "int8")
# ON COMMIT DELETE ROWS: the staged rows go with the transaction that staged them.
_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS drgw_stage (gw TEXT, seq BIGINT, leaf BYTEA, prev BYTEA, "
          "time_ms BIGINT, synced SMALLINT, device TEXT, wire BYTEA, worker TEXT, stored_ms BIGINT) "
          "ON COMMIT DELETE ROWS")
_FROM_STAGE = (f"WITH added AS (INSERT INTO measurements ({_COLUMNS}) SELECT {_COLUMNS} FROM "
               "drgw_stage ORDER BY gw, seq ON CONFLICT (gw, seq) DO NOTHING RETURNING gw) "
               "SELECT gw, COUNT(*) FROM added GROUP BY gw")


def _psql(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresSql:
    """`Sql` over one psycopg connection, autocommit outside explicit transactions."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(PSYCOPG_FIX) from None
        self.name = f"postgresql {_shown(url)}"
        try:
            self._conn = psycopg.connect(url, autocommit=True)
            self._staged = False  # drgw_stage exists in this session
        except psycopg.Error as exc:
            raise RemoteError(f"[database] url = {_shown(url)}: cannot connect ({exc}); check the "
                              "server runs and the user, password and database name") from None

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        cursor = self._conn.execute(_psql(sql), params)
        rows = cursor.fetchall() if cursor.description is not None else []
        return rows, cursor.rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        with self._conn.cursor() as cursor:
            cursor.executemany(_psql(sql), rows)
            return cursor.rowcount

    def insert_measurements(self, rows: Sequence[Row]) -> dict[str, int]:
        if not rows:
            return {}
        with self._conn.cursor() as cursor:
            if not self._staged:
                cursor.execute(_STAGE)
                self._staged = True
            with cursor.copy(f"COPY drgw_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_STAGE_TYPES)
                for row in rows:
                    copy.write_row(row)
            cursor.execute(_FROM_STAGE)
            return {gw: int(n) for gw, n in cursor.fetchall()}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self._conn.transaction():
                yield
        except BaseException:
            self._staged = False  # a table created in a rolled back transaction is gone with it
            raise

    def close(self) -> None:
        self._conn.close()


def _shown(url: str) -> str:
    """The URL without its password, for messages and logs."""
    head, sep, rest = url.partition("://")
    if "@" in rest:
        login, _, host = rest.rpartition("@")
        rest = f"{login.split(':', 1)[0]}:***@{host}" if ":" in login else rest
    return head + sep + rest


def open_postgres(url: str) -> PostgresSql:
    sql = PostgresSql(url)
    with sql.transaction():
        sql.run("SELECT pg_advisory_xact_lock(?)", [_SCHEMA_LOCK])
        create_in_lock = schema(blob="BYTEA",
                                serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
        for statement in create_in_lock:
            sql.run(statement)
    create(sql, [])
    return sql
