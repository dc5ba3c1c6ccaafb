"""The operator dashboard's JSON API and event stream on real parts: a master worker (SQLite) on a
real mosquitto with virtual gateways, and the embedded chain's market for windows and ranking.

Expected numbers come from the scenario itself (what the virtual gateways published: counted by
hand in the comments) and from the database read with a connection of the test's own, never from
the dashboard's queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.master.dashboard import serve_dashboard
from gateway.master.dashboard_data import ChainMarketView
from gateway.master.service import MasterService, build
from gateway.master.settings import load, parse
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key
from gateway.network.localbroker import free_port
from gateway.ops.sdnotify import FakeNotifier, Watchdog
from gateway.testing.virtual_fleet import FleetLink, VirtualGateway, make_fleet
from tests.mosquitto import Broker
from tests.waits import until

TOKEN = "a-long-random-dashboard-token-0123456789"


def write_config(tmp_path: Path, broker_url: str, *, port: int, token: bool = False) -> Path:
    operator = GatewayKey.generate()
    write_key(tmp_path / "operator.key", operator)
    (tmp_path / "dashboard.token").write_text(TOKEN + "\n")
    path = tmp_path / "master.toml"
    path.write_text(f'[broker]\nurl = "{broker_url}"\n[database]\nsqlite = "master.sqlite"\n'
                    '[operator]\nkey = "operator.key"\n'
                    "[repair]\ngrace_s = 0.3\nfirst_retry_s = 1\nscan_s = 0.1\n"
                    f'[dashboard]\nlisten = "127.0.0.1:{port}"\npush_s = 0.2\n'
                    + ('token_file = "dashboard.token"\n' if token else ""))
    return path


def query(config: Path, sql: str) -> list[tuple[Any, ...]]:
    """The master's database through a connection of the test's own."""
    lite = sqlite3.connect(str(load(config).sqlite))
    try:
        return lite.execute(sql).fetchall()
    finally:
        lite.close()


@contextlib.asynccontextmanager
async def master(config: Path) -> AsyncIterator[MasterService]:
    """One master worker with its dashboard, in this event loop, until the block ends."""
    service = MasterService(build(load(config), worker="w1"), watchdog=Watchdog(
        notifier=FakeNotifier(), timeout_s=10.0, health=lambda now: None, status_line=lambda: ""))
    task = asyncio.create_task(service.run(), name="master")
    try:
        await until(lambda: service.subscribed.is_set() or task.done(), what="the worker")
        if task.done():
            task.result()
        yield service
    finally:
        service.stop()
        await task


async def scenario(link: FleetLink, fleet: list[VirtualGateway]) -> None:
    """g0: 20 records with 6..10 held back (a gap the master repairs by resend); g1: 20 records,
    seq 4 altered after signing (a forgery, then its resend fills the gap); g2: 20 records and a
    backlog of 7 rows in its birth."""
    g0, g1, g2 = fleet
    for g, backlog in ((g0, 0), (g1, 0), (g2, 7)):
        await link.birth(g, backlog={"rows": backlog})
    records = g0.make(20)
    await link.publish(g0, records[:5])
    await link.publish(g0, records[10:])
    records = g1.make(20)
    await link.publish(g1, [*records[:3], g1.tampered(records[3]), *records[4:]])
    await link.publish(g2, g2.make(20))


def settled(config: Path) -> bool:
    """Every honest record stored (3 x 20) and no gap still open."""
    stored = query(config, "SELECT COUNT(*) FROM measurements")[0][0]
    open_gaps = query(config, "SELECT COUNT(*) FROM gaps WHERE state IN ('open', 'repairing')")
    return bool(stored == 60 and open_gaps[0][0] == 0)


def get(url: str, *, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def read_events(url: str, count: int) -> list[dict[str, Any]]:
    """The first `count` snapshot events of the stream, parsed as a browser's EventSource does."""
    host, _, port = url.split("/")[2].partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"text/event-stream" in head
    events: list[dict[str, Any]] = []
    while len(events) < count:
        block = (await reader.readuntil(b"\n\n")).decode()
        fields = dict(line.split(": ", 1) for line in block.strip().split("\n") if ": " in line)
        if fields.get("event") == "snapshot":
            events.append(json.loads(fields["data"]))
    writer.close()
    return events


