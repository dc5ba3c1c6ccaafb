"""The gateway's durable store: signed measurements, the MQTT outbox, Merkle roots and counters.

One SQLite file in WAL mode (plain sqlite3), owned by one thread. Guarantees:
- `commit` writes a set of measurements and the outbox rows that carry them in ONE transaction, so
  the outbox never holds a record the measurements table lacks, and vice versa;
- the chain restarts from the newest committed record (`last_chain_state`), so a seq is never reused;
- an outbox row leaves only by `outbox_ack` (after PUBACK) or by eviction, and every eviction is
  counted by reason: "evicted_age", "evicted_rows_cap", "evicted_bytes_cap" (rows), plus
  "evicted_measurements" (records inside evicted rows); measurements past the retention cap are
  deleted oldest first and counted as "retention_evicted".

synchronous=FULL by default: in WAL mode NORMAL survives a process crash but may lose the last
commits on power loss, and a record already published and then lost would be re-issued under the same
seq with different content after reboot — the equivocation the hash chain exists to expose. The cost
is one fsync per commit; bench/sign_store.py measures both. Acks (`outbox_ack`) alone run at NORMAL:
an ack lost to a power cut only brings a batch back for one more delivery (consumers de-duplicate by
seq), and the next FULL commit syncs the WAL up to and including it anyway. That halves the fsyncs
of a steady stream (one per commit instead of one per commit and one per PUBACKed batch).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.clock import wall_ms
from gateway.errors import ConfigError
from gateway.measurement import merkle
from gateway.measurement.eip712 import ZERO32
from gateway.measurement.record import SignedMeasurement
from gateway.measurement.store.migrations import migrate
from gateway.measurement.wire import batch_from_wire, from_wire, to_wire

EVICTION_REASONS = ("evicted_age", "evicted_rows_cap", "evicted_bytes_cap")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    topic: str
    payload: bytes
    seq_first: int
    seq_last: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class MerkleInterval:
    start_ms: int
    end_ms: int
    first_seq: int
    last_seq: int
    root: bytes
    leaf_count: int


class Store:
    """See the module docstring. Caps are constructor arguments; 0 for a cap means "none"."""

    def __init__(self, path: str | Path, *, batch_size: int = 100,
                 outbox_max_rows: int = 100_000, outbox_max_bytes: int = 256 << 20,
                 outbox_max_age_ms: int = 7 * 86_400_000, measurements_max_rows: int = 5_000_000,
                 synchronous: str = "FULL", clock_ms: Callable[[], int] = wall_ms) -> None:
        if batch_size < 1 or measurements_max_rows < 1:
            raise ConfigError("store: batch_size and measurements_max_rows must be at least 1")
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"store: synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = str(path)
        self.batch_size = batch_size
        self.outbox_max_rows = outbox_max_rows
        self.outbox_max_bytes = outbox_max_bytes
        self.outbox_max_age_ms = outbox_max_age_ms
        self.measurements_max_rows = measurements_max_rows
        self._clock_ms = clock_ms
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open store {self.path}: {exc}; check the path and that "
                              "its directory is writable") from None
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._synchronous = synchronous
        self.db = self._conn  # for tests and tools that inspect the file
        migrate(self._conn, path=self.path)
        self._last_seq, self._last_leaf = self._read_chain_state()
        rows, nbytes = self._conn.execute(
            "SELECT count(*), coalesce(sum(nbytes), 0) FROM outbox").fetchone()
        self._outbox_rows, self._outbox_bytes = int(rows), int(nbytes)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- chain state ------------------------------------------------------------------------

    def _read_chain_state(self) -> tuple[int, bytes]:
        row = self._conn.execute(
            "SELECT seq, leaf FROM measurements ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, ZERO32) if row is None else (int(row[0]), bytes(row[1]))

    def last_chain_state(self) -> tuple[int, bytes]:
        """(seq, struct hash) of the newest committed record; (0, 32 zero bytes) when empty."""
        return self._last_seq, self._last_leaf

    # ---- commit ----------------------------------------------------------------------------

    def commit(self, signed: Sequence[SignedMeasurement], topic: str, *,
               now_ms: int | None = None) -> None:
        """Store `signed` (which must continue the chain) and their outbox batches atomically."""
        if not signed:
            return
        self._check_continues(signed)
        now = self._clock_ms() if now_ms is None else now_ms
        rows = [(sm.measurement.seq, sm.measurement.device, sm.measurement.time_ms, sm.leaf,
                 sm.signature, to_wire(sm)) for sm in signed]
        batches = []
        for i in range(0, len(signed), self.batch_size):
            payload = batch_from_wire([row[5] for row in rows[i:i + self.batch_size]])
            batches.append((topic, payload, len(payload), rows[i][0],
                            rows[min(i + self.batch_size, len(rows)) - 1][0], now))
        added = sum(b[2] for b in batches)
        with self._transaction():
            self._conn.executemany("INSERT INTO measurements (seq, device, time_ms, leaf, "
                                   "signature, wire) VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._conn.executemany("INSERT INTO outbox (topic, payload, nbytes, seq_first, "
                                   "seq_last, created_ms) VALUES (?, ?, ?, ?, ?, ?)", batches)
            counts = {"measurements_committed": len(rows), "outbox_batches": len(batches)}
            last = signed[-1].measurement.seq
            counts["retention_evicted"] = self._conn.execute(
                "DELETE FROM measurements WHERE seq <= ?",
                [last - self.measurements_max_rows]).rowcount
            rows_left, bytes_left = self._evict(self._outbox_rows + len(batches),
                                                self._outbox_bytes + added, now, counts)
            self._bump(counts)
        self._last_seq, self._last_leaf = signed[-1].measurement.seq, signed[-1].leaf
        self._outbox_rows, self._outbox_bytes = rows_left, bytes_left

    def _check_continues(self, signed: Sequence[SignedMeasurement]) -> None:
        seq, leaf = self._last_seq, self._last_leaf
        for sm in signed:
            m = sm.measurement
            if m.seq != seq + 1 or m.prev_hash != leaf:
                raise ValueError(f"measurement seq {m.seq} does not continue the stored chain "
                                 f"(last seq {seq}): build records with a MeasurementChain "
                                 "started from Store.last_chain_state()")
            seq, leaf = m.seq, sm.leaf

    def _transaction(self, *, durable: bool = True) -> _Transaction:
        """durable=False: commit without waiting for the disk (see the module docstring)."""
        relax = not durable and self._synchronous == "FULL"
        return _Transaction(self._conn, restore=self._synchronous if relax else None)

    def _bump(self, counts: dict[str, int]) -> None:
        self._conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in counts.items() if v])

    # ---- outbox ----------------------------------------------------------------------------

    def _evict(self, rows: int, nbytes: int, now: int,
               counts: dict[str, int]) -> tuple[int, int]:
        """Drop the oldest outbox rows past the age, row and byte caps; returns (rows, bytes)."""
        def drop(victims: list[tuple[int, int, int]], reason: str, where: str,
                 arg: int) -> None:
            nonlocal rows, nbytes
            if not victims:
                return
            self._conn.execute(f"DELETE FROM outbox WHERE {where}", [arg])
            rows -= len(victims)
            nbytes -= sum(size for _, size, _ in victims)
            counts[reason] = counts.get(reason, 0) + len(victims)
            counts["evicted_measurements"] = (counts.get("evicted_measurements", 0)
                                              + sum(n for _, _, n in victims))

        select = "SELECT id, nbytes, seq_last - seq_first + 1 FROM outbox"
        if self.outbox_max_age_ms and rows:
            cutoff = now - self.outbox_max_age_ms  # by time, not id: the clock may have stepped
            drop(self._conn.execute(select + " WHERE created_ms < ?", [cutoff]).fetchall(),
                 "evicted_age", "created_ms < ?", cutoff)
        if self.outbox_max_rows and rows > self.outbox_max_rows:
            victims = self._conn.execute(select + " ORDER BY id LIMIT ?",
                                         [rows - self.outbox_max_rows]).fetchall()
            drop(victims, "evicted_rows_cap", "id <= ?", victims[-1][0])
        if self.outbox_max_bytes and nbytes > self.outbox_max_bytes:
            victims, excess = [], nbytes - self.outbox_max_bytes
            for row in self._conn.execute(select + " ORDER BY id"):
                if excess <= 0:
                    break
                victims.append(row)
                excess -= row[1]
            drop(victims, "evicted_bytes_cap", "id <= ?", victims[-1][0])
        return rows, nbytes

    def expire(self, now_ms: int | None = None) -> None:
        """Apply the outbox caps without a commit (for a gateway whose meters went quiet)."""
        now = self._clock_ms() if now_ms is None else now_ms
        counts: dict[str, int] = {}
        with self._transaction():
            rows, nbytes = self._evict(self._outbox_rows, self._outbox_bytes, now, counts)
            self._bump(counts)
        self._outbox_rows, self._outbox_bytes = rows, nbytes

    def outbox_pending(self, limit: int) -> list[OutboxItem]:
        """The oldest `limit` outbox rows, oldest first."""
        cursor = self._conn.execute("SELECT id, topic, payload, seq_first, seq_last, created_ms "
                                    "FROM outbox ORDER BY id LIMIT ?", [limit])
        return [OutboxItem(int(i), str(t), bytes(p), int(a), int(b), int(c))
                for i, t, p, a, b, c in cursor]

    def outbox_ack(self, ids: Sequence[int]) -> None:
        """Remove rows the broker acknowledged (PUBACK). Unknown ids (already evicted) are ignored."""
        if not ids:
            return
        acked = nbytes = 0
        with self._transaction(durable=False):
            for i in range(0, len(ids), 500):
                chunk = list(ids[i:i + 500])
                marks = ",".join("?" * len(chunk))
                n, b = self._conn.execute(f"SELECT count(*), coalesce(sum(nbytes), 0) FROM outbox "
                                          f"WHERE id IN ({marks})", chunk).fetchone()
                self._conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
                acked, nbytes = acked + int(n), nbytes + int(b)
            self._bump({"outbox_acked": acked})
        self._outbox_rows -= acked
        self._outbox_bytes -= nbytes

    def outbox_depth(self) -> tuple[int, int]:
        """(rows, payload bytes) waiting for a PUBACK."""
        return self._outbox_rows, self._outbox_bytes

    def counters(self) -> dict[str, int]:
        counts = {name: 0 for name in EVICTION_REASONS}
        counts.update({str(n): int(v) for n, v in self._conn.execute(
            "SELECT name, value FROM counters")})
        return counts

    # ---- reading back ----------------------------------------------------------------------

    def measurements_range(self, seq_from: int, seq_to: int) -> list[SignedMeasurement]:
        """Stored records with seq_from <= seq <= seq_to, in seq order (evicted ones are absent)."""
        cursor = self._conn.execute("SELECT wire FROM measurements WHERE seq BETWEEN ? AND ? "
                                    "ORDER BY seq", [seq_from, seq_to])
        return [from_wire(bytes(wire)) for (wire,) in cursor]

    def requeue(self, seq_from: int, seq_to: int, topic: str, *, now_ms: int | None = None) -> int:
        """Queue stored records seq_from..seq_to again (a fleet "resend"); returns how many.

        The copies go out as ordinary outbox batches; consumers de-duplicate by seq, and the content
        is byte-identical, so a resend is a redelivery, never a second version of a record."""
        now = self._clock_ms() if now_ms is None else now_ms
        rows = self._conn.execute("SELECT seq, wire FROM measurements WHERE seq BETWEEN ? AND ? "
                                  "ORDER BY seq", [seq_from, seq_to]).fetchall()
        batches = []
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i:i + self.batch_size]
            payload = batch_from_wire([bytes(w) for _, w in chunk])
            batches.append((topic, payload, len(payload), chunk[0][0], chunk[-1][0], now))
        if not batches:
            return 0
        added = sum(b[2] for b in batches)
        counts = {"resent_measurements": len(rows)}
        with self._transaction():
            self._conn.executemany("INSERT INTO outbox (topic, payload, nbytes, seq_first, "
                                   "seq_last, created_ms) VALUES (?, ?, ?, ?, ?, ?)", batches)
            rows_left, bytes_left = self._evict(self._outbox_rows + len(batches),
                                                self._outbox_bytes + added, now, counts)
            self._bump(counts)
        self._outbox_rows, self._outbox_bytes = rows_left, bytes_left
        return len(rows)

    def seq_bounds(self) -> tuple[int, int]:
        """(oldest, newest) stored seq; (0, 0) when empty."""
        lo, hi = self._conn.execute("SELECT min(seq), max(seq) FROM measurements").fetchone()
        return (0, 0) if lo is None else (int(lo), int(hi))

    # ---- Merkle intervals ------------------------------------------------------------------

    def interval_leaves(self, start_ms: int, end_ms: int) -> list[tuple[int, bytes]]:
        """(seq, leaf) of the records with start_ms <= time_ms < end_ms, in seq order."""
        cursor = self._conn.execute("SELECT seq, leaf FROM measurements WHERE time_ms >= ? AND "
                                    "time_ms < ? ORDER BY seq", [start_ms, end_ms])
        return [(int(s), bytes(leaf)) for s, leaf in cursor]

    def close_interval(self, start_ms: int, end_ms: int) -> MerkleInterval | None:
        """Compute and keep the Merkle root of the interval's leaves; None when it has none."""
        leaves = self.interval_leaves(start_ms, end_ms)
        if not leaves:
            return None
        interval = MerkleInterval(start_ms, end_ms, leaves[0][0], leaves[-1][0],
                                  merkle.root([leaf for _, leaf in leaves]), len(leaves))
        with self._transaction():
            self._conn.execute("INSERT INTO merkle_roots (start_ms, end_ms, first_seq, last_seq, "
                               "root, leaf_count) VALUES (?, ?, ?, ?, ?, ?)",
                               [start_ms, end_ms, interval.first_seq, interval.last_seq,
                                interval.root, interval.leaf_count])
        return interval

    def intervals(self) -> list[MerkleInterval]:
        cursor = self._conn.execute("SELECT start_ms, end_ms, first_seq, last_seq, root, "
                                    "leaf_count FROM merkle_roots ORDER BY id")
        return [MerkleInterval(int(a), int(b), int(c), int(d), bytes(r), int(n))
                for a, b, c, d, r, n in cursor]

    def proof_for(self, seq: int) -> tuple[bytes, list[bytes]]:
        """(root, proof) for the record `seq` in the first closed interval that holds it."""
        row = self._conn.execute("SELECT time_ms FROM measurements WHERE seq = ?",
                                 [seq]).fetchone()
        if row is None:
            raise KeyError(f"seq {seq} is not in the store (never committed, or evicted)")
        for interval in self.intervals():
            if interval.start_ms <= row[0] < interval.end_ms and (
                    interval.first_seq <= seq <= interval.last_seq):
                leaves = self.interval_leaves(interval.start_ms, interval.end_ms)
                seqs = [s for s, _ in leaves]
                hashes = [leaf for _, leaf in leaves]
                return interval.root, merkle.proof(hashes, seqs.index(seq))
        raise KeyError(f"seq {seq} is in no closed Merkle interval yet")


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises. With `restore`, the
    transaction runs at synchronous=NORMAL and the level `restore` is set again after it."""

    __slots__ = ("_conn", "_restore")

    def __init__(self, conn: sqlite3.Connection, *, restore: str | None = None) -> None:
        self._conn = conn
        self._restore = restore

    def __enter__(self) -> None:
        if self._restore is not None:  # PRAGMA synchronous can't change inside a transaction
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            if self._restore is not None:
                self._conn.execute(f"PRAGMA synchronous={self._restore}")
