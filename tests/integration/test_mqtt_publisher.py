"""Store-and-forward against a real mosquitto: every row arrives across a broker outage, in order,
acked only after PUBACK and in id order; backlog replay obeys its rate caps; idle never polls.

No test here asserts on wall time: the outage test waits for events (rows piling up while the broker
is away, the link back, the stream flowing again), and the rate cap is counted on the publisher's
own pacing clock (injected), so a loaded machine slows these tests down but cannot fail them. The
wall-clock figure of the cap is in bench/timing.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.network import payloads, topics
from gateway.network.link import Connection, MqttLink
from gateway.network.pacing import BackoffPolicy
from gateway.network.publisher import EventPublisher, HealthPublisher, Publisher, PublishLimits
from gateway.network.settings import LinkSettings
from gateway.testing.fake_outbox import MemoryOutbox
from tests.mosquitto import Broker, broker_fixture
from tests.waits import until

broker = pytest.fixture(broker_fixture())
persistent_broker = pytest.fixture(broker_fixture(persistence=True))

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
    """A subscriber that reconnects by itself and records every meas payload it receives.

    With `session` (a client id) it keeps a persistent session (clean_session false, QoS 1): what
    the broker accepts while the collector is away is queued for it, as for a real aggregator. The
    broker's persistence keeps that session across a broker restart.
    """

    def __init__(self, broker: Broker, topic: str, *, session: str | None = None) -> None:
        self.broker, self.topic, self.session = broker, topic, session
        self.seqs: list[int] = []
        self.ready = asyncio.Event()
        self.subscribed_ns = 0  # wall time of the last SUBACK

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port, identifier=self.session,
                                          clean_session=False if self.session else None) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed_ns = time.time_ns()
                    self.ready.set()
                    async for msg in client.messages:
                        self.seqs.extend(json.loads(bytes(msg.payload))["seqs"])  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.1)


def add_batch(outbox: MemoryOutbox, first: int, n: int) -> None:
    seqs = list(range(first, first + n))
    outbox.add(MEAS, json.dumps({"seqs": seqs}).encode(), seq_first=seqs[0], seq_last=seqs[-1])


def saved_since(broker: Broker, ns: int) -> bool:
    """Has mosquitto written its persistence file (it renames a complete one into place) since the
    wall time `ns`? File times come from a coarse clock that never runs ahead, so this errs late."""
    path = Path(broker.workdir) / "data" / "mosquitto.db"
    return path.exists() and path.stat().st_mtime_ns > ns


class Producer:
    """Adds one batch of 5 seqs to the outbox every 10 ms, as a busy meter would, until stopped."""

    def __init__(self, outbox: MemoryOutbox, wake: asyncio.Event) -> None:
        self.outbox, self.wake = outbox, wake
        self.seq = 0
        self.running = True

    async def run(self) -> None:
        while self.running:
            add_batch(self.outbox, self.seq, 5)
            self.seq += 5
            self.wake.set()
            await asyncio.sleep(0.01)  # pacing the producer, not waiting for anything


def test_every_seq_arrives_once_in_order_across_a_broker_outage(persistent_broker: Broker) -> None:
    """The collector's session is persistent and saved before the outage: after the broker comes
    back, rows the link republishes before the collector has reconnected are queued for it rather
    than lost. (With a clean session, whichever of link and collector reconnected first decided
    whether the test passed: under load the link sometimes won, and the seqs it published in between
    never reached the collector; the test then timed out waiting for them.)"""
    broker = persistent_broker

    async def main() -> None:
        outbox, wake = MemoryOutbox(), asyncio.Event()
        publisher = Publisher(store=outbox, wake=wake, limits=PublishLimits(window=8))
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-outage"),
                        gateway=GW, status=lambda: INFO, backoff=FAST)
        collector = Collector(broker, MEAS, session="collector-outage")
        producer = Producer(outbox, wake)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(collector.run()), tg.create_task(link.run([publisher]))]
            await asyncio.wait_for(collector.ready.wait(), 10)
            tasks.append(tg.create_task(producer.run()))
            # Mid-stream: rows flow, the publisher keeps up, and the broker has the session on disk.
            await until(lambda: len(collector.seqs) >= 100 and outbox.outbox_depth()[0] < 20
                        and saved_since(broker, collector.subscribed_ns),
                        what="the stream flowing and the collector's session saved")
            sessions, killed_at = link.sessions, producer.seq
            await asyncio.to_thread(broker.kill)
            # Rows keep coming while the broker is away: the outbox holds them.
            await until(lambda: outbox.outbox_depth()[0] > 100, what="rows piling up in the outbox")
            assert not link.connected.is_set()
            await asyncio.to_thread(broker.start)
            restarted_at = producer.seq
            await until(lambda: link.sessions > sessions and max(collector.seqs) >= restarted_at,
                        what="the link back and rows produced after the restart delivered")
            producer.running = False
            await until(lambda: len(set(collector.seqs)) == producer.seq
                        and not outbox.outbox_depth()[0], what="every seq delivered", timeout=60,
                        detail=lambda: f"{producer.seq - len(set(collector.seqs))} seq(s) missing")
            for t in tasks:
                t.cancel()
        seq = producer.seq
        assert 0 < killed_at < restarted_at < seq, "the outage was not mid-stream"
        first_seen = list(dict.fromkeys(collector.seqs))
        assert first_seen == list(range(seq)), "a seq is missing or out of order"
        assert link.sessions >= 2
        assert outbox.acks == sorted(outbox.acks), "rows were acked out of order"
        assert len(outbox.acks) == len(set(outbox.acks)) == seq // 5

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())


class PacingClock:
    """The publisher's pacing clock, moved only by the publisher's own waits: the caps are counted
    in the seconds the token buckets think have passed, whatever the machine's load.

    Each wait records (clock, messages published so far). Between two waits no pacing time passes,
    so the count at a wait is the most the caps let through by that time.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.ticks: list[tuple[float, int]] = []
        self.published = lambda: 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.ticks.append((self.now, self.published()))
        # A real clock moves on by a microsecond or more per wait; so must this one, or a wait for
        # a rounding error's worth of a token (1e-18 s) would leave it standing still for ever.
        self.now += max(seconds, 1e-6)
        await asyncio.sleep(0)  # the rest of the loop (PUBACKs, the collector) runs meanwhile


