"""Read-only, damage-tolerant reading of a store file: what `verify --db`, `export` and salvage need.

The file is opened read-only and never migrated. Every readable row comes out; a range of rows that
SQLite cannot read (a damaged page: "database disk image is malformed") comes out as `Unreadable`
instead of a traceback. Ranges are narrowed by bisection down to single rows, and a single row is
looked up by `seq = ?` (a rowid seek that reads only the pages on the path to that row, where a
range scan would also step onto the next page), so a damaged page costs only the rows it held.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from gateway.errors import ConfigError
from gateway.measurement.store import intervals as iv
from gateway.measurement.store.errors import CORRUPT, StoreCorrupt, classify, corrupt_message
from gateway.measurement.store.intervals import MerkleInterval

CHUNK = 2_000  # rows per query while nothing fails
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Rows first..last (seqs, or outbox ids) that could not be read, and SQLite's words why."""

    first: int
    last: int
    why: str


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One measurements row as stored: the record's original bytes and its indexed columns."""

    seq: int
    device: str
    time_ms: int
    leaf: bytes
    signature: bytes
    wire: bytes


@dataclass(frozen=True, slots=True)
class RawOutboxRow:
    id: int
    topic: str
    payload: bytes
    seq_first: int
    seq_last: int
    created_ms: int
    clock_synced: int


@dataclass(frozen=True, slots=True)
class HighWater:
    """The highest seq the store says was ever issued (None when it cannot tell) and its leaf, and
    the highest seq found anywhere readable (records, outbox rows, Merkle roots)."""

    seq: int | None
    leaf: bytes | None
    seen: int


