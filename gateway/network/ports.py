"""Narrow interfaces the network layer needs from the rest of drgw (store, identity, agent state).

Structural Protocols: gateway.measurement.store.Store satisfies OutboxStore, so tests can also use a tiny
sqlite3 stand-in without importing the real store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class OutboxRow(Protocol):
    """One outbox row: a ready-to-publish payload (a signed measurement batch) for one topic."""

    @property
    def id(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def seq_first(self) -> int: ...
    @property
    def seq_last(self) -> int: ...


class OutboxStore(Protocol):
    def outbox_pending(self, limit: int) -> Sequence[OutboxRow]: ...
    def outbox_ack(self, ids: Sequence[int]) -> None: ...
    def outbox_depth(self) -> tuple[int, int]: ...


class CounterSource(Protocol):
    def counters(self) -> Mapping[str, int]: ...
