"""One whole DR window of a scenario on the embedded chain (`drgw market simulate`).

Deploy, register households (each with its own wallet and gateway key), fund them, place the bids
with deposits at their submission times, announce, clear, let each winner's gateway sign a Report of
its measured response (relayed by the aggregator, who pays gas), settle, check, and withdraw the bids
that took no part. The figures come from the chain's events; the reference model must agree with
every one of them, or the run fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.chain.market_client import MarketClient, MarketConfig, decoder, deploy
from gateway.chain.node import ChainNode, embedded, fund
from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import Baseline, Report, sign_baseline, sign_report
from gateway.chain.sender import TxSender
from gateway.chain.submit import ReportSubmitter
from gateway.errors import DrgwError
from gateway.market import model as m
from gateway.market.reputation import ReputationRules
from gateway.market.scenario import Scenario, ScenarioBid

BASELINE_SIMULATED = 0  # baseline method id: the household's rated load (simulation only)
DAY = 86_400


@dataclass(frozen=True, slots=True, kw_only=True)
class BidRow:
    """One bid's line in the settlement table (money in tokens, power in kW magnitudes)."""

    id: str
    household: str
    eligible: bool
    reason: str
    awarded_kw: float
    payment: float
    surplus: float
    performed: bool
    deposit: float
    deposit_refunded: float
    deposit_forfeited: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    target_kw: float
    clearing_price: float
    window_hours: float
    bids: tuple[BidRow, ...]
    operator_gain: float
    tx_count: int
    gas_total: int

    def as_json(self) -> dict[str, Any]:
        return {
            "target_kw": self.target_kw, "clearing_price": self.clearing_price,
            "window_hours": self.window_hours,
            "bids": [{f: getattr(row, f) for f in BidRow.__slots__} for row in self.bids],
            "operator_gain": self.operator_gain,
            "tx": {"count": self.tx_count, "gas_total": self.gas_total},
        }


