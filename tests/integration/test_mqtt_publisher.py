"""Store-and-forward against a real mosquitto: every row arrives across a broker outage, in order,
acked only after PUBACK and in id order; backlog replay obeys its rate caps; idle never polls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiomqtt
import pytest

from gateway.network import payloads, topics
from gateway.network.link import MqttLink
from gateway.network.pacing import BackoffPolicy
from gateway.network.publisher import EventPublisher, HealthPublisher, Publisher, PublishLimits
from gateway.network.settings import LinkSettings
from gateway.testing.fake_outbox import MemoryOutbox
from tests.mosquitto import Broker, broker_fixture

broker = pytest.fixture(broker_fixture())

GW = "0x" + "12" * 20
MEAS = topics.topic(GW, topics.Kind.MEAS)
INFO = payloads.StatusInfo(version="t", config_hash="h")
FAST = BackoffPolicy(base_s=0.05, cap_s=0.5, stable_s=5)


class CountingOutbox(MemoryOutbox):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def outbox_pending(self, limit: int) -> list:  # type: ignore[type-arg]
        self.reads += 1
        return super().outbox_pending(limit)


class Collector:
    """A subscriber that reconnects by itself and records every meas payload it receives."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.broker, self.topic = broker, topic
        self.seqs: list[int] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for msg in client.messages:
                        self.seqs.extend(json.loads(bytes(msg.payload))["seqs"])  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.1)


def add_batch(outbox: MemoryOutbox, first: int, n: int) -> None:
    seqs = list(range(first, first + n))
    outbox.add(MEAS, json.dumps({"seqs": seqs}).encode(), seq_first=seqs[0], seq_last=seqs[-1])


def test_every_seq_arrives_once_in_order_across_a_broker_outage(broker: Broker) -> None:
    async def main() -> None:
        outbox, wake = MemoryOutbox(), asyncio.Event()
        publisher = Publisher(store=outbox, wake=wake, limits=PublishLimits(window=8))
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-outage"),
                        gateway=GW, status=lambda: INFO, backoff=FAST)
        collector = Collector(broker, MEAS)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(collector.run()), tg.create_task(link.run([publisher]))]
            await asyncio.wait_for(collector.ready.wait(), 10)
            seq, deadline_outage = 0, None
            start = time.monotonic()
            # produce 5 seqs every 10 ms for 7 s, and on until the broker is back (on a loaded
            # machine the kill itself can end late enough to push the restart past 7 s)
            while time.monotonic() - start < 7.0 or not broker.running:
                add_batch(outbox, seq, 5)
                seq += 5
                wake.set()
                if deadline_outage is None and time.monotonic() - start > 1.5:
                    await asyncio.to_thread(broker.kill)  # mid-stream, for 3 s
                    deadline_outage = time.monotonic() + 3.0
                    assert outbox.outbox_depth()[0] < 20
                if deadline_outage and time.monotonic() > deadline_outage and not broker.running:
                    # rows kept piling up while the broker was away: the outbox held them
                    assert outbox.outbox_depth()[0] > 100
                    await asyncio.to_thread(broker.start)
                await asyncio.sleep(0.01)
            async with asyncio.timeout(20):
                while len(set(collector.seqs)) < seq or outbox.outbox_depth()[0]:
                    await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()
        first_seen = list(dict.fromkeys(collector.seqs))
        assert first_seen == list(range(seq)), "a seq is missing or out of order"
        assert link.sessions >= 2
        assert outbox.acks == sorted(outbox.acks), "rows were acked out of order"
        assert len(outbox.acks) == len(set(outbox.acks)) == seq // 5

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())


