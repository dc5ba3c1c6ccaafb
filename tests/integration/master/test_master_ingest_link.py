"""The worker's own MQTT 5 ingest connection against a real mosquitto (gateway/master/mqtt_ingest.py)."""

from __future__ import annotations

import asyncio

import aiomqtt

from gateway.master.mqtt_ingest import ingest_session
from gateway.network.settings import LinkSettings
from tests.mosquitto import Broker

GW = "0x" + "ab" * 20


def test_every_message_arrives_in_order_and_is_acknowledged(mqtt_broker: Broker) -> None:
    """Receive Maximum 5 and 60 QoS 1 messages: the broker sends a sixth only after a PUBACK
    (MQTT 5.0 §4.9), so all 60 arriving shows the acknowledgements flow."""
    payloads = [f"payload {i}".encode() * (1 + i % 7) for i in range(60)]
    got: list[tuple[str, bytes]] = []

    async def run() -> None:
        done, subscribed = asyncio.Event(), asyncio.Event()

        async def deliver(topic: str, payload: bytes) -> None:
            got.append((topic, payload))
            if len(got) == len(payloads):
                done.set()

        settings = LinkSettings.from_url(mqtt_broker.url, client_id="ingest-test")
        session = asyncio.create_task(ingest_session(
            settings, "$share/g/drgw/+/meas", deliver, receive_maximum=5,
            on_subscribed=subscribed.set))
        await asyncio.wait_for(subscribed.wait(), 10)
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port,
                                  protocol=aiomqtt.ProtocolVersion.V5) as publisher:
            for payload in payloads:
                await publisher.publish(f"drgw/{GW}/meas", payload, qos=1)
            await asyncio.wait_for(done.wait(), 20)
        session.cancel()

    asyncio.run(run())
    assert got == [(f"drgw/{GW}/meas", p) for p in payloads]
