"""Virtual gateways for the master's tests and bench/fleet.py: real keys, real signed hash-chained
records in the real wire format, published on the real topics of one broker, and the gateway's side
of the `resend` command (envelope verified with the real `command.verify`, reply signed by the
gateway key, records republished on `meas` as the agent's store does).

What is virtual: the meters (readings are made up), the store (a dict; `evict()` drops the oldest
records as the agent's age/size limits do) and the connection (one MQTT client publishes for all the
gateways, so a thousand of them cost one socket). `hold()` makes a record that is never published
(a gap); `tampered()` and `foreign()` make forgeries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

import aiomqtt

from gateway.clock import wall_ms
from gateway.measurement.eip712 import Domain
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    MeasurementChain,
    ScaledReading,
    SignedMeasurement,
    measurement_domain,
    sign,
)
from gateway.measurement.wire import encode_batch
from gateway.network import command as core
from gateway.network import topics
from gateway.network.payloads import dumps


@dataclass
class VirtualGateway:
    key: GatewayKey
    domain: Domain
    chain: MeasurementChain = field(init=False)
    records: dict[int, SignedMeasurement] = field(default_factory=dict)  # the store (evictable)
    made: dict[int, bytes] = field(default_factory=dict)  # every record's struct hash, by seq
    resends: list[tuple[int, int, int]] = field(default_factory=list)  # (from, to, queued)

    def __post_init__(self) -> None:
        self.chain = MeasurementChain(gateway=self.key.address)

    @property
    def gw(self) -> str:
        return self.key.address.lower()

    def make(self, n: int, *, t0_ms: int = 1_700_000_000_000) -> list[SignedMeasurement]:
        """`n` new signed records (seq continues the chain), kept in the store."""
        out = []
        for _ in range(n):
            seq = self.chain.last_seq + 1
            readings = (ScaledReading("power_active_total_w", 1000 * (seq % 5000), "W", 0),
                        ScaledReading("energy_import_total_wh", 1000 * seq, "Wh", 0))
            sm = self.chain.next_signed(self.key, self.domain, device="meter", clock_synced=True,
                                        time_ms=t0_ms + 1000 * seq, readings=readings)
            self.records[sm.measurement.seq] = sm
            self.made[sm.measurement.seq] = sm.leaf
            out.append(sm)
        return out

    def evict(self, up_to_seq: int) -> None:
        for seq in [s for s in self.records if s <= up_to_seq]:
            del self.records[seq]

    def tampered(self, sm: SignedMeasurement) -> SignedMeasurement:
        """The record with one reading changed after signing (the signature no longer fits)."""
        m = sm.measurement
        first = m.readings[0]
        altered = replace(m, readings=(first._replace(value=first.value + 1), *m.readings[1:]),
                          readings_json=None)
        return SignedMeasurement(measurement=altered, signature=sm.signature, leaf=sm.leaf)

    def foreign(self, sm: SignedMeasurement, other: GatewayKey) -> SignedMeasurement:
        """A record naming this gateway, signed by someone else's key (an impostor)."""
        impostor = replace(sm.measurement, gateway=other.address, readings_json=None)
        signed = sign(impostor, other, self.domain)
        return SignedMeasurement(measurement=sm.measurement, signature=signed.signature,
                                 leaf=sm.leaf)


def make_fleet(n: int, *, domain: Domain | None = None) -> list[VirtualGateway]:
    d = domain or measurement_domain()
    return [VirtualGateway(GatewayKey.generate(), d) for _ in range(n)]


class FleetLink:
    """One MQTT session that publishes for every virtual gateway and answers their commands."""

    def __init__(self, gateways: Sequence[VirtualGateway], *, host: str, port: int,
                 operators: Sequence[str]) -> None:
        self.by_gw = {g.gw: g for g in gateways}
        self.host, self.port = host, port
        self.policies = {g.gw: core.CommandPolicy.build(gw=g.gw, operators=operators)
                         for g in gateways}
        self.nonces: set[tuple[str, str]] = set()
        self.client: aiomqtt.Client | None = None
        self.commands = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FleetLink]:
        async with aiomqtt.Client(self.host, self.port, identifier=f"vfleet-{id(self):x}",
                                  max_queued_outgoing_messages=1_000_000) as client:
            self.client = client
            await client.subscribe(topics.fleet_filter(topics.Kind.CMD), qos=1)
            task = asyncio.create_task(self._answer(client), name="vfleet-commands")
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self.client = None

    async def birth(self, g: VirtualGateway, *, online: bool = True, **extra: object) -> None:
        assert self.client is not None
        body = {"v": 1, "online": online, "gw": g.gw, "version": "virtual", "ts": wall_ms(),
                "config_hash": "0" * 64, "seq": g.chain.last_seq, "clock_synced": True, **extra}
        await self.client.publish(topics.topic(g.gw, topics.Kind.STATUS), dumps(body), qos=1,
                                  retain=True)

    async def publish(self, g: VirtualGateway, records: Sequence[SignedMeasurement]) -> None:
        assert self.client is not None
        await self.client.publish(topics.topic(g.gw, topics.Kind.MEAS), encode_batch(records),
                                  qos=1)

    async def _answer(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parsed = topics.parse(str(message.topic))
            g = None if parsed is None else self.by_gw.get(parsed.gw)
            if g is not None and isinstance(message.payload, bytes):
                await self._command(client, g, message.payload)

    async def _command(self, client: aiomqtt.Client, g: VirtualGateway, payload: bytes) -> None:
        """The agent's command path, cut to what resend needs (gateway/network/dispatcher.py)."""
        self.commands += 1
        try:
            cmd = core.verify(payload, self.policies[g.gw], now_ms=wall_ms())
            if (cmd.op, cmd.nonce) in self.nonces:
                raise core.CommandRejected(core.Code.REPLAYED, "nonce used", id=cmd.id)
            self.nonces.add((cmd.op, cmd.nonce))
            if cmd.cmd != "resend":
                raise core.CommandRejected(core.Code.UNKNOWN_COMMAND, cmd.cmd, id=cmd.id)
            lo, hi = int(cmd.args["seq_from"]), int(cmd.args["seq_to"])
            held = [g.records[s] for s in range(lo, hi + 1) if s in g.records]
            g.resends.append((lo, hi, len(held)))
            for i in range(0, len(held), 100):
                await self.publish(g, held[i:i + 100])
            body = core.reply(id=cmd.id, gw=g.gw, result={"queued": len(held), "seq_from": lo,
                                                          "seq_to": hi})
        except core.CommandRejected as exc:
            body = core.reply(id=exc.id or _peek(payload), gw=g.gw, error=exc)
        await client.publish(topics.topic(g.gw, topics.Kind.REPLY),
                             dumps(core.sign(body, g.key.sign_digest)), qos=1)


def _peek(payload: bytes) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        value = json.loads(payload).get("id")
        return value if isinstance(value, str) else None
    return None
