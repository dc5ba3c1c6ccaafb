"""The master station end to end on real parts: mosquitto with shared subscriptions, two master
workers, SQLite and a real PostgreSQL, and virtual gateways (gateway/testing/virtual_fleet.py: real
keys, real signed batches in the wire format, the gateway's side of `resend` with the real command
verification and signed replies).

The expected records are the virtual gateways' own signed records (made by MeasurementChain, not by
the master), so "stored once" is checked against an independent source: every (gw, seq) the
gateways made and did not evict is in the database exactly once, with the struct hash it was signed
with; the forgeries are in quarantine and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.master.service import MasterService, build
from gateway.master.settings import load
from gateway.measurement.identity import GatewayKey
from gateway.ops.sdnotify import FakeNotifier, Watchdog
from gateway.testing.virtual_fleet import FleetLink, VirtualGateway, make_fleet
from tests.integration.master.chain_parts import rows as _query
from tests.integration.master.conftest import MasterConfig
from tests.mosquitto import Broker
from tests.waits import until


@contextlib.asynccontextmanager
async def workers(config: Path, names: list[str]) -> AsyncIterator[list[MasterService]]:
    """Master workers in this event loop, each with its own database connection and session."""
    services = []
    for name in names:
        parts = build(load(config), worker=name)
        service = MasterService(parts, watchdog=Watchdog(notifier=FakeNotifier(), timeout_s=10.0,
                                                         health=lambda now: None,
                                                         status_line=lambda: ""))
        services.append(service)
    tasks = [asyncio.create_task(s.run(), name=f"master-{n}") for s, n in zip(services, names,
                                                                                strict=True)]
    try:
        await until(lambda: all(s.subscribed.is_set() for s in services) or
                    any(t.done() for t in tasks), what="the workers to subscribe")
        for t in tasks:
            if t.done():
                t.result()
        yield services
    finally:
        for s in services:
            s.stop()
        await asyncio.gather(*tasks)


def _expected(gateways: list[VirtualGateway], *, lost: tuple[tuple[str, int], ...] = ()
              ) -> set[tuple[str, int, bytes]]:
    """Every record the gateways signed, less those `lost` (evicted before anyone received them)."""
    return {(g.gw, seq, leaf) for g in gateways for seq, leaf in g.made.items()
            if (g.gw, seq) not in lost}


def _stored(config: Path) -> list[tuple[str, int, bytes]]:
    return [(gw, int(seq), bytes(leaf)) for gw, seq, leaf in
            _query(config, "SELECT gw, seq, leaf FROM measurements")]


async def _scenario(link: FleetLink, fleet: list[VirtualGateway], impostor: GatewayKey) -> None:
    """A: a gap (11..15 never published). B: seq 7 altered after signing. C: everything twice,
    and seq 21 signed by an impostor. D: a gap (5..8) whose first half the gateway evicted.
    E: its first batch (1..3) lost after its birth said it starts from seq 0."""
    a, b, c, d, e = fleet
    for g in fleet:
        await link.birth(g)
    records = a.make(30)
    for i in range(0, 30, 5):
        if i != 10:
            await link.publish(a, records[i:i + 5])
    records = b.make(20)
    await link.publish(b, [*records[:6], b.tampered(records[6]), *records[7:]])
    records = c.make(25)
    for chunk in (records[:10], records[10:20], records[:10]):
        await link.publish(c, chunk)
    await link.publish(c, [c.foreign(records[20], impostor), *records[21:]])
    records = d.make(20)
    await link.publish(d, records[:4])
    d.evict(6)
    await link.publish(d, records[8:])
    await link.publish(e, e.make(10)[3:])


def test_fleet_with_gap_forgery_and_eviction_ends_complete(
        mqtt_broker: Broker, master_config: MasterConfig, operator: tuple[GatewayKey, Path]) -> None:
    config = master_config(mqtt_broker.url)
    fleet = make_fleet(5)
    impostor = GatewayKey.generate()
    evicted = ((fleet[3].gw, 5), (fleet[3].gw, 6))

    async def main() -> None:
        link = FleetLink(fleet, host=mqtt_broker.host, port=mqtt_broker.port,
                         operators=[operator[0].address])
        async with workers(config, ["w1", "w2"]), link.running():
            await _scenario(link, fleet, impostor)
            await until(lambda: {(str(gw), str(state)) for gw, state in _query(
                config, "SELECT gw, state FROM gaps")} == {
                (fleet[0].gw, "filled"), (fleet[1].gw, "filled"), (fleet[2].gw, "filled"),
                (fleet[3].gw, "lost"), (fleet[4].gw, "filled")}, timeout=60, what="every gap filled or lost",
                detail=lambda: str(_query(config, "SELECT * FROM gaps")))
            await until(lambda: len(_stored(config)) == len(_expected(fleet, lost=evicted)),
                        what="every honest record stored")

    asyncio.run(main())
    stored = _stored(config)
    # stored once (the primary key says so) and exactly the honest records: A 30, B 20, C 25, and
    # D 20 less the 2 it evicted before the resend (4 + 14 + 2 resent = 18), E 10
    assert len(stored) == len(set(stored)) == 30 + 20 + 25 + 18 + 10
    assert set(stored) == _expected(fleet, lost=evicted)
    quarantined = {(gw, seq) for gw, seq, in _query(config, "SELECT gw, seq FROM quarantine")}
    assert quarantined == {(fleet[1].gw, 7), (fleet[2].gw, 21)}
    lost = _query(config, "SELECT seq_from, seq_to, reason FROM gaps WHERE state = 'lost'")
    assert [(lo, hi) for lo, hi, _ in lost] == [(5, 8)]
    assert "resent 2 of 4" in lost[0][2]
    # the resends went to the right gateways for the right ranges
    assert (11, 15, 5) in fleet[0].resends and (7, 7, 1) in fleet[1].resends
    assert (21, 21, 1) in fleet[2].resends and (5, 8, 2) in fleet[3].resends
    assert (1, 3, 3) in fleet[4].resends
    # both workers took part of the shared stream
    assert {w for w, in _query(config, "SELECT DISTINCT worker FROM measurements")} == {"w1", "w2"}
    kinds = {k for k, in _query(config, "SELECT DISTINCT kind FROM alerts")}
    assert {"gap", "forgery", "lost"} <= kinds
    duplicates = _query(config, f"SELECT duplicates FROM gateways WHERE gw = '{fleet[2].gw}'")
    assert duplicates[0][0] >= 10  # C's first ten were published twice

    async def again() -> None:
        """Restart: a new worker, every record published again: nothing changes but counters."""
        link = FleetLink(fleet, host=mqtt_broker.host, port=mqtt_broker.port, operators=[])
        async with workers(config, ["w3"]) as (w3,), link.running():
            for g in fleet:
                await link.publish(g, sorted(g.records.values(), key=lambda s: s.measurement.seq))
            total = sum(len(g.records) for g in fleet)
            await until(lambda: w3.parts.counters.duplicates >= total,
                        what="the republished records counted as duplicates",
                        detail=lambda: str(w3.parts.counters))

    asyncio.run(again())
    assert sorted(_stored(config)) == sorted(stored)
    assert len(_query(config, "SELECT id FROM quarantine")) == 2
