"""An in-memory OutboxStore (the fake of gateway.measurement.store's outbox) for tests and the bench."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.network.ports import CounterSource, OutboxStore


@dataclass(frozen=True, slots=True)
class MemoryRow:
    id: int
    topic: str
    payload: bytes
    seq_first: int
    seq_last: int
    created_ms: int = 0


class MemoryOutbox:
    """Rows in id order; acking removes them. Same contract as gateway.measurement.store.Store's outbox."""

    def __init__(self) -> None:
        self._rows: dict[int, MemoryRow] = {}
        self._next_id = 1
        self.acks: list[int] = []

    def add(self, topic: str, payload: bytes, *, seq_first: int, seq_last: int) -> MemoryRow:
        row = MemoryRow(self._next_id, topic, payload, seq_first, seq_last)
        self._rows[row.id] = row
        self._next_id += 1
        return row

    def outbox_pending(self, limit: int) -> list[MemoryRow]:
        return [self._rows[i] for i in sorted(self._rows)[:limit]]

    def outbox_ack(self, ids: Sequence[int]) -> None:
        for i in ids:
            self._rows.pop(i, None)
            self.acks.append(i)

    def outbox_depth(self) -> tuple[int, int]:
        return len(self._rows), sum(len(r.payload) for r in self._rows.values())

    def counters(self) -> Mapping[str, int]:
        rows, size = self.outbox_depth()
        return {"outbox_rows": rows, "outbox_bytes": size, "outbox_acked": len(self.acks)}


if TYPE_CHECKING:  # mypy checks that the fake still has the shape of the Protocols it stands in for
    _STORE: OutboxStore = MemoryOutbox()
    _COUNTERS: CounterSource = MemoryOutbox()
