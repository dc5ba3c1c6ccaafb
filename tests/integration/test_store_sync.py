"""Store durability levels: commits run at the configured level (FULL by default); acks alone run at
NORMAL and the configured level is back afterwards, also when the ack fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain
from gateway.measurement.store import Store

KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
LEVEL = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def fill(store: Store, n: int) -> None:
    seq, leaf = store.last_chain_state()
    chain = MeasurementChain(gateway=KEY.address, last_seq=seq, last_hash=leaf)
    store.commit([chain.next_signed(KEY, measurement_domain(), device="m", time_ms=1000 + i,
                                    clock_synced=True, readings=[ScaledReading("p", i, "W", 0)])
                  for i in range(n)], "drgw/v1/gw/meas", now_ms=5)


def level(store: Store) -> str:
    return LEVEL[store.db.execute("PRAGMA synchronous").fetchone()[0]]


def traced(store: Store) -> list[str]:
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    return statements


def test_commits_are_full_and_acks_normal(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", batch_size=2) as store:
        statements = traced(store)
        fill(store, 4)
        assert not any(s.startswith("PRAGMA") for s in statements)  # the commit: FULL, as opened
        assert level(store) == "FULL"
        statements.clear()
        store.outbox_ack([item.id for item in store.outbox_pending(10)])
        pragmas = [s for s in statements if s.startswith(("PRAGMA", "BEGIN", "COMMIT"))]
        assert pragmas == ["PRAGMA synchronous=NORMAL", "BEGIN IMMEDIATE", "COMMIT",
                           "PRAGMA synchronous=FULL"]
        assert level(store) == "FULL" and store.outbox_depth() == (0, 0)


def test_a_failed_ack_rolls_back_and_restores_full(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", batch_size=2) as store:
        fill(store, 4)
        with pytest.raises(sqlite3.Error):
            store.outbox_ack([object()])  # type: ignore[list-item]  # not bindable: fails mid-ack
        assert level(store) == "FULL"
        assert store.outbox_depth()[0] == 2  # nothing acked
        fill(store, 2)  # and the store goes on
        assert store.last_chain_state()[0] == 6


def test_a_normal_store_never_switches(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", batch_size=2, synchronous="NORMAL") as store:
        fill(store, 2)
        statements = traced(store)
        store.outbox_ack([item.id for item in store.outbox_pending(10)])
        assert not any(s.startswith("PRAGMA") for s in statements)
        assert level(store) == "NORMAL"
