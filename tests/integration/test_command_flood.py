"""The command topic under junk (issue 12, fault 7), against a real mosquitto: a gateway's MqttLink
and CommandDispatcher (with the FakeAgent) in the test's event loop, an operator client beside it.

- 5,000 unsigned junk messages with one signed command in the middle: the command runs and is
  answered `ok`; the junk is counted, and only the reply budget's worth of it is answered.
- A payload over the command limit is refused as `too_large` before any parsing (it is not even
  JSON) and the reply carries its id; one over the link's packet limit (50 MB) is dropped by the
  broker (MQTT 5 Maximum Packet Size) and never reaches the gateway.
- A broker that speaks only MQTT 3.1.1 (a front that refuses v5 CONNECTs the way MQTT 3.1.1
  section 3.1.2.2 says, in front of mosquitto): the link falls back and commands still work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.clock import wall_ms
from gateway.measurement.identity import GatewayKey
from gateway.network import command as c
from gateway.network import payloads, topics
from gateway.network.dispatcher import CommandDispatcher, ReplyBudget
from gateway.network.link import MqttLink
from gateway.network.nonces import NonceCache
from gateway.network.pacing import BackoffPolicy
from gateway.network.settings import LinkSettings
from gateway.testing.fake_agent import FakeAgent
from tests.mosquitto import Broker, broker_fixture
from tests.mqtt311 import V311Front
from tests.waits import until

broker = pytest.fixture(broker_fixture())

GW_KEY = GatewayKey.from_secret(bytes([5]) * 32)
GW = GW_KEY.address.lower()
OPERATOR = GatewayKey.from_secret(bytes([6]) * 32)
CMD = topics.topic(GW, topics.Kind.CMD)
REPLY = topics.topic(GW, topics.Kind.REPLY)
INFO = payloads.StatusInfo(version="9.9.9", config_hash="c0ffee")
BUDGET = ReplyBudget(burst=10, per_s=1.0)
TIMEOUT = 60.0


def signed(cmd: str, args: dict[str, Any], *, id: str) -> bytes:
    env = c.make(gw=GW, cmd=cmd, args=args, op=OPERATOR.address, id=id,
                 nonce="0x" + secrets.token_hex(16), exp_ms=wall_ms() + 5 * 60_000)
    return json.dumps(c.sign(env, OPERATOR.sign_digest)).encode()


def unsigned_junk(i: int) -> bytes:
    """Half envelopes without a signature, half bytes that are not JSON."""
    if i % 2:
        return bytes([i % 251]) * (1 + i % 97)
    return json.dumps({"v": 1, "id": f"junk-{i}", "gw": GW, "cmd": "restart", "args": {},
                       "nonce": i, "exp": wall_ms() + 60_000, "op": OPERATOR.address.lower()}).encode()


class Operator:
    """An operator's client: publishes on the cmd topic, collects replies by id."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.replies: dict[str, dict[str, Any]] = {}

    async def collect(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            body = json.loads(message.payload)
            self.replies[str(body["id"])] = body

    async def send(self, payload: bytes) -> None:
        await self.client.publish(CMD, payload, qos=1)

    async def reply_to(self, cid: str) -> dict[str, Any]:
        await until(lambda: cid in self.replies, what=f"the reply to {cid}", timeout=TIMEOUT)
        return self.replies[cid]

    async def probe(self) -> None:
        """Send pings until one is answered: the gateway is subscribed, and every earlier
        message it got has been handled (QoS 1 keeps order)."""
        for attempt in range(int(TIMEOUT / 0.5)):
            cid = f"probe-{attempt}"
            await self.send(signed("ping", {}, id=cid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reply_to(cid), 0.5)
                return
        raise AssertionError("the gateway never answered a ping")


@contextlib.asynccontextmanager
async def running(url: str, dispatcher: CommandDispatcher, port: int | None = None
                  ) -> AsyncIterator[tuple[MqttLink, Operator]]:
    settings = LinkSettings.from_url(url, client_id="gw-flood")
    link = MqttLink(settings=settings, gateway=GW, status=lambda: INFO,
                    backoff=BackoffPolicy(base_s=0.05, cap_s=0.5))
    run = asyncio.create_task(link.run([dispatcher]))
    try:
        async with aiomqtt.Client("127.0.0.1", port or settings.broker.port,
                                  identifier="operator") as client:
            await client.subscribe(REPLY, qos=1)
            operator = Operator(client)
            collect = asyncio.create_task(operator.collect())
            try:
                await operator.probe()
                yield link, operator
            finally:
                collect.cancel()
    finally:
        link.stop()
        await asyncio.wait_for(run, TIMEOUT)


def dispatcher(tmp: Path, agent: FakeAgent | None = None) -> CommandDispatcher:
    # The reply budget's clock stands still: exactly BUDGET.burst refusals are answered.
    return CommandDispatcher(
        policy=c.CommandPolicy.build(gw=GW, operators=[OPERATOR.address]), agent=agent or FakeAgent(),
        nonces=NonceCache(tmp / "nonces.sqlite"), sign_digest=GW_KEY.sign_digest, budget=BUDGET,
        monotonic=lambda: 0.0)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def test_a_signed_command_in_a_flood_of_junk_is_run_and_answered(broker: Broker, tmp_path: Path
                                                                  ) -> None:
    agent = FakeAgent()
    d = dispatcher(tmp_path, agent)

    async def main() -> None:
        async with running(broker.url, d) as (_, operator):
            before = dict(d.counts)
            valid = signed("write_point", {"device": "ev1", "name": "current_limit_a",
                                           "value": 16}, id="valid-1")
            flood = [unsigned_junk(i) for i in range(5000)]
            flood.insert(2500, valid)
            # all at once, as an attacker would (QoS 1 still keeps their order)
            await asyncio.gather(*(operator.send(payload) for payload in flood))
            reply = await operator.reply_to("valid-1")
            assert reply["ok"] is True, reply
            assert c.signer_of(reply) == GW
            assert agent.written[("ev1", "current_limit_a")] == 16
            await until(lambda: d.counts["malformed"] - before["malformed"] == 5000,
                        what="all 5,000 junk messages counted", timeout=TIMEOUT)
            assert d.counts["busy"] == before["busy"]
            assert d.counts["unanswered"] - before["unanswered"] == 5000 - BUDGET.burst
            assert d.counters()["commands_malformed"] == d.counts["malformed"]
            answered = [i for i in operator.replies if i.startswith("junk-")]
            assert len(answered) <= BUDGET.burst

    run(main)


def test_too_large_is_refused_unparsed_with_its_id_and_huge_never_arrives(
        broker: Broker, tmp_path: Path) -> None:
    d = dispatcher(tmp_path)

    async def main() -> None:
        async with running(broker.url, d) as (link, operator):
            # over the 16 KiB command limit, under the link's packet limit, and not JSON at all
            # past its id: parsing it would say `malformed`; the size check says `too_large`
            big = b'{"id":"big-1","v":1,"args":{"text":"' + b"\xff" * (c.MAX_BYTES + 1)
            assert len(big) < link.receive_max_bytes
            await operator.send(big)
            reply = await operator.reply_to("big-1")
            assert reply["error"]["code"] == "too_large" and reply["id"] == "big-1", reply
            assert d.counts["too_large"] == 1 and d.counts["malformed"] == 0

            received = d.counts["received"]
            huge = b'{"id":"huge-1","v":1,"args":{"text":"' + b"x" * (50 << 20) + b'"}}'
            await operator.send(huge)
            await operator.send(signed("ping", {}, id="after-huge"))
            assert (await operator.reply_to("after-huge"))["ok"] is True
            # QoS 1 keeps order: had the broker delivered the 50 MB payload, it came first
            assert d.counts["received"] == received + 1, "the broker delivered the huge payload"
            assert d.counts["too_large"] == 1 and "huge-1" not in operator.replies

    run(main)


def test_a_broker_without_mqtt5_gets_mqtt311_and_the_size_check_still_holds(
        broker: Broker, tmp_path: Path) -> None:
    d = dispatcher(tmp_path)
    front = V311Front(broker)

    async def main() -> None:
        async with front.serving() as url, running(url, d, port=broker.port) as (link, operator):
            assert front.levels[:2] == [5, 4] and link.protocol is aiomqtt.ProtocolVersion.V311
            big = b'{"v":1,"id":"big-2","args":{"text":"' + b"x" * (1 << 20) + b'"}}'
            await operator.send(big)  # nothing asks this broker to drop it: the gateway refuses it
            reply = await operator.reply_to("big-2")
            assert reply["error"]["code"] == "too_large" and reply["id"] == "big-2", reply
            await operator.send(signed("ping", {}, id="ping-311"))
            assert (await operator.reply_to("ping-311"))["ok"] is True

    run(main)
