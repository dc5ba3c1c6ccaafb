"""In-memory stand-ins for the market ports, for tests of the DR loop and the bidder that need no chain
(the real ones are gateway/chain/port.py's Web3MarketPort): FakeMarketPort (awards in, baseline
commitments and Reports out) and FakeBiddingPort (a household's bids and the market's terms)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway.chain.market_types import (
    Award,
    BaselineCommit,
    BiddingPort,
    BidOrder,
    HeldBid,
    MarketPort,
    MarketTerms,
    Submission,
)
from gateway.chain.report import Report


@dataclass
class FakeMarketPort:
    """Tests queue awards and read back the commitments and Reports the loop submitted. Like the
    contract, a Report is rejected unless its window's baseline was committed with the same method,
    input hash and energy."""

    household: str = "0x" + "11" * 20
    awards: list[Award] = field(default_factory=list)
    commits: dict[int, BaselineCommit] = field(default_factory=dict)
    reports: list[Report] = field(default_factory=list)
    rejected: list[tuple[Report, str]] = field(default_factory=list)
    settlements: dict[int, dict[str, Any]] = field(default_factory=dict)
    commit_error: str | None = None  # set: every commitment is rejected with this reason
    queue_commits: int = 0  # this many commitments come back "queued" (node down) before one lands
    commit_calls: list[BaselineCommit] = field(default_factory=list)

    def poll_awards(self) -> list[Award]:
        out, self.awards = self.awards, []
        return out

    def commit_baseline(self, commit: BaselineCommit) -> Submission:
        self.commit_calls.append(commit)
        if self.commit_error is not None:
            return Submission(state="rejected", report_id=0, error=self.commit_error)
        if self.queue_commits > 0:
            self.queue_commits -= 1
            return Submission(state="queued", report_id=0)
        self.commits[commit.window] = commit
        return Submission(state="accepted", report_id=0)

    def submit(self, report: Report) -> Submission:
        commit = self.commits.get(report.window)
        error = None
        if commit is None:
            error = f"BaselineNotCommitted(household={report.household}, window={report.window})"
        elif (commit.method, commit.input_hash, commit.baseline_wh) != (
                report.baseline_method, report.baseline_input_hash, report.baseline_wh):
            error = f"BaselineMismatch(household={report.household}, window={report.window})"
        if error is not None:
            self.rejected.append((report, error))
            return Submission(state="rejected", report_id=0, error=error)
        self.reports.append(report)
        return Submission(state="accepted", report_id=len(self.reports))

    def settlement(self, window: int) -> dict[str, Any] | None:
        return self.settlements.get(window)

    def report_state(self, report_id: int) -> str:
        return "accepted" if 0 < report_id <= len(self.reports) else "unknown"


@dataclass
class FakeBiddingPort:
    """A household's bids in memory. Deposits follow the contract's rule (depositPerKw x ratedW /
    1000) and are refused past the allowance, as the token's transferFrom would."""

    household: str = "0x" + "11" * 20
    now_s: int = 1_700_000_000
    deposit_per_kw_mtok: int = 100_000
    lockout_s: int = 600
    tolerance_bps: int = 500
    allowance_mtok: int = 10**9
    balance_mtok: int = 10**9
    announced: list[tuple[int, int, int]] = field(default_factory=list)
    held: list[HeldBid] = field(default_factory=list)
    claimable_mtok: int = 0  # tests credit payments and refunds here, as settleBatch does
    claims: list[int] = field(default_factory=list)  # amounts paid out by claim()

    def terms(self) -> MarketTerms:
        return MarketTerms(chain_now_s=self.now_s, deposit_per_kw_mtok=self.deposit_per_kw_mtok,
                           lockout_s=self.lockout_s, tolerance_bps=self.tolerance_bps,
                           allowance_mtok=self.allowance_mtok, balance_mtok=self.balance_mtok,
                           announced=tuple(self.announced), claimable_mtok=self.claimable_mtok)

    def place_bid(self, order: BidOrder) -> int:
        deposit = self.deposit_per_kw_mtok * order.rated_w // 1000
        if deposit > min(self.allowance_mtok, self.balance_mtok):
            raise ValueError(f"ERC20InsufficientAllowance: deposit {deposit} mtok > allowance "
                             f"{self.allowance_mtok} / balance {self.balance_mtok}")
        self.allowance_mtok -= deposit
        self.balance_mtok -= deposit
        bid_id = len(self.held) + 1
        self.held.append(HeldBid(bid_id=bid_id, order=order, deposit_mtok=deposit, state="open"))
        return bid_id

    def withdraw_bid(self, bid_id: int) -> None:
        i = bid_id - 1
        if not 0 <= i < len(self.held) or self.held[i].state != "open":
            raise ValueError(f"BidNotOpen({bid_id})")
        self.balance_mtok += self.held[i].deposit_mtok
        self.held[i] = replace(self.held[i], state="withdrawn")

    def bids(self) -> list[HeldBid]:
        return list(self.held)

    def claim(self) -> int:
        """DRMarket.claim: the balance moves to the wallet (nothing to claim moves nothing)."""
        amount, self.claimable_mtok = self.claimable_mtok, 0
        self.balance_mtok += amount
        if amount:
            self.claims.append(amount)
        return amount


if TYPE_CHECKING:  # mypy checks that the fakes still have the shape of the ports they stand in for
    _PORT: MarketPort = FakeMarketPort()
    _BIDDING: BiddingPort = FakeBiddingPort()
