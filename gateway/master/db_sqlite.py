"""The master's embedded database: one SQLite file in WAL mode, shared by the workers of one machine.

Several worker processes may open the same file: WAL lets readers run beside the one writer, and
`BEGIN IMMEDIATE` with a busy timeout makes writers queue instead of failing (sqlite.org/wal.html,
sqlite.org/lang_transaction.html). For workers on several machines, use PostgreSQL.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.master.sql import INSERT_MEASUREMENT, Row, create, schema

BUSY_TIMEOUT_MS = 30_000


class SqliteSql:
    """`Sql` over sqlite3, autocommit outside explicit transactions.

    One connection may be reached from several threads (a worker's database thread, a dashboard's
    reads, a test closing it): sqlite3's connection object is not safe for concurrent use, and
    closing it while another thread steps a statement crashes the interpreter. Every call holds
    `_lock`, a transaction for its whole length (an RLock, so its own statements pass).
    """

    def __init__(self, path: str | Path) -> None:
        self.name = f"sqlite {path}"
        try:
            self._conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise ConfigError(f"[database] sqlite = \"{path}\": cannot open it ({exc}); check the "
                              "folder exists and the service user may write there") from None
        self._lock = threading.RLock()

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        with self._lock:
            cursor = self._conn.execute(sql, params)
            rows = cursor.fetchall()
            return rows, cursor.rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        with self._lock:
            return self._conn.executemany(sql, rows).rowcount

    def insert_measurements(self, rows: Sequence[Row]) -> dict[str, int]:
        """One executemany a gateway (each statement is a C call here, no round trip)."""
        added: dict[str, int] = {}
        with self._lock:
            for gw, group in itertools.groupby(rows, key=operator.itemgetter(0)):
                n = self._conn.executemany(INSERT_MEASUREMENT, list(group)).rowcount
                added[gw] = added.get(gw, 0) + n
        return added

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock at the start, so two workers never deadlock upgrading a
        # read lock (SQLITE_BUSY without waiting) half-way through.
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_sqlite(path: str | Path) -> SqliteSql:
    sql = SqliteSql(path)
    create(sql, schema(blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
    return sql
