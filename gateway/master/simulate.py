"""One whole DR window of a scenario on the embedded chain or a JSON-RPC node (`drgw market simulate`).

Deploy, register households (each with its own wallet and gateway key), fund them, place the bids
with deposits at their submission times (a sealed one as its commitment), announce (uniform or
pay-as-bid pricing), reveal the sealed bids, clear when the reveal phase ends, let each winner's
gateway sign a Report of
its measured response (relayed by the aggregator, who pays gas), settle, check, and withdraw the bids
that took no part. The figures come from the chain's events; the reference model must agree with
every one of them, or the run fails. What grows with the households goes out in bulk
(simulate_run.Run); each phase is timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.chain import clearing
from gateway.chain.market_client import MarketClient
from gateway.chain.node import ChainNode, embedded
from gateway.chain.report import Baseline, Report, sign_baseline, sign_report
from gateway.chain.sender import Mined
from gateway.errors import DrgwError
from gateway.market import model as m
from gateway.market.scenario import Scenario, ScenarioBid
from gateway.master.simulate_run import PhaseTimer, Run

BASELINE_SIMULATED = 0  # baseline method id: the household's rated load (simulation only)
_Money = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]
PHASES = ("setup", "place", "reveal", "clear", "report", "settle", "check")
ANNOUNCE, PLACE, CLEAR = 0, 1, 2  # the operator's and the households' steps, in this order at a tie
REPORTS_PER_TX = 100  # a relayed Report costs about 57k gas in a batch: ~6M gas per transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class BidRow:
    """One bid's line in the settlement table (money in tokens, power in kW magnitudes)."""

    id: str
    bid_id: int  # the contract's
    household: str
    sealed: bool
    eligible: bool
    reason: str
    awarded_kw: float
    payment: float
    surplus: float
    performed: bool
    deposit: float
    deposit_refunded: float
    deposit_forfeited: float  # an unrevealed sealed bid's: its penalty


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    """The settlement as the chain's events tell it; `model_checked` counts the bids whose award,
    payment, refund and forfeit were found equal to the reference model's (the clearing price
    too), so a result exists only when the contract and the model agree on every bid."""

    target_kw: float
    clearing_price: float
    pricing: str  # "uniform" or "pay_as_bid"
    window_hours: float
    bids: tuple[BidRow, ...]
    operator_gain: float
    tx_count: int
    gas_total: int
    gas_max: int  # the most gas one transaction used
    model_checked: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, and "total"

    def as_json(self) -> dict[str, Any]:
        return {
            "target_kw": self.target_kw, "clearing_price": self.clearing_price,
            "pricing": self.pricing, "window_hours": self.window_hours,
            "bids": [{f: getattr(row, f) for f in BidRow.__slots__} for row in self.bids],
            "operator_gain": self.operator_gain,
            "tx": {"count": self.tx_count, "gas_total": self.gas_total, "gas_max": self.gas_max},
            "model_checked": self.model_checked, "timings": self.timings,
        }


def simulate(scenario: Scenario, *, node: ChainNode | None = None,
             clock: Callable[[], float] = time.monotonic) -> SimulationResult:
    """Run the scenario's window on `node` (a fresh embedded chain by default; a JSON-RPC node
    with funded accounts, e.g. anvil) and return the settlement and each phase's seconds."""
    timer = PhaseTimer(clock)
    t0 = clock()
    chain = node or embedded()
    try:
        result = _run(scenario, chain, timer)
    finally:
        chain.release_clock()  # a node the caller gave follows its own clock again
    timings = {**{p: timer.seconds.get(p, 0.0) for p in PHASES}, "total": clock() - t0}
    return replace(result, timings=timings)


