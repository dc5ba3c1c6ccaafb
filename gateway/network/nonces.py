"""Persistent replay cache for fleet commands: (operator, nonce) kept in SQLite until expiry.

Its own small database file (or ":memory:" in tests), so the command path never contends with the
measurement store's write lock. A nonce is kept until its command's expiry plus the clock-skew
allowance: after that, the command would be rejected as expired anyway.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS command_nonces (
    op TEXT NOT NULL,
    nonce TEXT NOT NULL,
    keep_until_ms INTEGER NOT NULL,
    PRIMARY KEY (op, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS command_nonces_expiry ON command_nonces (keep_until_ms);
"""


class NonceCache:
    def __init__(self, path: str | Path, *, skew_ms: int = 30_000) -> None:
        self.path = str(path)
        self.skew_ms = skew_ms
        self._db = sqlite3.connect(self.path, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a claimed nonce must survive power loss
        self._db.executescript(SCHEMA)

    def claim(self, op: str, nonce: str, *, exp_ms: int, now_ms: int) -> bool:
        """Record (op, nonce); False if it was already there (a replay). Purges expired rows."""
        with self._db:
            self._db.execute("DELETE FROM command_nonces WHERE keep_until_ms < ?", (now_ms,))
            cur = self._db.execute(
                "INSERT OR IGNORE INTO command_nonces (op, nonce, keep_until_ms) VALUES (?, ?, ?)",
                (op.lower(), nonce, exp_ms + self.skew_ms))
            return cur.rowcount == 1

    def count(self) -> int:
        """Nonces currently held (not __len__: an empty cache must still be truthy)."""
        return int(self._db.execute("SELECT count(*) FROM command_nonces").fetchone()[0])

    def close(self) -> None:
        self._db.close()
