"""The Report relay on real parts: mosquitto, the embedded chain with the real DRMarket, the master
worker (SQLite and PostgreSQL) and the gateways' own relaying market port (RelayMarketPort with its
ChainRelayQueue on a real MQTT session, as `[chain] relay = "mqtt"` wires it in the agent).

The gateways' keys are never funded: their commitments and Reports can reach the chain only
through the master, and every expectation is read from the chain (the market's own views and
events: `baseline`, `take`, ReportAccepted/ReportRejected, the accounts' nonces), not from the
master's tables alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiomqtt

from gateway.chain.market_types import BaselineCommit
from gateway.chain.relay_port import ChainRelayQueue, RelayMarketPort
from gateway.chain.relay_wire import encode
from gateway.chain.report import Report, sign_report
from gateway.master.service import MasterParts, MasterService, build
from gateway.master.settings import load
from gateway.network import topics
from gateway.ops.sdnotify import FakeNotifier, Watchdog
from tests.integration.master.chain_parts import (
    LOCKOUT_S,
    Market,
    deploy_market,
    rows,
    until_async,
)
from tests.integration.master.conftest import MasterConfig
from tests.mosquitto import Broker

INPUT_HASH = bytes.fromhex("ab" * 32)
BASELINE_WH, ACTUAL_WH = 1000, 400  # reduce: delivered = baseline - actual = 600 Wh (docs/market.md)
ROOT = bytes.fromhex("cd" * 32)


@contextlib.asynccontextmanager
async def master(config: Path, market: Market) -> AsyncIterator[MasterService]:
    parts: MasterParts = build(load(config), worker="relay-1", w3=market.node.w3,
                               chain_thread=market.thread)
    service = MasterService(parts, watchdog=Watchdog(notifier=FakeNotifier(), timeout_s=10.0,
                                                     health=lambda now: None,
                                                     status_line=lambda: ""))
    task = asyncio.create_task(service.run())
    try:
        await until_async(_true_when(lambda: service.subscribed.is_set() or task.done()),
                          what="the master to subscribe")
        if task.done():
            task.result()
        yield service
    finally:
        service.stop()
        await task


def _true_when(predicate: Callable[[], object]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(predicate())

    return check


@contextlib.asynccontextmanager
async def gateway_link(broker: Broker, queues: list[ChainRelayQueue]) -> AsyncIterator[None]:
    """The gateways' side of the broker: each queue's session on one MQTT connection."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="gateways") as client:
        tasks = [asyncio.create_task(q.run_session(client)) for q in queues]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _port(market: Market, name: str, queue: ChainRelayQueue, tmp_path: Path) -> RelayMarketPort:
    return market.thread.submit(lambda: RelayMarketPort(
        w3=market.node.w3, market=market.client.deployment.market,
        household=market.wallets[name].address, gateway_secret=market.gateways[name].secret(),
        outbox_path=str(tmp_path / f"{name}-outbox.sqlite"), publish=queue.put)).result()


def _open_window(market: Market, bidders: list[str]) -> tuple[int, int, int]:
    """Bids by the wallets, a window announced a lockout (+ margin) ahead and cleared."""
    c, now = market.client, market.node.latest_timestamp()
    start, end = now + LOCKOUT_S + 120, now + LOCKOUT_S + 180
    for name in bidders:  # 1 kW reduction at 20 tokens/kWh, rated 1 kW
        c.place_bid(market.wallets[name], from_s=start - 1000, to_s=end + 1000, power_w=-1000,
                    rated_w=1000, price_mtok=20_000)
    c.announce(market.op, start_s=start, end_s=end, retail_micro=600_000, realtime_micro=680_000,
               omega_milli=1200, mode=0)
    window = c.window_count()
    c.clear(market.op, window)
    return window, start, end


def _report(market: Market, name: str, window: int, start: int, end: int) -> Report:
    return Report(household=market.wallets[name].address, window=window, seq_from=1, seq_to=10,
                  window_start=start, window_end=end, baseline_method=0,
                  baseline_input_hash=INPUT_HASH, baseline_wh=BASELINE_WH, actual_wh=ACTUAL_WH,
                  delivered_wh=BASELINE_WH - ACTUAL_WH, merkle_root=ROOT)


