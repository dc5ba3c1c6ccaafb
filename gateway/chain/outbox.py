"""Durable chain outbox in SQLite: signed raw transactions per (chain, account, nonce), and Reports.

A transaction is committed here, signed, before it is broadcast, and it is re-sent byte for byte
until a receipt is found by its hash, so a crash or a node restart never signs a second transaction
for the same nonce. A Report is queued here the moment the gateway signs it and leaves the queue
only when the contract has accepted it (or has rejected it for good, with the decoded reason).
Only the standard library is used: the agent writes Reports without loading web3.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.chain.report import Report, SignedReport
from gateway.measurement.keyfile import create_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS txs (
    chain_id INTEGER NOT NULL,
    account TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    tx_hash TEXT NOT NULL UNIQUE,
    raw BLOB NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'mined', 'failed', 'dropped')),
    block INTEGER,
    gas_used INTEGER,
    error TEXT,
    PRIMARY KEY (chain_id, account, nonce)
);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    chain_id INTEGER NOT NULL,
    market TEXT NOT NULL,
    household TEXT NOT NULL,
    window INTEGER NOT NULL,
    report TEXT NOT NULL,
    signature BLOB NOT NULL,
    signer TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'accepted', 'rejected')),
    tx_hash TEXT,
    error TEXT,
    UNIQUE (chain_id, market, household, window)
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTx:
    """A signed transaction as kept in the outbox."""

    chain_id: int
    account: str
    nonce: int
    tx_hash: str
    raw: bytes
    purpose: str
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedReport:
    """A signed Report waiting in (or done with) the outbox."""

    id: int
    chain_id: int
    market: str
    signed: SignedReport
    state: str
    tx_hash: str | None
    error: str | None


class ChainOutbox:
    """One SQLite file (or ":memory:") holding the transaction and Report queues."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        create_private(self.path)  # signed transactions and Reports: the owner's alone (0600)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # ---- transactions ----------------------------------------------------------------------

    def next_nonce(self, chain_id: int, account: str) -> int | None:
        row = self._db.execute(
            "SELECT MAX(nonce) FROM txs WHERE chain_id=? AND account=? AND state != 'dropped'",
            (chain_id, account)).fetchone()
        return None if row[0] is None else int(row[0]) + 1

    def record_tx(self, tx: StoredTx) -> None:
        self._db.execute(
            "INSERT INTO txs (chain_id, account, nonce, tx_hash, raw, purpose, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tx.chain_id, tx.account, tx.nonce, tx.tx_hash, tx.raw, tx.purpose, tx.state))

    def pending_txs(self, chain_id: int, account: str) -> tuple[StoredTx, ...]:
        rows = self._db.execute(
            "SELECT chain_id, account, nonce, tx_hash, raw, purpose, state FROM txs "
            "WHERE chain_id=? AND account=? AND state='pending' ORDER BY nonce",
            (chain_id, account)).fetchall()
        return tuple(StoredTx(chain_id=r[0], account=r[1], nonce=r[2], tx_hash=r[3],
                              raw=bytes(r[4]), purpose=r[5], state=r[6]) for r in rows)

    def finish_tx(self, tx_hash: str, *, state: str, block: int | None = None,
                  gas_used: int | None = None, error: str | None = None) -> None:
        self._db.execute("UPDATE txs SET state=?, block=?, gas_used=?, error=? WHERE tx_hash=?",
                         (state, block, gas_used, error, tx_hash))

    def tx_state(self, tx_hash: str) -> str | None:
        row = self._db.execute("SELECT state FROM txs WHERE tx_hash=?", (tx_hash,)).fetchone()
        return None if row is None else str(row[0])

    def tx_totals(self) -> tuple[int, int]:
        """(count, gas used) of the mined and failed transactions."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(gas_used), 0) FROM txs "
                               "WHERE state IN ('mined', 'failed')").fetchone()
        return int(row[0]), int(row[1])

    def tx_gas_max(self) -> int:
        """The most gas any one mined or failed transaction used (0 when none)."""
        row = self._db.execute("SELECT COALESCE(MAX(gas_used), 0) FROM txs "
                               "WHERE state IN ('mined', 'failed')").fetchone()
        return int(row[0])

    # ---- Reports ---------------------------------------------------------------------------

    def queue_report(self, signed: SignedReport, *, chain_id: int, market: str) -> int:
        """Queue a signed Report; queuing the same household and window again is a no-op."""
        r = signed.report
        payload = {k: (v.hex() if isinstance(v, bytes) else v)
                   for k, v in zip(Report.__slots__, r.as_tuple(), strict=True)}
        self._db.execute(
            "INSERT OR IGNORE INTO reports (chain_id, market, household, window, report, "
            "signature, signer, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued')",
            (chain_id, market, r.household, r.window, json.dumps(payload), signed.signature,
             signed.signer))
        row = self._db.execute(
            "SELECT id FROM reports WHERE chain_id=? AND market=? AND household=? AND window=?",
            (chain_id, market, r.household, r.window)).fetchone()
        return int(row[0])

    def reports(self, *, state: str | None = None) -> tuple[QueuedReport, ...]:
        query = ("SELECT id, chain_id, market, report, signature, signer, state, tx_hash, error "
                 "FROM reports")
        args: tuple[str, ...] = ()
        if state is not None:
            query += " WHERE state=?"
            args = (state,)
        rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return tuple(_queued(row) for row in rows)

    def set_report_tx(self, report_id: int, tx_hash: str) -> None:
        self._db.execute("UPDATE reports SET tx_hash=? WHERE id=?", (tx_hash, report_id))

    def finish_report(self, report_id: int, *, state: str, error: str | None = None) -> None:
        self._db.execute("UPDATE reports SET state=?, error=? WHERE id=?",
                         (state, error, report_id))


def _queued(row: Any) -> QueuedReport:
    payload = json.loads(str(row[3]))
    for key in ("baseline_input_hash", "merkle_root"):
        payload[key] = bytes.fromhex(payload[key])
    signed = SignedReport(report=Report(**payload), signature=bytes(row[4]), signer=str(row[5]))
    return QueuedReport(id=int(row[0]), chain_id=int(row[1]), market=str(row[2]), signed=signed,
                        state=str(row[6]), tx_hash=None if row[7] is None else str(row[7]),
                        error=None if row[8] is None else str(row[8]))
