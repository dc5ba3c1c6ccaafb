"""The registry's reference rules (inactivity, two-way selection, ranking) and reputation-sim.

Expected values are hand computations from the rules in docs/market.md, shown in the comments.
"""

from __future__ import annotations

import pytest

from gateway.market.model import Outcome
from gateway.market.reputation import (
    Registry,
    ReputationRules,
    SelectionRefused,
    Standing,
    effective_score,
)
from gateway.market.selection import study

RULES = ReputationRules()  # 500 start, 300 threshold, -5 per idle window, at most 20 windows


def test_inactivity_is_charged_per_idle_window_capped_and_floored() -> None:
    s = Standing(score=500, last_active=3)
    assert effective_score(s, 4, RULES) == 500  # window 4 follows 3: no idle window
    assert effective_score(s, 7, RULES) == 485  # windows 4, 5, 6 idle: 500 - 3 x 5
    assert effective_score(s, 100, RULES) == 400  # 96 idle, capped at 20: 500 - 100
    low = Standing(score=320, last_active=0)
    assert effective_score(low, 30, RULES) == 300  # 320 - 100 floored at the threshold
    suspended = Standing(score=200, suspended_until=9, last_active=0)
    assert effective_score(suspended, 8, RULES) == 200 and effective_score(suspended, 9, RULES) == 300


def test_a_household_chooses_an_aggregator_that_admits_it() -> None:
    reg = Registry(RULES)
    for a in ("a", "b"):
        reg.register_aggregator(a)
    reg.register_household("h", "a")
    reg.set_min_score("b", 510)
    with pytest.raises(SelectionRefused) as refused:  # 500 < 510
        reg.choose_aggregator("h", "b")
    assert refused.value.error == "ScoreBelowMinimum"
    reg.announce()
    reg.take_part("h", 1, awarded=True)
    with pytest.raises(SelectionRefused) as refused:  # award of window 1 not yet rated
        reg.choose_aggregator("h", "b")
    assert refused.value.error == "AwardsPending"
    reg.rate("h", 1, Outcome.PERFORMED)  # 500 + 20 = 520 >= 510
    reg.choose_aggregator("h", "b")
    assert reg.households["h"].aggregator == "b"
    assert reg.aggregator_score("a") == 520 and reg.aggregator_score("b") == 500


def test_rankings_are_descending_with_ties_in_registration_order() -> None:
    reg = Registry(RULES)
    reg.register_aggregator("a")
    for h in ("h0", "h1", "h2"):
        reg.register_household(h, "a")
    reg.announce()
    reg.take_part("h1", 1, awarded=True)
    reg.rate("h1", 1, Outcome.SHORTFALL)  # 400
    reg.take_part("h2", 1, awarded=True)
    reg.rate("h2", 1, Outcome.PERFORMED)  # 520
    for _ in range(4):
        reg.announce()  # window 5: h0 idle in 1..4 (registered at 0): 500 - 4 x 5 = 480
    assert reg.rank_households() == [("h2", 505), ("h0", 480), ("h1", 385)]  # 520-15, 400-15


def test_reputation_sim_reports_both_arms_over_seeds() -> None:
    r = study(users=5, aggregators=2, rounds=50, seeds=range(1, 4))
    assert len(r.by_reputation) == len(r.at_random) == 3
    assert all(0.0 <= x <= 1.0 for x in (*r.by_reputation, *r.at_random))
    assert r.spread(by_reputation=True).min <= r.spread(by_reputation=True).mean
    assert study(users=5, aggregators=2, rounds=50, seeds=range(1, 4)) == r  # deterministic
