"""The measurement pipeline against a local mosquitto: throughput, backlog drain, and `drgw run` cost.

1. pipeline  decode -> sign -> store -> publish on one core: register words of an SDM630's fast and
             normal points (float32 values typical of a home, VARIANTS cycles in turn) are decoded
             into readings, each sample becomes a signed EIP-712 record,
             records are committed to SQLite (WAL, synchronous=FULL) with their outbox batches, and
             the real Publisher sends them QoS 1 to mosquitto and acks rows after PUBACK. The figure
             is records/s from the first decode to the last PUBACK (and records per CPU second of
             this process, the figure a busy shared machine disturbs least). Next to it, the
             broker's own QoS 1 ceiling in the same run, from a bare aiomqtt client with the same
             in-flight window, two ways: (a) one message per record (payloads of one wire record),
             the per-measurement ceiling the 0.5 goal is read against; (b) payloads of one batch
             (BATCH records), x BATCH: the ceiling with batching, which shows the broker's headroom.
             After a warm-up pair that is not counted, the pipeline and ceiling (a) run in turn
             --rounds times; the median round is reported, with every round's ratio.
             Goals: >= 5,000/s and >= 0.5 of ceiling (a).
2. drain     a 100,000-record backlog is committed first (as after an outage), then the publisher
             connects: the rate at which the outbox empties (replay caps off). Goal >= 5,000/s.
3. agent     `drgw run` polling 10 simulated SDM630 meters (separate process) over TCP at 1 Hz, every
             poll class, --agent-runs fresh agents of --agent-seconds each after a warm-up
             (bench/agent_cost.py, which runs alone too): CPU-s per 1,000 readings (from /proc/<pid>/stat
             and the readings in the records stored meanwhile), fsyncs/s (the store's durable_commits
             counter, and every fsync/fdatasync traced by strace when it is installed), bytes written
             per day (/proc/<pid>/io write_bytes beside the store's bytes_committed), RSS; medians, each
             run with the 1-min load average. Goals: <= 0.033 CPU-s per 1,000 readings, <= 1 fsync/s,
             RSS <= 45 MB (no chain client is loaded).

    .venv/bin/python bench/pipeline.py [--records 20000] [--rounds 5] [--backlog 100000] [--agent-seconds 60]
                                       [--agent-runs 3] [--agent-entry cli|direct]

--agent-entry direct starts the agent without `gateway.cli` (which imports every command module to
build its parser): the difference between the two is what the CLI's eager imports cost the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config.profiles import load_profile  # noqa: E402
from gateway.device.device import DeviceSpec, DeviceState  # noqa: E402
from gateway.measurement.identity import GatewayKey  # noqa: E402
from gateway.measurement.record import MeasurementChain, measurement_domain  # noqa: E402
from gateway.measurement.store.database import Store  # noqa: E402
from gateway.measurement.wire import encode_batch, to_wire  # noqa: E402
from gateway.network import payloads, topics  # noqa: E402
from gateway.network.link import MqttLink  # noqa: E402
from gateway.network.publisher import Publisher, PublishLimits  # noqa: E402
from gateway.network.settings import LinkSettings  # noqa: E402
from gateway.perception.codec import encode_point  # noqa: E402
from gateway.perception.decoders import decode_read  # noqa: E402
from gateway.perception.planner import PlannedRead  # noqa: E402
from tests.mosquitto import Broker  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import agent_cost  # noqa: E402

BATCH = 50  # records per published batch, the agent's default


# What an SDM630's float32 registers read in a home, by unit: (low, high, decimals the meter shows).
TYPICAL = {"V": (228.0, 236.0, 2), "A": (0.2, 16.0, 3), "W": (40.0, 3600.0, 1), "VA": (60.0, 3700.0, 1),
           "var": (-400.0, 400.0, 1), "Hz": (49.95, 50.05, 2), "": (0.80, 1.0, 3)}
VARIANTS = 64  # distinct poll cycles, used in turn: no two consecutive records carry the same values


def responses(variants: int = VARIANTS) -> tuple[DeviceState, list[list[tuple[PlannedRead, list[int]]]]]:
    """Poll cycles of an SDM630 (fast + normal points): the planned reads and their words, with
    values drawn from TYPICAL (so they decode to float32 fractions such as 230.1699981689453, as
    real meters' do, not to integers)."""
    rng = random.Random(3)
    profile = load_profile("eastron_sdm630")
    state = DeviceState(DeviceSpec(name="main", profile=profile, unit=1))
    points = [p for p in profile.points if p.poll in ("fast", "normal")]
    reads = state.planner.plan(points).reads
    cycles = []
    for _ in range(variants):
        cycle = []
        for read in reads:
            words = [0] * read.count
            for point in read.points:
                low, high, decimals = TYPICAL[point.unit]
                start = point.address - read.address
                words[start:start + point.count] = encode_point(
                    point, round(rng.uniform(low, high), decimals))
            cycle.append((read, words))
        cycles.append(cycle)
    return state, cycles


def link_for(broker: Broker, key: GatewayKey) -> MqttLink:
    return MqttLink(settings=LinkSettings.from_url(broker.url, client_id="bench-gw"),
                    gateway=key.address,
                    status=lambda: payloads.StatusInfo(version="bench", config_hash="0"))


async def run_publisher(store: Store, broker: Broker, key: GatewayKey, wake: asyncio.Event,
                        produce: object = None) -> float:
    """Run link + publisher until the outbox is empty (after `produce` finished); seconds taken."""
    publisher = Publisher(store=store, wake=wake, limits=PublishLimits(
        messages_per_s=0, bytes_per_s=0, window=16, batch_rows=256))
    link = link_for(broker, key)
    started = time.perf_counter()
    task = asyncio.create_task(link.run([publisher]))
    if produce is not None:
        await produce  # type: ignore[misc]
    await link.connected.wait()
    await publisher.flushed()
    elapsed = time.perf_counter() - started
    link.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)
    return elapsed


