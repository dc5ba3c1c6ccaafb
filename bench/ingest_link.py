"""CPU of receiving one QoS 1 message in a master worker: aiomqtt/paho against the worker's own
MQTT 5 ingest connection (gateway/master/mqtt_ingest.py), both acknowledging each message once taken.

Run: .venv/bin/python bench/ingest_link.py [--messages 20000] [--size 3000] [--runs 3]
A mosquitto of its own on loopback; a publisher process sends every message at QoS 1; the figure is
the subscriber's own CPU (time.process_time) from the first message to the last, per message.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt

from gateway.master.mqtt import acknowledge, acknowledge_when_taken, connect_properties
from gateway.master.mqtt_ingest import ingest_session
from gateway.network.settings import LinkSettings
from tests.mosquitto import Broker

TOPIC, FILTER = "drgw/0x" + "ab" * 20 + "/meas", "$share/bench/drgw/+/meas"
PUBLISHER = r"""
import sys, paho.mqtt.client as m
c = m.Client(m.CallbackAPIVersion.VERSION2, protocol=m.MQTTv5)
c.max_inflight_messages_set(1000)
c.connect("127.0.0.1", int(sys.argv[1])); c.loop_start()
infos = [c.publish(sys.argv[2], b"x" * int(sys.argv[4]), qos=1) for _ in range(int(sys.argv[3]))]
for i in infos: i.wait_for_publish()
c.loop_stop()
"""


def publish(port: int, n: int, size: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), TOPIC, str(n), str(size)])


async def with_aiomqtt(port: int, n: int, size: int) -> float:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-aiomqtt",
                              protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
                              max_queued_incoming_messages=0,
                              properties=connect_properties()) as client:
        acknowledge_when_taken(client)
        await client.subscribe(FILTER, qos=1)
        pub, count, start = publish(port, n, size), 0, 0.0
        async for message in client.messages:
            start = start or time.process_time()
            acknowledge(client, message)
            count += 1
            if count == n:
                break
        used = time.process_time() - start
        pub.wait()
        return used / (n - 1)


async def with_own_link(port: int, n: int, size: int) -> float:
    done, subscribed, seen = asyncio.Event(), asyncio.Event(), [0.0, 0]

    async def deliver(topic: str, payload: bytes) -> None:
        seen[0] = seen[0] or time.process_time()
        seen[1] += 1
        if seen[1] == n:
            seen[0] = time.process_time() - seen[0]
            done.set()

    settings = LinkSettings.from_url(f"mqtt://127.0.0.1:{port}", client_id="bench-own")
    session = asyncio.create_task(ingest_session(settings, FILTER, deliver, receive_maximum=1000,
                                                 on_subscribed=subscribed.set))
    await subscribed.wait()
    pub = publish(port, n, size)
    await done.wait()
    session.cancel()
    pub.wait()
    return seen[0] / (n - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    clients: dict[str, Callable[[int, int, int], Awaitable[float]]] = {
        "aiomqtt/paho": with_aiomqtt, "own link": with_own_link}
    results: dict[str, list[float]] = {name: [] for name in clients}
    with tempfile.TemporaryDirectory() as tmp, Broker(Path(tmp) / "mosquitto") as broker:
        for _ in range(args.runs):
            for name, run in clients.items():  # alternating
                results[name].append(asyncio.run(run(broker.port, args.messages, args.size)))
    for name, values in results.items():
        shown = " ".join(f"{v * 1e6:.1f}" for v in values)
        print(f"{name:13s} {statistics.median(values) * 1e6:7.1f} us CPU a message "
              f"(median of {args.runs}: {shown}), {args.messages} x {args.size} B")
    ratio = statistics.median(results["aiomqtt/paho"]) / statistics.median(results["own link"])
    print(f"own link: {ratio:.1f}x less CPU a message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
