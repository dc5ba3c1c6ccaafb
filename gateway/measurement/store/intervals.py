"""Merkle intervals of the store: which records an interval's root is made over, one rule for all.

An interval's leaves are the records with `first_seq <= seq <= last_seq` and
`start_ms <= time_ms < end_ms`, in seq order (docs/measurements.md, "Merkle roots").

- The agent closes intervals by seq range (`seq_interval`): every record committed since the previous
  interval, with start_ms/end_ms the span of their times (min, max + 1), so the time condition holds
  for all of them and every record is in exactly one root, whatever the wall clock did meanwhile.
- Stores from before schema 3 closed intervals by time window; first_seq/last_seq were then the
  lowest and highest seq in the window. Records committed later have higher seqs, so the same rule
  gives exactly the leaves such a root was made over, even after the clock stepped back into an
  already closed window (which made `verify` report broken roots on untouched stores).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.measurement import merkle

MAX_LEAVES = 100_000  # leaves under one root at most (~0.15 s of keccak on a Pi 4)


@dataclass(frozen=True, slots=True)
class MerkleInterval:
    start_ms: int
    end_ms: int
    first_seq: int
    last_seq: int
    root: bytes
    leaf_count: int


def read_intervals(conn: sqlite3.Connection) -> list[MerkleInterval]:
    cursor = conn.execute("SELECT start_ms, end_ms, first_seq, last_seq, root, leaf_count "
                          "FROM merkle_roots ORDER BY id")
    return [MerkleInterval(int(a), int(b), int(c), int(d), bytes(r), int(n))
            for a, b, c, d, r, n in cursor]


def members(conn: sqlite3.Connection, interval: MerkleInterval) -> list[tuple[int, bytes]]:
    """(seq, leaf) of the records the interval's root covers (the rule in the module docstring)."""
    cursor = conn.execute(
        "SELECT seq, leaf FROM measurements WHERE seq BETWEEN ? AND ? AND time_ms >= ? "
        "AND time_ms < ? ORDER BY seq",
        [interval.first_seq, interval.last_seq, interval.start_ms, interval.end_ms])
    return [(int(s), bytes(leaf)) for s, leaf in cursor]


def leaves_in_time(conn: sqlite3.Connection, start_ms: int, end_ms: int) -> list[tuple[int, bytes]]:
    """(seq, leaf) of the records with start_ms <= time_ms < end_ms, in seq order."""
    cursor = conn.execute("SELECT seq, leaf FROM measurements WHERE time_ms >= ? AND "
                          "time_ms < ? ORDER BY seq", [start_ms, end_ms])
    return [(int(s), bytes(leaf)) for s, leaf in cursor]


def last_closed_seq(conn: sqlite3.Connection) -> int:
    """The highest seq under a kept root; 0 when no interval was closed yet."""
    row = conn.execute("SELECT max(last_seq) FROM merkle_roots").fetchone()
    return 0 if row[0] is None else int(row[0])


def next_range(conn: sqlite3.Connection, max_leaves: int) -> list[tuple[int, bytes, int]]:
    """(seq, leaf, time_ms) of the next at most `max_leaves` stored records after the highest seq
    under a kept root, in seq order (a bound: a store that kept no root for long, e.g. salvaged
    without its roots, must not load millions of leaves at once)."""
    cursor = conn.execute("SELECT seq, leaf, time_ms FROM measurements WHERE seq > ? ORDER BY seq "
                          "LIMIT ?", [last_closed_seq(conn), max_leaves])
    return [(int(s), bytes(leaf), int(t)) for s, leaf, t in cursor]


def seq_interval(leaves: Sequence[tuple[int, bytes, int]]) -> MerkleInterval:
    """The interval over `leaves` (seq, leaf, time_ms), in seq order; at least one."""
    times = [t for _, _, t in leaves]
    return MerkleInterval(min(times), max(times) + 1, leaves[0][0], leaves[-1][0],
                          merkle.root([leaf for _, leaf, _ in leaves]), len(leaves))


def interval_of(conn: sqlite3.Connection,
                seq: int) -> tuple[MerkleInterval, list[tuple[int, bytes]]]:
    """The first kept interval whose root covers `seq`, and its leaves; KeyError when none does."""
    row = conn.execute("SELECT time_ms FROM measurements WHERE seq = ?", [seq]).fetchone()
    if row is None:
        raise KeyError(f"seq {seq} is not in the store (never committed, or evicted)")
    for interval in read_intervals(conn):
        if interval.first_seq <= seq <= interval.last_seq and (
                interval.start_ms <= row[0] < interval.end_ms):
            return interval, members(conn, interval)
    raise KeyError(f"seq {seq} is in no closed Merkle interval yet")