def test_backlog_replay_obeys_the_message_rate_cap_and_idle_does_not_poll(broker: Broker) -> None:
    limits = PublishLimits(messages_per_s=100, burst_messages=10, window=4, batch_rows=16)
    clock = PacingClock()
    paced: list[float] = []  # the pacing time the backlog took

    async def main() -> None:
        outbox, wake = CountingOutbox(), asyncio.Event()
        for i in range(120):
            add_batch(outbox, i, 1)
        publisher = Publisher(store=outbox, wake=wake, limits=limits, clock=clock, sleep=clock.sleep)
        clock.published = lambda: publisher.published
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-rate"),
                        gateway=GW, status=lambda: INFO, backoff=FAST)
        collector = Collector(broker, MEAS)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(collector.run())]
            await asyncio.wait_for(collector.ready.wait(), 10)
            tasks.append(tg.create_task(link.run([publisher])))
            await asyncio.wait_for(publisher.flushed(), 30)
            paced.append(clock.now)
            reads, ticks = outbox.reads, len(clock.ticks)
            # Idle: nothing wakes the publisher for a while, so it neither reads nor paces.
            await asyncio.sleep(1.0)  # an observation window for a negative claim, not a wait
            assert outbox.reads == reads, "the publisher polled an idle outbox"
            assert len(clock.ticks) == ticks
            add_batch(outbox, 120, 1)
            wake.set()
            await until(lambda: 120 in collector.seqs, what="the row added after the idle time")
            for t in tasks:
                t.cancel()
        assert list(dict.fromkeys(collector.seqs)) == list(range(121))

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
    # At no time did more go than the burst plus the rate times the time since the first message.
    assert clock.ticks, "the cap never held a message back"
    for t, sent in clock.ticks:
        assert sent <= limits.burst_messages + limits.messages_per_s * t, (t, sent)
    # And the cap is not stricter than that: 10 in the burst, then the 110 others at 100/s, so
    # the publisher waited 1.1 s of pacing time in all (uncapped it would not wait at all).
    assert paced == [pytest.approx((120 - limits.burst_messages) / limits.messages_per_s, abs=1e-3)]
    assert clock.ticks[0][1] == limits.burst_messages


