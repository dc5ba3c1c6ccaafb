"""The master's hold on the market: one chain thread, the relayer's nonce owner, and the lease
that makes the Report relay and the market operation run on exactly one worker at a time.

web3 is synchronous, so every chain call runs on one thread (`MasterChain.run`), as the agent's
chain thread does: one nonce owner (TxSender, its signed transactions kept in SQLite before they
are broadcast, so a restart finishes them instead of sending twice), and the event loop never
waits on the node. The lease is one row per task in the master's database, taken with a single
upsert that only succeeds for its owner or once the previous owner's time ran out (the same idea
as the gap leases, docs/master.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from gateway.master.chain_settings import ChainSettings
from gateway.master.sql import Sql

if TYPE_CHECKING:
    from web3 import Web3

    from gateway.chain.market_client import MarketClient
    from gateway.chain.sender import TxSender

T = TypeVar("T")

LEASES = """CREATE TABLE IF NOT EXISTS master_leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, until_ms BIGINT NOT NULL)"""
_TAKE = """INSERT INTO master_leases (name, owner, until_ms) VALUES (?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms
    WHERE master_leases.owner = excluded.owner OR master_leases.until_ms < ?"""


@dataclass
class MasterChain:
    """The market client and the relayer's sender, used only from `thread`."""

    w3: Web3
    client: MarketClient
    sender: TxSender
    thread: ThreadPoolExecutor

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, work)

    def now(self) -> int:
        """The chain's clock (the latest block's time): every deadline of the market is in it."""
        return int(self.w3.eth.get_block("latest")["timestamp"])


def open_chain(settings: ChainSettings, *, w3: Web3 | None = None,
               thread: ThreadPoolExecutor | None = None) -> MasterChain:
    """Connect (or take the given web3, e.g. an embedded chain in a test, with the one thread
    that may use it), load the relayer's key and find the market's token."""
    from gateway.chain.market_client import Deployment, MarketClient, decoder
    from gateway.chain.node import connect
    from gateway.chain.outbox import ChainOutbox
    from gateway.chain.sender import TxSender
    from gateway.measurement.keyfile import read_key

    if w3 is None:
        w3 = connect(settings.rpc, poa=settings.poa).w3
    thread = thread or ThreadPoolExecutor(max_workers=1, thread_name_prefix="drgw-master-chain")
    market = w3.to_checksum_address(settings.market)

    def connect_market() -> MasterChain:
        probe = MarketClient(w3=w3, deployment=Deployment(chain_id=0, token=market, market=market))
        token = probe.market.functions.token().call()
        client = MarketClient(w3=w3, deployment=Deployment(
            chain_id=int(w3.eth.chain_id), token=token, market=market))
        sender = TxSender(w3=w3, key=read_key(settings.key), outbox=ChainOutbox(settings.outbox),
                          decoder=decoder())
        return MasterChain(w3=w3, client=client, sender=sender, thread=thread)

    return thread.submit(connect_market).result()


def take_lease(sql: Sql, *, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
    """Hold (or renew) the lease `name` until now + ttl; False while another worker holds it."""
    with sql.transaction():
        sql.run(_TAKE, [name, owner, now_ms + ttl_ms, now_ms])
        rows, _ = sql.run("SELECT owner FROM master_leases WHERE name = ?", [name])
    return bool(rows) and rows[0][0] == owner
