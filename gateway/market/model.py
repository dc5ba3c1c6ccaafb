"""Reference model of the DR market contract: target, merit-order clearing, settlement, verification.

Pure integer arithmetic in exactly the contract's units (docs/market.md), so that a differential test
can demand identical results from the EVM and from this module:

- power in W, signed (negative = reduce load); energy in Wh, signed (int64: a household exporting
  during a window has a negative actual energy); time in unix seconds;
- money in milli-tokens (mtok, the token's base unit, 3 decimals); prices in mtok/kWh;
- currency prices in micro-currency/kWh; the token rate in mtok per currency unit;
- omega (discomfort sensitivity) in mtok/kWh per kW; tolerance in basis points.

Every division rounds toward zero, and every operand is non-negative, so `//` matches Solidity
(energies are only added and compared, never divided).
Reputation rules live in `gateway.market.reputation`.

Issue 14 adds, as the contract does: pricing per window (uniform, seed 003, or pay-as-bid, seed
002), sealed bids (commit a hash, reveal before clearing; an unrevealed one is refunded minus
UNREVEALED_PENALTY_BPS) and pull settlement (the amount `settle` takes from the treasury once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

MAX_POWER_W = 1_000_000
MS_PER_HOUR_KW = 3_600_000  # seconds per hour x W per kW: mtok/kWh x W x s / 3_600_000 = mtok
UNREVEALED_PENALTY_BPS = 1000  # DRMarketBase.UNREVEALED_PENALTY_BPS: share kept of an unrevealed bid

# Why a bid did not take part in a window ("" = eligible). The contract only reports the eligible
# set; these names are the model's explanation of it.
ELIGIBLE = ""
LATE = "submitted after announcement"
WRONG_DIRECTION = "wrong direction"
RANGE = "time range does not cover the window"
HOUSEHOLD_SUSPENDED = "household suspended"
AGGREGATOR_SUSPENDED = "aggregator suspended"
UNREVEALED = "sealed bid not revealed"

# Why a window was voided at clearing (the contract's WindowVoided reason codes).
VOID_NONE = 0
VOID_NO_ELIGIBLE_BIDS = 1
VOID_TARGET_ZERO = 2
VOID_CLEARED_TOO_LATE = 3


class Mode(Enum):
    """How the operator values a kWh of response: shift (dEc = 0) or curtail (dEc = retail)."""

    SHIFT = 0
    CURTAIL = 1


class Pricing(Enum):
    """What a winner is paid per kWh: the marginal bid's price (seed 003) or its own (seed 002)."""

    UNIFORM = 0
    PAY_AS_BID = 1


