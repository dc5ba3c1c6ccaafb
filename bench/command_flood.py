"""The command topic under junk: what a flood and an oversized payload cost a gateway.

The gateway side is this process: the real MqttLink and CommandDispatcher (with the FakeAgent and
a SQLite nonce file) on a local mosquitto, as `drgw run` wires them.

1. flood   --junk unsigned junk messages (half envelopes without "sig", half bytes that are not
           JSON) published at once, with one signed write_point in the middle: seconds until the
           signed command is answered, junk handled per second, refusals answered and unanswered
           (the reply budget). Goal: the signed command is answered `ok`.
2. memory  a --mb MB payload on the cmd topic, published by a separate process (so its copy does
           not count here): the growth of this process' peak RSS (VmHWM, reset through
           /proc/self/clear_refs) until the next command is answered. Once with MQTT 5 (the broker
           drops the payload: Maximum Packet Size 64 KiB), once behind a broker that speaks only
           MQTT 3.1.1 (tests/mqtt311.py: the payload is delivered and refused as too_large
           without being parsed). Goal with MQTT 5: under 5 MB.

    .venv/bin/python bench/command_flood.py [--junk 5000] [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from gateway.clock import wall_ms  # noqa: E402
from gateway.measurement.identity import GatewayKey  # noqa: E402
from gateway.network import command as c  # noqa: E402
from gateway.network import payloads, topics  # noqa: E402
from gateway.network.dispatcher import CommandDispatcher  # noqa: E402
from gateway.network.link import MqttLink  # noqa: E402
from gateway.network.nonces import NonceCache  # noqa: E402
from gateway.network.settings import LinkSettings  # noqa: E402
from gateway.testing.fake_agent import FakeAgent  # noqa: E402
from tests.mosquitto import Broker  # noqa: E402

GW_KEY = GatewayKey.from_secret(bytes([5]) * 32)
GW = GW_KEY.address.lower()
OPERATOR = GatewayKey.from_secret(bytes([6]) * 32)
CMD = topics.topic(GW, topics.Kind.CMD)
REPLY = topics.topic(GW, topics.Kind.REPLY)

# The publisher of the big payload: its own process, so its copy of the payload is not ours.
PUBLISH_BIG = """
import asyncio, sys, aiomqtt
async def main():
    async with aiomqtt.Client("127.0.0.1", int(sys.argv[1]), identifier="big") as client:
        body = b'{"v":1,"id":"big","args":{"text":"' + b"x" * (int(sys.argv[3]) << 20) + b'"}}'
        await client.publish(sys.argv[2], body, qos=1, timeout=600)
