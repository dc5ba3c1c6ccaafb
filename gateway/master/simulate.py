"""One whole DR window of a scenario on the embedded chain or a JSON-RPC node (`drgw market simulate`).

Deploy, register households (each with its own wallet and gateway key), fund them, place the bids
with deposits at their submission times, announce, clear, let each winner's gateway sign a Report of
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
from gateway.errors import DrgwError
from gateway.market import model as m
from gateway.market.scenario import Scenario, ScenarioBid
from gateway.master.simulate_run import PhaseTimer, Run

BASELINE_SIMULATED = 0  # baseline method id: the household's rated load (simulation only)
_Money = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]
PHASES = ("setup", "place", "clear", "report", "settle", "check")
REPORTS_PER_TX = 100  # a relayed Report costs about 57k gas in a batch: ~6M gas per transaction


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
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, and "total"

    def as_json(self) -> dict[str, Any]:
        return {
            "target_kw": self.target_kw, "clearing_price": self.clearing_price,
            "window_hours": self.window_hours,
            "bids": [{f: getattr(row, f) for f in BidRow.__slots__} for row in self.bids],
            "operator_gain": self.operator_gain,
            "tx": {"count": self.tx_count, "gas_total": self.gas_total},
            "timings": self.timings,
        }


def simulate(scenario: Scenario, *, node: ChainNode | None = None,
             clock: Callable[[], float] = time.monotonic) -> SimulationResult:
    """Run the scenario's window on `node` (a fresh embedded chain by default; a JSON-RPC node
    with funded accounts, e.g. anvil) and return the settlement and each phase's seconds."""
    timer = PhaseTimer(clock)
    t0 = clock()
    with timer("setup"):
        run = Run(scenario, node or embedded())
        client = run.setup()
    s = scenario
    chain_ids: dict[str, int] = {}
    window = 0
    for t, kind, bids in _events(s):
        run.at(t)
        if kind == 0:
            with timer("clear"):
                client.announce(run.op, start_s=s.start_s + run.offset,
                                end_s=s.end_s + run.offset, retail_micro=s.retail_micro,
                                realtime_micro=s.realtime_micro, omega_milli=s.omega_milli,
                                mode=s.mode.value)
                window = client.window_count()
                client.clear(run.op, window)
        else:
            with timer("place"):
                chain_ids.update(run.place(bids))
    state = client.window(window)
    model = _model(s, chain_ids, run.offset)
    paid: list[dict[str, Any]] = []
    refunds: list[dict[str, Any]] = []
    forfeits: list[dict[str, Any]] = []
    delivered: dict[str, int] = {}
    if state["state"] == 2:  # cleared: Reports, settle, check
        with timer("report"):
            delivered = _report(run, client, window, state, chain_ids)
        with timer("settle"):
            paid, refunds, forfeits = _settle(run, client, window)
    with timer("check"):
        rows = dict(clearing.bid_rows(client, int(client.market.functions.nextBidId().call())))
        still_open = [(b, chain_ids[b.key]) for b in s.bids
                      if rows[chain_ids[b.key]]["state"] == clearing.BID_OPEN]
        refunds += client.events("BidWithdrawn", run.withdraw(still_open))
        result = _result(run, client, window, chain_ids, model, rows, delivered,
                         (paid, refunds, forfeits))
    timings = {**{p: timer.seconds.get(p, 0.0) for p in PHASES}, "total": clock() - t0}
    return replace(result, timings=timings)


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
    """(time, 0 announce and clear | 1 place, bids): the bids between two operator steps go
    out together at the time of the first of them (only their order against the announcement
    matters to the market; each keeps its scenario order)."""
    ordered = sorted([(b.submitted_s, 1, i) for i, b in enumerate(s.bids)]
                     + [(s.announced_s, 0, -1)])
    out: list[tuple[int, int, list[ScenarioBid]]] = []
    for t, kind, index in ordered:
        if kind == 1 and out and out[-1][1] == 1:
            out[-1][2].append(s.bids[index])
        else:
            out.append((t, kind, [s.bids[index]] if kind == 1 else []))
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
            money: _Money) -> SimulationResult:
    s = run.s
    paid, refunds, forfeits = money
    _, _, target, clearing_ = model
    state = client.window(window)
    seconds = s.end_s - s.start_s
    consumed = frozenset(client.window_bids(window))
    settlement = _Settlement(
        scenario=s, clearing=clearing_, expected=_expected(run, chain_ids, model, delivered),
        consumed=consumed, clearing_price=state["clearingPrice"],
        paid={e["bidId"]: e["amount"] for e in paid},
        refunded={e["bidId"]: int(e.get("amount") or e.get("deposit") or 0) for e in refunds},
        forfeited={e["bidId"]: e["amount"] for e in forfeits})
    bid_rows = tuple(settlement.row(b, chain_ids[b.key], int(rows[chain_ids[b.key]]["awardW"]))
                     for b in s.bids)
    if state["clearingPrice"] != clearing_.clearing_price_mtok:
        raise DrgwError("contract and reference model disagree on the clearing price; a bug")
    total_w = sum(r.awarded_kw for r in bid_rows) * 1000
    count, gas = run.tx_totals()
    return SimulationResult(
        target_kw=state["targetW"] / 1000, clearing_price=state["clearingPrice"] / 1000,
        window_hours=seconds / 3600, bids=bid_rows,
        operator_gain=(target.spread_mtok - state["clearingPrice"]) * total_w * seconds / 3.6e9,
        tx_count=count, gas_total=gas,
    )
