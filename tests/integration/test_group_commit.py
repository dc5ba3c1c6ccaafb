"""Group commit (issue 18): the samples of one poll cycle, from every device, in ONE transaction and so
one fsync; at most one commit per commit interval; nothing signed is lost when the agent stops while a
batch waits. A real SQLite store; the commits are counted by the outbox batches each one writes (the
store's older counter) and by the store's `durable_commits`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.agent.pipeline import MeasurementPipeline, SampleQueue
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import measurement_domain
from gateway.measurement.store import Store
from gateway.ops.sdnotify import PipelineProgress, StallLimits
from gateway.perception.readings import Quality, Reading, Sample
from tests.waits import until

KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
METERS = 10


def sample(device: str, t: float) -> Sample:
    return Sample(device=device, time=t, poll=("fast",), readings=tuple(
        Reading(f"r{k}", 230.0 + k, "V", Quality.OK, t) for k in range(31)))


def pipeline(store: Store, queue: SampleQueue, *, commit_interval_s: float,
             gather_s: float) -> MeasurementPipeline:
    return MeasurementPipeline(
        key=KEY, domain=measurement_domain(), topic="drgw/v1/gw/meas", store=store, samples=queue,
        wake=asyncio.Event(), observer=None, states=None,
        progress=PipelineProgress(limits=StallLimits(store_s=0.0), now=time.monotonic()),
        commit_interval_s=commit_interval_s, gather_s=gather_s)


def test_one_poll_cycle_of_ten_meters_is_one_commit(tmp_path: Path) -> None:
    """Ten meters answer a few ms apart (each on its own bus): one transaction takes them all."""

    async def main() -> None:
        with Store(tmp_path / "s.db", batch_size=100) as store:
            queue = SampleQueue()
            # the gather window is 40x the cycle's spread, so this holds on a busy machine too
            task = asyncio.create_task(pipeline(store, queue, commit_interval_s=1.0,
                                                gather_s=2.0).run())
            for i in range(METERS):
                queue.put_nowait(sample(f"m{i}", 1000.0))
                await asyncio.sleep(0.005)  # the next meter's reply arrives later
            await until(lambda: store.last_chain_state()[0] == METERS, what="the cycle committed",
                        timeout=60)
            task.cancel()
            counters = store.counters()
        assert counters["outbox_batches"] == 1  # one commit writes one batch of <= 100 records
        assert counters["durable_commits"] == 1  # and syncs once

    asyncio.run(main())


def test_a_sample_after_a_commit_waits_for_the_interval_and_stopping_commits_it(
        tmp_path: Path) -> None:
    async def main() -> None:
        with Store(tmp_path / "s.db") as store:
            queue = SampleQueue()
            pipe = pipeline(store, queue, commit_interval_s=3600.0, gather_s=0.0)
            task = asyncio.create_task(pipe.run())
            queue.put_nowait(sample("m0", 1.0))
            await until(lambda: store.last_chain_state()[0] == 1, what="the first sample committed")
            queue.put_nowait(sample("m0", 2.0))
            await until(queue.empty, what="the pipeline took the second sample")
            assert store.last_chain_state()[0] == 1  # held until the interval is over
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            pipe.drain()  # what the agent does when it stops
            assert store.last_chain_state()[0] == 2
            assert store.counters()["durable_commits"] == 2

    asyncio.run(main())


def test_the_reports_leaves_include_the_samples_still_waiting(tmp_path: Path) -> None:
    """The DR loop reads a window's leaves when the window ends: a sample measured inside it that
    still waits for its group commit must be under the Report's root, committed once, in order."""

    async def main() -> None:
        with Store(tmp_path / "s.db") as store:
            queue = SampleQueue()
            pipe = pipeline(store, queue, commit_interval_s=3600.0, gather_s=0.0)
            task = asyncio.create_task(pipe.run())
            queue.put_nowait(sample("m0", 1.0))
            await until(lambda: store.last_chain_state()[0] == 1, what="the first sample committed")
            queue.put_nowait(sample("m0", 2.0))  # held by the pipeline: the interval is not over
            queue.put_nowait(sample("m0", 3.0))  # still queued
            await until(lambda: queue.qsize() < 2, what="the pipeline took the second sample")
            assert [seq for seq, _ in store.interval_leaves(0, 10_000)] == [1]  # what it would miss
            leaves = pipe.committed_leaves(0, 10_000)
            assert [seq for seq, _ in leaves] == [1, 2, 3]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            pipe.drain()
            assert store.last_chain_state()[0] == 3  # nothing committed twice, nothing left
            assert [r.measurement.time_ms for r in store.measurements_range(1, 3)] == [1000, 2000, 3000]

    asyncio.run(main())
