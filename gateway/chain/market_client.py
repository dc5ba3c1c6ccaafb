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
                 realtime_micro: int, omega_milli: int, mode: int) -> Mined:
        return self._send(sender, self.market, "announce", start_s, end_s, retail_micro,
                          realtime_micro, omega_milli, mode, purpose="announce")

    def clear(self, sender: TxSender, window: int) -> Mined:
        return self._send(sender, self.market, "clear", window, purpose=f"clear window {window}")

    def settle(self, sender: TxSender, window: int) -> Mined:
        return self._send(sender, self.market, "settle", window, purpose=f"settle window {window}")

    def check(self, sender: TxSender, window: int) -> Mined:
        return self._send(sender, self.market, "check", window, purpose=f"check window {window}")

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

    def submit_report(self, sender: TxSender, signed: SignedReport) -> Mined:
        r = signed.report
        return self._send(sender, self.market, "submitReport", r.as_tuple(), signed.signature,
                          purpose=f"submitReport {r.household} window {r.window}")

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
        return tuple(int(b) for b in self.market.functions.windowBids(window).call())

    def window_count(self) -> int:
        return int(self.market.functions.windowCount().call())

    def balance(self, address: str) -> int:
        return int(self.token.functions.balanceOf(address).call())

    def events(self, name: str, mined: Mined) -> list[dict[str, Any]]:
        event = getattr(self.market.events, name)()
        return [dict(e["args"]) for e in event.process_receipt({"logs": list(mined.logs)},
                                                               errors=_discard())]


def _struct(values: Any, contract: Contract, fn: str) -> dict[str, Any]:
    """Name the fields of a returned struct from the function's ABI outputs."""
    abi: Any = next(e for e in contract.abi
                    if e.get("type") == "function" and e.get("name") == fn)
    names = [c["name"] for c in abi["outputs"][0]["components"]]
    return dict(zip(names, values, strict=True))


def _discard() -> Any:
    from web3.logs import DISCARD

    return DISCARD