class Outcome(Enum):
    """A winner's verification result; the value is the contract's outcome code."""

    PERFORMED = 0
    SHORTFALL = 1
    NO_REPORT = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Bid:
    """A household's offer. `id` is its submission order (the contract's bid id, from 1)."""

    id: int
    household: str
    from_s: int
    to_s: int
    power_w: int
    rated_w: int
    price_mtok: int
    unrevealed: bool = False  # a sealed bid whose reveal did not come in time

    @property
    def magnitude_w(self) -> int:
        return abs(self.power_w)


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSpec:
    """What the operator announces. Bids with id < `cutoff` were placed before the announcement."""

    start_s: int
    end_s: int
    retail_micro: int
    realtime_micro: int
    omega_milli: int
    mode: Mode
    cutoff: int
    pricing: Pricing = Pricing.UNIFORM

    @property
    def seconds(self) -> int:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The announcement's derived values: wanted direction, spread, dEc and the optimum in W."""

    reduce: bool
    spread_mtok: int
    dec_mtok: int
    optimum_w: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Clearing:
    """Result of clearing one window. `order` lists eligible bid ids in merit order."""

    target_w: int
    clearing_price_mtok: int
    awards: Mapping[int, int]  # bid id -> awarded W (0 for eligible losers)
    order: tuple[int, ...]
    reasons: Mapping[int, str]  # bid id -> "" or why it was not eligible
    void_reason: int

    @property
    def winners(self) -> tuple[int, ...]:
        return tuple(b for b in self.order if self.awards[b] > 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class BidResult:
    """Settlement and verification of one eligible bid."""

    bid_id: int
    household: str
    award_w: int
    payment_mtok: int
    outcome: Outcome | None  # None for eligible losers
    deposit_mtok: int
    refunded_mtok: int
    forfeited_mtok: int


def deposit_mtok(rated_w: int, deposit_per_kw_mtok: int) -> int:
    """Deposit escrowed with a bid: deposit rate x rated kW, rounded down."""
    return deposit_per_kw_mtok * rated_w // 1000


def target_of(window: WindowSpec, mtok_per_currency: int) -> Target:
    """spread = |rt - retail| x rate; dEc = retail x rate (curtail) or 0; optimum = (dEc+spread)/2w."""
    if window.omega_milli <= 0:
        raise ValueError("omega_milli must be positive")
    diff = abs(window.realtime_micro - window.retail_micro)
    spread = diff * mtok_per_currency // 1_000_000
    curtail = window.mode is Mode.CURTAIL
    dec = window.retail_micro * mtok_per_currency // 1_000_000 if curtail else 0
    optimum = min((spread + dec) * 1000 // (2 * window.omega_milli), 2**32 - 1)
    reduce = curtail or window.realtime_micro >= window.retail_micro
    return Target(reduce=reduce, spread_mtok=spread, dec_mtok=dec, optimum_w=optimum)


def eligibility(
    bid: Bid, window: WindowSpec, target: Target, suspended: Mapping[str, str]
) -> str:
    """Why `bid` cannot take part in `window`, or "" when it can (same order as the contract)."""
    if bid.id >= window.cutoff:
        return LATE
    if bid.unrevealed:
        return UNREVEALED
    if (bid.power_w < 0) != target.reduce:
        return WRONG_DIRECTION
    if bid.from_s > window.start_s or bid.to_s < window.end_s:
        return RANGE
    return suspended.get(bid.household, ELIGIBLE)


def clear(
    open_bids: Iterable[Bid],
    window: WindowSpec,
    target: Target,
    *,
    now_s: int,
    suspended: Mapping[str, str] | None = None,
) -> Clearing:
    """Merit order: price ascending, ties by submission; the marginal bid fills the target exactly.

    A window is voided, in this order, when cleared after its start, when its optimum is zero
    (both decided before any bid is passed) or when no bid is eligible."""
    bids = sorted(open_bids, key=lambda b: b.id)
    reasons = {b.id: eligibility(b, window, target, suspended or {}) for b in bids}
    eligible = [b for b in bids if reasons[b.id] == ELIGIBLE]
    total = sum(b.magnitude_w for b in eligible)
    target_w = min(total, target.optimum_w)
    void = VOID_NONE
    if now_s >= window.start_s:
        void = VOID_CLEARED_TOO_LATE
    elif target.optimum_w == 0:
        void = VOID_TARGET_ZERO
    elif not eligible:
        void = VOID_NO_ELIGIBLE_BIDS
    if void != VOID_NONE:
        return Clearing(target_w=0, clearing_price_mtok=0, awards={}, order=(), reasons=reasons,
                        void_reason=void)
    eligible.sort(key=lambda b: (b.price_mtok, b.id))
    remaining = target_w
    price = 0
    awards: dict[int, int] = {}
    for b in eligible:
        award = min(remaining, b.magnitude_w)
        awards[b.id] = award
        if award > 0:
            remaining -= award
            price = b.price_mtok
    return Clearing(target_w=target_w, clearing_price_mtok=price, awards=awards,
                    order=tuple(b.id for b in eligible), reasons=reasons, void_reason=VOID_NONE)


def price_of(bid: Bid, clearing: Clearing, window: WindowSpec) -> int:
    """The price a winning bid is paid at: the clearing price, or its own under pay-as-bid."""
    return bid.price_mtok if window.pricing is Pricing.PAY_AS_BID else clearing.clearing_price_mtok


def pulled_mtok(clearing: Clearing, bids: Sequence[Bid], window: WindowSpec) -> int:
    """What `settle` takes from the treasury: every winner's price x award, summed, times the
    window's seconds, rounded down once. It covers the payments (each rounded down, only to
    winners that reported); the rest returns to the treasury's balance when the window is checked."""
    weight = sum(price_of(b, clearing, window) * clearing.awards.get(b.id, 0) for b in bids)
    return weight * window.seconds // MS_PER_HOUR_KW


def unrevealed_refund_mtok(deposit: int) -> tuple[int, int]:
    """(refund to the household, penalty to the treasury) of a sealed bid not revealed in time."""
    penalty = deposit * UNREVEALED_PENALTY_BPS // 10_000
    return deposit - penalty, penalty


def seal(*, price_mtok: int, power_w: int, from_s: int, to_s: int, salt: bytes,
         household: str) -> bytes:
    """A sealed bid's commitment: keccak256(abi.encode(uint64 price, int32 power, uint40 from,
    uint40 to, bytes32 salt, address household)), as DRMarket.revealBid checks it."""
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    return keccak(encode(["uint64", "int32", "uint40", "uint40", "bytes32", "address"],
                         [price_mtok, power_w, from_s, to_s, salt, household]))


def payment_mtok(clearing_price_mtok: int, award_w: int, seconds: int) -> int:
    """Clearing price x awarded kW x window hours, in mtok, rounded down."""
    return clearing_price_mtok * award_w * seconds // MS_PER_HOUR_KW


def delivered_wh(*, reduce: bool, baseline_wh: int, actual_wh: int) -> int:
    """Response in the wanted direction; the contract rejects a Report whose value differs.
    Signed throughout: exporting (actual < 0) during a reduce window counts in full."""
    return baseline_wh - actual_wh if reduce else actual_wh - baseline_wh


@dataclass(frozen=True, slots=True, kw_only=True)
class Commitment:
    """A household's baseline committed before a window (DRMarket.commitBaseline)."""

    method: int
    input_hash: bytes
    baseline_wh: int


def commit_refusal(*, window_state: int, now_s: int, start_s: int) -> str:
    """Why the contract refuses a baseline commitment now ("" = accepted; a later one replaces an
    earlier one). States are the contract's: 1 announced, 2 cleared."""
    if window_state == 0:
        return "UnknownWindow"
    if window_state not in (1, 2):
        return "BaselineWindowClosed"
    return "BaselineTooLate" if now_s >= start_s else ""


def report_refusal(*, reduce: bool, commitment: Commitment | None, method: int, input_hash: bytes,
                   baseline_wh: int, actual_wh: int, delivered: int) -> str:
    """The contract's baseline and energy checks of a Report, in its order ("" = they pass)."""
    if commitment is None:
        return "BaselineNotCommitted"
    if (commitment.method, commitment.input_hash, commitment.baseline_wh) != (
            method, input_hash, baseline_wh):
        return "BaselineMismatch"
    expected = delivered_wh(reduce=reduce, baseline_wh=baseline_wh, actual_wh=actual_wh)
    return "" if expected == delivered else "ReportInconsistent"


def verdict(delivered: int | None, award_w: int, seconds: int, tolerance_bps: int) -> Outcome:
    """Performed iff delivered Wh >= (1 - tolerance) x awarded energy, compared without division."""
    if delivered is None:
        return Outcome.NO_REPORT
    if delivered < 0:
        return Outcome.SHORTFALL
    need = award_w * seconds * (10_000 - tolerance_bps)
    return Outcome.PERFORMED if delivered * 3600 * 10_000 >= need else Outcome.SHORTFALL


def settle_and_check(
    clearing: Clearing,
    bids: Sequence[Bid],
    window: WindowSpec,
    *,
    delivered: Mapping[str, int],
    deposit_per_kw_mtok: int,
    tolerance_bps: int,
) -> tuple[BidResult, ...]:
    """Payments (winners that reported) and deposit outcomes, in merit order.

    `delivered` maps each household that had a Report accepted to its delivered Wh; the verdict
    is per household, against the sum of its awards, and applies to each of its winning bids.
    """
    by_id = {b.id: b for b in bids}
    award_total: dict[str, int] = {}
    for bid_id, award in clearing.awards.items():
        household = by_id[bid_id].household
        award_total[household] = award_total.get(household, 0) + award
    results = []
    for bid_id in clearing.order:
        b = by_id[bid_id]
        award = clearing.awards[bid_id]
        deposit = deposit_mtok(b.rated_w, deposit_per_kw_mtok)
        outcome: Outcome | None = None
        payment = 0
        if award > 0:
            reported = b.household in delivered
            if reported:
                payment = payment_mtok(price_of(b, clearing, window), award, window.seconds)
            outcome = verdict(delivered.get(b.household), award_total[b.household],
                              window.seconds, tolerance_bps)
        kept = outcome in (None, Outcome.PERFORMED)
        results.append(BidResult(
            bid_id=bid_id, household=b.household, award_w=award, payment_mtok=payment,
            outcome=outcome, deposit_mtok=deposit, refunded_mtok=deposit if kept else 0,
            forfeited_mtok=0 if kept else deposit,
        ))
    return tuple(results)


def operator_gain_mtok(target: Target, clearing: Clearing, seconds: int) -> int:
    """(spread - clearing price) x total awarded kW x hours; may be negative. Report-only figure."""
    total_w = sum(clearing.awards.values())
    margin = target.spread_mtok - clearing.clearing_price_mtok
    sign = -1 if margin < 0 else 1
    return sign * (abs(margin) * total_w * seconds // MS_PER_HOUR_KW)