def _run(scenario: Scenario, node: ChainNode, timer: PhaseTimer) -> SimulationResult:
    """The simulation itself, its phases timed by `timer`."""
    with timer("setup"):
        run = Run(scenario, node)
        client = run.setup()
    chain_ids, window, cleared = _window(run, client, timer)
    state = client.window(window)
    model = _model(scenario, chain_ids)
    money: _Money = ([], [], [])
    delivered: dict[str, int] = {}
    if state["state"] == 2:  # cleared: Reports, settle, check
        with timer("report"):
            delivered = _report(run, client, window, state, chain_ids)
        with timer("settle"):
            money = _settle(run, client, window)
    with timer("check"):
        rows = dict(clearing.bid_rows(client, int(client.market.functions.nextBidId().call())))
        still_open = [(b, chain_ids[b.key]) for b in scenario.bids
                      if rows[chain_ids[b.key]]["state"] in (clearing.BID_OPEN, clearing.BID_SEALED)]
        money[1].extend(client.events("BidWithdrawn", run.withdraw(still_open)))
        return _result(run, client, window, chain_ids, model, rows, delivered,
                       money, client.events("CommitmentUnrevealed", cleared))


def _window(run: Run, client: MarketClient,
            timer: PhaseTimer) -> tuple[dict[str, int], int, tuple[Mined, ...]]:
    """Place the bids, announce, reveal and clear, each at its time: (chain id of each bid,
    the window, the clearing transactions)."""
    s = run.s
    chain_ids: dict[str, int] = {}
    window = 0
    cleared: tuple[Mined, ...] = ()
    for t, kind, bids in _events(s):
        run.at(t)
        if kind == PLACE:
            with timer("place"):
                chain_ids.update(run.place(bids))
        elif kind == ANNOUNCE:
            with timer("clear"):
                client.announce(run.op, start_s=s.start_s + run.offset,
                                end_s=s.end_s + run.offset, retail_micro=s.retail_micro,
                                realtime_micro=s.realtime_micro, omega_milli=s.omega_milli,
                                mode=s.mode.value, pricing=s.pricing.value, reveal_s=s.reveal_s)
                window = client.window_count()
            with timer("reveal"):  # the households reveal as soon as the reveal phase opens
                run.reveal([(b, chain_ids[b.key]) for b in s.bids
                            if b.sealed and b.revealed and b.submitted_s < s.announced_s])
        else:
            with timer("clear"):
                cleared = client.clear(run.op, window)
    return chain_ids, window, cleared


def _settle(run: Run, client: MarketClient, window: int) -> _Money:
    """After the grace: settle, give every bid its verdict (pull: all accrues to balances), and
    let every household claim. The BidPaid, DepositRefunded and DepositForfeited events."""
    run.at(run.s.end_s + run.s.report_grace_s)
    client.settle(run.op, window)
    checked = client.check(run.op, window)
    run.claim_all()
    return (client.events("BidPaid", checked), client.events("DepositRefunded", checked),
            client.events("DepositForfeited", checked))


def _events(s: Scenario) -> list[tuple[int, int, list[ScenarioBid]]]:
    """(time, ANNOUNCE | PLACE | CLEAR, bids): clearing starts when the reveal phase ends (at once
    without one); the bids between two operator steps go out together at the time of the first
    of them (only their order against the announcement matters to the market; each keeps its
    scenario order)."""
    ordered = sorted([(b.submitted_s, PLACE, i) for i, b in enumerate(s.bids)]
                     + [(s.announced_s, ANNOUNCE, -1), (s.announced_s + s.reveal_s, CLEAR, -1)])
    out: list[tuple[int, int, list[ScenarioBid]]] = []
    for t, kind, index in ordered:
        if kind == PLACE and out and out[-1][1] == PLACE:
            out[-1][2].append(s.bids[index])
        else:
            out.append((t, kind, [s.bids[index]] if kind == PLACE else []))
    return out


