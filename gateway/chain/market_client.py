"""Typed access to the deployed DR market: deploy, operator phases, household bids, Reports, views.

Every state-changing call goes through a `TxSender` (the account's nonce owner), so reverts come
back as `ChainRevert` naming the custom error. Contract units are documented in docs/market.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.chain.artifacts import all_error_abis, load_artifact
from gateway.chain.report import SignedBaseline, SignedReport
from gateway.chain.revert import RevertDecoder
from gateway.chain.sender import Mined, TxSender
from gateway.market.reputation import ReputationRules

UNIFORM, PAY_AS_BID = 0, 1  # DRMarket window pricing
W_VOID = 5

if TYPE_CHECKING:
    from web3 import Web3
    from web3.contract import Contract


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketConfig:
    """The contract's `Config`, in contract units."""

    treasury: str
    deposit_per_kw_mtok: int
    tolerance_bps: int
    lockout_s: int
    report_grace_s: int

    def as_tuple(self) -> tuple[str, int, int, int, int]:
        return (self.treasury, self.deposit_per_kw_mtok, self.tolerance_bps, self.lockout_s,
                self.report_grace_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """Where the market lives: chain id and contract addresses."""

    chain_id: int
    token: str
    market: str


def decoder() -> RevertDecoder:
    return RevertDecoder(all_error_abis())


def deploy(sender: TxSender, *, w3: Web3, mtok_per_currency: int, config: MarketConfig,
           rules: ReputationRules) -> Deployment:
    """Deploy the token and the market with the sender as operator."""
    token_art, market_art = load_artifact("DRToken"), load_artifact("DRMarket")
    token_factory = w3.eth.contract(abi=token_art.abi, bytecode=token_art.bytecode)
    data = token_factory.constructor(sender.address, mtok_per_currency).data_in_transaction
    token = sender.send(to=None, data=data, purpose="deploy DRToken").contract_address
    market_factory = w3.eth.contract(abi=market_art.abi, bytecode=market_art.bytecode)
    data = market_factory.constructor(sender.address, token, config.as_tuple(),
                                      rules.as_tuple()).data_in_transaction
    market = sender.send(to=None, data=data, purpose="deploy DRMarket").contract_address
    assert token is not None and market is not None
    return Deployment(chain_id=sender.chain_id, token=token, market=market)


class MarketClient:
    """The token and market contracts at `deployment`, read through `w3`."""

    def __init__(self, *, w3: Web3, deployment: Deployment) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.token: Contract = w3.eth.contract(  # type: ignore[call-overload]
            address=deployment.token, abi=load_artifact("DRToken").abi)
        self.market: Contract = w3.eth.contract(  # type: ignore[call-overload]
            address=deployment.market, abi=load_artifact("DRMarket").abi)

    def _send(self, sender: TxSender, contract: Contract, fn: str, *args: Any,
              purpose: str) -> Mined:
        data = getattr(contract.functions, fn)(*args)._encode_transaction_data()
        return sender.send(to=contract.address, data=data, purpose=purpose)

    # ---- operator --------------------------------------------------------------------------

    def register_aggregator(self, sender: TxSender, aggregator: str) -> Mined:
        return self._send(sender, self.market, "registerAggregator", aggregator,
                          purpose=f"registerAggregator {aggregator}")

    def register_household(self, sender: TxSender, *, wallet: str, gateway: str,
                           aggregator: str) -> Mined:
        return self._send(sender, self.market, "registerHousehold", wallet, gateway, aggregator,
                          purpose=f"registerHousehold {wallet}")

    def mint(self, sender: TxSender, to: str, amount_mtok: int) -> Mined:
        return self._send(sender, self.token, "mint", to, amount_mtok, purpose=f"mint {to}")

    def approve(self, sender: TxSender, amount_mtok: int) -> Mined:
        return self._send(sender, self.token, "approve", self.market.address, amount_mtok,
                          purpose="approve market")

    def announce(self, sender: TxSender, *, start_s: int, end_s: int, retail_micro: int,
                 realtime_micro: int, omega_milli: int, mode: int, pricing: int = UNIFORM,
                 reveal_s: int = 0) -> Mined:
        """A window; `pricing` UNIFORM (seed 003) or PAY_AS_BID (seed 002); sealed bids reveal
        during the `reveal_s` seconds after the announcement, and clearing waits for that."""
        return self._send(sender, self.market, "announce", start_s, end_s, retail_micro,
                          realtime_micro, omega_milli, mode, pricing, reveal_s, purpose="announce")

    def clear(self, sender: TxSender, window: int) -> tuple[Mined, ...]:
        """Sort off chain and submit the window's clearing in batches (`clearBatch`), then
        `finishClearing`. A window the contract voids at the first batch stops there."""
        from gateway.chain import clearing

        mined: list[Mined] = []
        for merit, ineligible in clearing.batches(clearing.plan(self, window)):
            mined.append(self._send(sender, self.market, "clearBatch", window, list(merit),
                                    list(ineligible), purpose=f"clearBatch window {window}"))
            if int(self.window(window)["state"]) == W_VOID:
                return tuple(mined)
        mined.append(self._send(sender, self.market, "finishClearing", window,
                                purpose=f"finishClearing window {window}"))
        return tuple(mined)

    def settle(self, sender: TxSender, window: int) -> Mined:
        """After the Report grace: take the window's payments from the treasury (one transfer)."""
        return self._send(sender, self.market, "settle", window, purpose=f"settle window {window}")

    def check(self, sender: TxSender, window: int) -> tuple[Mined, ...]:
        """Verify and settle every bid of the window, in batches (`settleBatch`); payments and
        refunds accrue to balances that `claim` pays out."""
        from gateway.chain import clearing

        return tuple(self._send(sender, self.market, "settleBatch", window, list(ids),
                                purpose=f"settleBatch window {window}")
                     for ids in clearing.chunks(clearing.unsettled(self, window),
                                                clearing.GAS_SETTLE))

    def claim(self, sender: TxSender, account: str) -> Mined:
        """Pay out `account`'s balance in the market (anyone may send it)."""
        return self._send(sender, self.market, "claim", account, purpose=f"claim {account}")

    # ---- households and gateways -----------------------------------------------------------

    def place_bid(self, sender: TxSender, *, from_s: int, to_s: int, power_w: int, rated_w: int,
                  price_mtok: int) -> tuple[int, Mined]:
        mined = self._send(sender, self.market, "placeBid", from_s, to_s, power_w, rated_w,
                           price_mtok, purpose="placeBid")
        events = self.market.events.BidPlaced().process_receipt(
            {"logs": list(mined.logs)}, errors=_discard())
        return int(events[0]["args"]["bidId"]), mined

    def place_bid_for(self, sender: TxSender, household: str, *, from_s: int, to_s: int,
                      power_w: int, rated_w: int, price_mtok: int) -> tuple[int, Mined]:
        """A bid for `household` sent by the household or its gateway; the deposit comes from the
        household's wallet (within the allowance it gave the market)."""
        mined = self._send(sender, self.market, "placeBidFor", household, from_s, to_s, power_w,
                           rated_w, price_mtok, purpose=f"placeBidFor {household}")
        events = self.market.events.BidPlaced().process_receipt(
            {"logs": list(mined.logs)}, errors=_discard())
        return int(events[0]["args"]["bidId"]), mined

    def withdraw_bid(self, sender: TxSender, bid_id: int) -> Mined:
        return self._send(sender, self.market, "withdrawBid", bid_id,
                          purpose=f"withdrawBid {bid_id}")

    def commit_bid(self, sender: TxSender, household: str, *, sealed: bytes,
                   rated_w: int) -> tuple[int, Mined]:
        """A sealed bid for `household` (sent by it or its gateway): only `sealed`
        (gateway.market.model.seal) and the deposit for `rated_w` are public until the reveal."""
        mined = self._send(sender, self.market, "commitBidFor", household, sealed, rated_w,
                           purpose=f"commitBidFor {household}")
        return int(self.events("BidCommitted", mined)[0]["bidId"]), mined

    def reveal_bid(self, sender: TxSender, bid_id: int, *, from_s: int, to_s: int, power_w: int,
                   price_mtok: int, salt: bytes) -> Mined:
        return self._send(sender, self.market, "revealBid", bid_id, from_s, to_s, power_w,
                          price_mtok, salt, purpose=f"revealBid {bid_id}")

    def submit_report(self, sender: TxSender, signed: SignedReport) -> Mined:
        r = signed.report
        return self._send(sender, self.market, "submitReport", r.as_tuple(), signed.signature,
                          purpose=f"submitReport {r.household} window {r.window}")

    def submit_reports(self, sender: TxSender, signed: Sequence[SignedReport]) -> Mined:
        """Many gateways' Reports in one transaction; a bad one emits ReportRejected alone."""
        return self._send(sender, self.market, "submitReports",
                          [s.report.as_tuple() for s in signed], [s.signature for s in signed],
                          purpose=f"submitReports ({len(signed)})")

    def commit_baseline(self, sender: TxSender, signed: SignedBaseline) -> Mined:
        """Commit a household's baseline for a window (before it starts), from any sender."""
        b = signed.baseline
        return self._send(sender, self.market, "commitBaseline", b.as_tuple(), signed.signature,
                          purpose=f"commitBaseline {b.household} window {b.window}")

    # ---- views -----------------------------------------------------------------------------

    def baseline(self, household: str, window: int) -> dict[str, Any]:
        """The committed baseline: inputHash, baselineWh, method, committed (False when none)."""
        return _struct(self.market.functions.baseline(household, window).call(), self.market,
                       "baseline")

    def report_root(self, household: str, window: int) -> bytes:
        """The Merkle root of the household's accepted Report (32 zero bytes when none)."""
        return bytes(self.market.functions.reportRoot(household, window).call())

    def verify_reading(self, household: str, window: int, leaf: bytes,
                       proof: Sequence[bytes]) -> bool:
        """Whether the contract proves `leaf` (a measurement's struct hash) under the root."""
        return bool(self.market.functions.verifyReading(household, window, leaf,
                                                        list(proof)).call())

    def config(self) -> MarketConfig:
        t = self.market.functions.config().call()
        return MarketConfig(treasury=t[0], deposit_per_kw_mtok=int(t[1]), tolerance_bps=int(t[2]),
                            lockout_s=int(t[3]), report_grace_s=int(t[4]))

    def allowance(self, owner: str) -> int:
        """What `owner` lets the market take from its wallet (mtok)."""
        return int(self.token.functions.allowance(owner, self.market.address).call())

    def window(self, window: int) -> dict[str, Any]:
        return _struct(self.market.functions.window(window).call(), self.market, "window")

    def bid(self, bid_id: int) -> dict[str, Any]:
        return _struct(self.market.functions.bid(bid_id).call(), self.market, "bid")

    def household(self, wallet: str) -> dict[str, Any]:
        return _struct(self.market.functions.household(wallet).call(), self.market, "household")

    def aggregator(self, address: str) -> dict[str, Any]:
        return _struct(self.market.functions.aggregatorInfo(address).call(), self.market,
                       "aggregatorInfo")

    def window_bids(self, window: int) -> tuple[int, ...]:
        """The bids that took part in `window`, in merit order (read from the bids, no list on
        chain)."""
        from gateway.chain import clearing

        return clearing.window_bids(self, window)

    def take(self, household: str, window: int) -> dict[str, Any]:
        """A household's part in a window: awardW, reported, deliveredWh, payWeight."""
        return _struct(self.market.functions.take(household, window).call(), self.market, "take")

    def claimable(self, account: str) -> int:
        """What `account` may claim from the market (mtok)."""
        return int(self.market.functions.claimable(account).call())

    def window_count(self) -> int:
        return int(self.market.functions.windowCount().call())

    def balance(self, address: str) -> int:
        return int(self.token.functions.balanceOf(address).call())

    def events(self, name: str, mined: Mined | Sequence[Mined]) -> list[dict[str, Any]]:
        """The market's `name` events in one transaction or several (batched phases)."""
        event = getattr(self.market.events, name)()
        logs = list(mined.logs) if isinstance(mined, Mined) else [
            log for m in mined for log in m.logs]
        return [dict(e["args"]) for e in event.process_receipt({"logs": logs},
                                                               errors=_discard())]

    # ---- two-way selection and reputation (DRRegistry) ---------------------------------------

    def choose_aggregator(self, sender: TxSender, aggregator: str) -> Mined:
        """The sending household moves to `aggregator` (admission: docs/market.md)."""
        return self._send(sender, self.market, "chooseAggregator", aggregator,
                          purpose=f"chooseAggregator {aggregator}")

    def set_min_score(self, sender: TxSender, min_score: int) -> Mined:
        """The sending aggregator admits only households with at least `min_score`."""
        return self._send(sender, self.market, "setMinScore", min_score,
                          purpose=f"setMinScore {min_score}")

    def reputation_rules(self) -> ReputationRules:
        values = self.market.functions.reputationRules().call()
        names = ReputationRules.__dataclass_fields__  # same order as the contract's struct
        return ReputationRules(**{n: int(v) for n, v in zip(names, values, strict=True)})

    def rank_households(self, offset: int = 0, limit: int = 2**256 - 1) -> list[tuple[str, int]]:
        """The contract's ranking view (reads every household: page_scores for large registries)."""
        return _rows(self.market.functions.rankHouseholds(offset, limit).call())

    def rank_aggregators(self, offset: int = 0, limit: int = 2**256 - 1) -> list[tuple[str, int]]:
        return _rows(self.market.functions.rankAggregators(offset, limit).call())

    def page_scores(self, *, aggregators: bool = False, page: int = 1000) -> list[tuple[str, int]]:
        """All effective scores ranked as the contract ranks them (descending, ties in registration
        order), read `page` participants per eth_call so 10,000 households stay under call gas caps."""
        fn = self.market.functions.aggregatorScores if aggregators else \
            self.market.functions.householdScores
        count = int((self.market.functions.aggregatorCount() if aggregators else
                     self.market.functions.householdCount()).call())
        rows = [r for at in range(0, count, page) for r in _rows(fn(at, page).call())]
        top = self.reputation_rules().max + 1  # the contract's counting-sort key
        return sorted(rows, key=lambda r: -min(r[1], top))


def _rows(values: Any) -> list[tuple[str, int]]:
    return [(str(p), int(s)) for p, s in values]


def _struct(values: Any, contract: Contract, fn: str) -> dict[str, Any]:
    """Name the fields of a returned struct from the function's ABI outputs."""
    abi: Any = next(e for e in contract.abi
                    if e.get("type") == "function" and e.get("name") == fn)
    names = [c["name"] for c in abi["outputs"][0]["components"]]
    return dict(zip(names, values, strict=True))


def _discard() -> Any:
    from web3.logs import DISCARD

    return DISCARD
