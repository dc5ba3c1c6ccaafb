"""Fleet state on real parts: every worker receives the retained status (no shared subscription
for it), yet each change is recorded and alerted once: a birth, a clock that lost sync, the last
will; health lands in the gateway's row."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.measurement.identity import GatewayKey
from gateway.network import topics
from gateway.testing.virtual_fleet import FleetLink, make_fleet
from tests.integration.master.conftest import MasterConfig
from tests.integration.master.test_master_ingest import _query, workers
from tests.mosquitto import Broker
from tests.waits import until


def test_status_changes_alert_once_across_two_workers(
        mqtt_broker: Broker, master_config: MasterConfig, operator: tuple[GatewayKey, Path]) -> None:
    config = master_config(mqtt_broker.url)
    (g,) = make_fleet(1)

    def alerts() -> list[tuple[str, str]]:
        return [(str(k), str(d)) for k, d in _query(config, "SELECT kind, detail FROM alerts "
                                                             "ORDER BY id")]

    def row() -> dict[str, object]:
        cols = ("online", "reason", "version", "config_hash", "clock_synced", "health")
        found = _query(config, f"SELECT {', '.join(cols)} FROM gateways WHERE gw = '{g.gw}'")
        return dict(zip(cols, found[0], strict=True)) if found else {}

    async def main() -> None:
        link = FleetLink([g], host=mqtt_broker.host, port=mqtt_broker.port, operators=[])
        async with workers(config, ["w1", "w2"]), link.running():
            await link.birth(g, clock_synced=False, config_hash="ab" * 32)
            await until(lambda: [k for k, _ in alerts()] == ["clock"], what="one clock alert",
                        detail=lambda: str(alerts()))
            assert link.client is not None
            await link.client.publish(topics.topic(g.gw, topics.Kind.HEALTH),
                                      json.dumps({"v": 1, "uptime_s": 5.0}).encode())
            await until(lambda: row().get("health") is not None, what="health stored")
            will = json.dumps({"v": 1, "online": False, "gw": g.gw, "reason": "lwt"}).encode()
            for _ in range(2):  # the last will as the broker sends it; again: no new alert
                await link.client.publish(topics.topic(g.gw, topics.Kind.STATUS), will, qos=1,
                                          retain=True)
            await until(lambda: [k for k, _ in alerts()] == ["clock", "offline"],
                        what="one offline alert", detail=lambda: str(alerts()))
            await until(lambda: row().get("reason") == "lwt", what="status folded in")

    asyncio.run(main())
    assert [k for k, _ in alerts()] == ["clock", "offline"]
    assert "went offline (lwt)" in alerts()[1][1]
    r = row()
    assert r["online"] == 0 and r["clock_synced"] == 0 and r["config_hash"] == "ab" * 32
    assert r["version"] == "virtual"
    assert json.loads(str(r["health"])) == {"v": 1, "uptime_s": 5.0}