def _report(run: Run, client: MarketClient, window: int, state: dict[str, Any],
            chain_ids: dict[str, int]) -> dict[str, int]:
    """Each winner's gateway signs its baseline (before the window) and its measured response
    (after it); the aggregator relays them, the Reports in batches. The Wh each household
    delivered, as the contract accepted it."""
    s = run.s
    d = client.deployment
    award = {chain_ids[b.key]: 0 for b in s.bids}
    award.update({i: int(r["awardW"]) for i, r in clearing.bid_rows(client, int(state["cutoff"]))
                  if i in award})
    reports = []
    for name, mine in _by_household(s).items():
        won = [b for b in mine if award[chain_ids[b.key]] > 0]
        if won:
            reports.append((name, _household_report(s, run.wallets[name], window, state,
                                                    mine, won)))
    run.commit_baselines([sign_baseline(Baseline(
        household=r.household, window=window, method=r.baseline_method,
        input_hash=r.baseline_input_hash, baseline_wh=r.baseline_wh),
        key=run.gateways[name], chain_id=d.chain_id, market=d.market) for name, r in reports])
    run.at(s.end_s)
    signed = [sign_report(r, key=run.gateways[name], chain_id=d.chain_id, market=d.market)
              for name, r in reports]
    mined = [client.submit_reports(run.relayer, signed[i:i + REPORTS_PER_TX])
             for i in range(0, len(signed), REPORTS_PER_TX)]
    rejected = client.events("ReportRejected", mined)
    if rejected:
        raise DrgwError(f"{len(rejected)} Reports not accepted, first: {rejected[0]}")
    return {e["household"]: int(e["deliveredWh"]) for e in client.events("ReportAccepted", mined)}


def _by_household(s: Scenario) -> dict[str, list[ScenarioBid]]:
    out: dict[str, list[ScenarioBid]] = {}
    for b in s.bids:
        out.setdefault(b.household, []).append(b)
    return out


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


