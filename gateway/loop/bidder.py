"""The household bids by itself: every `renew_minutes`, forecast flexibility -> plan -> bids on chain.

Part of the loop's shell (docs/bidding.md). One cycle reads the market's terms and the household's
bids through the BiddingPort (in the chain executor the DR loop uses, so one thread owns the nonce
and the event loop never waits on the node), follows what became of our bids (window, award, deposit
refunded or forfeited, payment: from the DR journal's settlements), claims the household's balance in
the market once a settlement credited it (pull settlement: nothing reaches the wallet until someone
claims), builds each lever's history from
the lever loads recorded (gateway/loop/lever_record.py), asks the forecaster for the flexibility of
each candidate block, lets the pure planner (gateway/loop/bid_plan.py) decide, and executes its
actions: each bid journalled, then published as a `dr_bid` message. A node that is down ends the
cycle (retried next time); a revert skips that one action, its decoded error logged once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.chain.market_types import BiddingPort, HeldBid, MarketTerms
from gateway.chain.revert import ChainRevert
from gateway.forecast.series import LeverHistory
from gateway.loop import bid_plan, lever_record
from gateway.loop.bid_journal import BidJournal
from gateway.loop.market_settings import MarketConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
# A revert (the fake market raises ValueError where the token would revert); anything else from the
# port (NodeUnavailable, a connection error) means the node is away and the cycle ends.
REJECTIONS = (ChainRevert, ValueError)
ALWAYS = {"state_change": True}  # a bid placed or withdrawn is news (past the logs' repeat filter)


class FlexForecaster(Protocol):
    """gateway/forecast/flex.py's forecast_flex."""

    def __call__(self, levers: Sequence[LeverHistory], *, start_s: int, end_s: int, now_s: int,
                 zone: dt.tzinfo, direction: str) -> bid_plan.Flex: ...


def default_forecaster() -> FlexForecaster:
    from gateway.forecast.flex import forecast_flex

    return forecast_flex


@dataclass(frozen=True, slots=True, kw_only=True)
class BidChange:
    """What one cycle did: `change` placed | renewed | withdrawn | rejected | settled | claimed."""

    change: str
    bid_id: int | None
    from_s: int
    to_s: int
    power_w: int
    price_mtok: int
    deposit_mtok: int
    reason: str
    basis: str = ""
    outcome: Mapping[str, Any] | None = None

    def message(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "dr_bid", "change": self.change, "bid_id": self.bid_id,
                                "from_s": self.from_s, "to_s": self.to_s, "power_w": self.power_w,
                                "price_mtok_per_kwh": self.price_mtok,
                                "deposit_mtok": self.deposit_mtok, "reason": self.reason}
        if self.basis:
            body["basis"] = self.basis
        if self.outcome is not None:
            body["outcome"] = dict(self.outcome)
        return body