asyncio.run(main())
"""


def signed(cmd: str, args: dict[str, Any], *, id: str) -> bytes:
    env = c.make(gw=GW, cmd=cmd, args=args, op=OPERATOR.address, id=id,
                 nonce="0x" + secrets.token_hex(16), exp_ms=wall_ms() + 5 * 60_000)
    return json.dumps(c.sign(env, OPERATOR.sign_digest)).encode()


def junk(i: int) -> bytes:
    if i % 2:
        return bytes([i % 251]) * (1 + i % 97)
    return json.dumps({"v": 1, "id": f"junk-{i}", "gw": GW, "cmd": "restart", "args": {},
                       "nonce": i, "exp": wall_ms() + 60_000, "op": OPERATOR.address.lower()}).encode()


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # proc(5): reset VmHWM to the current RSS


class Session:
    """A gateway (link + dispatcher) and an operator client, in this event loop."""

    def __init__(self, dispatcher: CommandDispatcher, client: aiomqtt.Client) -> None:
        self.dispatcher, self.client = dispatcher, client
        self.replies: dict[str, dict[str, Any]] = {}
        self.arrived = asyncio.Event()

    async def collect(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            body = json.loads(message.payload)
            self.replies[str(body["id"])] = body
            self.arrived.set()

    async def reply_to(self, cid: str, timeout: float = 120.0) -> dict[str, Any]:
        async def wait() -> None:
            while cid not in self.replies:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(wait(), timeout)
        return self.replies[cid]

    async def command(self, cmd: str, args: dict[str, Any], cid: str) -> dict[str, Any]:
        await self.client.publish(CMD, signed(cmd, args, id=cid), qos=1)
        return await self.reply_to(cid)


@contextlib.asynccontextmanager
async def session(url: str, broker: Broker, work: Path) -> AsyncIterator[Session]:
    dispatcher = CommandDispatcher(
        policy=c.CommandPolicy.build(gw=GW, operators=[OPERATOR.address]), agent=FakeAgent(),
        nonces=NonceCache(work / f"nonces-{secrets.token_hex(4)}.sqlite"),
        sign_digest=GW_KEY.sign_digest)
    link = MqttLink(settings=LinkSettings.from_url(url, client_id="bench-gw"), gateway=GW,
                    status=lambda: payloads.StatusInfo(version="bench", config_hash="-"))
    run = asyncio.create_task(link.run([dispatcher]))
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-operator") as client:
        await client.subscribe(REPLY, qos=1)
        s = Session(dispatcher, client)
        collect = asyncio.create_task(s.collect())
        for attempt in range(600):  # until the gateway has subscribed
            with contextlib.suppress(TimeoutError):
                await client.publish(CMD, signed("ping", {}, id=f"probe-{attempt}"), qos=1)
                await s.reply_to(f"probe-{attempt}", timeout=0.2)
                break
        try:
            yield s
        finally:
            collect.cancel()
            link.stop()
            await run


async def flood(url: str, broker: Broker, work: Path, n: int) -> None:
    async with session(url, broker, work) as s:
        d, before = s.dispatcher, dict(s.dispatcher.counts)
        messages = [junk(i) for i in range(n)]
        messages.insert(n // 2, signed("write_point", {"device": "ev1", "name": "current_limit_a",
                                                       "value": 16}, id="valid"))
        start = time.perf_counter()
        await asyncio.gather(*(s.client.publish(CMD, m, qos=1) for m in messages))
        reply = await s.reply_to("valid")
        answered_s = time.perf_counter() - start
        while d.counts["received"] - before["received"] < n + 1:
            await asyncio.sleep(0.01)
        handled_s = time.perf_counter() - start
        refused = d.counts["malformed"] - before["malformed"]
        unanswered = d.counts["unanswered"] - before["unanswered"]
        print(f"flood   {n} junk + 1 signed: signed command {'ok' if reply['ok'] else reply['error']}"
              f" after {answered_s:.2f} s; all handled in {handled_s:.2f} s "
              f"({n / handled_s:,.0f} junk/s); refused {refused}, answered {refused - unanswered}, "
              f"unanswered {unanswered}; busy {d.counts['busy'] - before['busy']}")


async def memory(label: str, url: str, broker: Broker, work: Path, mb: int) -> None:
    async with session(url, broker, work) as s:
        received = s.dispatcher.counts["received"]
        reset_peak_rss()
        base = peak_rss_bytes()
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISH_BIG, str(broker.port), CMD, str(mb))
        assert await publisher.wait() == 0, "the publisher of the big payload failed"
        reply = await s.command("ping", {}, "after-" + "".join(ch for ch in label if ch.isalnum()))
        growth = peak_rss_bytes() - base
        got = s.dispatcher.counts["received"] - received - 1
        big = s.replies.get("big")
        print(f"memory  {mb} MB payload, {label}: peak RSS +{growth / 1e6:.1f} MB; "
              f"delivered to the gateway: {'yes' if got else 'no'}"
              f"{'; reply ' + big['error']['code'] + ' id ' + str(big['id']) if big else ''}; "
              f"next command {'ok' if reply['ok'] else reply['error']}")


# The 3.1.1-only broker's front: its own process, so the bytes it relays are not ours either.
SERVE_FRONT = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from tests.mqtt311 import V311Front
class Upstream:
    host, port = "127.0.0.1", int(sys.argv[2])
async def main():
    async with V311Front(Upstream()).serving() as url:
        print(url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


async def main_async(args: argparse.Namespace, broker: Broker, work: Path) -> None:
    await flood(broker.url, broker, work, args.junk)
    await memory("MQTT 5", broker.url, broker, work, args.mb)
    front = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE_FRONT, str(ROOT), str(broker.port),
        stdout=asyncio.subprocess.PIPE)
    try:
        assert front.stdout is not None
        url = (await front.stdout.readline()).decode().strip()
        await memory("MQTT 3.1.1 broker", url, broker, work, args.mb)
    finally:
        front.kill()
        await front.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junk", type=int, default=5000)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Broker(Path(tmp) / "mosquitto") as broker:
        asyncio.run(main_async(args, broker, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