def _model(s: Scenario, chain_ids: dict[str, int]) -> _Model:
    bids = [m.Bid(id=chain_ids[b.key], household=b.household, from_s=b.from_s, to_s=b.to_s,
                  power_w=b.power_w, rated_w=b.rated_w, price_mtok=b.price_mtok,
                  unrevealed=b.sealed and not b.revealed) for b in s.bids]
    cutoff = 1 + sum(1 for b in s.bids if b.submitted_s < s.announced_s)
    spec = m.WindowSpec(start_s=s.start_s, end_s=s.end_s, retail_micro=s.retail_micro,
                        realtime_micro=s.realtime_micro, omega_milli=s.omega_milli, mode=s.mode,
                        cutoff=cutoff, pricing=s.pricing)
    target = m.target_of(spec, s.mtok_per_currency)
    return bids, spec, target, m.clear(bids, spec, target, now_s=s.announced_s + s.reveal_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settlement:
    """A window's settlement as the chain's events tell it (amounts in mtok by chain bid id), beside
    what the reference model expects of each bid: `row` checks one bid and writes its line."""

    scenario: Scenario
    spec: m.WindowSpec
    clearing: m.Clearing
    expected: dict[int, m.BidResult]
    consumed: frozenset[int]  # the bids the contract took into the window's clearing
    paid: dict[int, int]
    refunded: dict[int, int]
    forfeited: dict[int, int]
    unrevealed: dict[int, tuple[int, int]]  # CommitmentUnrevealed: (refund, penalty)

    def row(self, b: ScenarioBid, bid_id: int, award: int) -> BidRow:
        s = self.scenario
        want = self.expected.get(bid_id)
        got = (award, self.paid.get(bid_id, 0), self.forfeited.get(bid_id, 0))
        deposit = m.deposit_mtok(b.rated_w, s.deposit_per_kw_mtok)
        unrevealed = self.clearing.reasons[bid_id] == m.UNREVEALED
        if (want and got != (want.award_w, want.payment_mtok, want.forfeited_mtok)) or (
                (bid_id in self.consumed) != (bid_id in self.clearing.awards)) or (
                self.unrevealed.get(bid_id) != (
                    m.unrevealed_refund_mtok(deposit) if unrevealed else None)):
            raise DrgwError(f"contract and reference model disagree on bid {b.key}: chain {got}, "
                            f"model {want}; this is a bug, please report it with the scenario")
        refund, penalty = self.unrevealed.get(bid_id, (self.refunded.get(bid_id, 0), 0))
        return BidRow(
            id=b.key, bid_id=bid_id, household=b.household, sealed=b.sealed,
            eligible=bid_id in self.consumed, reason=self.clearing.reasons[bid_id],
            awarded_kw=award / 1000, payment=self.paid.get(bid_id, 0) / 1000,
            surplus=(self.price_paid(b) - b.price_mtok) * award * self.spec.seconds / 3.6e9,
            performed=want is not None and want.outcome is m.Outcome.PERFORMED,
            deposit=deposit / 1000, deposit_refunded=refund / 1000,
            deposit_forfeited=(self.forfeited.get(bid_id, 0) + penalty) / 1000,
        )

    def price_paid(self, b: ScenarioBid) -> int:
        """mtok/kWh a winner is paid: the clearing price, or its own ask under pay-as-bid."""
        return (b.price_mtok if self.spec.pricing is m.Pricing.PAY_AS_BID
                else self.clearing.clearing_price_mtok)


def _expected(run: Run, chain_ids: dict[str, int], model: _Model,
              delivered: dict[str, int]) -> dict[int, m.BidResult]:
    """The reference model's settlement of each bid, given the Wh each winner delivered on chain
    (its accepted Report)."""
    s = run.s
    bids, spec, _, clearing_ = model
    wallet = {b.household: run.wallets[b.household] for b in s.bids}
    mine = {b.household: delivered.get(wallet[b.household], 0) for b in s.bids
            if clearing_.awards.get(chain_ids[b.key], 0) > 0}
    return {r.bid_id: r for r in m.settle_and_check(
        clearing_, bids, spec, delivered=mine, deposit_per_kw_mtok=s.deposit_per_kw_mtok,
        tolerance_bps=s.tolerance_bps)}


def _result(run: Run, client: MarketClient, window: int, chain_ids: dict[str, int],
            model: _Model, rows: dict[int, dict[str, Any]], delivered: dict[str, int],
            money: _Money, unrevealed: list[dict[str, Any]]) -> SimulationResult:
    s = run.s
    paid, refunds, forfeits = money
    _, spec, target, clearing_ = model
    state = client.window(window)
    settlement = _Settlement(
        scenario=s, spec=spec, clearing=clearing_,
        expected=_expected(run, chain_ids, model, delivered),
        consumed=frozenset(client.window_bids(window)),
        paid={e["bidId"]: e["amount"] for e in paid},
        refunded={e["bidId"]: int(e.get("amount") or e.get("deposit") or 0) for e in refunds},
        forfeited={e["bidId"]: e["amount"] for e in forfeits},
        unrevealed={e["bidId"]: (e["refund"], e["penalty"]) for e in unrevealed})
    bid_rows = tuple(settlement.row(b, chain_ids[b.key], int(rows[chain_ids[b.key]]["awardW"]))
                     for b in s.bids)
    if state["clearingPrice"] != clearing_.clearing_price_mtok:
        raise DrgwError("contract and reference model disagree on the clearing price; a bug")
    gain = sum((target.spread_mtok - settlement.price_paid(b)) * round(r.awarded_kw * 1000)
               for b, r in zip(s.bids, bid_rows, strict=True))
    count, gas, gas_max = run.tx_totals()
    return SimulationResult(
        target_kw=state["targetW"] / 1000, clearing_price=state["clearingPrice"] / 1000,
        pricing=s.pricing.name.lower(), window_hours=spec.seconds / 3600, bids=bid_rows,
        operator_gain=gain * spec.seconds / 3.6e9, tx_count=count, gas_total=gas,
        gas_max=gas_max, model_checked=len(bid_rows),
    )
