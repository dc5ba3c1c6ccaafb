"""The DR loop's narrow port to the market contract: awards in, signed Reports out, settlement back.

Synchronous (web3 is); the loop calls it from one worker thread so that one nonce owner sends and
the asyncio loop never blocks on the node. Awards are read from the household's part in each
window (`take(household, window)`, several windows may be announced ahead) and the window itself,
not from logs, so a gateway that was offline during clearing still learns its award on the next poll.
gateway/testing/fake_market.py has the in-memory fake of the same interface, for tests of the
loop that do not need a chain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.chain.market_types import (  # re-exported: the port's shapes live in market_types
    Award,
    BaselineCommit,
    BiddingPort,
    BidOrder,
    HeldBid,
    MarketPort,
    MarketTerms,
    Submission,
)
from gateway.chain.report import Baseline, Report, sign_baseline, sign_report
from gateway.chain.settings import ChainConfig

if TYPE_CHECKING:
    from web3 import Web3

log = logging.getLogger(__name__)

W_ANNOUNCED, W_CLEARED, W_SETTLED, W_CHECKED, W_VOID, W_CLEARING = 1, 2, 3, 4, 5, 6  # DRMarket


class Web3MarketPort:
    """The market at `market` for `household`, over any web3 provider (JSON-RPC or embedded)."""

    def __init__(self, *, w3: Web3, market: str, household: str, gateway_secret: bytes,
                 sender_secret: bytes, outbox_path: str | Path) -> None:
        from gateway.chain.market_client import Deployment, MarketClient, decoder
        from gateway.chain.outbox import ChainOutbox
        from gateway.chain.sender import TxSender
        from gateway.chain.submit import ReportSubmitter

        self.w3 = w3
        self.market_address = market
        self.household: str = w3.to_checksum_address(household)
        probe = MarketClient(w3=w3, deployment=Deployment(chain_id=0, token=market, market=market))
        token = probe.market.functions.token().call()
        self.chain_id = int(w3.eth.chain_id)
        self.client = MarketClient(w3=w3, deployment=Deployment(
            chain_id=self.chain_id, token=token, market=w3.to_checksum_address(market)))
        self.outbox = ChainOutbox(outbox_path)
        self.sender = TxSender(w3=w3, key=sender_secret, outbox=self.outbox, decoder=decoder())
        # placeBidFor/withdrawBid accept only the household or its gateway as msg.sender, so bids
        # go out from the gateway's own account even when a relayer sends Reports and commitments.
        self.bidder = self.sender if sender_secret == gateway_secret else TxSender(
            w3=w3, key=gateway_secret, outbox=self.outbox, decoder=decoder())
        self.submitter = ReportSubmitter(outbox=self.outbox, client=self.client, sender=self.sender)
        self._secret = gateway_secret
        self._seen: dict[int, tuple[int, bool]] = {}  # window -> (award, voided) last reported
        self._scan_from = 1  # first window whose award may still be unknown
        self._commits: dict[int, BaselineCommit] = {}  # window -> commitment not yet on chain

    def close(self) -> None:
        self.outbox.close()

    def poll_awards(self) -> list[Award]:
        """New awards of this household, one per window, each reported once. Windows clear in
        announcement order, so the scan resumes at the first window not yet cleared."""
        h = self.client.household(self.household)
        if not h["registered"]:
            raise LookupError(f"household {self.household} is not registered with the market at "
                              f"{self.client.deployment.market}: ask the operator to register it")
        out: list[Award] = []
        tolerance = int(self.client.market.functions.config().call()[2])
        for window in range(self._scan_from, self.client.window_count() + 1):
            w = self.client.window(window)
            if int(w["state"]) in (W_ANNOUNCED, W_CLEARING):
                break
            self._scan_from = window + 1
            award = int(self.client.take(self.household, window)["awardW"])
            voided = int(w["state"]) == W_VOID
            if award <= 0 or self._seen.get(window) == (award, voided):
                continue
            self._seen[window] = (award, voided)
            out.append(Award(window=window, start_s=int(w["start"]), end_s=int(w["end"]),
                             award_w=award, reduce=bool(w["reduce"]), tolerance_bps=tolerance,
                             voided=voided))
        return out

    def commit_baseline(self, commit: BaselineCommit) -> Submission:
        """Sign the window's baseline with the gateway key and send it. A node that is down leaves
        it "queued": `retry()` (each poll) sends it again until the window starts."""
        self._commits[commit.window] = commit
        return self._send_commit(commit)

    def _send_commit(self, commit: BaselineCommit) -> Submission:
        from gateway.chain.revert import ChainRevert
        from gateway.chain.sender import NodeUnavailable
        from gateway.errors import RemoteError

        d = self.client.deployment
        signed = sign_baseline(Baseline(
            household=self.household, window=commit.window, method=commit.method,
            input_hash=commit.input_hash, baseline_wh=commit.baseline_wh),
            key=self._secret, chain_id=d.chain_id, market=d.market)
        try:
            self.client.commit_baseline(self.sender, signed)
        except NodeUnavailable:
            return Submission(state="queued", report_id=0)
        except ChainRevert as exc:
            del self._commits[commit.window]
            if self._on_chain(commit):  # sent before, the node went away before we saw it mined
                return Submission(state="accepted", report_id=0)
            return Submission(state="rejected", report_id=0, error=str(exc))
        except RemoteError as exc:  # a transaction kept from before failed on chain: try again
            return Submission(state="queued", report_id=0, error=str(exc))
        del self._commits[commit.window]
        return Submission(state="accepted", report_id=0)

    def _on_chain(self, commit: BaselineCommit) -> bool:
        c = self.client.baseline(self.household, commit.window)
        return bool(c["committed"]) and (int(c["method"]), bytes(c["inputHash"]),
                                         int(c["baselineWh"])) == (
            commit.method, commit.input_hash, commit.baseline_wh)

    def submit(self, report: Report) -> Submission:
        d = self.client.deployment
        signed = sign_report(report, key=self._secret, chain_id=d.chain_id, market=d.market)
        report_id = self.submitter.queue(signed)
        result = self.submitter.drain()
        if result.rejected:
            return Submission(state="rejected", report_id=report_id, error="; ".join(result.rejected))
        state = "queued" if result.waiting else "accepted"
        return Submission(state=state, report_id=report_id)

    def report_state(self, report_id: int) -> str:
        """"accepted", "queued" or "rejected: <reason>" of a Report queued earlier (drains first)."""
        self.submitter.drain()
        for queued in self.outbox.reports():
            if queued.id == report_id:
                return queued.state if queued.error is None or queued.state == "accepted" \
                    else f"{queued.state}: {queued.error}"
        return "unknown"

    def retry(self) -> int:
        """Send baseline commitments and drain Reports kept while the node was unreachable;
        returns how many are still waiting. A commitment whose window has started is given up
        (the contract would refuse it: BaselineTooLate), with a warning."""
        for commit in list(self._commits.values()):
            result = self._send_commit(commit)
            if result.state == "rejected":
                log.warning("baseline commitment for window %d rejected: %s", commit.window,
                            result.error)
        return self.submitter.drain().waiting + len(self._commits)

    # ---- BiddingPort: the household's bids, placed by its gateway --------------------------

    def terms(self) -> MarketTerms:
        c = self.client
        config = c.config()
        first = int(c.market.functions.nextToClear().call())
        announced = tuple(
            (k, int(w["start"]), int(w["end"]))
            for k, w in ((k, c.window(k)) for k in range(first, c.window_count() + 1))
            if int(w["state"]) == W_ANNOUNCED)
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        return MarketTerms(chain_now_s=now, deposit_per_kw_mtok=config.deposit_per_kw_mtok,
                           lockout_s=config.lockout_s, tolerance_bps=config.tolerance_bps,
                           allowance_mtok=c.allowance(self.household),
                           balance_mtok=c.balance(self.household), announced=announced,
                           claimable_mtok=c.claimable(self.household))

    def place_bid(self, order: BidOrder) -> int:
        """placeBidFor(household, ...) from the gateway's account; raises ChainRevert (e.g.
        ERC20InsufficientAllowance when the deposit exceeds what the household approved)."""
        bid_id, _ = self.client.place_bid_for(
            self.bidder, self.household, from_s=order.from_s, to_s=order.to_s,
            power_w=order.power_w, rated_w=order.rated_w, price_mtok=order.price_mtok)
        return bid_id

    def withdraw_bid(self, bid_id: int) -> None:
        self.client.withdraw_bid(self.bidder, bid_id)

    def claim(self) -> int:
        """DRMarket.claim(household) through the configured sender (anyone may send it, so a
        relayer pays the gas); the tokens go to the household's wallet. Returns the mtok paid."""
        mined = self.client.claim(self.sender, self.household)
        return sum(int(e["amount"]) for e in self.client.events("Claimed", mined))

    def bids(self) -> list[HeldBid]:
        """This household's bids: BidPlaced logs (indexed by household) for what was offered,
        the bid(id) view for what became of each (gateway/chain/household.py, shared with the CLI)."""
        from gateway.chain.household import household_bids

        return household_bids(self.client, self.household)

    def settlement(self, window: int) -> dict[str, Any] | None:
        """After `check`: this household's payment and deposit outcome in the window, else None.
        Both accrue to its balance in the market (`claimable_mtok`) until someone claims it."""
        w = self.client.window(window)
        if int(w["state"]) != W_CHECKED:
            return None
        market = self.client.market
        args = {"window": window, "household": self.household}
        paid = market.events.BidPaid().get_logs(argument_filters=args, from_block=0)
        refunded = market.events.DepositRefunded().get_logs(argument_filters=args, from_block=0)
        forfeited = market.events.DepositForfeited().get_logs(argument_filters=args, from_block=0)
        h = self.client.household(self.household)
        take = self.client.take(self.household, window)
        return {
            "window": window, "clearing_price_mtok_per_kwh": int(w["clearingPrice"]),
            "payment_mtok": sum(_amount(e) for e in paid),
            "deposit": "forfeited" if forfeited else ("refunded" if refunded else "none"),
            "deposit_mtok": sum(_amount(e) for e in forfeited or refunded),
            "delivered_wh_on_chain": int(take["deliveredWh"]), "score": int(h["score"]),
            "pricing": "pay-as-bid" if int(w["pricing"]) == 1 else "uniform",
            "claimable_mtok": self.client.claimable(self.household),
        }