def test_fleet_api_and_stream_match_the_database(tmp_path: Path, mqtt_broker: Broker) -> None:
    port = free_port()
    config = write_config(tmp_path, mqtt_broker.url, port=port)
    fleet = make_fleet(3)
    base = f"http://127.0.0.1:{port}"

    async def main() -> dict[str, Any]:
        link = FleetLink(fleet, host=mqtt_broker.host, port=mqtt_broker.port,
                         operators=[_operator(tmp_path)])
        async with master(config), link.running():
            await scenario(link, fleet)
            await until(lambda: settled(config), timeout=60, what="the fleet stored, gaps closed",
                        detail=lambda: str(query(config, "SELECT * FROM gaps")))
            status, body = await asyncio.to_thread(get, base + "/api/fleet")
            assert status == 200, body
            # the stream: a snapshot now, then one showing 5 more records of g2
            first = (await read_events(base, 1))[0]
            await link.publish(fleet[2], fleet[2].make(5))
            await until(lambda: query(config, "SELECT COUNT(*) FROM measurements")[0][0] == 65,
                        what="5 more records stored")
            later = await _snapshot_until(base, lambda s: s["fleet"]["totals"]["records"] == 65)
            return {"fleet": body, "first": first, "later": later}

    seen = asyncio.run(main())
    by_gw = {row["gw"]: row for row in seen["fleet"]["gateways"]}
    g0, g1, g2 = (g.gw for g in fleet)
    assert {gw: row["records"] for gw, row in by_gw.items()} == {g0: 20, g1: 20, g2: 20}
    # the live snapshot after 5 more records of g2 against the database, counted by the test
    db_records = dict(query(config, "SELECT gw, COUNT(*) FROM measurements GROUP BY gw"))
    db_quarantined = dict(query(config, "SELECT gw, COUNT(*) FROM quarantine GROUP BY gw"))
    later = {row["gw"]: row["records"] for row in seen["later"]["fleet"]["gateways"]}
    assert later == db_records == {g0: 20, g1: 20, g2: 25}
    assert {gw: row["forgeries"] for gw, row in by_gw.items()} == {g0: 0, g1: 1, g2: 0}
    assert db_quarantined == {g1: 1}
    # g0's 6..10 and g1's 4 were gaps, both filled by resend; nothing lost or still open
    assert by_gw[g0]["gaps"] == {"open": 0, "filled": 1, "lost": 0}
    assert by_gw[g1]["gaps"] == {"open": 0, "filled": 1, "lost": 0}
    assert by_gw[g2]["gaps"] == {"open": 0, "filled": 0, "lost": 0}
    assert [by_gw[g]["backlog"] for g in (g0, g1, g2)] == [0, 0, 7]
    assert all(row["online"] for row in by_gw.values())
    totals = seen["fleet"]["totals"]
    assert totals == {"gateways": 3, "online": 3, "records": 60, "forgeries": 1,
                      "gaps": {"open": 0, "filled": 2, "lost": 0}}
    # the stream's first event is the newest snapshot (taken at most push_s ago), then it follows
    assert seen["first"]["fleet"]["totals"]["records"] <= 60
    assert seen["later"]["fleet"]["totals"]["records"] == 65
    assert seen["later"]["fleet"]["ingest_per_s"] > 0  # 5 records arrived within the minute
    assert seen["first"]["windows"] == {"chain": False, "windows": [], "operated": []}  # no [chain]


def _operator(tmp_path: Path) -> str:
    from gateway.measurement.keyfile import load_key

    return load_key(tmp_path / "operator.key", None).address


async def _snapshot_until(base: str, ok: Any) -> dict[str, Any]:
    """Read the stream until a snapshot satisfies `ok` (each one is a live update)."""
    async with asyncio.timeout(30):
        while True:
            for snap in await read_events(base, 3):
                if ok(snap):
                    return snap


