"""An agent configured with `[chain] relay = "mqtt"`: its own wiring (gateway/agent/wiring.py) and
its real MQTT link carry its baseline commitment and Report to the master, which puts them on the
embedded chain; the gateway's key never holds gas.

The agent cannot dial the embedded chain (it has no JSON-RPC endpoint), so the test builds the
relaying port itself on the chain thread, with the exact publish callable the agent's wiring gave
its market port; everything from that callable on (the ChainRelayQueue as a session worker of the
agent's MqttLink, mosquitto, the master worker, the relayer) is the agent's and the master's own.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.agent.lifetime import StopRequest
from gateway.agent.wiring import LoopOptions, build
from gateway.chain.market_types import BaselineCommit
from gateway.chain.port import LazyMarketPort
from gateway.chain.relay_port import ChainRelayQueue, RelayMarketPort
from gateway.config.gateway import load_config
from gateway.measurement.keyfile import write_key
from gateway.network import topics
from tests.integration.master.chain_parts import deploy_market, until_async
from tests.integration.master.conftest import MasterConfig
from tests.integration.master.test_master_relay import (
    INPUT_HASH,
    _nonce,
    _open_window,
    _report,
    master,
)
from tests.mosquitto import Broker


def test_an_agent_with_relay_mqtt_needs_no_gas_for_its_commitment_and_report(
        tmp_path: Path, mqtt_broker: Broker, master_config: MasterConfig) -> None:
    asyncio.run(_scenario(tmp_path, mqtt_broker, master_config))


async def _scenario(tmp_path: Path, mqtt_broker: Broker, master_config: MasterConfig) -> None:
    from gateway.chain.node import embedded

    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-chain")
    node = thread.submit(embedded).result()
    market = deploy_market(node, thread, tmp_path, ("X",))
    config = master_config(mqtt_broker.url)
    config.write_text(config.read_text() + market.config_text())
    key = market.gateways["X"]
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    write_key(agent_dir / "gw.key", key)
    (agent_dir / "drgw.toml").write_text(
        f'[gateway]\nkey = "gw.key"\n[store]\npath = "drgw.db"\n[mqtt]\nbroker = "{mqtt_broker.url}"\n'
        f'[chain]\nrpc = "http://127.0.0.1:9"\nmarket = "{market.client.deployment.market}"\n'
        f'household = "{market.wallets["X"].address}"\nrelay = "mqtt"\n'
        '[dr]\nbaseline = "pre_event"\n')
    parts = build(load_config(agent_dir / "drgw.toml"), key=key, stop=StopRequest(),
                  loop=LoopOptions())
    [queue] = [w for w in parts.workers if isinstance(w, ChainRelayQueue)]
    assert queue.topic == f"drgw/v1/{topics.gw_id(key.address)}/chain"
    assert parts.dr is not None and isinstance(parts.dr.market, LazyMarketPort)
    publish = parts.dr.market._relay  # what the agent's market port publishes with
    assert publish is not None
    port = thread.submit(lambda: RelayMarketPort(
        w3=node.w3, market=market.client.deployment.market, household=market.wallets["X"].address,
        gateway_secret=key.secret(), outbox_path=str(agent_dir / "outbox.sqlite"),
        publish=publish)).result()
    window, start, end = await market.call(lambda: _open_window(market, ["X"]))
    commit = BaselineCommit(window=window, method=0, input_hash=INPUT_HASH, baseline_wh=1000)

    link = asyncio.create_task(parts.link.run(parts.workers))
    try:
        async with master(config, market):
            async def committed() -> bool:
                return await market.call(lambda: port.commit_baseline(commit).state) == "accepted"

            await until_async(committed, what="the agent's commitment on chain")
            await market.call(lambda: node.set_next_timestamp(end + 1))
            await market.call(lambda: port.submit(_report(market, "X", window, start, end)))

            async def reported() -> bool:
                return await market.call(lambda: port.report_state(window)) == "accepted"

            await until_async(reported, what="the agent's Report on chain")
        assert queue.sent >= 2
        taken = await market.call(lambda: market.client.take(market.wallets["X"].address, window))
        assert (bool(taken["reported"]), int(taken["deliveredWh"])) == (True, 600)
        assert await market.call(lambda: _nonce(market, key.address)) == 0  # never sent a tx
    finally:
        parts.link.stop()
        await asyncio.wait_for(link, 10)
        parts.store.close()
        thread.shutdown()
