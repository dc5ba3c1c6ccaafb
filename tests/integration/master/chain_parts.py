"""The market side of the master's relay and market-operation tests: an embedded chain with the
market deployed, households with wallets and gateway keys (never funded: a relayed gateway needs
no gas), the relayer's key file, and a master config with [chain] (and [market]) on it.

Every chain call of a test goes through the one chain thread the master also uses (eth-tester is
not thread-safe), via `Market.call`. Keys are fresh random keys of this test run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.chain.market_client import MarketClient
from gateway.chain.node import ChainNode
from gateway.chain.sender import TxSender
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key

T = TypeVar("T")
LOCKOUT_S, GRACE_S = 60, 30
DEPOSIT_PER_KW_MTOK, TOLERANCE_BPS, MTOK_PER_CURRENCY = 100_000, 500, 1_000_000
WALLET_MTOK = 1_000_000


@dataclass
class Market:
    node: ChainNode
    thread: ThreadPoolExecutor
    op: TxSender
    client: MarketClient
    relayer_key: Path
    relayer: str
    wallets: dict[str, TxSender] = field(default_factory=dict)
    gateways: dict[str, GatewayKey] = field(default_factory=dict)

    async def call(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, work)

    def config_text(self, *, relay_s: float = 0.1) -> str:
        return (f'\n[chain]\nrpc = "http://127.0.0.1:1"\nmarket = "{self.client.deployment.market}"\n'
                f'key = "{self.relayer_key}"\nrelay_s = {relay_s}\n'
                f'outbox = "{self.relayer_key.with_name("relayer-outbox.sqlite")}"\n')


def deploy_market(node: ChainNode, thread: ThreadPoolExecutor, tmp_path: Path,
                  names: tuple[str, ...]) -> Market:
    """In the chain thread: deploy, register the operator as aggregator and each household with
    its gateway, give each wallet tokens approved to the market, fund the relayer."""
    return thread.submit(_deploy, node, thread, tmp_path, names).result()


def _deploy(node: ChainNode, thread: ThreadPoolExecutor, tmp_path: Path,
            names: tuple[str, ...]) -> Market:
    from gateway.chain.market_client import MarketConfig, decoder, deploy
    from gateway.chain.node import fund
    from gateway.chain.outbox import ChainOutbox
    from gateway.market.reputation import ReputationRules

    outbox = ChainOutbox(":memory:")
    op = TxSender(w3=node.w3, key=node.funded_keys[0], outbox=outbox, decoder=decoder())
    config = MarketConfig(treasury=op.address, deposit_per_kw_mtok=DEPOSIT_PER_KW_MTOK,
                          tolerance_bps=TOLERANCE_BPS, lockout_s=LOCKOUT_S, report_grace_s=GRACE_S)
    deployment = deploy(op, w3=node.w3, mtok_per_currency=MTOK_PER_CURRENCY, config=config,
                        rules=ReputationRules())
    client = MarketClient(w3=node.w3, deployment=deployment)
    relayer = GatewayKey.generate()
    key_path = tmp_path / "relayer.key"
    write_key(key_path, relayer)
    market = Market(node=node, thread=thread, op=op, client=client, relayer_key=key_path,
                    relayer=relayer.address)
    client.register_aggregator(op, op.address)
    for name in names:
        wallet = TxSender(w3=node.w3, key=GatewayKey.generate().secret(), outbox=outbox,
                          decoder=decoder())
        gateway = GatewayKey.generate()
        market.wallets[name], market.gateways[name] = wallet, gateway
        client.register_household(op, wallet=wallet.address, gateway=gateway.address,
                                  aggregator=op.address)
        fund(node, op, wallet.address, 10**18)
        client.mint(op, wallet.address, WALLET_MTOK)
        client.approve(wallet, WALLET_MTOK)
    fund(node, op, relayer.address, 10**18)
    client.mint(op, op.address, 10**12)
    client.approve(op, 10**12)
    return market


def grant_operator(market: Market) -> None:
    """The relayer's key also operates the market (announce, clear, settle): OPERATOR_ROLE, and
    the treasury's allowance for `settle` comes from the operator's account as treasury."""
    c = market.client
    role = c.market.functions.OPERATOR_ROLE().call()
    market.client._send(market.op, c.market, "grantRole", role, market.relayer,
                        purpose="grant operator")


async def until_async(check: Callable[[], Awaitable[object]], *, what: str,
                      timeout: float = 60.0) -> None:
    """`tests.waits.until` for checks that must run on the chain or database thread."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def rows(config: Path, sql: str) -> list[tuple[Any, ...]]:
    """The master's database read with a connection of its own."""
    from gateway.master.settings import load

    settings = load(config)
    if settings.database_url is not None:
        import psycopg

        with psycopg.connect(settings.database_url) as pg:
            return list(pg.execute(sql).fetchall())
    import sqlite3

    lite = sqlite3.connect(str(settings.sqlite))
    try:
        return lite.execute(sql).fetchall()
    finally:
        lite.close()