class _Run:
    """The accounts and contracts of one simulation."""

    def __init__(self, scenario: Scenario, node: ChainNode) -> None:
        from eth_account import Account
        from eth_utils.crypto import keccak

        self.s, self.node = scenario, node
        self.outbox = ChainOutbox(":memory:")
        dec = decoder()
        self.op = TxSender(w3=node.w3, key=node.funded_keys[0], outbox=self.outbox, decoder=dec)
        self.relayer = TxSender(w3=node.w3, key=node.funded_keys[1], outbox=self.outbox,
                                decoder=dec)
        self.wallets: dict[str, TxSender] = {}
        self.gateways: dict[str, bytes] = {}
        for name in scenario.households:
            wallet_key = keccak(f"drgw-simulate/{name}/wallet".encode())
            self.wallets[name] = TxSender(w3=node.w3, key=wallet_key, outbox=self.outbox,
                                          decoder=dec)
            self.gateways[name] = keccak(f"drgw-simulate/{name}/gateway".encode())
        self.gateway_address = {n: Account.from_key(k).address for n, k in self.gateways.items()}
        first = min([scenario.announced_s, *(b.submitted_s for b in scenario.bids)])
        # Scenario clocks are shifted by whole days so that they lie after the chain's genesis.
        self.offset = -(-(node.latest_timestamp() + DAY - first) // DAY) * DAY
        self.client: MarketClient | None = None

    def at(self, t: int) -> None:
        self.node.set_next_timestamp(t + self.offset)

    def setup(self) -> MarketClient:
        s = self.s
        config = MarketConfig(treasury=self.op.address, deposit_per_kw_mtok=s.deposit_per_kw_mtok,
                              tolerance_bps=s.tolerance_bps, lockout_s=s.lockout_s,
                              report_grace_s=s.report_grace_s)
        deployment = deploy(self.op, w3=self.node.w3, mtok_per_currency=s.mtok_per_currency,
                            config=config, rules=ReputationRules())
        client = MarketClient(w3=self.node.w3, deployment=deployment)
        client.register_aggregator(self.op, self.relayer.address)
        for name, wallet in self.wallets.items():
            client.register_household(self.op, wallet=wallet.address,
                                      gateway=self.gateway_address[name],
                                      aggregator=self.relayer.address)
            fund(self.node, self.op, wallet.address, 10**18)
            deposits = sum(m.deposit_mtok(b.rated_w, s.deposit_per_kw_mtok)
                           for b in s.bids if b.household == name)
            if deposits:
                client.mint(self.op, wallet.address, deposits)
                client.approve(wallet, deposits)
        top = max(b.price_mtok for b in s.bids)  # the clearing price is at most the top bid
        budget = top * sum(abs(b.power_w) for b in s.bids) * (s.end_s - s.start_s)
        budget = budget // m.MS_PER_HOUR_KW + len(s.bids)
        client.mint(self.op, self.op.address, budget)
        client.approve(self.op, budget)
        self.client = client
        return client


def simulate(scenario: Scenario) -> SimulationResult:
    """Run the scenario's window on a fresh embedded chain and return the settlement."""
    run = _Run(scenario, embedded())
    client = run.setup()
    s = scenario
    events = sorted([(b.submitted_s, 2, i) for i, b in enumerate(s.bids)]
                    + [(s.announced_s, 0, -1), (s.announced_s, 1, -1)])
    chain_ids: dict[str, int] = {}
    window = 0
    for t, kind, index in events:
        run.at(t)
        if kind == 0:
            client.announce(run.op, start_s=s.start_s + run.offset, end_s=s.end_s + run.offset,
                            retail_micro=s.retail_micro, realtime_micro=s.realtime_micro,
                            omega_milli=s.omega_milli, mode=s.mode.value)
            window = client.window_count()
        elif kind == 1:
            client.clear(run.op, window)
        else:
            b = s.bids[index]
            chain_ids[b.key], _ = client.place_bid(
                run.wallets[b.household], from_s=b.from_s + run.offset, to_s=b.to_s + run.offset,
                power_w=b.power_w, rated_w=b.rated_w, price_mtok=b.price_mtok)
    state = client.window(window)
    model = _model(s, chain_ids, run.offset)
    if state["state"] == 2:  # cleared: Reports, settle, check
        _report(run, client, window, state, chain_ids)
        run.at(s.end_s + s.report_grace_s)
        client.settle(run.op, window)
        checked = client.check(run.op, window)  # pull: everything accrues to balances
        for wallet in run.wallets.values():
            client.claim(run.relayer, wallet.address)
        paid = client.events("BidPaid", checked)
        refunds = client.events("DepositRefunded", checked)
        forfeits = client.events("DepositForfeited", checked)
    else:
        paid, refunds, forfeits = [], [], []
    for b in s.bids:  # bids that took no part get their deposit back by withdrawing
        if client.bid(chain_ids[b.key])["state"] == 1:
            refunds += client.events("BidWithdrawn", client.withdraw_bid(
                run.wallets[b.household], chain_ids[b.key]))
    return _result(run, client, window, chain_ids, model, paid, refunds, forfeits)


def _report(run: _Run, client: MarketClient, window: int, state: dict[str, Any],
            chain_ids: dict[str, int]) -> None:
    """Each winner's gateway signs its measured response; the aggregator relays the Reports."""
    s = run.s
    reports = []
    for name in s.households:
        mine = [b for b in s.bids if b.household == name]
        won = [b for b in mine if client.bid(chain_ids[b.key])["awardW"] > 0]
        if won:
            reports.append((name, _household_report(s, run.wallets[name].address, window, state,
                                                    mine, won)))
    d = client.deployment
    for name, report in reports:  # baselines are committed before the window starts
        client.commit_baseline(run.relayer, sign_baseline(Baseline(
            household=report.household, window=window, method=report.baseline_method,
            input_hash=report.baseline_input_hash, baseline_wh=report.baseline_wh),
            key=run.gateways[name], chain_id=d.chain_id, market=d.market))
    run.at(s.end_s)
    submitter = ReportSubmitter(outbox=run.outbox, client=client, sender=run.relayer)
    for name, report in reports:
        submitter.queue(sign_report(report, key=run.gateways[name],
                                    chain_id=client.deployment.chain_id,
                                    market=client.deployment.market))
    result = submitter.drain()
    if result.rejected or result.waiting:
        raise DrgwError(f"Reports not accepted: {'; '.join(result.rejected) or 'still waiting'}")


def _household_report(s: Scenario, wallet: str, window: int, state: dict[str, Any],
                      mine: list[ScenarioBid], won: list[ScenarioBid]) -> Report:
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    seconds = s.end_s - s.start_s
    baseline_w = sum(b.rated_w for b in mine)
    actual_w = max(0, baseline_w + sum(b.actual_w for b in won))
    minutes = -(-seconds // 60)
    leaves = [keccak(encode(["address", "uint48", "uint40", "uint64"],
                            [wallet, seq, state["start"] + 60 * (seq - 1), actual_w]))
              for seq in range(1, minutes + 1)]
    baseline_wh, actual_wh = baseline_w * seconds // 3600, actual_w * seconds // 3600
    return Report(
        household=wallet, window=window, seq_from=1, seq_to=minutes,
        window_start=state["start"], window_end=state["end"], baseline_method=BASELINE_SIMULATED,
        baseline_input_hash=keccak(encode(["address", "uint64"], [wallet, baseline_w])),
        baseline_wh=baseline_wh, actual_wh=actual_wh,
        delivered_wh=m.delivered_wh(reduce=state["reduce"], baseline_wh=baseline_wh,
                                    actual_wh=actual_wh),
        merkle_root=merkle_root(leaves),
    )


def merkle_root(leaves: list[bytes]) -> bytes:
    """Commutative (sorted-pair) keccak Merkle root, as OpenZeppelin's MerkleProof verifies."""
    from eth_utils.crypto import keccak

    level = list(leaves) or [bytes(32)]
    while len(level) > 1:
        pairs = [level[i:i + 2] for i in range(0, len(level), 2)]
        level = [keccak(b"".join(sorted(p))) if len(p) == 2 else p[0] for p in pairs]
    return level[0]


_Model = tuple[list[m.Bid], m.WindowSpec, m.Target, m.Clearing]  # what the reference model makes of it


def _model(s: Scenario, chain_ids: dict[str, int], offset: int) -> _Model:
    bids = [m.Bid(id=chain_ids[b.key], household=b.household, from_s=b.from_s, to_s=b.to_s,
                  power_w=b.power_w, rated_w=b.rated_w, price_mtok=b.price_mtok) for b in s.bids]
    cutoff = 1 + sum(1 for b in s.bids if b.submitted_s < s.announced_s)
    spec = m.WindowSpec(start_s=s.start_s, end_s=s.end_s, retail_micro=s.retail_micro,
                        realtime_micro=s.realtime_micro, omega_milli=s.omega_milli, mode=s.mode,
                        cutoff=cutoff)
    target = m.target_of(spec, s.mtok_per_currency)
    return bids, spec, target, m.clear(bids, spec, target, now_s=s.announced_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settlement:
    """A window's settlement as the chain's events tell it (amounts in mtok by chain bid id), beside
    what the reference model expects of each bid: `row` checks one bid and writes its line."""

    scenario: Scenario
    clearing: m.Clearing
    expected: dict[int, m.BidResult]
    consumed: frozenset[int]  # the bids the contract took into the window's clearing
    clearing_price: int
    paid: dict[int, int]
    refunded: dict[int, int]
    forfeited: dict[int, int]

    def row(self, b: ScenarioBid, bid_id: int, award: int) -> BidRow:
        s = self.scenario
        want = self.expected.get(bid_id)
        got = (award, self.paid.get(bid_id, 0), self.forfeited.get(bid_id, 0))
        if (want and got != (want.award_w, want.payment_mtok, want.forfeited_mtok)) or (
                (bid_id in self.consumed) != (bid_id in self.clearing.awards)):
            raise DrgwError(f"contract and reference model disagree on bid {b.key}: chain {got}, "
                            f"model {want}; this is a bug, please report it with the scenario")
        return BidRow(
            id=b.key, household=b.household, eligible=bid_id in self.consumed,
            reason=self.clearing.reasons[bid_id], awarded_kw=award / 1000,
            payment=self.paid.get(bid_id, 0) / 1000,
            surplus=(self.clearing_price - b.price_mtok) * award * (s.end_s - s.start_s) / 3.6e9,
            performed=want is not None and want.outcome is m.Outcome.PERFORMED,
            deposit=m.deposit_mtok(b.rated_w, s.deposit_per_kw_mtok) / 1000,
            deposit_refunded=self.refunded.get(bid_id, 0) / 1000,
            deposit_forfeited=self.forfeited.get(bid_id, 0) / 1000,
        )


def _expected(run: _Run, client: MarketClient, window: int, chain_ids: dict[str, int],
              model: _Model) -> dict[int, m.BidResult]:
    """The reference model's settlement of each bid, given the Wh each winner delivered on chain."""
    s = run.s
    bids, spec, _, clearing = model
    delivered = {b.household: client.take(run.wallets[b.household].address, window)["deliveredWh"]
                 for b in s.bids if chain_ids[b.key] in clearing.awards
                 and clearing.awards[chain_ids[b.key]] > 0}
    return {r.bid_id: r for r in m.settle_and_check(
        clearing, bids, spec, delivered=delivered, deposit_per_kw_mtok=s.deposit_per_kw_mtok,
        tolerance_bps=s.tolerance_bps)}


def _result(run: _Run, client: MarketClient, window: int, chain_ids: dict[str, int],
            model: _Model, paid: list[dict[str, Any]], refunds: list[dict[str, Any]],
            forfeits: list[dict[str, Any]]) -> SimulationResult:
    s = run.s
    _, _, target, clearing = model
    state = client.window(window)
    seconds = s.end_s - s.start_s
    consumed = frozenset(client.window_bids(window))
    settlement = _Settlement(
        scenario=s, clearing=clearing, expected=_expected(run, client, window, chain_ids, model),
        consumed=consumed, clearing_price=state["clearingPrice"],
        paid={e["bidId"]: e["amount"] for e in paid},
        refunded={e["bidId"]: e.get("amount", e.get("deposit", 0)) for e in refunds},
        forfeited={e["bidId"]: e["amount"] for e in forfeits})
    rows = tuple(settlement.row(b, chain_ids[b.key], client.bid(chain_ids[b.key])["awardW"])
                 for b in s.bids)
    if state["clearingPrice"] != clearing.clearing_price_mtok:
        raise DrgwError("contract and reference model disagree on the clearing price; a bug")
    total_w = sum(r.awarded_kw for r in rows) * 1000
    count, gas = run.outbox.tx_totals()
    return SimulationResult(
        target_kw=state["targetW"] / 1000, clearing_price=state["clearingPrice"] / 1000,
        window_hours=seconds / 3600, bids=rows,
        operator_gain=(target.spread_mtok - state["clearingPrice"]) * total_w * seconds / 3.6e9,
        tx_count=count, gas_total=gas,
    )