def test_token_is_required_when_configured_and_off_loopback(tmp_path: Path,
                                                            mqtt_broker: Broker) -> None:
    port = free_port()
    config = write_config(tmp_path, mqtt_broker.url, port=port, token=True)
    base = f"http://127.0.0.1:{port}"

    async def main() -> list[tuple[int, Any]]:
        async with master(config):
            await until(lambda: _listening(port), what="the dashboard to listen")
            return [await asyncio.to_thread(get, base + "/api/fleet"),
                    await asyncio.to_thread(get, base + "/api/fleet", token="wrong" * 5),
                    await asyncio.to_thread(get, base + "/api/fleet", token=TOKEN),
                    await asyncio.to_thread(get, base + f"/api/ranking?token={TOKEN}")]

    no, wrong, bearer, query_token = asyncio.run(main())
    assert no[0] == 401 and "token" in no[1]
    assert wrong[0] == 401
    assert bearer[0] == 200 and bearer[1]["totals"]["gateways"] == 0
    assert query_token == (200, {"chain": False, "households": [], "aggregators": []})
    # a public address without a token is refused at start-up, naming the key and the fix
    data = {"broker": {"url": mqtt_broker.url}, "database": {"sqlite": "x.sqlite"},
            "dashboard": {"listen": "0.0.0.0:9580"}}
    with pytest.raises(ConfigError) as info:
        parse(data, path=tmp_path / "master.toml")
    assert "listen" in str(info.value) and "token_file" in str(info.value)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_windows_and_ranking_from_the_chain(tmp_path: Path, mqtt_broker: Broker) -> None:
    """Two households bid on the embedded chain's market; one window is cleared and one Report
    accepted; /api/windows and /api/ranking show them as the contract holds them."""
    from gateway.chain.node import embedded
    from gateway.chain.outbox import ChainOutbox
    from tests.integration.chain.conftest import Market

    outbox = ChainOutbox(":memory:")
    market = Market(embedded(), outbox)
    h1, h2 = market.household("h1"), market.household("h2")
    b1 = market.bid(h1, power_w=-2000, price_mtok=10_000)
    b2 = market.bid(h2, power_w=-3000, price_mtok=50_000)
    window, _, end = market.announce()
    market.client.clear(market.op, window)
    market.commit(h1, window)
    market.at(end)
    market.client.submit_report(market.stranger, market.report(h1, window, delivered=333))
    port = free_port()
    config = write_config(tmp_path, mqtt_broker.url, port=port)
    settings = load(config)
    assert settings.dashboard is not None
    parts = build(settings, worker="w1")
    # the master's own record, as its market task keeps it: the window it announced, and a
    # later one it has planned but not announced yet (no window id)
    from gateway.master.market_ops import create_tables

    create_tables(parts.sql)
    parts.sql.many("INSERT INTO market_windows (slot_start, win, state, start_s, end_s, "
                   "retail_micro, realtime_micro, mode, outcome, error, updated_ms) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(1000, window, "cleared", 1000, end, 300_000, 900_000, "reduce", None, None, 1),
                    (9000, None, "planned", 9000, 9900, 300_000, 50_000, "increase", None,
                     "node unreachable", 2)])

    async def main() -> tuple[Any, Any]:
        task = asyncio.create_task(serve_dashboard(parts, settings.dashboard,
                                                   market=ChainMarketView(market.client)))
        try:
            await until(lambda: _listening(port) or task.done(), what="the dashboard to listen")
            base = f"http://127.0.0.1:{port}"
            return (await asyncio.to_thread(get, base + "/api/windows"),
                    await asyncio.to_thread(get, base + "/api/ranking"))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await parts.close()

    try:
        (ws, windows), (rs, ranking) = asyncio.run(main())
    finally:
        outbox.close()
    assert ws == 200 and rs == 200 and windows["chain"] is True
    [w] = windows["windows"]
    assert (w["window"], w["state"], w["mode"]) == (window, "cleared", "reduce")
    # undersubscribed: both awarded in full (test_chain_market's same bids), uniform price = the
    # dearest accepted bid's 50,000 mtok
    assert w["clearing_price_mtok"] == 50_000 and w["target_w"] == 5000
    assert (w["master"]["state"], w["master"]["realtime_micro"]) == ("cleared", 900_000)
    assert [(o["win"], o["state"], o["error"]) for o in windows["operated"]] == [
        (None, "planned", "node unreachable"), (window, "cleared", None)]  # newest slot first
    bids = {b["id"]: b for b in w["bids"]}
    assert [(bids[b]["household"], bids[b]["power_w"], bids[b]["award_w"]) for b in (b1, b2)] == [
        (h1.address, -2000, 2000), (h2.address, -3000, 3000)]
    assert (bids[b1]["reported"], bids[b1]["delivered_wh"], bids[b1]["outcome"]) == (
        True, 333, "reported")
    assert (bids[b2]["reported"], bids[b2]["outcome"]) == (False, "awaiting report")
    households = {r["address"]: r for r in ranking["households"]}
    assert set(households) == {h1.address, h2.address}
    assert [r["rank"] for r in ranking["households"]] == [1, 2]
    assert ranking["aggregators"][0]["address"] == market.aggregator.address
    # the order and scores are the contract's own ranking view, read here without the dashboard
    assert [(r["address"], r["score"]) for r in ranking["households"]] == \
        market.client.rank_households()
