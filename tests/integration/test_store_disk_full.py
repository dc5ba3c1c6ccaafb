"""Issue 12, fault 2 (store and pipeline): a full disk or a refusing store file stops nothing.

Real SQLite makes the disk "full": `PRAGMA max_page_count` caps the file at its current size (SQLite
then answers SQLITE_FULL, "database or disk is full", exactly as on ENOSPC), and raising the cap
again is freeing space. A write lock held by a second connection (SQLITE_BUSY) refuses every write
path at once, including the ones that only delete. Expected behaviour (issue 12): every write path
raises our StoreError with a reason instead of a sqlite3 error (or, before the fix, "cannot
rollback - no transaction is active" masking it); nothing of a refused write is stored; the chain
goes on after the last committed seq once the store takes writes again.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import DrgwError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    MeasurementChain,
    ScaledReading,
    SignedMeasurement,
    measurement_domain,
    struct_hash,
)
from gateway.measurement.store import Store
from gateway.ops.sdnotify import PipelineProgress, StallLimits
from gateway.perception.readings import Quality, Reading, Sample
from tests.waits import until

KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
DOMAIN = measurement_domain()
TOPIC = "drgw/v1/gw/meas"
NO_CAP = 1073741823  # SQLite's default max_page_count


def records(store: Store, n: int, *, readings: int = 1) -> list[SignedMeasurement]:
    seq, leaf = store.last_chain_state()
    chain = MeasurementChain(gateway=KEY.address, last_seq=seq, last_hash=leaf)
    return [chain.next_signed(KEY, DOMAIN, device="meter", time_ms=1_000 * (seq + i + 1),
                              clock_synced=True,
                              readings=[ScaledReading(f"r{k}", i, "W", 0) for k in range(readings)])
            for i in range(n)]


def disk_full(store: Store) -> None:
    """No page beyond the file's current size: a write that needs a new page gets SQLITE_FULL."""
    assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")


def space_again(store: Store) -> None:
    store.db.execute(f"PRAGMA max_page_count = {NO_CAP}")


