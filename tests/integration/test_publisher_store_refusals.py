"""Issue 12, fault 2 (publisher): a store that refuses acks (disk full) must not end the MQTT session,
crash the agent, or make the publisher send the same rows again and again; the acks are written once
the store takes them, and publishing goes on.

A real mosquitto and the real MqttLink + Publisher; the store is gateway/testing's MemoryOutbox behind
our own OutboxStore interface, refusing acks and reads with the StoreError the SQLite store raises
(tests/integration/test_store_disk_full.py shows that store raising it on a really full file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

import aiomqtt
import pytest

from gateway.measurement.store import StoreError
from gateway.network import payloads, topics
from gateway.network.link import MqttLink
from gateway.network.pacing import BackoffPolicy
from gateway.network.publisher import Publisher, PublishLimits
from gateway.network.settings import LinkSettings
from gateway.testing.fake_outbox import MemoryOutbox, MemoryRow
from tests.mosquitto import Broker, broker_fixture
from tests.waits import until

broker = pytest.fixture(broker_fixture())

GW = "0x" + "34" * 20
MEAS = topics.topic(GW, topics.Kind.MEAS)
FAST = BackoffPolicy(base_s=0.05, cap_s=0.5, stable_s=5)
QUICK = PublishLimits(window=4, store_retry_s=0.05, store_retry_max_s=0.2)


class RefusingOutbox(MemoryOutbox):
    """Refuses acks while `full`, and the next `refuse_reads` reads, as a store on a full disk does."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.refused_acks = 0
        self.refuse_reads = 0

    def outbox_ack(self, ids: Sequence[int]) -> None:
        if self.full:
            self.refused_acks += 1
            raise StoreError("store s.db: outbox_ack failed: the disk is full (database or disk "
                             "is full)", reason="disk_full", operation="outbox_ack")
        super().outbox_ack(ids)

    def outbox_pending(self, limit: int) -> list[MemoryRow]:
        if self.refuse_reads:
            self.refuse_reads -= 1
            raise StoreError("store s.db: outbox_pending failed: I/O error (disk I/O error)",
                             reason="io_error", operation="outbox_pending")
        return super().outbox_pending(limit)


class Collector:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.seqs: list[int] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
            await client.subscribe(MEAS, qos=1)
            self.ready.set()
            async for msg in client.messages:
                self.seqs.extend(json.loads(bytes(msg.payload))["seqs"])


def add(outbox: MemoryOutbox, first: int, n: int) -> None:
    for seq in range(first, first + n):
        outbox.add(MEAS, json.dumps({"seqs": [seq]}).encode(), seq_first=seq, seq_last=seq)


def test_refused_acks_are_kept_and_written_later_without_a_resend_storm(broker: Broker) -> None:
    async def main() -> None:
        outbox, wake = RefusingOutbox(), asyncio.Event()
        publisher = Publisher(store=outbox, wake=wake, limits=QUICK)
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-full"),
                        gateway=GW, status=lambda: payloads.StatusInfo(version="t", config_hash="h"),
                        backoff=FAST)
        collector = Collector(broker)
        async with asyncio.TaskGroup() as tg:
            listen = tg.create_task(collector.run())
            await asyncio.wait_for(collector.ready.wait(), 10)
            run = tg.create_task(link.run([publisher]))
            outbox.full = True
            add(outbox, 1, 10)
            wake.set()
            # every row goes out once; the acks are refused, retried, refused again ...
            await until(lambda: len(collector.seqs) == 10 and outbox.refused_acks >= 4,
                        what="the rows published and their acks refused several times")
            sessions = link.sessions
            add(outbox, 11, 5)  # committed meanwhile: waits until the acks are written
            wake.set()
            await until(lambda: outbox.refused_acks >= 8,
                        what="more refused retries")
            assert sorted(collector.seqs) == list(range(1, 11)), "rows were sent again"
            assert outbox.outbox_depth()[0] == 15 and not run.done()
            assert link.connected.is_set() and link.sessions == sessions
            outbox.full = False  # space again
            await until(lambda: outbox.outbox_depth()[0] == 0,
                        what="every row acked")
            assert sorted(collector.seqs) == list(range(1, 16))
            outbox.refuse_reads = 3  # an unreadable outbox for a moment: a pause, no crash
            add(outbox, 16, 3)
            wake.set()
            await until(lambda: outbox.outbox_depth()[0] == 0 and len(collector.seqs) == 18,
                        what="the rows after the refused reads delivered")
            assert not run.done() and link.sessions == sessions
            assert publisher.ack_failures >= 8 + 3
            assert outbox.acks == list(range(1, 19))  # each row acked once, in order
            link.stop()
            await asyncio.wait_for(run, 10)
            listen.cancel()

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
