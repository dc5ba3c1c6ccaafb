"""Durable local storage (SQLite): measurements, outboxes, Merkle roots, counters."""

from gateway.measurement.store.database import OutboxItem, Store, StoreFailure
from gateway.measurement.store.errors import StoreCorrupt, StoreError
from gateway.measurement.store.eviction import EVICTION_REASONS
from gateway.measurement.store.intervals import MerkleInterval

__all__ = ["EVICTION_REASONS", "MerkleInterval", "OutboxItem", "Store", "StoreCorrupt", "StoreError",
           "StoreFailure"]
