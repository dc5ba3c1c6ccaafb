"""The household's bids, decided (pure): forecast flexibility per block in, place/withdraw actions out.

No clock, no chain, no I/O: `now_s`, the market's terms, the household's held bids and a flexibility
forecast per candidate block are arguments; the shell (gateway/loop/bidder.py) executes the actions.
The rules, with the reasons behind them, are written out in docs/bidding.md:

- quantity = the forecast's `deliverable_w(confidence)` rounded down to 100 W; none below
  `min_bid_w`; `rated_w` = quantity, so the deposit (depositPerKw x ratedW / 1000, DRMarket.placeBid)
  is the least the contract accepts (it requires ratedW >= |powerW|) for the power offered;
- never more deposit than `max_deposit` across the household's open and consumed bids, the ERC-20
  allowance left (it shrinks with every deposit taken and is not restored by refunds) or the balance:
  a bid that does not fit is made smaller, and dropped below `min_bid_w`;
- a held bid whose block starts within lockout + margin of now is left alone (a block without a bid
  there still gets one while a window can fit in what is left of it after the lockout); while a window
  is announced and not cleared, nothing is withdrawn (DRMarket.withdrawBid reverts BidLocked for bids
  placed before it);
- a held bid is renewed (withdraw + place) only when the price changed or the quantity moved by more
  than `hysteresis` x its quantity, and withdrawn when the forecast falls below `min_bid_w`;
- an open bid no future window can clear (its range ends within the lockout) is withdrawn: the
  contract keeps its deposit until then;
- a block in which one of our bids took part in a window gets no new bid (its flexibility is spent).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.chain.market_types import BidOrder, HeldBid, MarketTerms
from gateway.loop.market_settings import DailyHours

STEP_W = 100  # quantities are whole multiples of 100 W (docs/bidding.md, "Quantity")
MAX_POWER_W = 1_000_000  # DRMarket.MAX_POWER_W: the largest |powerW| a bid may carry
LIVE = ("open", "consumed")  # HeldBid states whose deposit the contract still holds


class Flex(Protocol):
    """What the planner reads of a flexibility forecast (gateway/forecast/flex.py's FlexForecast)."""

    @property
    def mean_w(self) -> float: ...
    @property
    def basis(self) -> str: ...
    def deliverable_w(self, confidence: float) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BidPolicy:
    price_mtok: int
    max_deposit_mtok: int
    confidence: float
    min_bid_w: int
    hysteresis: float
    margin_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockForecast:
    """One candidate block [from_s, to_s) and direction, with its flexibility forecast."""

    from_s: int
    to_s: int
    direction: str  # "reduce" | "increase"
    flex: Flex

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.from_s, self.to_s, self.direction)


@dataclass(frozen=True, slots=True, kw_only=True)
class BidAction:
    """`kind` "place" (with `order`; `replaces` = the bid it renews) or "withdraw" (`bid_id`)."""

    kind: str
    reason: str
    order: BidOrder | None = None
    bid_id: int | None = None
    replaces: int | None = None
    deposit_mtok: int = 0
    basis: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[BidAction, ...]
    notes: tuple[str, ...] = field(default=())  # why something was not done (for the log)


