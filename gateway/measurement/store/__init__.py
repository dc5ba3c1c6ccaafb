"""Durable local storage (SQLite): measurements, outboxes, Merkle roots, counters."""

from gateway.measurement.store.database import EVICTION_REASONS, MerkleInterval, OutboxItem, Store

__all__ = ["EVICTION_REASONS", "MerkleInterval", "OutboxItem", "Store"]