async def pipeline(broker: Broker, tmp: Path, records: int) -> dict[str, float]:
    key = GatewayKey.generate()
    domain = measurement_domain(1)
    state, cycles = responses()
    tmp.mkdir(parents=True, exist_ok=True)
    store = Store(tmp / "pipe.db", batch_size=BATCH)
    chain = MeasurementChain(gateway=key.address)
    topic = topics.topic(topics.gw_id(key.address), topics.Kind.MEAS)
    wake = asyncio.Event()
    readings_per_record = 0
    batch_bytes: list[int] = []
    record_bytes: list[int] = []

    async def produce() -> None:
        nonlocal readings_per_record
        now = time.time()
        for start in range(0, records, BATCH):
            signed = []
            for i in range(start, min(start + BATCH, records)):
                readings = [r for read, words in cycles[i % VARIANTS]
                            for r in decode_read(state, read, words, now + i)]
                readings_per_record = len(readings)
                signed.append(chain.next_signed(key, domain, device="main",
                                                time_ms=int((now + i) * 1000), clock_synced=True,
                                                readings=readings))
            if not batch_bytes:
                batch_bytes.append(len(encode_batch(signed)))
                record_bytes.append(len(to_wire(signed[0])))
            store.commit(signed, topic)
            wake.set()
            await asyncio.sleep(0)  # let the publisher run on the same core

    cpu0 = time.process_time()
    elapsed = await run_publisher(store, broker, key, wake, produce())
    cpu = time.process_time() - cpu0
    counters = store.counters()
    store.close()
    return {"records": records, "seconds": elapsed, "records_per_s": records / elapsed,
            "cpu_s": cpu, "readings_per_record": readings_per_record,
            "batches": counters.get("outbox_batches", 0),
            "batch_bytes": float(batch_bytes[0]), "record_bytes": float(record_bytes[0])}


async def broker_ceiling(broker: Broker, payload_bytes: int, messages: int) -> float:
    """A bare aiomqtt client: QoS 1 publishes with 16 in flight; messages per second."""
    import logging

    import aiomqtt

    payload = b"x" * payload_bytes
    quiet = logging.getLogger("bench.ceiling")  # aiomqtt warns about every queued publish
    quiet.setLevel(logging.ERROR)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-ceiling",
                              logger=quiet) as client:
        sem = asyncio.Semaphore(16)

        async def one() -> None:
            async with sem:
                await client.publish("bench/ceiling", payload, qos=1)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(messages)))
        return messages / (time.perf_counter() - started)


