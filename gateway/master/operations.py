"""Fleet operations over MQTT: list (roster), watch (stream checker), cmd (sign, send, await)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.clock import wall_ms
from gateway.errors import RemoteError
from gateway.master.mqtt import connect
from gateway.master.roster import GatewayRow, Roster
from gateway.master.watch import Finding, StreamChecker
from gateway.measurement.eip712 import Domain
from gateway.network import command as core
from gateway.network import topics
from gateway.network.payloads import dumps


def _payload(msg: aiomqtt.Message) -> bytes:
    p = msg.payload
    return p if isinstance(p, bytes) else str(p).encode()


async def _drain(client: aiomqtt.Client, seconds: float,
                 on: Callable[[str, bytes], bool | None]) -> None:
    """Feed messages to `on` for `seconds` (or until it returns True)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for msg in client.messages:
                if on(str(msg.topic), _payload(msg)):
                    return


async def fleet_list(url: str, *, wait_s: float, tls: Mapping[str, Path | None]
                     ) -> list[GatewayRow]:
    roster = Roster()
    async with connect(url, **tls) as client:  # type: ignore[arg-type]
        await client.subscribe(topics.fleet_filter(topics.Kind.STATUS), qos=1)
        await client.subscribe(topics.fleet_filter(topics.Kind.HEALTH), qos=0)
        await _drain(client, wait_s, lambda t, p: roster.feed(t, p, now_ms=wall_ms()))
    return roster.table()


async def fleet_watch(url: str, *, seconds: float, gateway: str | None, domain: Domain,
                      tls: Mapping[str, Path | None],
                      report: Callable[[Finding], None]) -> StreamChecker:
    checker = StreamChecker(domain)

    def on(topic: str, payload: bytes) -> None:
        parsed = topics.parse(topic)
        if parsed is not None and parsed.kind is topics.Kind.MEAS:
            for finding in checker.feed(parsed.gw, payload):
                report(finding)

    async with connect(url, **tls) as client:  # type: ignore[arg-type]
        await client.subscribe(topics.fleet_filter(topics.Kind.MEAS, gateway), qos=1)
        await _drain(client, seconds, on)
    return checker


async def fleet_cmd(url: str, *, gw: str, cmd: str, args: Mapping[str, Any],
                    sign_digest: Callable[[bytes], bytes], operator: str, timeout_s: float,
                    tls: Mapping[str, Path | None], lifetime_ms: int = 5 * 60_000
                    ) -> dict[str, Any]:
    """Sign and send one command; return the reply body (RemoteError on timeout)."""
    gw = topics.gw_id(gw)
    cid = secrets.token_hex(8)
    env = core.sign(core.make(gw=gw, cmd=cmd, args=args, op=operator, id=cid,
                              nonce="0x" + secrets.token_hex(16),
                              exp_ms=wall_ms() + lifetime_ms), sign_digest)
    reply: dict[str, Any] = {}

    def on(topic: str, payload: bytes) -> bool:
        with contextlib.suppress(ValueError):
            body = json.loads(payload)
            if isinstance(body, dict) and body.get("id") == cid:
                reply.update(body)
                return True
        return False

    async with connect(url, **tls) as client:  # type: ignore[arg-type]
        await client.subscribe(topics.topic(gw, topics.Kind.REPLY), qos=1)
        await client.publish(topics.topic(gw, topics.Kind.CMD), dumps(env), qos=1)
        await _drain(client, timeout_s, on)
    if not reply:
        raise RemoteError(f"no reply from gateway {gw} within {timeout_s:g} s to {cmd} (id {cid}):"
                          " is it online (`drgw fleet list`)? Raise --timeout for slow commands")
    if "sig" in reply:
        try:
            reply["signed_by_gateway"] = core.signer_of(reply) == gw
        except ValueError:
            reply["signed_by_gateway"] = False
    return reply