class StoreReader:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # At rest (no -wal beside it) the file is opened immutable: a read-only connection would
        # leave -wal and -shm files behind, owned by whoever ran the command (sudo: root), which
        # the agent's user could then not open. With a -wal (the agent runs, or crashed), read-only.
        at_rest = not os.path.exists(self.path + "-wal")
        uri = f"file:{quote(self.path)}?mode=ro" + ("&immutable=1" if at_rest else "")
        try:
            self.conn = sqlite3.connect(uri, uri=True)
            self.tables = {str(n) for (n,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            if classify(exc) == CORRUPT:
                raise StoreCorrupt(corrupt_message(self.path, str(exc))) from None
            raise ConfigError(f"cannot read store {self.path}: {exc}; check the path and its "
                              "permissions") from None
        if "measurements" not in self.tables:
            raise ConfigError(f"{self.path} is not a drgw store (no measurements table)")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _value(self, sql: str) -> int | None:
        """One integer (a max, a min), or None when it is NULL or cannot be read."""
        try:
            row = self.conn.execute(sql).fetchone()
        except sqlite3.DatabaseError as exc:
            if classify(exc) is None and "no such" not in str(exc):
                raise
            return None
        return None if row is None or row[0] is None else int(row[0])

    # ---- records ---------------------------------------------------------------------------

    def seq_span(self) -> tuple[int, int] | None:
        """(lowest, highest) seq to look at; None when the store holds no record and knows of none."""
        mark = self.high_water()
        high = mark.seen if mark.seq is not None else max(mark.seen, self.highest_readable_seq())
        if high == 0:
            return None
        low = self._value("SELECT min(seq) FROM measurements")
        if low is None:  # the leftmost pages are damaged: the time index still lists every seq
            low = self._value("SELECT min(seq) FROM measurements INDEXED BY measurements_time")
        return (low if low is not None else 1), high

    def highest_readable_seq(self) -> int:
        """The highest seq a seek from above still reaches, for when the newest pages are damaged:
        `max(seq) WHERE seq <= X` reads the pages on the way down to X only, so the largest X it
        succeeds for (doubling, then halving) bounds the readable records from above."""
        def top(limit: int) -> int | None:
            rows = self._rows(f"SELECT max(seq), NULL FROM measurements WHERE seq <= {limit:d}")
            return None if rows is None else int(rows[0][0] or 0)

        good, bad = 0, 1
        while top(bad) is not None and bad < 1 << 62:
            good, bad = bad, 2 * bad
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if top(middle) is not None else (good, middle)
        return top(good) or 0

    def raw_records(self, low: int, high: int) -> Iterator[RawRecord | Unreadable]:
        """Every row low <= seq <= high in seq order, and the unreadable ranges among them."""
        columns = "SELECT seq, device, time_ms, leaf, signature, wire FROM measurements WHERE "

        def fetch(a: int, b: int) -> list[RawRecord]:
            sql = columns + ("seq = ?" if a == b else "seq BETWEEN ? AND ? ORDER BY seq")
            return [RawRecord(int(s), str(d), int(t), bytes(leaf), bytes(sig), bytes(w))
                    for s, d, t, leaf, sig, w in self.conn.execute(sql, [a] if a == b else [a, b])]

        return scan(fetch, low, high)

    def high_water(self) -> HighWater:
        """The chain_head row (schema 3) or the newest record, whichever is higher; when neither
        can be read, the highest seq the time index lists. Unknown when none of them can be read
        (the newest pages of a store from before schema 3 are damaged): the outbox and the Merkle
        roots then give only a lower bound (`seen`)."""
        sources = [self._rows("SELECT seq, leaf FROM measurements ORDER BY seq DESC LIMIT 1")]
        if "chain_head" in self.tables:
            sources.append(self._rows("SELECT seq, leaf FROM chain_head"))
        if all(rows is None for rows in sources):
            sources.append(self._rows("SELECT max(seq), NULL FROM measurements INDEXED BY "
                                      "measurements_time"))
        seen = max(v or 0 for v in (self._value("SELECT max(seq_last) FROM outbox"),
                                    self._value("SELECT max(last_seq) FROM merkle_roots")))
        readable = [rows for rows in sources if rows is not None]
        if not readable:
            return HighWater(seq=None, leaf=None, seen=seen)
        marks = [(int(seq), leaf) for rows in readable for seq, leaf in rows if seq is not None]
        seq = max((s for s, _ in marks), default=0)
        if seen > seq:  # an outbox row or a root names a later seq: trust the higher number
            return HighWater(seq=seen, leaf=None, seen=seen)
        leaf = next((bytes(v) for s, v in marks if s == seq and v is not None), None)
        return HighWater(seq=seq, leaf=leaf, seen=seq)

    def _rows(self, sql: str) -> list[tuple[int | None, bytes | None]] | None:
        """The rows of `sql`, or None when they cannot be read."""
        try:
            return [(a, b) for a, b in self.conn.execute(sql)]
        except sqlite3.DatabaseError as exc:
            if classify(exc) is None and "no such index" not in str(exc):
                raise
            return None

    def lost_ranges(self) -> list[Unreadable]:
        """Seq ranges a salvage could not read from the store this one was made from."""
        if "lost_ranges" not in self.tables:
            return []
        return [Unreadable(int(a), int(b), str(why)) for a, b, why in self.conn.execute(
            "SELECT seq_first, seq_last, reason FROM lost_ranges ORDER BY seq_first")]

    # ---- outbox, roots, counters ---------------------------------------------------------------

    def outbox_rows(self) -> Iterator[RawOutboxRow | Unreadable]:
        """Every outbox row in id order, and the unreadable id ranges among them."""
        synced = "clock_synced" if "chain_head" in self.tables else "1"
        columns = (f"SELECT id, topic, payload, seq_first, seq_last, created_ms, {synced} "
                   "FROM outbox WHERE ")

        def fetch(a: int, b: int) -> list[RawOutboxRow]:
            sql = columns + ("id = ?" if a == b else "id BETWEEN ? AND ? ORDER BY id")
            return [RawOutboxRow(int(i), str(t), bytes(p), int(f), int(la), int(c), int(s))
                    for i, t, p, f, la, c, s in self.conn.execute(sql, [a] if a == b else [a, b])]

        low = self._value("SELECT min(id) FROM outbox")
        high = self._value("SELECT max(id) FROM outbox")
        if high is None:  # AUTOINCREMENT keeps the highest id ever used in sqlite_sequence
            high = self._value("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        if high is None:
            return iter(())
        return scan(fetch, low if low is not None else 1, high)

    def intervals(self) -> list[MerkleInterval]:
        return iv.read_intervals(self.conn)

    def members(self, interval: MerkleInterval) -> list[tuple[int, bytes]]:
        return iv.members(self.conn, interval)

    def counters(self) -> dict[str, int]:
        return {str(n): int(v) for n, v in self.conn.execute("SELECT name, value FROM counters")}


def scan(fetch: Callable[[int, int], list[T]], low: int, high: int, *,
         chunk: int = CHUNK) -> Iterator[T | Unreadable]:
    """fetch(a, b) over low..high in chunks; a chunk that fails is bisected down to single keys, and
    adjacent unreadable keys are merged into one range."""
    bad: Unreadable | None = None
    for start in range(low, high + 1, chunk):
        stack = [(start, min(start + chunk - 1, high))]
        while stack:
            a, b = stack.pop()
            try:
                rows = fetch(a, b)
            except sqlite3.DatabaseError as exc:
                if classify(exc) is None:
                    raise
                if a < b:
                    mid = (a + b) // 2
                    stack += [(mid + 1, b), (a, mid)]
                elif bad is not None and bad.last == a - 1:
                    bad = Unreadable(bad.first, a, bad.why)
                else:
                    if bad is not None:
                        yield bad
                    bad = Unreadable(a, a, str(exc))
                continue
            if rows and bad is not None:
                yield bad
                bad = None
            yield from rows
    if bad is not None:
        yield bad
