"""The outbox caps: which queued rows go when the outbox is past its age, row or byte cap.

Oldest rows go first (by id); every eviction is counted by reason ("evicted_age",
"evicted_rows_cap", "evicted_bytes_cap", and "evicted_measurements" for the records inside), so
an eviction is never silent. Age counts only between times read from a synchronised clock: a row
written while the clock was not synchronised (a Pi without an RTC, before NTP) carries a time that
means nothing, and a clock that is not synchronised now cannot say how old anything is; a step of
the wall clock can then never evict a backlog (docs/operations.md, "Clocks").
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

EVICTION_REASONS = ("evicted_age", "evicted_rows_cap", "evicted_bytes_cap")
_SELECT = "SELECT id, nbytes, seq_last - seq_first + 1 FROM outbox"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxCaps:
    """0 for a cap means "none"."""

    max_rows: int
    max_bytes: int
    max_age_ms: int


def evict(conn: sqlite3.Connection, caps: OutboxCaps, *, rows: int, nbytes: int, now_ms: int,
          synced: bool, counts: dict[str, int]) -> tuple[int, int]:
    """Drop the oldest rows past the caps inside the caller's transaction; returns the (rows,
    bytes) left. `synced`: whether `now_ms` was read from a synchronised clock."""
    def drop(victims: list[tuple[int, int, int]], reason: str, where: str, arg: int) -> None:
        nonlocal rows, nbytes
        if not victims:
            return
        conn.execute(f"DELETE FROM outbox WHERE {where}", [arg])
        rows -= len(victims)
        nbytes -= sum(size for _, size, _ in victims)
        counts[reason] = counts.get(reason, 0) + len(victims)
        counts["evicted_measurements"] = (counts.get("evicted_measurements", 0)
                                          + sum(n for _, _, n in victims))

    if caps.max_age_ms and rows and synced:
        cutoff = now_ms - caps.max_age_ms  # by time, not id: the clock may have stepped
        age = "created_ms < ? AND clock_synced = 1"
        drop(conn.execute(f"{_SELECT} WHERE {age}", [cutoff]).fetchall(), "evicted_age", age, cutoff)
    if caps.max_rows and rows > caps.max_rows:
        victims = conn.execute(_SELECT + " ORDER BY id LIMIT ?", [rows - caps.max_rows]).fetchall()
        drop(victims, "evicted_rows_cap", "id <= ?", victims[-1][0])
    if caps.max_bytes and nbytes > caps.max_bytes:
        victims, excess = [], nbytes - caps.max_bytes
        for row in conn.execute(_SELECT + " ORDER BY id"):
            if excess <= 0:
                break
            victims.append(row)
            excess -= row[1]
        drop(victims, "evicted_bytes_cap", "id <= ?", victims[-1][0])
    return rows, nbytes
