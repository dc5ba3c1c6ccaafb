"""The gateway's durable store: signed measurements, the MQTT outbox, Merkle roots and counters.

One SQLite file in WAL mode (plain sqlite3), owned by one thread. Guarantees:
- `commit` writes a set of measurements and the outbox rows that carry them in ONE transaction, so
  the outbox never holds a record the measurements table lacks, and vice versa;
- the chain restarts from the highest seq ever issued (`last_chain_state`: the `chain_head` row,
  written in every commit's transaction), so a seq is never reused;
- an outbox row leaves only by `outbox_ack` (after PUBACK) or by eviction, and every eviction is
  counted by reason: "evicted_age", "evicted_rows_cap", "evicted_bytes_cap" (rows), plus
  "evicted_measurements" (records inside evicted rows); measurements past the retention cap are
  deleted oldest first and counted as "retention_evicted";
- a row is evicted by age only when both its time and now were read from a synchronised clock (a
  Pi without an RTC that boots before NTP must not evict its backlog when the clock jumps ahead);
- a write the disk refuses (full, I/O error, locked) raises `StoreError` and leaves nothing of
  itself behind; `failure` says why until a write succeeds again (health shows it as `disk_full`).

synchronous=FULL by default: in WAL mode NORMAL survives a process crash but may lose the last
commits on power loss, and a record already published and then lost would be re-issued under the same
seq with different content after reboot — the equivocation the hash chain exists to expose. The cost
is one fsync per commit; bench/sign_store.py measures both. Acks (`outbox_ack`) alone run at NORMAL:
an ack lost to a power cut only brings a batch back for one more delivery (consumers de-duplicate by
seq), and the next FULL commit syncs the WAL up to and including it anyway. That halves the fsyncs
of a steady stream (one per commit instead of one per commit and one per PUBACKed batch).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.clock import wall_ms
from gateway.errors import ConfigError
from gateway.measurement import merkle
from gateway.measurement.eip712 import ZERO32
from gateway.measurement.keyfile import create_private
from gateway.measurement.record import SignedMeasurement
from gateway.measurement.store import intervals as iv
from gateway.measurement.store.errors import (
    CORRUPT,
    DISK_FULL,
    StoreCorrupt,
    StoreError,
    corrupt_message,
    translate,
)
from gateway.measurement.store.eviction import EVICTION_REASONS, OutboxCaps, evict
from gateway.measurement.store.intervals import MerkleInterval
from gateway.measurement.store.opening import open_connection
from gateway.measurement.wire import batch_from_wire, from_wire, to_wire

CHECK_BUDGET_S = 10.0  # the integrity check at open (gateway/measurement/store/opening.py)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    topic: str
    payload: bytes
    seq_first: int
    seq_last: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class StoreFailure:
    """Why the last write (or read) failed: reason is disk_full, io_error, corrupt or busy."""

    reason: str
    operation: str
    message: str


class Store:
    """See the module docstring. Caps are constructor arguments; 0 for a cap means "none".
    `clock_ms` is the wall clock (injected by tests); `check_budget_s` bounds the integrity check."""

    def __init__(self, path: str | Path, *, batch_size: int = 100,
                 outbox_max_rows: int = 100_000, outbox_max_bytes: int = 256 << 20,
                 outbox_max_age_ms: int = 7 * 86_400_000, measurements_max_rows: int = 5_000_000,
                 synchronous: str = "FULL", clock_ms: Callable[[], int] = wall_ms,
                 check_budget_s: float = CHECK_BUDGET_S) -> None:
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
        create_private(self.path)  # 0600 outside systemd's UMask too; -wal and -shm follow it
        self._conn = open_connection(self.path, synchronous=synchronous,
                                     check_budget_s=check_budget_s)
        self._synchronous = synchronous
        self.db = self._conn  # for tests and tools that inspect the file
        self.failure: StoreFailure | None = None
        self._counters: dict[str, int] = {}
        # Whether the wall clock is synchronised, as the newest committed record says (its
        # clockSynced); False until the first commit, so nothing is evicted by age before.
        self._clock_synced = False
        try:
            with self._guard("open"):
                self._last_seq, self._last_leaf = self._read_chain_state()
                rows, nbytes = self._conn.execute(
                    "SELECT count(*), coalesce(sum(nbytes), 0) FROM outbox").fetchone()
        except StoreError as exc:  # damage the time-bounded integrity check did not reach
            self._conn.close()
            if exc.reason != CORRUPT:
                raise
            raise StoreCorrupt(corrupt_message(self.path, str(exc.__cause__))) from None
        self._outbox_rows, self._outbox_bytes = int(rows), int(nbytes)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def disk_full(self) -> bool:
        """The last write failed because the disk (or the store's page cap) is full."""
        return self.failure is not None and self.failure.reason == DISK_FULL

    # ---- failures and transactions ---------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, operation: str) -> Iterator[None]:
        """SQLite's file and disk errors -> StoreError (and `failure`); others (bugs) pass as they are."""
        try:
            yield
        except sqlite3.Error as exc:
            error = translate(exc, path=self.path, operation=operation)
            if error is None:
                raise
            self.failure = StoreFailure(error.reason, operation, str(error))
            raise error from exc

    @contextlib.contextmanager
    def _transaction(self, operation: str, *, durable: bool = True) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block (or the COMMIT) fails.
        durable=False: commit at synchronous=NORMAL (see the module docstring)."""
        relax = not durable and self._synchronous == "FULL"
        with self._guard(operation):
            if relax:  # PRAGMA synchronous can't change inside a transaction
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    if durable and self._synchronous == "FULL":  # one WAL sync at COMMIT
                        self._bump({"durable_commits": 1})
                    self._conn.execute("COMMIT")
                except BaseException:
                    # After SQLITE_FULL or an I/O error SQLite has rolled back already, and a second
                    # ROLLBACK would raise "no transaction is active" in place of the real error.
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            finally:
                if relax:
                    self._conn.execute(f"PRAGMA synchronous={self._synchronous}")
        # A commit that went through proves there is room; a delete (an ack, an eviction) may go
        # through on a full disk and proves nothing about the commits that failed.
        if self.failure is not None and operation in ("commit", self.failure.operation):
            self.failure = None

    # ---- chain state ------------------------------------------------------------------------

    def _read_chain_state(self) -> tuple[int, bytes]:
        head = self._conn.execute("SELECT seq, leaf FROM chain_head").fetchone()
        row = self._conn.execute(
            "SELECT seq, leaf FROM measurements ORDER BY seq DESC LIMIT 1").fetchone()
        return max(((int(r[0]), bytes(r[1])) for r in (head, row) if r is not None),
                   default=(0, ZERO32))

    def last_chain_state(self) -> tuple[int, bytes]:
        """(seq, struct hash) of the highest seq ever issued; (0, 32 zero bytes) when none was."""
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
            part = signed[i:i + self.batch_size]
            payload = batch_from_wire([row[5] for row in rows[i:i + self.batch_size]])
            batches.append((topic, payload, len(payload), part[0].measurement.seq,
                            part[-1].measurement.seq, now,
                            int(all(sm.measurement.clock_synced for sm in part))))
        added = sum(b[2] for b in batches)
        synced = signed[-1].measurement.clock_synced
        with self._transaction("commit"):
            self._conn.executemany("INSERT INTO measurements (seq, device, time_ms, leaf, "
                                   "signature, wire) VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._insert_outbox(batches)
            self._conn.execute("INSERT OR REPLACE INTO chain_head (id, seq, leaf) VALUES (1, ?, ?)",
                               [signed[-1].measurement.seq, signed[-1].leaf])
            counts = {"measurements_committed": len(rows), "outbox_batches": len(batches),
                      "bytes_committed": sum(len(row[5]) for row in rows) + added}
            last = signed[-1].measurement.seq
            counts["retention_evicted"] = self._conn.execute(
                "DELETE FROM measurements WHERE seq <= ?",
                [last - self.measurements_max_rows]).rowcount
            rows_left, bytes_left = self._evict(self._outbox_rows + len(batches),
                                                self._outbox_bytes + added, now, counts,
                                                synced=synced)
            self._bump(counts)
        self._last_seq, self._last_leaf = signed[-1].measurement.seq, signed[-1].leaf
        self._outbox_rows, self._outbox_bytes = rows_left, bytes_left
        self._clock_synced = synced

    def _check_continues(self, signed: Sequence[SignedMeasurement]) -> None:
        seq, leaf = self._last_seq, self._last_leaf
        for sm in signed:
            m = sm.measurement
            if m.seq != seq + 1 or m.prev_hash != leaf:
                raise ValueError(f"measurement seq {m.seq} does not continue the stored chain "
                                 f"(last seq {seq}): build records with a MeasurementChain "
                                 "started from Store.last_chain_state()")
            seq, leaf = m.seq, sm.leaf

    def _insert_outbox(self, batches: Sequence[tuple[str, bytes, int, int, int, int, int]]) -> None:
        self._conn.executemany("INSERT INTO outbox (topic, payload, nbytes, seq_first, seq_last, "
                               "created_ms, clock_synced) VALUES (?, ?, ?, ?, ?, ?, ?)", batches)

    def _bump(self, counts: dict[str, int]) -> None:
        self._conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in counts.items() if v])

    # ---- outbox ----------------------------------------------------------------------------

    def _evict(self, rows: int, nbytes: int, now: int, counts: dict[str, int], *,
               synced: bool) -> tuple[int, int]:
        caps = OutboxCaps(max_rows=self.outbox_max_rows, max_bytes=self.outbox_max_bytes,
                          max_age_ms=self.outbox_max_age_ms)
        return evict(self._conn, caps, rows=rows, nbytes=nbytes, now_ms=now, synced=synced,
                     counts=counts)

    def expire(self, now_ms: int | None = None) -> None:
        """Apply the outbox caps without a commit (for a gateway whose meters went quiet)."""
        now = self._clock_ms() if now_ms is None else now_ms
        counts: dict[str, int] = {}
        with self._transaction("expire"):
            rows, nbytes = self._evict(self._outbox_rows, self._outbox_bytes, now, counts,
                                       synced=self._clock_synced)
            self._bump(counts)
        self._outbox_rows, self._outbox_bytes = rows, nbytes

    def outbox_pending(self, limit: int) -> list[OutboxItem]:
        """The oldest `limit` outbox rows, oldest first."""
        with self._guard("outbox_pending"):
            cursor = self._conn.execute("SELECT id, topic, payload, seq_first, seq_last, "
                                        "created_ms FROM outbox ORDER BY id LIMIT ?", [limit])
            return [OutboxItem(int(i), str(t), bytes(p), int(a), int(b), int(c))
                    for i, t, p, a, b, c in cursor]

    def outbox_ack(self, ids: Sequence[int]) -> None:
        """Remove rows the broker acknowledged (PUBACK). Unknown ids (already evicted) are ignored.
        On StoreError nothing is removed: the caller keeps the ids and acks them again later."""
        if not ids:
            return
        acked = nbytes = 0
        with self._transaction("outbox_ack", durable=False):
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
        """The persistent counters; while the file cannot be read, the last ones read (health and
        metrics must not fail with the store: `failure` says what is wrong)."""
        counts = {name: 0 for name in EVICTION_REASONS}
        with contextlib.suppress(StoreError), self._guard("counters"):
            self._counters = {str(n): int(v) for n, v in self._conn.execute(
                "SELECT name, value FROM counters")}
        counts.update(self._counters)
        return counts

    # ---- reading back ----------------------------------------------------------------------

    def measurements_range(self, seq_from: int, seq_to: int) -> list[SignedMeasurement]:
        """Stored records with seq_from <= seq <= seq_to, in seq order (evicted ones are absent)."""
        with self._guard("read"):
            cursor = self._conn.execute("SELECT wire FROM measurements WHERE seq BETWEEN ? AND ? "
                                        "ORDER BY seq", [seq_from, seq_to])
            return [from_wire(bytes(wire)) for (wire,) in cursor]

    def requeue(self, seq_from: int, seq_to: int, topic: str, *, now_ms: int | None = None) -> int:
        """Queue stored records seq_from..seq_to again (a fleet "resend"); returns how many.

        The copies go out as ordinary outbox batches; consumers de-duplicate by seq, and the content
        is byte-identical, so a resend is a redelivery, never a second version of a record."""
        now = self._clock_ms() if now_ms is None else now_ms
        with self._guard("requeue"):
            rows = self._conn.execute("SELECT seq, wire FROM measurements WHERE seq BETWEEN ? AND ? "
                                      "ORDER BY seq", [seq_from, seq_to]).fetchall()
        batches = []
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i:i + self.batch_size]
            payload = batch_from_wire([bytes(w) for _, w in chunk])
            batches.append((topic, payload, len(payload), chunk[0][0], chunk[-1][0], now,
                            int(self._clock_synced)))
        if not batches:
            return 0
        added = sum(b[2] for b in batches)
        counts = {"resent_measurements": len(rows)}
        with self._transaction("requeue"):
            self._insert_outbox(batches)
            rows_left, bytes_left = self._evict(self._outbox_rows + len(batches),
                                                self._outbox_bytes + added, now, counts,
                                                synced=self._clock_synced)
            self._bump(counts)
        self._outbox_rows, self._outbox_bytes = rows_left, bytes_left
        return len(rows)

    def seq_bounds(self) -> tuple[int, int]:
        """(oldest, newest) stored seq; (0, 0) when empty."""
        with self._guard("read"):
            lo, hi = self._conn.execute("SELECT min(seq), max(seq) FROM measurements").fetchone()
        return (0, 0) if lo is None else (int(lo), int(hi))

    # ---- Merkle intervals (rules in gateway/measurement/store/intervals.py) -----------------

    def interval_leaves(self, start_ms: int, end_ms: int) -> list[tuple[int, bytes]]:
        """(seq, leaf) of the records with start_ms <= time_ms < end_ms, in seq order."""
        with self._guard("read"):
            return iv.leaves_in_time(self._conn, start_ms, end_ms)

    def close_next_interval(self, *, max_leaves: int = iv.MAX_LEAVES) -> MerkleInterval | None:
        """Keep the Merkle root of the records committed since the previous interval (a seq range,
        so a clock step cannot leave a record outside every root), at most `max_leaves` of them
        (call again while it returns one that ends below the newest seq); None when there are none."""
        with self._guard("close_interval"):
            leaves = iv.next_range(self._conn, max_leaves)
        return self._keep(iv.seq_interval(leaves)) if leaves else None

    def close_interval(self, start_ms: int, end_ms: int) -> MerkleInterval | None:
        """The root of the records with start_ms <= time_ms < end_ms (a time window, as stores kept
        before schema 3; the agent closes by seq range: `close_next_interval`). None when empty."""
        leaves = self.interval_leaves(start_ms, end_ms)
        if not leaves:
            return None
        return self._keep(MerkleInterval(start_ms, end_ms, leaves[0][0], leaves[-1][0],
                                         merkle.root([leaf for _, leaf in leaves]),
                                         len(leaves)))

    def _keep(self, interval: MerkleInterval) -> MerkleInterval:
        with self._transaction("close_interval"):
            self._conn.execute("INSERT INTO merkle_roots (start_ms, end_ms, first_seq, last_seq, "
                               "root, leaf_count) VALUES (?, ?, ?, ?, ?, ?)",
                               [interval.start_ms, interval.end_ms, interval.first_seq,
                                interval.last_seq, interval.root, interval.leaf_count])
        return interval

    def intervals(self) -> list[MerkleInterval]:
        with self._guard("read"):
            return iv.read_intervals(self._conn)

    def proof_for(self, seq: int) -> tuple[bytes, list[bytes]]:
        """(root, proof) for the record `seq` in the first closed interval that holds it."""
        with self._guard("read"):
            interval, leaves = iv.interval_of(self._conn, seq)
        seqs = [s for s, _ in leaves]
        return interval.root, merkle.proof([leaf for _, leaf in leaves], seqs.index(seq))