def test_reports_and_commitments_reach_the_chain_only_through_the_master(
        tmp_path: Path, mqtt_broker: Broker, master_config: MasterConfig) -> None:
    asyncio.run(_relay_scenario(tmp_path, mqtt_broker, master_config))


async def _relay_scenario(tmp_path: Path, mqtt_broker: Broker, master_config: MasterConfig) -> None:
    from gateway.chain.node import embedded

    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-chain")
    node = thread.submit(embedded).result()
    market = deploy_market(node, thread, tmp_path, ("X", "Y", "Z"))
    config = master_config(mqtt_broker.url)
    config.write_text(config.read_text() + market.config_text())
    c = market.client
    window, start, end = await market.call(lambda: _open_window(market, ["X", "Y"]))
    queues = {n: ChainRelayQueue(topic=topics.topic(market.gateways[n].address, topics.Kind.CHAIN))
              for n in ("X", "Y")}
    ports = {n: _port(market, n, queues[n], tmp_path) for n in ("X", "Y")}
    commit = BaselineCommit(window=window, method=0, input_hash=INPUT_HASH, baseline_wh=BASELINE_WH)

    async with master(config, market), gateway_link(mqtt_broker, list(queues.values())):
        # 1. commitments: "queued" while published, "accepted" once the chain holds them
        states = [await market.call(lambda n=n: ports[n].commit_baseline(commit).state)  # type: ignore[misc]
                  for n in ("X", "Y")]
        assert states == ["queued", "queued"]

        async def committed() -> bool:
            return all([await market.call(lambda n=n: ports[n].commit_baseline(commit).state)  # type: ignore[misc]
                        == "accepted" for n in ("X", "Y")])

        await until_async(committed, what="both commitments on chain")
        for n in ("X", "Y"):
            on = await market.call(lambda n=n: c.baseline(market.wallets[n].address, window))  # type: ignore[misc]
            assert (bool(on["committed"]), int(on["baselineWh"])) == (True, BASELINE_WH)

        # 2. a Report altered in flight on Y's topic: refused for Y alone, before any gas
        signed_y = await market.call(lambda: sign_report(
            _report(market, "Y", window, start, end), key=market.gateways["Y"].secret(),
            chain_id=c.deployment.chain_id, market=c.deployment.market))
        tampered = json.loads(encode(signed_y, chain_id=c.deployment.chain_id,
                                     market=c.deployment.market))
        tampered["fields"]["actualWh"] = 0  # claims 1000 Wh delivered; Y signed 600
        queues["Y"].put(json.dumps(tampered).encode())
        await until_async(_true_when(lambda: rows(config, "SELECT state, error FROM relay WHERE "
                                                  "kind = 'report'")), what="the altered Report")
        [(state, error)] = rows(config, "SELECT state, error FROM relay WHERE kind = 'report'")
        assert state == "rejected" and "not by the gateway of its topic" in error

        # 3. the Reports of X and Y, and one forged by X's key for Z (no award, not its gateway),
        #    all pending until the window is over, then one batch
        for n in ("X", "Y"):
            assert (await market.call(lambda n=n: ports[n].submit(  # type: ignore[misc]
                _report(market, n, window, start, end)))).state == "queued"
        forged = await market.call(lambda: sign_report(
            _report(market, "Z", window, start, end), key=market.gateways["X"].secret(),
            chain_id=c.deployment.chain_id, market=c.deployment.market))
        queues["X"].put(encode(forged, chain_id=c.deployment.chain_id, market=c.deployment.market))
        await until_async(_true_when(lambda: len(rows(config, "SELECT 1 FROM relay WHERE kind = "
                                                      "'report' AND state = 'pending'")) == 3),
                          what="three Reports pending")
        await market.call(lambda: node.set_next_timestamp(end + 1))
        await until_async(_true_when(lambda: not rows(config, "SELECT 1 FROM relay WHERE "
                                                      "state = 'pending'")), what="the batch")

        for n in ("X", "Y"):  # each gateway learns its outcome from the chain
            assert await market.call(lambda n=n: ports[n].report_state(window)) == "accepted"  # type: ignore[misc]
        z = market.wallets["Z"].address
        outcome = dict(((str(h).lower(), str(g)), (s, tx, e)) for h, g, s, tx, e in rows(
            config, "SELECT household, gw, state, tx, error FROM relay WHERE kind = 'report'"))
        x_row = outcome[(market.wallets["X"].address.lower(), topics.gw_id(market.gateways["X"].address))]
        z_row = outcome[(z.lower(), topics.gw_id(market.gateways["X"].address))]
        assert x_row[0] == "accepted" and z_row[0] == "rejected"
        assert z_row[1] == x_row[1]  # the same transaction: rejected alone within the batch
        assert "WrongSigner" in z_row[2] and "batch of 3" in z_row[2]

        def chain_facts() -> tuple[list[bool], int, int, list[int]]:
            reported = [bool(c.take(market.wallets[n].address, window)["reported"])
                        for n in ("X", "Y", "Z")]
            accepted = c.market.events.ReportAccepted().get_logs(from_block=0)
            rejected = c.market.events.ReportRejected().get_logs(from_block=0)
            nonces = [_nonce(market, market.gateways[n].address)
                      for n in ("X", "Y")]
            return reported, len(accepted), len(rejected), nonces

        assert await market.call(chain_facts) == ([True, True, False], 2, 1, [0, 0])
        relayer_nonce = await market.call(lambda: _nonce(market, market.relayer))
        assert relayer_nonce == 3  # two commitments and one submitReports, nothing else
        # drgw master status shows the relay as the chain has it: 2 Reports accepted (the
        # ReportAccepted logs above), 1 rejected with its reason, 2 commitments sent and accepted
        shown = await asyncio.to_thread(_status_text, config)
        assert "report accepted 2" in shown and "report rejected 1" in shown, shown
        assert "baseline accepted 2" in shown, shown
        assert f"relay report household {z.lower()} window {window}: rejected (" in shown.lower()

    # 4. restart: a crash between sending and recording leaves X's row pending; the gateways
    #    publish again. The new master finds them on chain and sends nothing.
    x_gw = topics.gw_id(market.gateways["X"].address)
    _sql(config, f"UPDATE relay SET state = 'pending', tx = NULL WHERE gw = '{x_gw}' AND "
         "kind = 'report' AND state = 'accepted'")
    async with master(config, market), gateway_link(mqtt_broker, list(queues.values())):
        signed_x = await market.call(lambda: sign_report(
            _report(market, "X", window, start, end), key=market.gateways["X"].secret(),
            chain_id=c.deployment.chain_id, market=c.deployment.market))
        queues["X"].put(encode(signed_x, chain_id=c.deployment.chain_id, market=c.deployment.market))
        queues["Y"].put(encode(signed_y, chain_id=c.deployment.chain_id, market=c.deployment.market))
        await until_async(_true_when(lambda: not rows(config, "SELECT 1 FROM relay WHERE "
                                                      "state = 'pending'")), what="the re-check")
        assert await market.call(chain_facts) == ([True, True, False], 2, 1, [0, 0])
        assert await market.call(
            lambda: _nonce(market, market.relayer)) == relayer_nonce
    [(error,)] = rows(config, f"SELECT error FROM relay WHERE gw = '{x_gw}' AND "
                      f"household = '{market.wallets['X'].address.lower()}' AND kind = 'report'")
    assert error == "already on chain"
    thread.shutdown()


def _sql(config: Path, statement: str) -> None:
    settings = load(config)
    if settings.database_url is not None:
        import psycopg

        with psycopg.connect(settings.database_url) as pg:
            pg.execute(statement)
        return
    import sqlite3

    lite = sqlite3.connect(str(settings.sqlite))
    try:
        lite.execute(statement)
        lite.commit()
    finally:
        lite.close()


def _status_text(config: Path) -> str:
    """`drgw master status CONFIG` as an operator runs it."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "master", "status", str(config)],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def _nonce(market: Market, address: str) -> int:
    w3 = market.node.w3
    return int(w3.eth.get_transaction_count(w3.to_checksum_address(address)))
