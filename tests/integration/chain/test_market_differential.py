"""Differential test: random DR windows give the same results on the EVM and in the Python model.

Awards, clearing price, target, merit order, the amount settlement pulls, payments (uniform or
pay-as-bid pricing), deposit outcomes, unrevealed sealed bids' refunds minus the penalty and every
balance left to claim must be identical, integer for integer. Some bids are sealed (commit-reveal,
seed 002): revealed in time, never revealed, or first revealed with a wrong price (refused:
CommitmentMismatch) and then left unrevealed; a reveal before the announcement is refused too
(RevealNotOpen).
Baselines are committed before the window and energies are signed: small or negative baselines make
many households' actual energy negative (exporting), which both must credit in full. The chain is
deployed once; each example starts from an EVM snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.chain.outbox import ChainOutbox
from gateway.chain.revert import ChainRevert
from gateway.chain.sender import TxSender
from gateway.market import model as m

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
HOUSEHOLDS = 5
LEAD = 1200
SECONDS = 600
REVEAL = 300  # the reveal phase after the announcement (seconds)


@dataclass(frozen=True)
class BidSpec:
    household: int
    power_w: int
    extra_rated_w: int
    price_mtok: int
    from_offset: int  # relative to the window start
    to_offset: int  # relative to the window end
    late: bool
    sealing: str  # open | revealed | unrevealed | wrong (a refused reveal, then none)


bid_specs = st.builds(
    BidSpec,
    household=st.integers(0, HOUSEHOLDS - 1),
    power_w=st.one_of(st.integers(-20_000, -1), st.integers(1, 20_000)).filter(bool),
    extra_rated_w=st.sampled_from([0, 0, 500, 3000]),
    price_mtok=st.one_of(st.sampled_from([5_000, 31_500, 31_500, 40_000]),
                         st.integers(0, 90_000)),
    from_offset=st.sampled_from([0, -60, -3600, 60]),
    to_offset=st.sampled_from([0, 60, 3600, -60]),
    late=st.sampled_from([False, False, False, True]),
    sealing=st.sampled_from(["open", "open", "revealed", "revealed", "unrevealed", "wrong"]),
)
windows = st.fixed_dictionaries({
    "pricing": st.sampled_from([0, 1]),  # uniform (seed 003) or pay-as-bid (seed 002)
    "retail": st.integers(100_000, 900_000),
    "realtime": st.integers(50_000, 1_200_000),
    "omega": st.integers(100, 5_000),
    "mode": st.sampled_from([0, 1]),
})
# per household: None = no Report, else delivered energy as per mille of its awarded energy
deliveries = st.lists(st.one_of(st.none(), st.integers(-100, 1200)), min_size=HOUSEHOLDS,
                      max_size=HOUSEHOLDS)
# per household: its committed baseline over the window, Wh (negative = a PV household's export)
baselines = st.lists(st.sampled_from([5000, 300, 0, -400]), min_size=HOUSEHOLDS,
                     max_size=HOUSEHOLDS)


@pytest.fixture(scope="module")
def world(market_class):  # type: ignore[no-untyped-def]
    from gateway.chain.node import embedded

    outbox = ChainOutbox(":memory:")
    market = market_class(embedded(), outbox, tolerance_bps=500, deposit_per_kw=100_000)
    households = [market.household(f"d{i}") for i in range(HOUSEHOLDS)]
    snapshot = market.node.tester.take_snapshot()
    return market, households, snapshot


def fresh(market, key: bytes) -> TxSender:  # type: ignore[no-untyped-def]
    return TxSender(w3=market.node.w3, key=key, outbox=market.outbox, decoder=market.decoder)


class Bids:
    """The bids of one example, on chain and in the model; sealed ones wait for their reveal."""

    def __init__(self, market, households, wallets, start: int, end: int) -> None:  # type: ignore[no-untyped-def]
        self.market, self.households, self.wallets = market, households, wallets
        self.start, self.end = start, end
        self.model: list[m.Bid] = []
        self.sealed: list[tuple[BidSpec, m.Bid, bytes]] = []  # waiting for the reveal phase

    def place(self, spec: BidSpec) -> None:
        c, h = self.market.client, self.households[spec.household]
        rated = abs(spec.power_w) + spec.extra_rated_w
        from_s, to_s = self.start + spec.from_offset, self.end + spec.to_offset
        terms = dict(from_s=from_s, to_s=to_s, power_w=spec.power_w, price_mtok=spec.price_mtok)
        if spec.sealing == "open":
            bid_id, _ = c.place_bid(self.wallets[spec.household], rated_w=rated, **terms)
        else:
            salt = bytes([len(self.model) + 1]) * 32
            bid_id, _ = c.commit_bid(self.wallets[spec.household], h.address, rated_w=rated,
                                     sealed=m.seal(salt=salt, household=h.address, **terms))
        bid = m.Bid(id=bid_id, household=h.address, rated_w=rated, **terms)
        self.model.append(bid)
        if spec.sealing != "open":
            self.sealed.append((spec, bid, salt))

    def reveal(self, *, announced: bool) -> None:
        """In the reveal phase: reveal, refuse a wrong reveal, or leave sealed. Before it (only
        the first sealed bid is tried, to keep examples fast) the contract refuses any reveal."""
        c = self.market.client
        for n, (spec, bid, salt) in enumerate(self.sealed):
            wallet = self.wallets[spec.household]
            terms = dict(from_s=bid.from_s, to_s=bid.to_s, power_w=bid.power_w,
                         price_mtok=bid.price_mtok, salt=salt)
            if not announced:
                if n == 0:
                    expect_revert("RevealNotOpen", c.reveal_bid, wallet, bid.id, **terms)
                continue
            late = spec.late  # committed after the announcement: no window covers it yet
            if spec.sealing == "wrong" and not late:
                expect_revert("CommitmentMismatch", c.reveal_bid, wallet, bid.id,
                              **{**terms, "price_mtok": bid.price_mtok + 1})
            if spec.sealing == "revealed" and not late:
                c.reveal_bid(wallet, bid.id, **terms)
            elif spec.sealing != "revealed" or late:
                i = self.model.index(bid)
                self.model[i] = m.Bid(id=bid.id, household=bid.household, from_s=bid.from_s,
                                      to_s=bid.to_s, power_w=bid.power_w, rated_w=bid.rated_w,
                                      price_mtok=bid.price_mtok, unrevealed=True)


def expect_revert(name: str, fn, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ChainRevert) as info:
        fn(*args, **kwargs)
    assert info.value.revert.name == name, str(info.value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(specs=st.lists(bid_specs, min_size=1, max_size=12), window=windows, shares=deliveries,
       base=baselines)
def test_evm_and_model_agree(world, specs: list[BidSpec], window: dict[str, int],  # type: ignore[no-untyped-def]
                             shares: list[int | None], base: list[int]) -> None:
    market, households, snapshot = world
    market.node.tester.revert_to_snapshot(snapshot)
    market.outbox = ChainOutbox(":memory:")  # nonces restart with the snapshot
    op = market.op = fresh(market, market.node.funded_keys[0])
    relayer = fresh(market, market.node.funded_keys[2])
    wallets = [fresh(market, h.wallet_key) for h in households]
    c = market.client
    start = market.now() + 1 + LEAD + len(specs) * 2
    end = start + SECONDS
    bids = Bids(market, households, wallets, start, end)
    for spec in (s for s in specs if not s.late):
        bids.place(spec)
    bids.reveal(announced=False)
    c.announce(op, start_s=start, end_s=end, retail_micro=window["retail"],
               realtime_micro=window["realtime"], omega_milli=window["omega"], mode=window["mode"],
               pricing=window["pricing"], reveal_s=REVEAL)
    w_id = c.window_count()
    for spec in (s for s in specs if s.late):
        bids.place(spec)
    bids.reveal(announced=True)
    reveal_end = c.window(w_id)["revealEnd"]  # the announcement's block time + REVEAL
    market.at(reveal_end)  # clearing waits for the end of the reveal phase
    cleared = c.clear(op, w_id)
    model_bids = bids.model

    spec_w = m.WindowSpec(start_s=start, end_s=end, retail_micro=window["retail"],
                          realtime_micro=window["realtime"], omega_milli=window["omega"],
                          mode=m.Mode(window["mode"]), cutoff=c.window(w_id)["cutoff"],
                          pricing=m.Pricing(window["pricing"]))
    target = m.target_of(spec_w, 1_000_000)
    clearing = m.clear(model_bids, spec_w, target, now_s=reveal_end)
    state = c.window(w_id)
    assert (state["reduce"], state["spreadMtok"], state["dEcMtok"], state["optimumW"]) == (
        target.reduce, target.spread_mtok, target.dec_mtok, target.optimum_w)
    # Unrevealed commitments are refunded minus the penalty when clearing passes them: always,
    # unless the window is voided before any bid is passed (a zero optimum).
    passed = clearing.void_reason in (m.VOID_NONE, m.VOID_NO_ELIGIBLE_BIDS)
    gone = {b.id: m.unrevealed_refund_mtok(m.deposit_mtok(b.rated_w, 100_000))
            for b in model_bids if passed and clearing.reasons[b.id] == m.UNREVEALED}
    assert {e["bidId"]: (e["refund"], e["penalty"])
            for e in c.events("CommitmentUnrevealed", cleared)} == gone
    owed = Owed(c, op.address)
    for b in model_bids:
        if b.id in gone:
            owed.add(b.household, gone[b.id][0])
            owed.add(op.address, gone[b.id][1])
    if clearing.void_reason:
        assert state["state"] == 5
        owed.check_and_claim(relayer)
        return
    assert state["state"] == 2
    assert (state["targetW"], state["clearingPrice"]) == (clearing.target_w,
                                                          clearing.clearing_price_mtok)
    assert c.window_bids(w_id) == clearing.order
    assert {b: c.bid(b)["awardW"] for b in clearing.order} == dict(clearing.awards)

    award_total: dict[str, int] = {}
    for b in model_bids:
        award_total[b.household] = award_total.get(b.household, 0) + clearing.awards.get(b.id, 0)
    reporting = [(i, h) for i, h in enumerate(households)
                 if award_total.get(h.address, 0) and shares[i] is not None]
    commitments = {}
    for i, h in reporting:  # before the window starts
        market.commit(h, w_id, baseline_wh=base[i], sender=relayer)
        commitments[h.address] = m.Commitment(method=2, input_hash=b"\x11" * 32,
                                              baseline_wh=base[i])
    market.at(end)
    delivered: dict[str, int] = {}
    for i, h in reporting:
        energy = award_total[h.address] * SECONDS // 3600 * (shares[i] or 0) // 1000
        signed = market.report(h, w_id, delivered=energy, baseline_wh=base[i])
        r = signed.report
        assert m.report_refusal(
            reduce=target.reduce, commitment=commitments[h.address], method=r.baseline_method,
            input_hash=r.baseline_input_hash, baseline_wh=r.baseline_wh, actual_wh=r.actual_wh,
            delivered=r.delivered_wh) == ""
        c.submit_report(relayer, signed)
        assert c.take(h.address, w_id)["deliveredWh"] == energy
        delivered[h.address] = energy
    settled = c.settle(op, w_id)
    pulled = m.pulled_mtok(clearing, model_bids, spec_w)
    assert c.events("WindowSettled", settled)[0]["paid"] == pulled
    checked = c.check(op, w_id)
    paid = c.events("BidPaid", checked)
    expected = m.settle_and_check(clearing, model_bids, spec_w, delivered=delivered,
                                  deposit_per_kw_mtok=100_000, tolerance_bps=500)
    assert {e["bidId"]: e["amount"] for e in paid} == {
        r.bid_id: r.payment_mtok for r in expected if r.award_w > 0 and r.household in delivered}
    assert {e["bidId"]: e["amount"] for e in c.events("DepositRefunded", checked)} == {
        r.bid_id: r.refunded_mtok for r in expected if not r.forfeited_mtok}
    assert {e["bidId"]: e["amount"] for e in c.events("DepositForfeited", checked)} == {
        r.bid_id: r.forfeited_mtok for r in expected if r.forfeited_mtok}
    for r in expected:  # pull settlement: everything accrues to balances
        owed.add(r.household, r.payment_mtok + r.refunded_mtok)
        owed.add(op.address, r.forfeited_mtok)
    owed.add(op.address, pulled - sum(r.payment_mtok for r in expected))
    owed.check_and_claim(relayer)


class Owed:
    """What the model says each account may claim; checked against `claimable`, then claimed by
    a third party, which must move exactly that many tokens to the account."""

    def __init__(self, client, treasury: str) -> None:  # type: ignore[no-untyped-def]
        self.client, self.treasury = client, treasury
        self.amounts: dict[str, int] = {}

    def add(self, account: str, mtok: int) -> None:
        self.amounts[account] = self.amounts.get(account, 0) + mtok

    def check_and_claim(self, relayer: TxSender) -> None:
        c = self.client
        assert {a: c.claimable(a) for a in self.amounts} == self.amounts
        for account, amount in self.amounts.items():
            if account == self.treasury or amount == 0:
                continue  # the treasury is the operator: its claim is no household's business
            before = c.balance(account)
            c.claim(relayer, account)
            assert (c.balance(account) - before, c.claimable(account)) == (amount, 0)
