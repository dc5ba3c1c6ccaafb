"""A worker behind a backlog loses nothing: with its database busy, its ingest queue full and
hundreds of QoS 1 payloads still arriving, every record is stored once the database is back.

Before the flow control of gateway/master/mqtt.py, paho acknowledged each PUBLISH on arrival and
aiomqtt discarded what its bounded queue could not hold, so the broker counted as delivered
records the worker had dropped (bench/fleet.py, 20,000 one-record payloads: 3,333 lost).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiomqtt

from gateway.master.service import MasterService, build
from gateway.master.settings import load
from gateway.measurement.identity import GatewayKey
from gateway.measurement.wire import encode_batch
from gateway.ops.sdnotify import FakeNotifier, Watchdog
from gateway.testing.virtual_fleet import make_fleet
from tests.integration.master.chain_parts import rows
from tests.integration.master.conftest import MasterConfig
from tests.mosquitto import Broker
from tests.waits import until

QUEUE = 20  # the worker's ingest queue, far smaller than the backlog
PAYLOADS = 600  # one record each: 30 gateways x 20


def test_a_backlog_beyond_the_workers_queues_is_stored_whole(
        mqtt_broker: Broker, master_config: MasterConfig,
        operator: tuple[GatewayKey, Path]) -> None:
    config = master_config(mqtt_broker.url)
    fleet = make_fleet(30)
    payloads = [(g.gw, encode_batch([sm])) for g in fleet for sm in g.make(PAYLOADS // 30)]
    expected = {(g.gw, seq, leaf) for g in fleet for seq, leaf in g.made.items()}

    async def main() -> None:
        parts = build(load(config), worker="w1")
        service = MasterService(parts, queue_max=QUEUE, watchdog=Watchdog(
            notifier=FakeNotifier(), timeout_s=10.0, health=lambda now: None,
            status_line=lambda: ""))
        task = asyncio.create_task(service.run())
        await until(lambda: service.subscribed.is_set(), what="the worker to subscribe")
        released = threading.Event()
        busy = asyncio.ensure_future(parts.in_db(released.wait))  # the database is busy
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as client:
            for gw, payload in payloads:
                await client.publish(f"drgw/v1/{gw}/meas", payload, qos=1)
        # every payload is with the worker or held back by the broker: the ingest queue is full
        await until(lambda: service.queue.full(), what="the ingest queue to fill")
        released.set()
        await busy
        await until(lambda: len(rows(config, "SELECT 1 FROM measurements")) == PAYLOADS,
                    timeout=60, what=f"{PAYLOADS} records stored")
        service.stop()
        await task

    asyncio.run(main())
    stored = {(gw, int(seq), bytes(leaf)) for gw, seq, leaf in
              rows(config, "SELECT gw, seq, leaf FROM measurements")}
    assert stored == expected
    assert rows(config, "SELECT COUNT(*) FROM quarantine") == [(0,)]
