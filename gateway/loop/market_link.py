"""The closed loop's market side: awards in as events, the Report out, its chain state and the
window's settlement read back.

Part of the loop's shell. The market port is synchronous (web3 is), so every call runs in the loop's
chain executor: one thread owns the nonce and the event loop never waits on the node. Everything
learnt is journalled, then published (`dr_report`, `dr_settlement`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from gateway.chain.port import Award, MarketPort
from gateway.chain.report import Report
from gateway.loop import baselines as bl
from gateway.loop import messages
from gateway.loop.events import Direction, DrEvent, EventBook, EventRejected, EventSource, chain_event_id
from gateway.loop.journal import Journal
from gateway.loop.settings import DrConfig

T = TypeVar("T")
# each DR action, verdict and Report state is news, not a flapping meter's repeat: past the repeat filter
ALWAYS = {"state_change": True}


class LoopPorts(Protocol):
    """What the market side uses of the loop, read at each call (so a port the loop swaps is used)."""

    config: DrConfig
    journal: Journal
    book: EventBook
    market: MarketPort | None
    market_address: str
    executor: Executor
    publish: Callable[[Mapping[str, Any]], None]
    clock: Callable[[], float]

    def accept(self, event: DrEvent) -> dict[str, Any]: ...


class MarketLink:
    """Awards in, Reports out, settlements back, for the loop `ports`; logs to the loop's `log`."""

    def __init__(self, ports: LoopPorts, *, log: logging.Logger) -> None:
        self.ports, self.log = ports, log
        self.unsettled: set[str] = set()
        self.unreported: dict[str, int] = {}  # event id -> chain outbox id of a Report still queued

    def event_from(self, award: Award) -> DrEvent:
        """The award as the `chain:<market>:<window>` event, with [dr] baseline as its method."""
        p = self.ports
        event_id = chain_event_id(p.market_address, award.window)
        method = messages.METHODS[p.config.baseline]
        if method is bl.Method.CONTRACTED:
            raise EventRejected("a market award has no contracted curve: set [dr] baseline to a "
                                "measured method", event_id=event_id)
        current = None
        with contextlib.suppress(KeyError):
            current = p.book.event(event_id)
        return DrEvent(
            event_id=event_id, source=EventSource.CHAIN,
            modification=0 if current is None else current.modification + 1,
            start_s=award.start_s, end_s=award.end_s, award_w=award.award_w,
            direction=Direction.REDUCE if award.reduce else Direction.INCREASE,
            tolerance_bps=award.tolerance_bps, baseline=messages.baseline_spec(method, p.config),
            window=award.window, cancelled=award.voided)

    async def poll(self) -> None:
        """New or changed awards, then the queued Reports' and the reported windows' news."""
        try:
            awards = await self._on_chain(self._market.poll_awards)
        except Exception as exc:  # a node that is down must not stop the loop
            self.log.warning("market poll failed (will retry): %s", exc)
            return
        for award in awards:
            self._take(award)
        await self._follow_reports()
        await self._follow_settlements()

    async def submit(self, event_id: str, report: Report) -> dict[str, Any]:
        """Hand the Report to the market port; returns its summary with the chain state."""
        try:
            submission = await self._on_chain(self._market.submit, report)
            state = submission.state if submission.error is None else \
                f"{submission.state}: {submission.error}"
            if submission.state == "queued":
                self.unreported[event_id] = submission.report_id
        except Exception as exc:  # kept queued in the chain outbox
            state = f"queued: {exc}"
        self.ports.journal.set_chain_state(event_id, state, now_ms=self._now_ms())
        self.unsettled.add(event_id)
        return {"seq_from": report.seq_from, "seq_to": report.seq_to,
                "merkle_root": "0x" + report.merkle_root.hex(), "chain_state": state}

    def _take(self, award: Award) -> None:
        with contextlib.suppress(KeyError):
            held = self.ports.book.event(chain_event_id(self.ports.market_address, award.window))
            if (held.start_s, held.end_s, held.award_w, held.cancelled) == (
                    award.start_s, award.end_s, award.award_w, award.voided):
                return  # seen before a restart: nothing changed
        try:
            self.ports.accept(self.event_from(award))
        except EventRejected as exc:
            self.log.error("market award of window %d not taken: %s", award.window, exc)

    async def _follow_reports(self) -> None:
        """Reports the chain outbox still held: their state once the chain has decided."""
        for event_id, report_id in list(self.unreported.items()):
            state = await self._on_chain(self._market.report_state, report_id)
            if state != "queued":
                del self.unreported[event_id]
                self.ports.journal.set_chain_state(event_id, state, now_ms=self._now_ms())
                self.ports.publish({"type": "dr_report", "event_id": event_id, "chain_state": state})
                self.log.warning("DR event %s: Report %s", event_id, state, extra=ALWAYS)

    async def _follow_settlements(self) -> None:
        """Reported windows: the payment and the deposit's outcome once the window is checked."""
        for event_id in list(self.unsettled):
            event = self.ports.book.event(event_id)
            assert event.window is not None
            settled = await self._on_chain(self._market.settlement, event.window)
            if settled is not None:
                self.unsettled.discard(event_id)
                self.ports.journal.set_settlement(event_id, settled, now_ms=self._now_ms())
                self.ports.publish({"type": "dr_settlement", "event_id": event_id, **settled})
                self.log.info("DR event %s settled: %s", event_id, settled)

    @property
    def _market(self) -> MarketPort:
        market = self.ports.market
        assert market is not None, "the market side runs only with a market port"
        return market

    async def _on_chain(self, call: Callable[..., T], *args: Any) -> T:
        """`call` in the chain thread: one nonce owner, and the event loop never waits on the node."""
        return await asyncio.get_running_loop().run_in_executor(self.ports.executor, call, *args)

    def _now_ms(self) -> int:
        return int(self.ports.clock() * 1000)