def test_backlog_replay_obeys_the_message_rate_cap_and_idle_does_not_poll(broker: Broker) -> None:
    async def main() -> None:
        outbox, wake = CountingOutbox(), asyncio.Event()
        for i in range(120):
            add_batch(outbox, i, 1)
        limits = PublishLimits(messages_per_s=100, burst_messages=10, window=4, batch_rows=16)
        publisher = Publisher(store=outbox, wake=wake, limits=limits)
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-rate"),
                        gateway=GW, status=lambda: INFO, backoff=FAST)
        collector = Collector(broker, MEAS)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(collector.run())]
            await asyncio.wait_for(collector.ready.wait(), 10)
            start = time.monotonic()
            tasks.append(tg.create_task(link.run([publisher])))
            await asyncio.wait_for(publisher.flushed(), 10)
            elapsed = time.monotonic() - start
            # 10 in the burst, 110 more at 100/s: at least 1.1 s; uncapped this takes ~50 ms
            assert elapsed >= 1.0, elapsed
            reads = outbox.reads
            await asyncio.sleep(1.0)
            assert outbox.reads == reads, "the publisher polled an idle outbox"
            add_batch(outbox, 120, 1)
            wake.set()
            async with asyncio.timeout(5):
                while 120 not in collector.seqs:
                    await asyncio.sleep(0.02)
            for t in tasks:
                t.cancel()
        assert list(dict.fromkeys(collector.seqs)) == list(range(121))

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())


def test_health_and_events_reach_their_topics(broker: Broker) -> None:
    async def main() -> None:
        outbox = MemoryOutbox()
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-health"),
                        gateway=GW, status=lambda: INFO, backoff=FAST)
        health = HealthPublisher(link=link, counters=outbox, store=outbox, interval_s=0.2)
        events = EventPublisher(gw=GW)
        events.publish_event({"type": "dr_window", "state": "announced"})  # queued while offline
        async with aiomqtt.Client(broker.host, broker.port) as sub:
            await sub.subscribe(f"drgw/v1/{GW}/#", qos=1)
            task = asyncio.create_task(link.run([health, events]))
            seen: dict[str, dict[str, object]] = {}
            async with asyncio.timeout(10):
                async for msg in sub.messages:
                    kind = str(msg.topic).split("/", 3)[3]
                    seen[kind] = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    if kind == "event":
                        events.publish_state("meter1", {"power_active_total_w": 12.5})
                    if {"health", "event", "state/meter1"} <= seen.keys():
                        break
            link.stop()
            await task
        assert seen["event"]["state"] == "announced" and seen["event"]["gw"] == GW
        assert seen["health"]["counters"] == {"outbox_rows": 0, "outbox_bytes": 0,
                                              "outbox_acked": 0}
        assert seen["state/meter1"] == {"power_active_total_w": 12.5}

    asyncio.run(main())


def test_home_assistant_discovery_configs_are_retained(broker: Broker) -> None:
    from gateway.network.discovery import Discovery

    async def main() -> None:
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-ha"),
                        gateway=GW, status=lambda: INFO, backoff=FAST)
        task = asyncio.create_task(link.run([Discovery(gw=GW, devices=[("meter1", "sdm630")])]))
        await asyncio.wait_for(link.connected.wait(), 10)
        await asyncio.sleep(0.3)
        link.stop()
        await task
        configs: dict[str, dict[str, object]] = {}
        async with aiomqtt.Client(broker.host, broker.port) as sub:  # arrives later: retained
            await sub.subscribe("homeassistant/sensor/#", qos=1)
            async with asyncio.timeout(5):
                async for msg in sub.messages:
                    configs[str(msg.topic)] = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    if len(configs) == 2:
                        break
        node = f"drgw_{GW[2:]}"
        power = configs[f"homeassistant/sensor/{node}/meter1_power_active_total_w/config"]
        energy = configs[f"homeassistant/sensor/{node}/meter1_energy_import_total_wh/config"]
        assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == (
            "power", "measurement", "W")
        assert (energy["device_class"], energy["state_class"]) == ("energy", "total_increasing")
        assert power["state_topic"] == f"drgw/v1/{GW}/state/meter1"

    asyncio.run(main())
