"""The market port of a gateway whose Reports and baseline commitments go through a relayer
(`[chain] relay = "mqtt"`): it signs them and publishes them on its `chain` topic; the master
station (gateway/master/relay.py) sends them to the market in batches and pays their gas.

Everything else is the Web3MarketPort's: awards, settlement and the bids. The port learns what
became of what it published by reading the chain, never from the relayer: a commitment is
accepted when `baseline(household, window)` holds ours, a Report when `take(household, window)`
says reported, and rejected when the market logged ReportRejected for it. Until then each poll
publishes it again (the relayer's table makes repeats free), so a message lost with a broker or a
master restart costs one poll, and the gateway needs no store of its own for it.

Bids still go out from the gateway's own account (placeBidFor accepts only the household or its
gateway as msg.sender, docs/market.md "Who signs what"), so a gateway that bids needs gas for that.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gateway.chain.market_types import BaselineCommit, Submission
from gateway.chain.port import Web3MarketPort
from gateway.chain.relay_wire import encode
from gateway.chain.report import Baseline, Report, SignedReport, sign_baseline, sign_report

if TYPE_CHECKING:
    from web3 import Web3

log = logging.getLogger(__name__)


class _Publishing(Protocol):
    """What a session worker needs of the link's connection (gateway.network.link.Connection)."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None: ...


class ChainRelayQueue:
    """The gateway's chain payloads waiting for the broker: a session worker of the agent's link.

    `put` may be called from any thread (the market port runs in the chain thread); the session
    publishes at QoS 1 in order. Bounded: the oldest is dropped when full, since the port
    publishes anything not yet on chain again at its next poll."""

    def __init__(self, *, topic: str, max_queued: int = 256) -> None:
        self.topic = topic
        self._items: collections.deque[bytes] = collections.deque(maxlen=max_queued)
        self._lock = threading.Lock()
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0

    def put(self, payload: bytes) -> None:
        with self._lock:
            self._items.append(payload)
            loop, ready = self._loop, self._ready
        if loop is not None and ready is not None:
            loop.call_soon_threadsafe(ready.set)

    async def run_session(self, conn: _Publishing) -> None:
        with self._lock:
            self._loop, self._ready = asyncio.get_running_loop(), asyncio.Event()
            ready = self._ready
        while True:
            ready.clear()
            while (head := self._head()) is not None:
                await conn.publish(self.topic, head, qos=1)
                with self._lock:
                    if self._items and self._items[0] is head:
                        self._items.popleft()
                self.sent += 1
            await ready.wait()

    def _head(self) -> bytes | None:
        with self._lock:
            return self._items[0] if self._items else None


class RelayMarketPort(Web3MarketPort):
    """A Web3MarketPort whose commitments and Reports are published for a relayer."""

    def __init__(self, *, w3: Web3, market: str, household: str, gateway_secret: bytes,
                 outbox_path: str, publish: Callable[[bytes], None]) -> None:
        super().__init__(w3=w3, market=market, household=household, gateway_secret=gateway_secret,
                         sender_secret=gateway_secret, outbox_path=outbox_path)
        self._publish = publish
        self._reports: dict[int, SignedReport] = {}  # window -> published, fate not yet read

    def _send_commit(self, commit: BaselineCommit) -> Submission:
        """Accepted once the chain holds this commitment; else published (again): "queued".
        The loop calls again at each poll until the window starts (gateway/loop/market_link.py)."""
        self._commits.pop(commit.window, None)  # the loop keeps the queue; retry() needs none
        if self._on_chain(commit):
            return Submission(state="accepted", report_id=0)
        d = self.client.deployment
        signed = sign_baseline(Baseline(
            household=self.household, window=commit.window, method=commit.method,
            input_hash=commit.input_hash, baseline_wh=commit.baseline_wh),
            key=self._secret, chain_id=d.chain_id, market=d.market)
        self._publish(encode(signed, chain_id=d.chain_id, market=d.market))
        return Submission(state="queued", report_id=0)

    def submit(self, report: Report) -> Submission:
        """Publish the signed Report; its id is its window (one Report per household and window),
        so `report_state` answers after a restart too."""
        d = self.client.deployment
        signed = sign_report(report, key=self._secret, chain_id=d.chain_id, market=d.market)
        self._reports[report.window] = signed
        self._publish(encode(signed, chain_id=d.chain_id, market=d.market))
        return Submission(state="queued", report_id=report.window)

    def report_state(self, report_id: int) -> str:
        """"accepted" when the chain took this household's Report of window `report_id`,
        "rejected: <error>" when the market logged ReportRejected for it, else "queued"."""
        window = report_id
        if bool(self.client.take(self.household, window)["reported"]):
            self._reports.pop(window, None)
            return "accepted"
        rejected = self.client.market.events.ReportRejected().get_logs(
            argument_filters={"window": window, "household": self.household}, from_block=0)
        if rejected:
            from gateway.chain.market_client import decoder

            self._reports.pop(window, None)
            reason = decoder().decode(bytes(rejected[-1]["args"]["reason"])).name or "unknown"
            return f"rejected: {reason} (relayed)"
        signed = self._reports.get(window)
        if signed is not None:
            d = self.client.deployment
            self._publish(encode(signed, chain_id=d.chain_id, market=d.market))
        return "queued"

    def retry(self) -> int:
        """Nothing of ours waits in a local outbox: the loop re-publishes through the calls above."""
        return len(self._reports)
