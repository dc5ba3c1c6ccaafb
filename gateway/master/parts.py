"""What a master worker's tasks share (`MasterParts`), built once by `build`, the composition root
(gateway/master/service.py runs the tasks over them)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import aiomqtt

from gateway.master.gaps import GapBook
from gateway.master.ingest import Verifier, default_threads
from gateway.master.ledger import Ledger
from gateway.master.price_feed import TopicFeed
from gateway.master.settings import MasterSettings
from gateway.master.sql import Sql
from gateway.measurement.eip712 import Domain
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import measurement_domain

if TYPE_CHECKING:
    from web3 import Web3

    from gateway.master.chain_link import MasterChain

T = TypeVar("T")


@dataclass
class Counters:
    """What this worker did since it started (the metrics and `drgw master status` read them)."""

    payloads: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    resends: int = 0
    replies: int = 0
    alerts: dict[str, int] = field(default_factory=dict)
    queued: int = 0  # payloads received and not yet stored (the ingest backlog)
    connected: bool = False
    disconnected_at: float = 0.0
    db_error: str | None = None

    def alerted(self, kinds: list[str]) -> None:
        for kind in kinds:
            self.alerts[kind] = self.alerts.get(kind, 0) + 1


@dataclass
class MasterParts:
    """What the tasks share, built once by `build` (the composition root) and handed in."""

    settings: MasterSettings
    worker: str
    sql: Sql
    ledger: Ledger
    gaps: GapBook
    domain: Domain
    operator: GatewayKey | None
    db: ThreadPoolExecutor
    verifier: Verifier
    counters: Counters = field(default_factory=Counters)
    client: aiomqtt.Client | None = None
    chain: MasterChain | None = None  # [chain]: the Report relay and market operation
    price_topic: TopicFeed | None = None  # [market] price_feed = "mqtt:TOPIC"

    async def in_db(self, work: Callable[[], T]) -> T:
        """Run `work` on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self.db, work)

    async def close(self) -> None:
        """Close the database on its own thread, after any read or write still running there."""
        try:
            await self.in_db(self.sql.close)
        finally:
            self.db.shutdown(wait=True)
            self.verifier.close()


def build(settings: MasterSettings, *, worker: str | None = None, w3: Web3 | None = None,
          chain_thread: ThreadPoolExecutor | None = None) -> MasterParts:
    """The parts; `w3` and `chain_thread` stand in for [chain] rpc (an embedded chain in tests)."""
    from gateway.master.db_sqlite import open_sqlite

    name = worker or settings.worker or f"{socket.gethostname()}-{os.getpid()}"
    if settings.database_url is not None:
        from gateway.master.db_postgres import open_postgres

        sql: Sql = open_postgres(settings.database_url)
    else:
        assert settings.sqlite is not None
        sql = open_sqlite(settings.sqlite)
    ledger = Ledger(sql, worker=name)
    operator = None
    if settings.operator_key is not None:
        from gateway.measurement.keyfile import load_key

        operator = load_key(settings.operator_key, os.environ.get("DRGW_KEY_PASSWORD"))
    domain = measurement_domain(settings.chain_id) if settings.chain_id else measurement_domain()
    chain = None
    if settings.chain is not None:  # Report relay and market operation (gateway/master/relay.py)
        from gateway.master.chain_link import open_chain
        from gateway.master.market_ops import create_tables

        chain = open_chain(settings.chain, w3=w3, thread=chain_thread)
        create_tables(sql)
    return MasterParts(settings=settings, worker=name, sql=sql, ledger=ledger,
                       gaps=GapBook(ledger, settings.repair), domain=domain, operator=operator,
                       db=ThreadPoolExecutor(max_workers=1, thread_name_prefix="drgw-master-db"),
                       verifier=Verifier(domain, roster=settings.gateways,
                                         threads=settings.verify_threads or default_threads()),
                       chain=chain, price_topic=_topic_feed(settings))


def _topic_feed(settings: MasterSettings) -> TopicFeed | None:
    topic = None if settings.market is None else settings.market.feed_topic
    return None if topic is None else TopicFeed(topic)
