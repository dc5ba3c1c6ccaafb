"""The SQLite store: atomic commits, chain restart, outbox, eviction counting, Merkle, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from gateway.measurement import merkle
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    MeasurementChain,
    ScaledReading,
    SignedMeasurement,
    measurement_domain,
)
from gateway.measurement.store import OutboxItem, Store
from gateway.measurement.store.migrations import LATEST, migrate, schema_version
from gateway.measurement.wire import decode_batch

KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
DOMAIN = measurement_domain()
TOPIC = "drgw/v1/gw/meas"


def make(chain: MeasurementChain, n: int, t0: int = 1000) -> list[SignedMeasurement]:
    return [chain.next_signed(KEY, DOMAIN, device="meter", time_ms=t0 + i, clock_synced=True,
                              readings=[ScaledReading("p", i, "W", 0)]) for i in range(n)]


def chain_of(store: Store) -> MeasurementChain:
    seq, leaf = store.last_chain_state()
    return MeasurementChain(gateway=KEY.address, last_seq=seq, last_hash=leaf)


def test_commit_outbox_ack_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path, batch_size=4) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        signed = make(chain_of(store), 10)
        store.commit(signed, TOPIC, now_ms=5)
        items = store.outbox_pending(100)
        assert [(i.seq_first, i.seq_last) for i in items] == [(1, 4), (5, 8), (9, 10)]
        assert all(isinstance(i, OutboxItem) and i.topic == TOPIC and i.created_ms == 5
                   for i in items)
        assert [sm for i in items for sm in decode_batch(i.payload)] == signed
        assert store.outbox_depth() == (3, sum(len(i.payload) for i in items))
        store.outbox_ack([items[0].id])
        assert [i.id for i in store.outbox_pending(1)] == [items[1].id]
    with Store(path, batch_size=4) as store:  # reopened: same state
        assert store.outbox_depth() == (2, sum(len(i.payload) for i in items[1:]))
        assert store.last_chain_state() == (10, signed[-1].leaf)
        assert store.measurements_range(3, 5) == signed[2:5]
        more = make(chain_of(store), 2)
        assert more[0].measurement.seq == 11
        store.commit(more, TOPIC, now_ms=6)
        counts = store.counters()
        assert counts["measurements_committed"] == 12 and counts["outbox_acked"] == 1


def test_commit_refuses_a_record_that_does_not_continue(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        chain = chain_of(store)
        first = make(chain, 3)
        store.commit(first[:1], TOPIC, now_ms=1)
        with pytest.raises(ValueError, match="does not continue"):
            store.commit(first[2:], TOPIC, now_ms=1)  # skips seq 2
        replay = make(MeasurementChain(gateway=KEY.address), 1)  # a second seq 1
        with pytest.raises(ValueError, match="seq 1 does not continue"):
            store.commit(replay, TOPIC, now_ms=1)
        assert store.outbox_depth()[0] == 1


@pytest.mark.parametrize(("caps", "reason", "evicted"), [
    ({"outbox_max_rows": 3}, "evicted_rows_cap", 2),
    ({"outbox_max_age_ms": 60}, "evicted_age", 3),  # at 200 ms: 0, 50, 100 are > 60 ms old
])
def test_outbox_eviction_is_counted(tmp_path: Path, caps: dict[str, int], reason: str,
                                    evicted: int) -> None:
    with Store(tmp_path / "s.db", batch_size=1, **caps) as store:
        chain = chain_of(store)
        for t in range(5):
            store.commit(make(chain, 1), TOPIC, now_ms=t * 50)  # rows at 0, 50, ..., 200 ms
        counts = store.counters()
        assert counts[reason] == evicted and counts["evicted_measurements"] == evicted
        assert store.outbox_depth()[0] == 5 - evicted
        assert [i.seq_first for i in store.outbox_pending(10)] == list(range(evicted + 1, 6))
        assert store.measurements_range(1, 5)[0].measurement.seq == 1  # records stay


def test_bytes_cap_and_retention(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", batch_size=1) as probe:
        probe.commit(make(chain_of(probe), 1), TOPIC, now_ms=0)
        row_bytes = probe.outbox_depth()[1]
    with Store(tmp_path / "t.db", batch_size=1, outbox_max_bytes=int(row_bytes * 2.5),
               measurements_max_rows=3) as store:
        chain = chain_of(store)
        for _ in range(6):
            store.commit(make(chain, 1), TOPIC, now_ms=0)
        rows, nbytes = store.outbox_depth()
        assert rows == 2 and nbytes <= row_bytes * 2.5
        counts = store.counters()
        assert counts["evicted_bytes_cap"] == 4 and counts["retention_evicted"] == 3
        assert store.seq_bounds() == (4, 6)
        assert store.last_chain_state()[0] == 6


def test_merkle_interval_and_proofs(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        signed = make(chain_of(store), 25, t0=0)
        store.commit(signed, TOPIC, now_ms=0)
        interval = store.close_interval(0, 20)
        assert interval is not None
        assert (interval.first_seq, interval.last_seq, interval.leaf_count) == (1, 20, 20)
        assert interval.root == merkle.root([sm.leaf for sm in signed[:20]])
        for seq in (1, 7, 20):
            root, proof = store.proof_for(seq)
            assert root == interval.root and merkle.verify(proof, root, signed[seq - 1].leaf)
        with pytest.raises(KeyError, match="no closed Merkle interval"):
            store.proof_for(21)
        assert store.close_interval(1000, 2000) is None


def test_upgrade_from_v1(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    db = Database(conn)
    assert migrate(db, path=str(path), target=1) == 1
    signed = make(MeasurementChain(gateway=KEY.address), 2)
    from gateway.measurement.wire import to_wire
    for sm in signed:
        m = sm.measurement
        conn.execute("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
                     [m.seq, m.device, m.time_ms, sm.leaf, sm.signature, to_wire(sm)])
    assert "merkle_roots" not in db.table_names()
    conn.close()
    with Store(path) as store:
        assert schema_version(store.db) == LATEST == 3
        assert store.last_chain_state() == (2, signed[-1].leaf)
        assert store.close_interval(0, 10**6) is not None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    from gateway.errors import ConfigError
    with pytest.raises(ConfigError, match="schema version 99"):
        Store(path)
