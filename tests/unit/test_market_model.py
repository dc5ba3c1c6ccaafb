"""The pure reference model of the DR market: target, clearing, settlement, verification, reputation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.market import model as m
from gateway.market.reputation import (
    ReputationRules,
    Standing,
    effective_score,
    next_standing,
)

RULES = ReputationRules()


def window(**changes: int | m.Mode) -> m.WindowSpec:
    base: dict[str, int | m.Mode] = dict(start_s=1000, end_s=1600, retail_micro=600_000,
                                         realtime_micro=680_000, omega_milli=1200,
                                         mode=m.Mode.SHIFT, cutoff=100)
    base.update(changes)
    return m.WindowSpec(**base)  # type: ignore[arg-type]


def bid(id: int, power_w: int, price: int, household: str = "", **changes: int) -> m.Bid:
    fields = dict(id=id, household=household or f"h{id}", from_s=0, to_s=5000, power_w=power_w,
                  rated_w=abs(power_w), price_mtok=price)
    fields.update(changes)
    return m.Bid(**fields)  # type: ignore[arg-type]


def test_target_follows_the_design_formula() -> None:
    t = m.target_of(window(), 1_000_000)  # 1 currency = 1000 tokens
    assert (t.reduce, t.spread_mtok, t.dec_mtok) == (True, 80_000, 0)  # 0.08 currency = 80 tokens
    assert t.optimum_w == 80_000 * 1000 // (2 * 1200) == 33_333  # 80 / 2.4 kW
    curtail = m.target_of(window(mode=m.Mode.CURTAIL), 1_000_000)
    assert curtail.dec_mtok == 600_000 and curtail.optimum_w == 680_000 * 1000 // 2400
    assert not m.target_of(window(realtime_micro=500_000), 1_000_000).reduce


def test_merit_order_ties_and_partial_marginal_bid() -> None:
    bids = [bid(1, -20_000, 30_000), bid(2, -10_000, 31_500), bid(3, -10_000, 31_500),
            bid(4, -10_000, 20_000)]
    c = m.clear(bids, window(), m.target_of(window(), 1_000_000), now_s=0)
    assert c.order == (4, 1, 2, 3)
    assert dict(c.awards) == {4: 10_000, 1: 20_000, 2: 3_333, 3: 0}
    assert c.target_w == 33_333 == sum(c.awards.values())
    assert c.clearing_price_mtok == 31_500 and c.winners == (4, 1, 2)


def test_eligibility_reasons() -> None:
    bids = [bid(1, 2000, 1), bid(2, -2000, 1, from_s=1001), bid(3, -2000, 1, to_s=1599),
            bid(4, -2000, 1, household="s"), bid(5, -2000, 1, household="a"),
            bid(100, -2000, 1)]
    suspended = {"s": m.HOUSEHOLD_SUSPENDED, "a": m.AGGREGATOR_SUSPENDED}
    c = m.clear(bids, window(), m.target_of(window(), 1_000_000), now_s=0, suspended=suspended)
    assert dict(c.reasons) == {1: m.WRONG_DIRECTION, 2: m.RANGE, 3: m.RANGE,
                               4: m.HOUSEHOLD_SUSPENDED, 5: m.AGGREGATOR_SUSPENDED, 100: m.LATE}
    assert c.void_reason == m.VOID_NO_ELIGIBLE_BIDS and not c.awards


def test_void_when_target_is_zero_or_cleared_too_late() -> None:
    flat = window(realtime_micro=600_000)
    c = m.clear([bid(1, -1000, 1)], flat, m.target_of(flat, 1_000_000), now_s=0)
    assert c.void_reason == m.VOID_TARGET_ZERO
    late = m.clear([bid(1, -1000, 1)], window(), m.target_of(window(), 1_000_000), now_s=1000)
    assert late.void_reason == m.VOID_CLEARED_TOO_LATE


def test_payment_and_verdict_use_exact_integer_rules() -> None:
    assert m.payment_mtok(45_000, 10_333, 600) == 77_497  # 77_497.5 rounds down
    # 2 kW for 10 minutes = 333.33 Wh; 5% tolerance -> at least 316.67 Wh
    assert m.verdict(317, 2000, 600, 500) is m.Outcome.PERFORMED
    assert m.verdict(316, 2000, 600, 500) is m.Outcome.SHORTFALL
    assert m.verdict(-5, 2000, 600, 500) is m.Outcome.SHORTFALL
    assert m.verdict(None, 2000, 600, 500) is m.Outcome.NO_REPORT
    assert m.delivered_wh(reduce=True, baseline_wh=900, actual_wh=500) == 400
    assert m.delivered_wh(reduce=False, baseline_wh=900, actual_wh=500) == -400


def test_settlement_verdict_is_per_household_over_its_awards() -> None:
    bids = [bid(1, -6000, 40_000, household="h4"), bid(2, -30_000, 45_000, household="h4"),
            bid(3, -2000, 31_500, household="h1"), bid(4, -2000, 50_000, household="h9")]
    spec = window()
    c = m.clear(bids, spec, m.target_of(spec, 1_000_000), now_s=0)
    awards = dict(c.awards)
    h4_energy = (awards[1] + awards[2]) * 600 // 3600
    results = m.settle_and_check(c, bids, spec, delivered={"h4": h4_energy * 9 // 10},
                                 deposit_per_kw_mtok=100_000, tolerance_bps=500)
    by = {r.bid_id: r for r in results}
    assert by[1].outcome is by[2].outcome is m.Outcome.SHORTFALL
    assert awards == {3: 2000, 1: 6000, 2: 33_333 - 8000, 4: 0}
    assert by[1].forfeited_mtok == 600_000 and by[2].forfeited_mtok == 3_000_000
    assert by[1].payment_mtok == m.payment_mtok(c.clearing_price_mtok, awards[1], 600)
    assert by[3].outcome is m.Outcome.NO_REPORT and by[3].payment_mtok == 0
    assert by[4].outcome is None and by[4].refunded_mtok == 200_000 and by[4].award_w == 0


@given(st.lists(st.tuples(st.integers(1, 50_000), st.integers(0, 100_000)), min_size=1,
                max_size=30), st.integers(1, 5000))
def test_clearing_invariants(offers: list[tuple[int, int]], omega: int) -> None:
    bids = [bid(i + 1, -w, p) for i, (w, p) in enumerate(offers)]
    spec = window(omega_milli=omega)
    t = m.target_of(spec, 1_000_000)
    c = m.clear(bids, spec, t, now_s=0)
    assert sum(c.awards.values()) == c.target_w == min(t.optimum_w, sum(w for w, _ in offers))
    partial = [b for b in bids if 0 < c.awards[b.id] < b.magnitude_w]
    assert len(partial) <= 1
    winners = [b for b in bids if c.awards[b.id] > 0]
    assert c.clearing_price_mtok == max(b.price_mtok for b in winners)
    losers = [b for b in bids if c.awards[b.id] == 0]
    assert all((b.price_mtok, b.id) > (w.price_mtok, w.id) for b in losers for w in winners)


def test_reputation_suspends_below_threshold_and_recovers() -> None:
    s = Standing(score=RULES.initial)
    s = next_standing(s, 1, m.Outcome.NO_REPORT, RULES)
    assert (s.score, s.suspended(2)) == (350, False)
    s = next_standing(s, 2, m.Outcome.SHORTFALL, RULES)
    assert s.score == 250 and s.suspended_until == 2 + 1 + RULES.suspension_windows
    assert s.suspended(3) and s.suspended(7) and not s.suspended(8)
    assert effective_score(s, 8, RULES) == RULES.threshold
    s = next_standing(s, 8, m.Outcome.PERFORMED, RULES)
    assert s.score == RULES.threshold + RULES.gain
    top = next_standing(Standing(score=RULES.max), 9, m.Outcome.PERFORMED, RULES)
    assert top.score == RULES.max
