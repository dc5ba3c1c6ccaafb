"""A DR window operated end to end by the master from a price feed, on real parts: mosquitto, the
embedded chain with the real DRMarket, the master (SQLite), the gateways' relaying market ports.

The feed (written here) has one price spike; the master must announce a window for that slot a
lockout ahead, clear it, relay the gateways' commitments and Reports, settle, check and pay the
claims, and survive a restart mid-way without announcing twice. Time is compressed with the
chain's clock (set_next_timestamp), as the demo does. Every figure below is a hand computation
from docs/market.md's formulas, compared with what the chain says (window, events, balances).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.chain.market_types import BaselineCommit
from gateway.chain.relay_port import ChainRelayQueue
from gateway.network import topics
from tests.integration.master.chain_parts import (
    GRACE_S,
    WALLET_MTOK,
    deploy_market,
    grant_operator,
    rows,
    until_async,
)
from tests.integration.master.conftest import (  # noqa: F401 - the master's fixtures, both backends
    MasterConfig,
    database,
    master_config,
    operator,
    postgres,
)
from tests.integration.master.test_master_relay import (
    INPUT_HASH,
    _port,
    _report,
    _true_when,
    gateway_link,
    master,
)
from tests.mosquitto import Broker

SLOT_S = 300


def market_section(feed: str) -> str:
    """[market]: retail 0.60, a window worth setting at |realtime - 0.60| >= 0.05."""
    return (f'\n[market]\nprice_feed = "{feed}"\nretail = 0.60\nthreshold = 0.05\nomega = 1.2\n'
            f'mode = "shift"\nslot_s = {SLOT_S}\nlead_s = 30\nhorizon_s = 3600\npoll_s = 0.1\n')


def test_a_price_spike_becomes_a_window_operated_to_its_claims(
        tmp_path: Path, mqtt_broker: Broker, master_config: MasterConfig) -> None:  # noqa: F811
    asyncio.run(_scenario(tmp_path, mqtt_broker, master_config))


async def _scenario(tmp_path: Path, mqtt_broker: Broker,
                    master_config: MasterConfig) -> None:  # noqa: F811
    from gateway.chain.node import embedded

    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-chain")
    node = thread.submit(embedded).result()
    market = deploy_market(node, thread, tmp_path, ("X", "Y"))
    c = market.client
    await market.call(lambda: grant_operator(market))
    t0 = await market.call(node.latest_timestamp)
    # Bids placed before any announcement (so they belong to the window): reductions, rated as
    # their power. X 1 kW at 20 tokens/kWh, Y 2 kW at 25 tokens/kWh.
    for name, kw, price in (("X", 1, 20_000), ("Y", 2, 25_000)):
        await market.call(lambda n=name, k=kw, p=price: c.place_bid(  # type: ignore[misc]
            market.wallets[n], from_s=t0, to_s=t0 + 7200, power_w=-1000 * k, rated_w=1000 * k,
            price_mtok=p))
    # The feed: 0.61 everywhere (|0.61 - 0.60| = 0.01 < threshold 0.05) but one spike of 0.68 at
    # t0 + 600 (0.08 >= 0.05): the only slot worth a window.
    feed = tmp_path / "prices.csv"
    feed.write_text("start,realtime\n" + "".join(
        f"{t0 + k * SLOT_S},{0.68 if k == 2 else 0.61}\n" for k in range(12)))
    start, end = t0 + 600, t0 + 900
    config = master_config(mqtt_broker.url)
    config.write_text(config.read_text() + market.config_text() + market_section(str(feed)))
    queues = {n: ChainRelayQueue(topic=topics.topic(market.gateways[n].address, topics.Kind.CHAIN))
              for n in ("X", "Y")}
    ports = {n: _port(market, n, queues[n], tmp_path) for n in ("X", "Y")}

    async with master(config, market):
        await until_async(_true_when(lambda: rows(config, "SELECT 1 FROM market_windows WHERE "
                                                  "state = 'cleared'")), what="a cleared window")
    # restarted here, and the row lost as by a crash between announcing and recording: the next
    # master must adopt window 1 from the chain and operate it, not announce another
    _delete_rows(config)
    window = await market.call(c.window_count)
    w = await market.call(lambda: c.window(1))
    # spread 80,000 mtok/kWh (0.08 x 1,000,000 mtok/currency); optimum = 80,000 x 1000 /
    # (2 x 1200) = 33,333 W; eligible 3,000 W -> target 3,000 W, both win, uniform price = the
    # marginal bid's 25,000 mtok/kWh
    assert (window, int(w["start"]), int(w["end"]), int(w["spreadMtok"])) == (1, start, end, 80_000)
    assert (int(w["targetW"]), int(w["winners"]), int(w["clearingPrice"])) == (3000, 2, 25_000)

    commit = {n: BaselineCommit(window=1, method=0, input_hash=INPUT_HASH, baseline_wh=500)
              for n in ("X", "Y")}
    async with master(config, market), gateway_link(mqtt_broker, list(queues.values())):
        async def committed() -> bool:
            return all([await market.call(lambda n=n: ports[n].commit_baseline(commit[n]).state)  # type: ignore[misc]
                        == "accepted" for n in ("X", "Y")])

        await until_async(committed, what="the baselines committed through the master")
        await market.call(lambda: node.set_next_timestamp(end + 1))
        # X: 500 - 400 = 100 Wh >= 1000 W x 300 s x 0.95 / 3600 = 79.2 Wh: performed
        # Y: 500 - 450 = 50 Wh < 2000 W x 300 s x 0.95 / 3600 = 158.3 Wh: short
        for n, actual in (("X", 400), ("Y", 450)):
            r = _report(market, n, 1, start, end)
            report = type(r)(**{**{f: getattr(r, f) for f in r.__dataclass_fields__},
                                "baseline_wh": 500, "actual_wh": actual,
                                "delivered_wh": 500 - actual})
            await market.call(lambda p=ports[n], rep=report: p.submit(rep))  # type: ignore[misc]

        async def reported() -> bool:
            return all([await market.call(lambda n=n: ports[n].report_state(1)) == "accepted"  # type: ignore[misc]
                        for n in ("X", "Y")])

        await until_async(reported, what="both Reports relayed")
        await market.call(lambda: node.set_next_timestamp(end + GRACE_S + 1))
        await until_async(_true_when(lambda: rows(config, "SELECT 1 FROM market_windows WHERE "
                                                  "state = 'done'")), what="settle, check, claims")

    def paid() -> dict[str, object]:
        def by_household(event: str) -> dict[str, int]:
            logs = getattr(c.market.events, event)().get_logs(from_block=0)
            return {str(e["args"]["household"]): int(e["args"]["amount"]) for e in logs}

        x, y = market.wallets["X"].address, market.wallets["Y"].address
        return {"paid": by_household("BidPaid"), "refunded": by_household("DepositRefunded"),
                "forfeited": by_household("DepositForfeited"),
                "balances": (c.balance(x), c.balance(y)), "windows": c.window_count(),
                "state": int(c.window(1)["state"])}

    x, y = market.wallets["X"].address, market.wallets["Y"].address
    # payment = 25,000 x awardW x 300 / 3,600,000: X 2,083 (2,083.3), Y 4,166 (4,166.7)
    # deposits 100,000 mtok per rated kW: X refunded 100,000, Y forfeited 200,000
    assert await market.call(paid) == {
        "paid": {x: 2083, y: 4166}, "refunded": {x: 100_000}, "forfeited": {y: 200_000},
        "balances": (WALLET_MTOK - 100_000 + 100_000 + 2083, WALLET_MTOK - 200_000 + 4166),
        "windows": 1, "state": 4}
    [(outcome,)] = rows(config, "SELECT outcome FROM market_windows")
    assert '"claimed_mtok": 106249' in outcome and '"reported": 2' in outcome
    thread.shutdown()


def _delete_rows(config: Path) -> None:
    import sqlite3

    from gateway.master.settings import load

    settings = load(config)
    if settings.database_url is not None:
        import psycopg

        with psycopg.connect(settings.database_url) as pg:
            pg.execute("DELETE FROM market_windows")
        return
    lite = sqlite3.connect(str(settings.sqlite))
    try:
        lite.execute("DELETE FROM market_windows")
        lite.commit()
    finally:
        lite.close()


def test_a_price_message_on_the_broker_sets_the_window(
        tmp_path: Path, mqtt_broker: Broker, master_config: MasterConfig) -> None:  # noqa: F811
    """price_feed = "mqtt:TOPIC": a malformed message is refused with its reason and sets
    nothing; the next good one (retained, as a price publisher would leave it) sets the window
    for its spike, exactly as the file feed above."""
    asyncio.run(_mqtt_feed(tmp_path, mqtt_broker, master_config))


async def _mqtt_feed(tmp_path: Path, mqtt_broker: Broker,
                     master_config: MasterConfig) -> None:  # noqa: F811
    import aiomqtt

    from gateway.chain.node import embedded

    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-chain")
    node = thread.submit(embedded).result()
    market = deploy_market(node, thread, tmp_path, ("X",))
    await market.call(lambda: grant_operator(market))
    t0 = await market.call(node.latest_timestamp)
    topic = "grid/prices/test-zone"
    config = master_config(mqtt_broker.url)
    config.write_text(config.read_text() + market.config_text() + market_section(f"mqtt:{topic}"))
    spike = "start,realtime\n" + "".join(f"{t0 + k * SLOT_S},{0.68 if k == 2 else 0.61}\n"
                                         for k in range(12))
    async with master(config, market) as service, \
            aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier="prices") as prices:
        feed = service.parts.price_topic
        assert feed is not None and feed.topic == topic
        await prices.publish(topic, b"start,realtime\n" + str(t0).encode() + b",dear\n", qos=1,
                             retain=True)

        async def refused() -> bool:
            return feed.error is not None

        await until_async(refused, what="the malformed price message refused")
        assert "price feed topic grid/prices/test-zone: line 2: realtime 'dear'" in feed.error
        assert feed.slots == [] and rows(config, "SELECT 1 FROM market_windows") == []
        await prices.publish(topic, spike.encode(), qos=1, retain=True)
        await until_async(_true_when(lambda: rows(config, "SELECT 1 FROM market_windows")),
                          what="a window announced from the price message")
    w = await market.call(lambda: market.client.window(1))
    # the slot at t0 + 600 is the only one with |0.68 - 0.60| >= 0.05: 80,000 mtok/kWh of spread
    assert (int(w["start"]), int(w["end"]), int(w["spreadMtok"])) == (t0 + 600, t0 + 900, 80_000)
    thread.shutdown()