def test_health_and_events_reach_their_topics(broker: Broker) -> None:
    async def main() -> None:
        outbox = MemoryOutbox()
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-health"),
                        gateway=GW, status=lambda: INFO, backoff=FAST)
        health = HealthPublisher(link=link, counters=outbox, store=outbox, interval_s=0.2)
        events = EventPublisher(gw=GW, clock_ms=lambda: 5000, dr_state=True)
        events.publish_event({"type": "dr_window", "state": "announced"})  # queued while offline
        # two cycles that read different points, both before the session: the state has both
        events.publish_state("meter1", {"energy_import_total_wh": 98765.0}, time_ms=1000)
        events.publish_state("meter1", {"power_active_total_w": 11.0}, time_ms=2000)
        async with aiomqtt.Client(broker.host, broker.port) as sub:
            await sub.subscribe(f"drgw/v1/{GW}/#", qos=1)
            task = asyncio.create_task(link.run([health, events]))
            seen: dict[str, dict[str, object]] = {}
            async with asyncio.timeout(10):
                async for msg in sub.messages:
                    kind = str(msg.topic).split("/", 3)[3]
                    seen[kind] = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    if kind == "event":
                        events.publish_state("meter1", {"power_active_total_w": 12.5}, time_ms=3000)
                    if {"health", "event", "state/_gateway"} <= seen.keys() and \
                            seen.get("state/meter1", {}).get("ts") == 3000:
                        break
            link.stop()
            await task
        assert seen["event"]["state"] == "announced" and seen["event"]["gw"] == GW
        assert seen["health"]["counters"] == {"outbox_rows": 0, "outbox_bytes": 0,
                                              "outbox_acked": 0}
        # every point read so far, not only the last cycle's, and when the newest was measured
        assert seen["state/meter1"] == {"power_active_total_w": 12.5, "energy_import_total_wh": 98765.0,
                                        "ts": 3000}
        # [dr] with discovery: the gateway's DR figures start idle, every one of them present
        assert seen["state/_gateway"] == {"dr_state": "idle", "dr_event": None, "dr_award_w": None,
                                          "dr_delivered_wh": None, "dr_required_wh": None,
                                          "dr_projected_wh": None, "dr_verdict": None, "ts": 5000}

    asyncio.run(main())


def test_home_assistant_discovery_configs_are_retained(broker: Broker) -> None:
    from gateway.config.profiles import load_profile
    from gateway.network.discovery import Announced as discovery_of
    from gateway.network.discovery import Discovery

    class Announced(Discovery):
        """Discovery that says when its session's configs are all acknowledged by the broker."""

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.done = asyncio.Event()

        async def run_session(self, conn: Connection) -> None:
            await super().run_session(conn)
            self.done.set()

    async def main() -> None:
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-ha"),
                        gateway=GW, status=lambda: INFO, backoff=FAST)
        meters = [("meter1", load_profile("eastron_sdm630"))]
        discovery = Announced(gw=GW, announced=discovery_of(meters=meters))
        task = asyncio.create_task(link.run([discovery]))
        await asyncio.wait_for(discovery.done.wait(), 10)  # each publish returned on its PUBACK
        link.stop()
        await task
        configs: dict[str, dict[str, object]] = {}
        async with aiomqtt.Client(broker.host, broker.port) as sub:  # arrives later: retained
            await sub.subscribe("homeassistant/sensor/#", qos=1)
            async with asyncio.timeout(5):
                async for msg in sub.messages:
                    configs[str(msg.topic)] = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    if len(configs) == 11:  # the SDM630's points HA has a sensor for
                        break
        node = f"drgw_{GW[2:]}"
        power = configs[f"homeassistant/sensor/{node}/meter1_power_active_total_w/config"]
        energy = configs[f"homeassistant/sensor/{node}/meter1_energy_import_total_wh/config"]
        assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == (
            "power", "measurement", "W")
        assert (energy["device_class"], energy["state_class"]) == ("energy", "total_increasing")
        assert power["state_topic"] == f"drgw/v1/{GW}/state/meter1"
        assert power["device"]["manufacturer"] == "Eastron"  # the profile's vendor, not "drgw"
        assert power["default_entity_id"] == "sensor.meter1_12121212_power_active_total_w"

    asyncio.run(main())