def test_a_full_disk_refuses_commits_and_requeues_cleanly_and_the_chain_goes_on(
        tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", batch_size=10) as store:
        first = records(store, 20)
        store.commit(first, TOPIC)
        depth, counters = store.outbox_depth(), store.counters()
        disk_full(store)
        big = records(store, 30, readings=40)  # overflow pages: it cannot fit in the pages there are
        with pytest.raises(DrgwError) as refused:
            store.commit(big, TOPIC)
        assert refused.value.reason == "disk_full" and "database or disk is full" in str(refused.value)
        assert store.disk_full and store.failure is not None and store.failure.operation == "commit"
        # nothing of the refused commit is stored, in memory or on disk
        assert store.last_chain_state() == (20, first[-1].leaf)
        assert store.seq_bounds() == (1, 20) and store.outbox_depth() == depth
        assert store.counters() == counters
        with pytest.raises(DrgwError, match="requeue failed: the disk is full"):
            for _ in range(20):  # the outbox page has some room left; a few resends fill it
                store.requeue(1, 20, TOPIC)
        space_again(store)
        store.commit(big, TOPIC)  # the same records: their seqs were never used
        assert not store.disk_full and store.failure is None
        assert store.last_chain_state() == (50, big[-1].leaf)
        stored = store.measurements_range(1, 50)
        assert [r.measurement.seq for r in stored] == list(range(1, 51))
        assert all(b.measurement.prev_hash == struct_hash(a.measurement)
                   for a, b in itertools.pairwise(stored))


def test_closing_a_merkle_interval_on_a_full_disk_is_refused_then_done(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.commit(records(store, 10), TOPIC)
        disk_full(store)
        # fill the free room inside the merkle_roots page with rows no interval rule can match
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for _ in range(10_000):
                store.db.execute("INSERT INTO merkle_roots (start_ms, end_ms, first_seq, last_seq, "
                                 "root, leaf_count) VALUES (0, 0, 0, 0, zeroblob(32), 0)")
        with pytest.raises(DrgwError) as refused:
            store.close_next_interval()
        assert refused.value.reason == "disk_full" and store.disk_full
        store.db.execute("DELETE FROM merkle_roots WHERE last_seq = 0")
        space_again(store)
        interval = store.close_next_interval()
        assert interval is not None and (interval.first_seq, interval.last_seq) == (1, 10)
        assert not store.disk_full


def test_a_locked_store_refuses_every_write_path_with_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path, batch_size=5) as store:
        store.commit(records(store, 10), TOPIC)
        pending = [row.id for row in store.outbox_pending(10)]
        counters = store.counters()
        store.db.execute("PRAGMA busy_timeout = 50")  # SQLite's wait for the lock, not ours
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        attempts: dict[str, Callable[[], object]] = {
            "commit": lambda: store.commit(records(store, 1), TOPIC),
            "outbox_ack": lambda: store.outbox_ack(pending),
            "expire": store.expire,
            "requeue": lambda: store.requeue(1, 10, TOPIC),
            "close_interval": store.close_next_interval,
        }
        for operation, attempt in attempts.items():
            with pytest.raises(DrgwError) as refused:
                attempt()
            assert (refused.value.reason, refused.value.operation) == ("busy", operation)
        assert store.counters() == counters  # health still reads them
        assert store.outbox_pending(10)[0].id == pending[0]  # and the publisher still reads rows
        other.execute("ROLLBACK")
        other.close()
        store.outbox_ack(pending)
        store.commit(records(store, 1), TOPIC)
        assert store.failure is None and store.outbox_depth()[0] == 1
        assert store.last_chain_state()[0] == 11


def sample(label: int, readings: int = 40) -> Sample:
    """A sample big enough that its record needs overflow pages; `label` is its time (s)."""
    return Sample(device="meter", time=float(label), poll=("fast",), readings=tuple(
        Reading(f"r{k}", float(k), "W", Quality.OK, float(label)) for k in range(readings)))


def test_the_pipeline_keeps_running_drops_the_oldest_samples_and_resumes(tmp_path: Path) -> None:
    """The measure loop on a full disk: no exception ends it, the batch it holds is kept, the queue
    behind it stays at its bound by dropping the oldest samples (counted, never signed), the
    watchdog keeps pinging, and once there is space again everything held is committed with the
    next seqs, with no gap and no seq used twice."""

    # imported here, not at the top: the bounded queue is new with the fix, and the store tests
    # above should fail on what they check (not on an import) when run against the code before it
    from gateway.agent.pipeline import MeasurementPipeline, SampleQueue

    async def main() -> None:
        store = Store(tmp_path / "s.db")
        queue = SampleQueue(maxsize=10)
        pipeline = MeasurementPipeline(
            key=KEY, domain=DOMAIN, topic=TOPIC, store=store, samples=queue, wake=asyncio.Event(),
            progress=PipelineProgress(limits=StallLimits(store_s=0.0), now=time.monotonic()),
            observer=None, states=None)
        task = asyncio.create_task(pipeline.run())
        for label in range(5):
            queue.put_nowait(sample(label))
        await until(lambda: store.last_chain_state()[0] == 5,
                    what="the first samples committed")
        disk_full(store)
        for label in (100, 101, 102):
            queue.put_nowait(sample(label))
        await until(lambda: pipeline.store_errors >= 1,
                    what="a commit refused")
        for label in range(200, 225):  # 25 samples into a queue of 10 while the batch waits
            queue.put_nowait(sample(label))
        assert queue.qsize() == 10 and queue.dropped == 15
        assert store.disk_full and not task.done()
        assert pipeline.stalled(time.monotonic() + 3600) is None  # a full disk is no stall
        space_again(store)
        await until(lambda: store.last_chain_state()[0] == 18,
                    what="the held samples committed")
        assert not task.done() and not store.disk_full
        task.cancel()
        stored = store.measurements_range(1, 18)
        store.close()
        assert [r.measurement.seq for r in stored] == list(range(1, 19))
        times = [r.measurement.time_ms // 1000 for r in stored]
        assert times == [*range(5), 100, 101, 102, *range(215, 225)]  # the oldest were dropped
        assert all(b.measurement.prev_hash == struct_hash(a.measurement)
                   for a, b in itertools.pairwise(stored))

    asyncio.run(main())
