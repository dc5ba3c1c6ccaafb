"""The demo's market side on the embedded chain: operator, aggregator and simulated neighbours.

The household under test is the demo's own gateway (its bid comes from its own bidder, its Report
from the real closed loop); the neighbours are households whose gateways are simulated here: they
bid, and those that win report a full delivery, signed with their own gateway keys. Keys are
derived from fixed labels: THEY ARE TEST KEYS, public by construction, never to hold value.

Synchronous (web3); the demo calls it from the one chain thread it shares with the gateway's loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.chain.market_client import MarketClient, MarketConfig, decoder, deploy
from gateway.chain.node import ChainNode, fund
from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import Baseline, Report, sign_baseline, sign_report
from gateway.chain.sender import TxSender
from gateway.chain.submit import ReportSubmitter
from gateway.market import model as m
from gateway.market.reputation import ReputationRules

TOKEN_PER_CURRENCY = 1000
RETAIL_MICRO, REALTIME_MICRO, OMEGA_MILLI = 600_000, 680_000, 1200  # 0.60, 0.68 /kWh; omega 1.2
DEPOSIT_PER_KW_MTOK = 100_000  # 100 tokens per rated kW
TOLERANCE_BPS = 500


@dataclass(frozen=True, slots=True)
class DemoBid:
    household: str
    kw: float  # negative = reduce
    rated_kw: float
    price: float  # tokens/kWh


# Merit order: alice, bob and the home win whole; carol is the marginal bid (partly awarded,
# sets the clearing price); dave is too dear. Target = optimum = (0 + 80) / (2 x 1.2) = 33.3 kW.
NEIGHBOURS = (
    DemoBid("alice", -11.0, 11.0, 25.0),
    DemoBid("bob", -8.0, 9.0, 28.0),
    DemoBid("carol", -16.0, 16.0, 34.0),
    DemoBid("dave", -6.0, 6.0, 40.0),
)


def _test_key(label: str) -> bytes:
    from eth_utils.crypto import keccak

    return keccak(f"drgw-demo/TEST-KEY/{label}".encode())


class DemoMarket:
    def __init__(self, node: ChainNode, *, lockout_s: int, grace_s: int) -> None:
        from eth_account import Account

        self.node = node
        self.outbox = ChainOutbox(":memory:")
        dec = decoder()
        self.op = TxSender(w3=node.w3, key=node.funded_keys[0], outbox=self.outbox, decoder=dec)
        self.aggregator = TxSender(w3=node.w3, key=node.funded_keys[1], outbox=self.outbox,
                                   decoder=dec)
        self.aggregator_key = node.funded_keys[1]
        names = ["home", *(b.household for b in NEIGHBOURS)]
        self.wallets = {n: TxSender(w3=node.w3, key=_test_key(f"{n}/wallet"), outbox=self.outbox,
                                    decoder=dec) for n in names}
        self.gateway_keys = {n: _test_key(f"{n}/gateway") for n in names if n != "home"}
        self.gateway_address = {n: Account.from_key(k).address for n, k in self.gateway_keys.items()}
        self.lockout_s, self.grace_s = lockout_s, grace_s
        self.bid_ids: dict[str, int] = {}
        self.client: MarketClient | None = None

    @property
    def market(self) -> MarketClient:
        assert self.client is not None, "setup() first"
        return self.client

    def setup(self, *, home_gateway: str, home_deposit_mtok: int) -> None:
        """Deploy, register the aggregator and every household, fund them, approve deposits.

        The home bids through its gateway (placeBidFor from `home_gateway`'s account, which gets
        gas here); its wallet holds `home_deposit_mtok` and approves the market for exactly that,
        the cap of what automatic bidding can put at risk (docs/bidding.md)."""
        config = MarketConfig(treasury=self.op.address, deposit_per_kw_mtok=DEPOSIT_PER_KW_MTOK,
                              tolerance_bps=TOLERANCE_BPS, lockout_s=self.lockout_s,
                              report_grace_s=self.grace_s)
        deployment = deploy(self.op, w3=self.node.w3, mtok_per_currency=TOKEN_PER_CURRENCY * 1000,
                            config=config, rules=ReputationRules())
        client = self.client = MarketClient(w3=self.node.w3, deployment=deployment)
        client.register_aggregator(self.op, self.aggregator.address)
        deposits = {"home": home_deposit_mtok, **{
            b.household: m.deposit_mtok(round(b.rated_kw * 1000), DEPOSIT_PER_KW_MTOK)
            for b in NEIGHBOURS}}
        for name, wallet in self.wallets.items():
            gateway = home_gateway if name == "home" else self.gateway_address[name]
            client.register_household(self.op, wallet=wallet.address, gateway=gateway,
                                      aggregator=self.aggregator.address)
            fund(self.node, self.op, wallet.address, 10**18)
            client.mint(self.op, wallet.address, deposits[name])
            client.approve(wallet, deposits[name])
        fund(self.node, self.op, home_gateway, 10**18)  # gas for its bids
        budget = 10**12
        client.mint(self.op, self.op.address, budget)
        client.approve(self.op, budget)

    def place_bids(self, *, from_s: int, to_s: int) -> None:
        """The neighbours' bids, each from its own wallet (the home's gateway bids by itself)."""
        for bid in NEIGHBOURS:
            self.bid_ids[bid.household], _ = self.market.place_bid(
                self.wallets[bid.household], from_s=from_s, to_s=to_s,
                power_w=round(bid.kw * 1000), rated_w=round(bid.rated_kw * 1000),
                price_mtok=round(bid.price * 1000))

    def chain_now(self) -> int:
        return self.node.latest_timestamp()

    def announce_and_clear(self, *, start_s: int, end_s: int) -> tuple[int, dict[str, Any]]:
        c = self.market
        c.announce(self.op, start_s=start_s, end_s=end_s, retail_micro=RETAIL_MICRO,
                   realtime_micro=REALTIME_MICRO, omega_milli=OMEGA_MILLI, mode=m.Mode.SHIFT.value)
        window = c.window_count()
        c.clear(self.op, window)
        self._neighbour_baselines(window)
        return window, c.window(window)

    def _neighbour_baselines(self, window: int) -> None:
        """The winning neighbours' gateways commit their baselines before the window starts (the
        contract refuses a Report without one); the aggregator relays the commitments."""
        c, w = self.market, self.market.window(window)
        if int(w["state"]) != 2:  # voided: nobody reports
            return
        seconds = int(w["end"]) - int(w["start"])
        for bid in NEIGHBOURS:
            if int(c.bid(self.bid_ids[bid.household])["awardW"]) <= 0:
                continue
            signed = sign_baseline(Baseline(
                household=self.wallets[bid.household].address, window=window, method=0,
                input_hash=bytes(32), baseline_wh=_baseline_wh(bid, seconds)),
                key=self.gateway_keys[bid.household], chain_id=c.deployment.chain_id,
                market=c.deployment.market)
            c.commit_baseline(self.aggregator, signed)

    def awards(self) -> dict[str, int]:
        """W awarded per household in the latest window: the home's from its take of the window
        (its gateway's bid id is the gateway's business), the neighbours' from their bids."""
        window = self.market.window_count()
        ours = int(self.market.take(self.wallets["home"].address, window)["awardW"]) if window else 0
        return {"home": ours, **{name: int(self.market.bid(bid_id)["awardW"])
                                 for name, bid_id in self.bid_ids.items()}}

    def neighbour_reports(self, window: int) -> int:
        """The winning neighbours' gateways report a full delivery; the aggregator relays them."""
        c, w = self.market, self.market.window(window)
        submitter = ReportSubmitter(outbox=self.outbox, client=c, sender=self.aggregator)
        seconds = int(w["end"]) - int(w["start"])
        for bid in NEIGHBOURS:
            award = int(c.bid(self.bid_ids[bid.household])["awardW"])
            if award <= 0:
                continue
            baseline_wh = _baseline_wh(bid, seconds)
            delivered = award * seconds // 3600 + 1
            report = Report(
                household=self.wallets[bid.household].address, window=window, seq_from=1,
                seq_to=seconds, window_start=int(w["start"]), window_end=int(w["end"]),
                baseline_method=0, baseline_input_hash=bytes(32), baseline_wh=baseline_wh,
                actual_wh=baseline_wh - delivered, delivered_wh=delivered,
                merkle_root=_test_key(f"{bid.household}/{window}/measurements"))
            submitter.queue(sign_report(report, key=self.gateway_keys[bid.household],
                                        chain_id=c.deployment.chain_id, market=c.deployment.market))
        return submitter.drain().accepted

    def settle_and_check(self, window: int) -> None:
        """After the Report grace: the chain's clock jumps there (no real waiting), then settle and
        check the window."""
        w = self.market.window(window)
        self.node.set_next_timestamp(int(w["end"]) + self.grace_s + 1)
        self.market.settle(self.op, window)
        self.market.check(self.op, window)
        for wallet in self.wallets.values():  # pull settlement: the aggregator claims for all
            self.market.claim(self.aggregator, wallet.address)


def _baseline_wh(bid: DemoBid, seconds: int) -> int:
    """A neighbour's simulated baseline over the window: its rated load plus 1.5 kW of house load."""
    return (round(bid.rated_kw * 1000) + 1500) * seconds // 3600
