"""The closed loop's market side: awards in as events, the baseline committed before the window, the
Report out, its chain state and the window's settlement read back.

Part of the loop's shell. The market port is synchronous (web3 is), so every call runs in the loop's
chain executor: one thread owns the nonce and the event loop never waits on the node. Everything
learnt is journalled, then published (`dr_baseline`, `dr_report`, `dr_settlement`).

The commitment (docs/baselines.md, "Committed baselines"): the baseline the loop fixed for a market
window is committed as (method id, input hash, whole-window Wh); the Report later carries the same
three, from the same journalled Baseline, so it matches by construction. A commitment the port kept
"queued" (node down) is sent again at each poll until the window starts; one rejected, or still not
sent at the start, is a `dr_error`: the loop still acts in the window, but its Report will revert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from gateway.chain.market_types import Award, BaselineCommit, MarketPort
from gateway.chain.report import Report
from gateway.loop import baselines as bl
from gateway.loop import messages
from gateway.loop.contracted import curve_w
from gateway.loop.events import Direction, DrEvent, EventBook, EventRejected, EventSource, chain_event_id
from gateway.loop.journal import Journal
from gateway.loop.settings import DrConfig
from gateway.loop.verdict import whole_wh

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
    def resave(self, event_id: str) -> None: ...
    def fail(self, event_id: str, reason: str) -> None: ...


class MarketLink:
    """Awards in, Reports out, settlements back, for the loop `ports`; logs to the loop's `log`."""

    def __init__(self, ports: LoopPorts, *, log: logging.Logger) -> None:
        self.ports, self.log = ports, log
        self.unsettled: set[str] = set()
        self.unreported: dict[str, int] = {}  # event id -> chain outbox id of a Report still queued
        self.commitments: dict[str, dict[str, Any]] = {}  # event id -> the commitment and its state
        self.uncommitted: dict[str, BaselineCommit] = {}  # event id -> a commitment still queued

    def event_from(self, award: Award) -> DrEvent:
        """The award as the `chain:<market>:<window>` event, with [dr] baseline as its method."""
        p = self.ports
        event_id = chain_event_id(p.market_address, award.window)
        method = messages.METHODS[p.config.baseline]
        curve: tuple[float, ...] = ()
        if method is bl.Method.CONTRACTED and not award.voided:
            if not p.config.contracted:
                raise EventRejected("[dr] baseline is \"contracted\" but the config has no curve: add "
                                    "[dr.contracted] (\"HH:MM\" = W, docs/baselines.md) or set [dr] "
                                    "baseline to a measured method", event_id=event_id)
            curve = curve_w(p.config.contracted, window_start_s=award.start_s,
                            window_end_s=award.end_s, slot_s=p.config.slot_s,
                            zone=ZoneInfo(p.config.time_zone))
        current = None
        with contextlib.suppress(KeyError):
            current = p.book.event(event_id)
        return DrEvent(
            event_id=event_id, source=EventSource.CHAIN,
            modification=0 if current is None else current.modification + 1,
            start_s=award.start_s, end_s=award.end_s, award_w=award.award_w,
            direction=Direction.REDUCE if award.reduce else Direction.INCREASE,
            tolerance_bps=award.tolerance_bps,
            baseline=messages.baseline_spec(method, p.config, curve=curve),
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
        await self._retry_commits()
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

    async def commit(self, event: DrEvent, baseline: bl.Baseline) -> None:
        """Commit the baseline fixed for the market window of `event` (journalled by the caller)."""
        assert event.window is not None
        commit = _commit_of(event.window, baseline)
        await self._send_commit(event.event_id, commit, method=messages.NAMES[baseline.method])

    def forget(self, event_id: str) -> None:
        """The event is over or cancelled: no more commitment to follow."""
        self.commitments.pop(event_id, None)
        self.uncommitted.pop(event_id, None)

    def restore(self, event: DrEvent, baseline: bl.Baseline, commitment: Mapping[str, Any] | None) -> None:
        """A fixed baseline read back from the journal with its commitment. A queued one is sent again
        at the next poll; so is one journalled but not sent before the process stopped (none)."""
        if commitment is None:
            assert event.window is not None
            self.uncommitted[event.event_id] = _commit_of(event.window, baseline)
            return
        self.commitments[event.event_id] = dict(commitment)
        if commitment.get("chain_state") == "queued":
            self.uncommitted[event.event_id] = _commit_from_json(commitment)

    async def _send_commit(self, event_id: str, commit: BaselineCommit, *, method: str) -> None:
        try:
            submission = await self._on_chain(self._market.commit_baseline, commit)
            state, error = submission.state, submission.error
        except Exception as exc:  # a node that is down: like a queued submission, sent again
            state, error = "queued", str(exc)
        if state == "queued":
            self.uncommitted[event_id] = commit
        else:
            self.uncommitted.pop(event_id, None)
        self._record_commit(event_id, commit, method=method, state=state, error=error)

    def _record_commit(self, event_id: str, commit: BaselineCommit, *, method: str, state: str,
                       error: str | None) -> None:
        body = {"window": commit.window, "method": method, "method_id": commit.method,
                "input_hash": "0x" + commit.input_hash.hex(), "baseline_wh": commit.baseline_wh,
                "chain_state": state, "error": error}
        changed = self.commitments.get(event_id) != body
        self.commitments[event_id] = body
        if not changed:
            return  # still queued for the same reason: nothing new to journal or publish
        self.ports.resave(event_id)
        self.ports.publish({"type": "dr_baseline", "event_id": event_id, **body})
        self.log.warning("DR event %s: baseline %s %d Wh committed: %s%s", event_id, method,
                         commit.baseline_wh, state, f" ({error})" if error else "", extra=ALWAYS)
        if state == "rejected":
            self.ports.fail(event_id, f"baseline commitment rejected: {error}; the loop still acts "
                            "in the window, but its Report will not match a commitment")

    async def _retry_commits(self) -> None:
        """Queued commitments again, until they leave the queue or their window starts."""
        for event_id, commit in list(self.uncommitted.items()):
            method = str(self.commitments.get(event_id, {}).get("method", commit.method))
            event = self.ports.book.event(event_id)
            if self.ports.clock() >= event.start_s:
                del self.uncommitted[event_id]
                self._record_commit(event_id, commit, method=method, state="not committed",
                                    error="the node did not take it before the window started")
                self.ports.fail(event_id, "baseline not committed before the window started (node "
                                "unreachable); the loop still acts, but its Report will revert")
                continue
            await self._send_commit(event_id, commit, method=method)

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


def _commit_of(window: int, baseline: bl.Baseline) -> BaselineCommit:
    """What is committed of a baseline: the three values the Report repeats (verdict.py computes
    baselineWh by the same whole_wh of the same energy)."""
    return BaselineCommit(window=window, method=int(baseline.method), input_hash=baseline.input_hash,
                          baseline_wh=whole_wh(baseline.energy_wh()))


def _commit_from_json(data: Mapping[str, Any]) -> BaselineCommit:
    return BaselineCommit(window=int(data["window"]), method=int(data["method_id"]),
                          input_hash=bytes.fromhex(str(data["input_hash"]).removeprefix("0x")),
                          baseline_wh=int(data["baseline_wh"]))