class Bidder:
    """Built by the agent with its ports; `run()` cycles until cancelled, `cycle(now_s)` runs one."""

    def __init__(self, *, config: MarketConfig, recorder: lever_record.LeverRecorder,
                 zone: dt.tzinfo, port: BiddingPort, journal: BidJournal,
                 publish: Callable[[Mapping[str, Any]], None],
                 settlement: Callable[[int], Mapping[str, Any] | None], executor: Executor,
                 forecaster: FlexForecaster | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.recorder, self.zone, self.port = config, recorder, zone, port
        self.journal, self.publish, self.settlement = journal, publish, settlement
        self.executor, self.clock = executor, clock
        self.forecaster = forecaster or default_forecaster()
        self.policy = bid_plan.BidPolicy(
            price_mtok=config.min_price_mtok, max_deposit_mtok=config.max_deposit_mtok,
            confidence=config.confidence, min_bid_w=config.min_bid_w,
            hysteresis=config.hysteresis, margin_s=config.margin_s)
        self.last_cycle_s: float | None = None
        self.last_error: str | None = None
        self.notes: tuple[str, ...] = ()
        self._logged: set[str] = set()  # rejections already logged (each once)

    async def run(self) -> None:
        while True:
            try:
                await self.cycle(int(self.clock()))
            except Exception as exc:  # a journal or forecast fault must not take the agent down
                self.last_error = str(exc)
                log.exception("bidder cycle failed (next in %.0f s): %s", self.config.renew_s, exc)
            await asyncio.sleep(self.config.renew_s)

    async def cycle(self, now_s: int) -> list[BidChange]:
        """One pass: follow our bids, plan, act. Returns what changed (also journalled, published)."""
        if not self.config.enabled:
            return []
        try:
            terms, held = await self._on_chain(self._read)
        except Exception as exc:  # a node that is down: try again next cycle
            self.last_error = f"market unreachable: {exc}"
            log.warning("bidder: market unreachable (retrying in %.0f s): %s",
                        self.config.renew_s, exc)
            return []
        changes = self._follow(held, now_s)
        changes += await self._claim(terms, now_s)
        forecasts = self._forecasts(now_s)
        p = bid_plan.plan(now_s=now_s, terms=terms, policy=self.policy, forecasts=forecasts,
                          held=held, own=self.journal.own_ids())
        if p.notes != self.notes:
            for note in p.notes:
                log.info("bidder: %s", note)
        self.notes = p.notes
        changes += await self._execute(p.actions, now_s)
        self._prune(now_s)
        self.last_cycle_s, self.last_error = now_s, None
        return changes

    def _read(self) -> tuple[MarketTerms, list[HeldBid]]:
        return self.port.terms(), self.port.bids()

    # ----------------------------------------------------------------------------- forecasts

    def _forecasts(self, now_s: int) -> list[bid_plan.BlockForecast]:
        c = self.config
        levers = lever_record.history(self.recorder, now_s=now_s, days=c.history_days,
                                      capacity_wh=dict(c.battery_capacity_wh),
                                      reserve_pct=c.battery_reserve_pct)
        out = []
        for start, end in bid_plan.blocks(now_s, c.hours, zone=self.zone, horizon_s=c.horizon_s):
            for direction in c.directions:
                try:
                    flex = self.forecaster(levers, start_s=start, end_s=end, now_s=now_s,
                                           zone=self.zone, direction=direction)
                except ValueError as exc:
                    log.error("bidder: no forecast for %d..%d %s: %s", start, end, direction, exc)
                    continue
                out.append(bid_plan.BlockForecast(from_s=start, to_s=end, direction=direction,
                                                  flex=flex))
        return out

    # ----------------------------------------------------------------------------- actions

    async def _execute(self, actions: Sequence[bid_plan.BidAction], now_s: int) -> list[BidChange]:
        changes: list[BidChange] = []
        failed: set[int] = set()  # withdrawals that did not happen: their renewal is skipped
        for a in actions:
            if a.replaces is not None and a.replaces in failed:
                continue
            try:
                if a.kind == "withdraw":
                    assert a.bid_id is not None
                    await self._on_chain(self.port.withdraw_bid, a.bid_id)
                    changes.append(self._withdrawn(a, now_s))
                else:
                    assert a.order is not None
                    bid_id = await self._on_chain(self.port.place_bid, a.order)
                    changes.append(self._placed(bid_id, a, now_s))
            except REJECTIONS as exc:  # the contract said no: skip this one action
                if a.bid_id is not None:
                    failed.add(a.bid_id)
                changes.append(self._rejected(a, exc))
            except Exception as exc:  # the node went away mid-cycle: the rest waits for the next
                self.last_error = f"market unreachable: {exc}"
                log.warning("bidder: %s of %s failed, cycle ends here: %s", a.kind,
                            a.bid_id or "a new bid", exc)
                break
        for change in changes:
            self.publish(change.message())
        return changes

    def _placed(self, bid_id: int, a: bid_plan.BidAction, now_s: int) -> BidChange:
        assert a.order is not None
        o = a.order
        self.journal.add_bid(bid_id, o, deposit_mtok=a.deposit_mtok, basis=a.basis,
                             replaces=a.replaces, now_ms=now_s * 1000)
        change = "renewed" if a.replaces is not None else "placed"
        log.warning("bid %d %s: %d W %s..%s at %d mtok/kWh, deposit %d mtok (%s)", bid_id, change,
                    o.power_w, _clock(o.from_s, self.zone), _clock(o.to_s, self.zone), o.price_mtok,
                    a.deposit_mtok, a.reason, extra=ALWAYS)
        return BidChange(change=change, bid_id=bid_id, from_s=o.from_s, to_s=o.to_s,
                         power_w=o.power_w, price_mtok=o.price_mtok, deposit_mtok=a.deposit_mtok,
                         reason=a.reason, basis=a.basis)

    def _withdrawn(self, a: bid_plan.BidAction, now_s: int) -> BidChange:
        assert a.bid_id is not None
        row = next((b for b in self.journal.bids() if b.bid_id == a.bid_id), None)
        self.journal.update(a.bid_id, state="withdrawn", window=0, award_w=0, now_ms=now_s * 1000)
        log.warning("bid %d withdrawn, deposit %d mtok back (%s)", a.bid_id, a.deposit_mtok,
                    a.reason, extra=ALWAYS)
        o = row.order if row is not None else None
        return BidChange(change="withdrawn", bid_id=a.bid_id, from_s=o.from_s if o else 0,
                         to_s=o.to_s if o else 0, power_w=o.power_w if o else 0,
                         price_mtok=o.price_mtok if o else 0, deposit_mtok=a.deposit_mtok,
                         reason=a.reason)

    def _rejected(self, a: bid_plan.BidAction, exc: Exception) -> BidChange:
        what = f"withdraw bid {a.bid_id}" if a.kind == "withdraw" else "place bid"
        text = f"{what} rejected: {exc}"
        if text not in self._logged:  # the same revert every cycle is logged once
            self._logged.add(text)
            log.error("bidder: %s", text)
        o = a.order
        return BidChange(change="rejected", bid_id=a.bid_id, from_s=o.from_s if o else 0,
                         to_s=o.to_s if o else 0, power_w=o.power_w if o else 0,
                         price_mtok=o.price_mtok if o else 0, deposit_mtok=a.deposit_mtok,
                         reason=f"{a.reason}; {exc}")

    # ----------------------------------------------------------------------------- outcomes

    def _follow(self, held: Sequence[HeldBid], now_s: int) -> list[BidChange]:
        """Journal what the contract says of our bids; a finished one gets its outcome."""
        rows = {b.bid_id: b for b in self.journal.bids()}
        changes = []
        for bid in held:
            row = rows.get(bid.bid_id)
            if row is None:
                continue  # placed by the household itself: not ours to track
            self.journal.update(bid.bid_id, state=bid.state, window=bid.window,
                                award_w=bid.award_w, now_ms=now_s * 1000)
            if bid.state != "done" or row.outcome is not None:
                continue
            outcome = self._outcome(bid)
            if outcome is None:
                continue
            self.journal.set_outcome(bid.bid_id, outcome, now_ms=now_s * 1000)
            o = bid.order
            changes.append(BidChange(change="settled", bid_id=bid.bid_id, from_s=o.from_s,
                                     to_s=o.to_s, power_w=o.power_w, price_mtok=o.price_mtok,
                                     deposit_mtok=bid.deposit_mtok, reason=f"window {bid.window}",
                                     outcome=outcome))
        for change in changes:
            self.publish(change.message())
        return changes

    async def _claim(self, terms: MarketTerms, now_s: int) -> list[BidChange]:
        """Pay the household's market balance (payments, refunds) out to its wallet, journalled
        and published as a `claimed` change. A refusal is logged once; a node that went away
        leaves the balance for the next cycle (it stays credited on chain meanwhile)."""
        if terms.claimable_mtok <= 0:
            return []
        try:
            amount = await self._on_chain(self.port.claim)
        except REJECTIONS as exc:
            text = f"claim rejected: {exc}"
            if text not in self._logged:
                self._logged.add(text)
                log.error("bidder: %s", text)
            return []
        except Exception as exc:
            self.last_error = f"market unreachable: {exc}"
            log.warning("bidder: claim of %d mtok failed, next cycle: %s", terms.claimable_mtok,
                        exc)
            return []
        if amount <= 0:  # someone else claimed it for us between the read and the claim
            return []
        self.journal.add_claim(amount, now_ms=now_s * 1000)
        log.warning("claimed %d mtok from the market into the household's wallet", amount,
                    extra=ALWAYS)
        change = BidChange(change="claimed", bid_id=None, from_s=0, to_s=0, power_w=0,
                           price_mtok=0, deposit_mtok=0,
                           reason="payments and refunds paid out to the household's wallet",
                           outcome={"claimed_mtok": amount})
        self.publish(change.message())
        return [change]

    def _outcome(self, bid: HeldBid) -> dict[str, Any] | None:
        """A bid that took part with no award has its deposit back (DRMarket.check refunds every
        bidder but a short winner); a winner's outcome is its window's settlement, once the DR
        loop has journalled it."""
        if bid.award_w == 0:
            return {"window": bid.window, "award_w": 0, "deposit": "refunded", "payment_mtok": 0}
        settled = self.settlement(bid.window)
        if settled is None:
            return None
        return {"window": bid.window, "award_w": bid.award_w,
                "deposit": str(settled.get("deposit", "unknown")),
                "payment_mtok": int(settled.get("payment_mtok", 0)),
                "clearing_price_mtok_per_kwh": int(settled.get("clearing_price_mtok_per_kwh", 0))}

    def _prune(self, now_s: int) -> None:
        self.journal.prune_levers(before_s=now_s - self.config.history_days * 86400 - 86400)
        self.journal.prune_bids(now_s=now_s)

    # ----------------------------------------------------------------------------- readout

    def status(self) -> dict[str, Any]:
        """For the status command: deposits held, paid, refunded, forfeited (mtok), last cycle."""
        return {"enabled": self.config.enabled, **self.journal.summary(),
                "last_cycle_s": self.last_cycle_s, "last_error": self.last_error}

    def counters(self) -> dict[str, int]:
        """For the health topic."""
        return {f"market.{k}": v for k, v in self.journal.summary().items()}

    async def _on_chain(self, call: Callable[..., T], *args: Any) -> T:
        """`call` in the chain thread: one nonce owner, and the event loop never waits on the node."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, *args)


def _clock(t: int, zone: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(t, zone).strftime("%a %H:%M")