class LazyMarketPort:
    """A Web3MarketPort built on first use (in the chain thread), so a node that is down at start-up
    delays the Report path instead of the agent; each call retries the connection until it works."""

    def __init__(self, chain: ChainConfig, *, gateway_secret: bytes,
                 relay: Callable[[bytes], None] | None = None) -> None:
        self.chain = chain
        self._relay = relay  # [chain] relay = "mqtt": publish Reports and commitments with this
        self.household = chain.household
        self.market_address = chain.market
        self._secret = gateway_secret
        self._port: Web3MarketPort | None = None

    def _get(self) -> Web3MarketPort:
        if self._port is None:
            from gateway.chain.node import connect
            from gateway.measurement.keyfile import read_key

            c = self.chain
            node = connect(c.rpc, poa=c.poa)
            if self._relay is not None:
                from gateway.chain.relay_port import RelayMarketPort

                self._port = RelayMarketPort(w3=node.w3, market=c.market, household=c.household,
                                             gateway_secret=self._secret, outbox_path=str(c.outbox),
                                             publish=self._relay)
                self.household = self._port.household
                return self._port
            sender = read_key(c.sender_key) if c.sender_key is not None else self._secret
            self._port = Web3MarketPort(w3=node.w3, market=c.market, household=c.household,
                                        gateway_secret=self._secret, sender_secret=sender,
                                        outbox_path=c.outbox)
            self.household = self._port.household
        return self._port

    def poll_awards(self) -> list[Award]:
        port = self._get()
        port.retry()
        return port.poll_awards()

    def submit(self, report: Report) -> Submission:
        return self._get().submit(report)

    def commit_baseline(self, commit: BaselineCommit) -> Submission:
        return self._get().commit_baseline(commit)

    def terms(self) -> MarketTerms:
        return self._get().terms()

    def place_bid(self, order: BidOrder) -> int:
        return self._get().place_bid(order)

    def withdraw_bid(self, bid_id: int) -> None:
        self._get().withdraw_bid(bid_id)

    def bids(self) -> list[HeldBid]:
        return self._get().bids()

    def claim(self) -> int:
        return self._get().claim()

    def settlement(self, window: int) -> dict[str, Any] | None:
        return self._get().settlement(window)

    def report_state(self, report_id: int) -> str:
        return self._get().report_state(report_id)


def _amount(event: Any) -> int:
    return int(event["args"]["amount"])  # BidPaid, DepositRefunded, DepositForfeited (DRMarket.sol)



if TYPE_CHECKING:  # mypy checks that the real ports have the shapes the loop and bidder expect
    def _shapes(port: Web3MarketPort, lazy: LazyMarketPort) -> None:
        _m: MarketPort = port
        _b: BiddingPort = port
        _lm: MarketPort = lazy
        _lb: BiddingPort = lazy