async def drain(broker: Broker, tmp: Path, backlog: int) -> dict[str, float]:
    key = GatewayKey.generate()
    domain = measurement_domain(1)
    store = Store(tmp / "drain.db", batch_size=BATCH, outbox_max_rows=0, outbox_max_bytes=0)
    chain = MeasurementChain(gateway=key.address)
    topic = topics.topic(topics.gw_id(key.address), topics.Kind.MEAS)
    state, cycles = responses()
    now = time.time()
    samples = [[r for read, words in cycle for r in decode_read(state, read, words, now)]
               for cycle in cycles]
    for start in range(0, backlog, 500):
        store.commit([chain.next_signed(key, domain, device="main", time_ms=int(now * 1000) + i,
                                        clock_synced=True, readings=samples[i % VARIANTS])
                      for i in range(start, min(start + 500, backlog))], topic)
    rows, nbytes = store.outbox_depth()
    elapsed = await run_publisher(store, broker, key, asyncio.Event())
    store.close()
    return {"backlog": backlog, "rows": rows, "bytes": nbytes, "seconds": elapsed,
            "records_per_s": backlog / elapsed}


def report_pipeline(broker: Broker, tmp: Path, records: int, rounds: int) -> None:
    """Pipeline and ceiling (a) measured in turn, `rounds` times: on a shared machine the load
    changes by the second, so each ratio is taken from a pipeline run and the ceiling run right
    after it, and the median round is the figure."""
    # A warm-up pair, not counted: the agent runs for months, and the first round also pays for
    # filling caches (Reading frames, compiled decoders, the broker's session) once per process.
    w = asyncio.run(pipeline(broker, tmp / "warmup", 5_000))
    asyncio.run(broker_ceiling(broker, int(w["record_bytes"]), 5_000))
    print(f"  warm-up (not counted): {w['records_per_s']:,.0f} records/s")
    results = []
    for i in range(rounds):
        p = asyncio.run(pipeline(broker, tmp / f"round{i}", records))
        single = asyncio.run(broker_ceiling(broker, int(p["record_bytes"]), 20_000))
        rate = p["records_per_s"]
        results.append((rate / single, rate, single, p))
        print(f"  round {i + 1}: {p['records']:.0f} records ({p['readings_per_record']:.0f} readings "
              f"each) in {p['seconds']:.2f} s = {rate:,.0f} records/s, "
              f"{p['records'] / p['cpu_s']:,.0f} per CPU s; ceiling (a) {single:,.0f} msgs/s; "
              f"ratio {rate / single:.2f}")
    ratio, rate, single, p = sorted(results, key=lambda r: r[0])[len(results) // 2]
    batched = asyncio.run(broker_ceiling(broker, int(p["batch_bytes"]), 2000))
    print(f"pipeline (median of {rounds} rounds by ratio): {rate:,.0f} records/s (goal 5,000); "
          f"{p['records'] / p['cpu_s']:,.0f} records per CPU s; slowest round "
          f"{min(r[1] for r in results):,.0f} records/s")
    print(f"  broker QoS 1 ceiling (a), one record per message: {single:,.0f} msgs/s of "
          f"{p['record_bytes']:.0f} B; ratio {ratio:.2f} (goal 0.5); rounds "
          + ", ".join(f"{r[0]:.2f}" for r in results))
    print(f"  broker QoS 1 ceiling (b), batch payloads: {batched:,.0f} msgs/s of "
          f"{p['batch_bytes']:.0f} B = {batched * BATCH:,.0f} records/s; "
          f"ratio {rate / (batched * BATCH):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="pipeline/ceiling pairs (median)")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--agent-seconds", type=float, default=60.0)
    parser.add_argument("--agent-runs", type=int, default=3, help="fresh agents measured (median)")
    parser.add_argument("--agent-entry", choices=["cli", "direct"], default="cli")
    parser.add_argument("--skip", action="append", default=[], choices=["pipeline", "drain", "agent"])
    args = parser.parse_args()
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt warns at > 10 publishes in flight
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        with Broker(tmp / "mosquitto") as broker:
            if "pipeline" not in args.skip:
                report_pipeline(broker, tmp, args.records, args.rounds)
        with Broker(tmp / "mosquitto2") as broker:
            if "drain" not in args.skip:
                d = asyncio.run(drain(broker, tmp, args.backlog))
                print(f"drain: {d['backlog']:.0f} records in {d['rows']:.0f} batches "
                      f"({d['bytes'] / 1e6:.1f} MB) drained in {d['seconds']:.2f} s = "
                      f"{d['records_per_s']:,.0f} records/s (goal 5,000)")
        if "agent" not in args.skip:  # on a disk, not a tmpfs: fsyncs and write_bytes must be real
            with tempfile.TemporaryDirectory(dir=os.environ.get("DRGW_BENCH_DIR", "/var/tmp")) as where, \
                    Broker(Path(where) / "mosquitto") as broker:
                agent_cost.report(broker, Path(where), runs=args.agent_runs, seconds=args.agent_seconds,
                                  entry=args.agent_entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
