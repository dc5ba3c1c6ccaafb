"""Persistent replay cache for fleet commands: (operator, nonce) kept in SQLite until expiry.

Its own small database file (or ":memory:" in tests), so the command path never contends with the
measurement store's write lock.

Which clock forgets a nonce (docs/mqtt.md, "Clocks of the command path"): a nonce is kept until
BOTH the wall clock has passed its command's expiry plus the skew allowance AND the run clock has
advanced by the time the command had left to live when it was used. The run clock is
CLOCK_MONOTONIC summed over the agent's runs and stored in this file: it never steps and never
goes back. So a wall clock that jumps forward (a Pi without an RTC booting before NTP) cannot
make us forget a nonce, and a replay is refused as long as the wall clock is right when the
command is used and when the replay arrives, whatever it did in between. The dispatcher accepts
only `exp` - now within [-skew, lifetime + skew], so each nonce needs at most that much run time.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from gateway.measurement.keyfile import create_private
from gateway.measurement.store.opening import connect_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS command_nonces (
    op TEXT NOT NULL,
    nonce TEXT NOT NULL,
    keep_until_ms INTEGER NOT NULL,
    keep_run_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (op, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS command_nonces_expiry ON command_nonces (keep_until_ms);
CREATE TABLE IF NOT EXISTS run_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run_ms INTEGER NOT NULL
);
"""


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class NonceCache:
    """`elapsed_ms` is a monotonic clock in ms (injected by tests); the wall clock is the caller's
    `now_ms`, the same reading the dispatcher checked the expiry with."""

    def __init__(self, path: str | Path, *, skew_ms: int = 30_000,
                 elapsed_ms: Callable[[], int] = monotonic_ms) -> None:
        self.path = str(path)
        self.skew_ms = skew_ms
        self._elapsed_ms = elapsed_ms
        create_private(self.path)  # 0600 outside systemd's UMask too; -wal and -shm follow it
        # a claimed nonce must survive power loss (synchronous FULL); a full disk must not stop the
        # cache from opening (connect_wal: the WAL index kept in memory when there is no room for it)
        if self.path == ":memory:":
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA synchronous=FULL")
        else:
            self._db = connect_wal(self.path, synchronous="FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(command_nonces)")}
        if "keep_run_ms" not in columns:  # a cache written before the run clock existed: its
            # rows (one command lifetime at most) are forgotten by the wall clock alone, as then
            self._db.execute("ALTER TABLE command_nonces ADD COLUMN keep_run_ms INTEGER NOT NULL "
                             "DEFAULT 0")
        row = self._db.execute("SELECT run_ms FROM run_clock WHERE id = 1").fetchone()
        self._run_base = int(row[0]) if row else 0
        self._opened_ms = elapsed_ms()

    def run_ms(self) -> int:
        """The run clock: ms this cache has been open, summed over the agent's runs."""
        return self._run_base + max(0, self._elapsed_ms() - self._opened_ms)

    def claim(self, op: str, nonce: str, *, exp_ms: int, now_ms: int) -> bool:
        """Record (op, nonce); False if it was already there (a replay). Purges the rows that both
        clocks have let go (module docstring). `now_ms` is the wall clock."""
        run = self.run_ms()
        with self._db:  # one transaction: the purge, the claim and the run clock commit together
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM command_nonces WHERE keep_until_ms < ? AND keep_run_ms < ?",
                             (now_ms, run))
            cur = self._db.execute(
                "INSERT OR IGNORE INTO command_nonces (op, nonce, keep_until_ms, keep_run_ms) "
                "VALUES (?, ?, ?, ?)",
                (op.lower(), nonce, exp_ms + self.skew_ms, run + max(0, exp_ms + self.skew_ms - now_ms)))
            self._save_run_clock(run)
            return cur.rowcount == 1

    def _save_run_clock(self, run: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO run_clock (id, run_ms) VALUES (1, ?)", (run,))

    def count(self) -> int:
        """Nonces currently held (not __len__: an empty cache must still be truthy)."""
        return int(self._db.execute("SELECT count(*) FROM command_nonces").fetchone()[0])

    def close(self) -> None:
        """Save the run clock (so this run's time counts after a restart) and close."""
        try:
            with contextlib.suppress(sqlite3.Error):  # a full disk: the next run re-counts from
                self._save_run_clock(self.run_ms())   # the last claim, which only keeps nonces longer
        finally:
            self._db.close()