def quantity_w(flex: Flex, confidence: float) -> int:
    """What the household offers: the W it delivers with `confidence`, down to a 100 W step."""
    deliverable = flex.deliverable_w(confidence)
    return min(MAX_POWER_W, max(0, int(deliverable // STEP_W) * STEP_W))


def deposit_mtok(terms: MarketTerms, rated_w: int) -> int:
    """DRMarket.placeBid: depositPerKw x ratedW / 1000, rounded toward zero."""
    return terms.deposit_per_kw_mtok * rated_w // 1000


def direction_of(order: BidOrder) -> str:
    return "reduce" if order.power_w < 0 else "increase"


def blocks(now_s: int, hours: Sequence[DailyHours], *, zone: dt.tzinfo,
           horizon_s: int) -> list[tuple[int, int]]:
    """The blocks of `hours` on the local days around now that end after now and start within the
    horizon, as (from_s, to_s), soonest first. Local midnight plus the block's wall-clock time, each
    day with its own UTC offset (a DST day's block keeps its wall-clock hours)."""
    today = dt.datetime.fromtimestamp(now_s, zone).date()
    out = set()
    for offset in range(-1, horizon_s // 86400 + 2):
        day = today + dt.timedelta(days=offset)
        for h in hours:
            start = _local(day, h.start_min, zone)
            end_day = day + dt.timedelta(days=1) if h.end_min <= h.start_min else day
            end = _local(end_day, h.end_min, zone)
            if end > now_s and start < now_s + horizon_s:
                out.add((start, end))
    return sorted(out)


def _local(day: dt.date, minute: int, zone: dt.tzinfo) -> int:
    return int(dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=zone).timestamp())


class _Budget:
    """What new deposits may still take: the policy's cap, the allowance left and the balance."""

    def __init__(self, terms: MarketTerms, policy: BidPolicy, held: Sequence[HeldBid]) -> None:
        self.terms = terms
        at_risk = sum(b.deposit_mtok for b in held if b.state in LIVE)
        self.room = policy.max_deposit_mtok - at_risk
        self.allowance = terms.allowance_mtok
        self.balance = terms.balance_mtok

    def refund(self, bid: HeldBid) -> None:
        self.room += bid.deposit_mtok
        self.balance += bid.deposit_mtok  # a refund goes back to the wallet, not to the allowance

    def fit(self, want_w: int, *, refund: int = 0) -> int:
        """The largest quantity <= want_w (in 100 W steps) whose deposit fits (after `refund`
        mtok of a bid withdrawn first came back: to the room and the balance, not the allowance)."""
        per_kw = self.terms.deposit_per_kw_mtok
        cap = min(self.room + refund, self.allowance, self.balance + refund)
        if per_kw == 0:
            return want_w
        if cap < 0:
            return 0
        return min(want_w, cap * 1000 // per_kw // STEP_W * STEP_W)

    def take(self, deposit: int) -> None:
        self.room -= deposit
        self.allowance -= deposit
        self.balance -= deposit


def plan(*, now_s: int, terms: MarketTerms, policy: BidPolicy, forecasts: Sequence[BlockForecast],
         held: Sequence[HeldBid], own: Iterable[int]) -> Plan:
    """The actions for now. `held`: all of the household's bids; `own`: the ids this gateway
    placed (it never touches a bid the household placed by hand, but counts its deposit)."""
    return _Planner(now_s=now_s, terms=terms, policy=policy, held=held, own=set(own)).run(forecasts)


class _Planner:
    def __init__(self, *, now_s: int, terms: MarketTerms, policy: BidPolicy,
                 held: Sequence[HeldBid], own: set[int]) -> None:
        now = max(now_s, terms.chain_now_s)  # the later clock: never too close to a lockout
        self.terms, self.policy = terms, policy
        self.dead_before = now + terms.lockout_s  # no window announced from now on ends before this
        self.frozen_before = now + terms.lockout_s + policy.margin_s
        self.locked = [w for w, _, _ in terms.announced]
        self.budget = _Budget(terms, policy, held)
        self.mine = sorted((b for b in held if b.bid_id in own), key=lambda b: b.bid_id)
        self.actions: list[BidAction] = []
        self.notes: list[str] = []

    def run(self, forecasts: Sequence[BlockForecast]) -> Plan:
        wanted = {f.key for f in forecasts}
        spent = {_key(b.order) for b in self.mine if b.state in ("consumed", "done")}
        matched: dict[tuple[int, int, str], HeldBid] = {}
        frozen: set[tuple[int, int, str]] = set()
        for bid in (b for b in self.mine if b.state == "open"):
            key = _key(bid.order)
            if bid.order.to_s <= self.dead_before:
                self._withdraw(bid, "its range ends within the lockout: no window can clear it")
            elif bid.order.from_s <= self.frozen_before:
                frozen.add(key)  # left alone: a window may be announced for it any moment
            elif key not in wanted or key in matched:
                self._withdraw(bid, "its block is no longer one the policy bids for")
            else:
                matched[key] = bid
        for f in sorted(forecasts, key=lambda f: (f.from_s, f.direction != "reduce", f.to_s)):
            if f.key in frozen or f.to_s <= self.frozen_before:
                continue  # our bid there is frozen, or no window announced from now on fits in it
            if f.key in spent:
                self.notes.append(f"{_name(f.key)}: a bid of ours took part in a window; no new bid")
                continue
            # A block that starts within the lockout (or has started) still takes a NEW bid: a window
            # announced from now on starts after the lockout, and a bid covering the whole block
            # covers it. Only renewals wait, since a held bid there may be cleared any moment.
            self._block(f, matched.get(f.key))
        return Plan(actions=tuple(self.actions), notes=tuple(self.notes))

    def _block(self, f: BlockForecast, held: HeldBid | None) -> None:
        want = quantity_w(f.flex, self.policy.confidence)
        min_w = self.policy.min_bid_w
        if held is None:
            if want < min_w:
                self.notes.append(f"{_name(f.key)}: {want} W deliverable at "
                                  f"{self.policy.confidence:g} is below min_bid ({min_w} W)")
            else:
                self._place(f, want, replaces=None, reason="new block")
            return
        have = abs(held.order.power_w)
        if want < min_w:
            self._withdraw(held, f"forecast fell to {want} W, below min_bid ({min_w} W)")
            return
        repriced = held.order.price_mtok != self.policy.price_mtok
        moved = abs(want - have) > self.policy.hysteresis * have
        if not (repriced or moved):
            return
        if self.locked:
            self.notes.append(f"{_name(f.key)}: renewal deferred, window(s) {self.locked} announced")
            return
        why = "price changed" if repriced else f"forecast moved {have} -> {want} W"
        fits = self.budget.fit(want, refund=held.deposit_mtok)
        if fits < min_w or (fits <= have and want > have and not repriced):
            if want < have:  # keeping it would promise more than the levers deliver
                self._withdraw(held, f"{why}; a smaller bid does not fit the deposit budget")
            else:
                self.notes.append(f"{_name(f.key)}: {why}, but only {fits} W fit the deposit "
                                  f"budget; bid {held.bid_id} kept")
            return
        self._withdraw(held, f"renewed: {why}")
        self._place(f, want, replaces=held.bid_id, reason=f"renews bid {held.bid_id}: {why}")

    def _withdraw(self, bid: HeldBid, reason: str) -> None:
        if self.locked:
            self.notes.append(f"bid {bid.bid_id}: withdrawal deferred ({reason}): window(s) "
                              f"{self.locked} announced and not cleared")
            return
        self.budget.refund(bid)
        self.actions.append(BidAction(kind="withdraw", bid_id=bid.bid_id, reason=reason,
                                      deposit_mtok=bid.deposit_mtok))

    def _place(self, f: BlockForecast, want: int, *, replaces: int | None, reason: str) -> None:
        q = self.budget.fit(want)
        if q < self.policy.min_bid_w:
            self.notes.append(f"{_name(f.key)}: {want} W wanted, the deposit budget allows {q} W "
                              f"(below min_bid {self.policy.min_bid_w} W)")
            return
        if q < want:
            reason += f"; cut from {want} W to fit the deposit budget"
        order = BidOrder(from_s=f.from_s, to_s=f.to_s, power_w=-q if f.direction == "reduce" else q,
                         rated_w=q, price_mtok=self.policy.price_mtok)
        deposit = deposit_mtok(self.terms, q)
        self.budget.take(deposit)
        self.actions.append(BidAction(kind="place", order=order, replaces=replaces, reason=reason,
                                      deposit_mtok=deposit, basis=f.flex.basis))


def _key(order: BidOrder) -> tuple[int, int, str]:
    return (order.from_s, order.to_s, direction_of(order))


def _name(key: tuple[int, int, str]) -> str:
    return f"block {key[0]}..{key[1]} {key[2]}"
