"""The values and protocols of the market ports (pure): what the DR loop and the bidder exchange with
the market, whichever implementation stands behind it (gateway/chain/port.py's Web3MarketPort on a
node, gateway/testing/fake_market.py in memory). Kept apart from port.py so that the loop's pure
decision modules (bid_plan) can use them without reaching web3, SQLite or threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.chain.report import Report


@dataclass(frozen=True, slots=True, kw_only=True)
class Award:
    window: int
    start_s: int
    end_s: int
    award_w: int
    reduce: bool
    tolerance_bps: int
    voided: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    state: str  # "accepted", "queued" (node unreachable: kept for the next drain) or "rejected"
    report_id: int
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineCommit:
    """What the gateway commits before a window (signed EIP-712 `Baseline`, DRMarket.commitBaseline):
    the method id, the hash of its inputs (for CONTRACTED the curve's hash) and the baseline's energy
    over the whole window in signed Wh. The window's Report must carry the same three or it reverts."""

    window: int
    method: int
    input_hash: bytes
    baseline_wh: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BidOrder:
    """A bid the household offers (contract units: W signed, negative = reduce; mtok/kWh)."""

    from_s: int
    to_s: int
    power_w: int
    rated_w: int
    price_mtok: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldBid:
    """One of this household's bids as the contract holds it. `state`: "open", "withdrawn",
    "consumed" (took part in `window`, deposit still held), "done" (deposit refunded/forfeited) or
    "sealed" (committed, not revealed). `sealing` is "" for an open bid, else "committed" (its
    terms still hidden: `order` has only its rated power), "revealed" or "unrevealed" (a window
    passed it unrevealed: refunded minus the penalty)."""

    bid_id: int
    order: BidOrder
    deposit_mtok: int
    state: str
    window: int = 0
    award_w: int = 0
    sealing: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketTerms:
    """What a bidder needs to know of the market now (chain time and the contract's Config)."""

    chain_now_s: int
    deposit_per_kw_mtok: int
    lockout_s: int
    tolerance_bps: int
    allowance_mtok: int  # what the household lets the market take: the cap of deposits at risk
    balance_mtok: int
    announced: tuple[tuple[int, int, int], ...] = ()  # (window, start_s, end_s) announced, not cleared
    claimable_mtok: int = 0  # payments and refunds credited to the household, not yet claimed


class MarketPort(Protocol):
    household: str

    def poll_awards(self) -> list[Award]: ...
    def commit_baseline(self, commit: BaselineCommit) -> Submission: ...
    def submit(self, report: Report) -> Submission: ...
    def report_state(self, report_id: int) -> str: ...
    def settlement(self, window: int) -> dict[str, Any] | None: ...


class BiddingPort(Protocol):
    """The household's bids, placed by its gateway on its behalf (DRMarket.placeBidFor: the deposit
    comes from the household's wallet within the allowance it gave the market)."""

    household: str

    def terms(self) -> MarketTerms: ...
    def place_bid(self, order: BidOrder) -> int: ...  # the new bid id; raises ChainRevert
    def withdraw_bid(self, bid_id: int) -> None: ...
    def bids(self) -> list[HeldBid]: ...  # this household's bids, newest last
    def claim(self) -> int: ...  # pay the household's balance in the market out to it: mtok paid
