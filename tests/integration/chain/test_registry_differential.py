"""DRRegistry on the embedded EVM vs its reference model (gateway/market/reputation.Registry).

Random sequences of windows drive both: bids, outcomes (performed, short, no Report), windows
nobody bids in (inactivity gaps), suspensions, aggregators' minimum scores and households changing
aggregator (accepted or refused, with the contract's error name). After every window the stored
standing of every participant and both ranking views must be identical. Rules with a large
inactivity loss and a short cap so that gaps, the cap and the threshold floor all occur.
"""

from __future__ import annotations

import random

import pytest

from gateway.chain.market_client import MarketClient, deploy
from gateway.chain.node import fund
from gateway.chain.sender import ChainRevert
from gateway.market.model import Outcome
from gateway.market.reputation import Registry, ReputationRules, SelectionRefused

RULES = ReputationRules(initial=500, max=600, gain=40, shortfall_loss=120, no_report_loss=180,
                        threshold=300, suspension_windows=2, inactivity_loss=30, inactivity_cap=3)
HOUSEHOLDS = 4
WINDOWS = 9


def _market(market_class, market):  # type: ignore[no-untyped-def]
    """The conftest Market, redeployed with RULES (its helpers stay usable)."""
    m = market_class(market.node, market.outbox)
    m.deployment = deploy(m.op, w3=m.node.w3, mtok_per_currency=1_000_000, config=m.config,
                          rules=RULES)
    m.client = MarketClient(w3=m.node.w3, deployment=m.deployment)
    m.client.mint(m.op, m.op.address, 10**12)
    m.client.approve(m.op, 10**12)
    return m


def _agree(m, reg: Registry, aggs: dict[str, object], hs: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    for name, h in hs.items():
        on_chain = m.client.household(h.address)
        mine = reg.households[name]
        assert (on_chain["score"], on_chain["suspendedUntil"], on_chain["lastActive"],
                on_chain["pendingAwards"]) == (mine.standing.score, mine.standing.suspended_until,
                                               mine.standing.last_active, mine.pending_awards), name
        assert on_chain["aggregator"] == aggs[mine.aggregator].address, name
    for name, a in aggs.items():
        on_chain = m.client.aggregator(a.address)
        mine_a = reg.aggregators[name]
        assert (on_chain["score"], on_chain["suspendedUntil"], on_chain["lastActive"],
                on_chain["minScore"]) == (mine_a.standing.score, mine_a.standing.suspended_until,
                                          mine_a.standing.last_active, mine_a.min_score), name
    by_address = {**{h.address: n for n, h in hs.items()}, **{a.address: n for n, a in aggs.items()}}
    assert [(by_address[p], s) for p, s in m.client.rank_households()] == reg.rank_households()
    assert [(by_address[p], s) for p, s in m.client.rank_aggregators()] == reg.rank_aggregators()
    assert m.client.page_scores(page=3) == m.client.rank_households()


def _choose(m, reg: Registry, rng: random.Random, hs, aggs) -> None:  # type: ignore[no-untyped-def]
    name, target = rng.choice(sorted(hs)), rng.choice(sorted(aggs))
    try:
        reg.choose_aggregator(name, target)
        expected = None
    except SelectionRefused as refused:
        expected = refused.error
    try:
        m.client.choose_aggregator(hs[name].wallet, aggs[target].address)
        got = None
    except ChainRevert as err:
        got = err.revert.name
    assert got == expected, (name, target)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_registry_matches_its_reference_model(market_class, market, seed: int) -> None:
    rng = random.Random(seed)
    m = _market(market_class, market)
    reg = Registry(RULES)
    aggs = {"a0": m.aggregator, "a1": m.sender(m.node.funded_keys[3])}
    for name, a in aggs.items():
        m.client.register_aggregator(m.op, a.address)
        reg.register_aggregator(name)
    fund(m.node, m.op, aggs["a1"].address, 10**18)
    hs = {f"h{i}": m.household(f"h{i}", register=False) for i in range(HOUSEHOLDS)}
    for i, (name, h) in enumerate(hs.items()):
        agg = f"a{i % 2}"
        m.client.register_household(m.op, wallet=h.address, gateway=h.gateway,
                                    aggregator=aggs[agg].address)
        reg.register_household(name, agg)
    for _ in range(WINDOWS):
        if rng.random() < 0.5:  # an aggregator moves its bar
            name = rng.choice(sorted(aggs))
            level = rng.choice((0, 300, 450, 520))
            m.client.set_min_score(aggs[name], level)
            reg.set_min_score(name, level)
        for _ in range(2):
            _choose(m, reg, rng, hs, aggs)
        _window(m, reg, rng, hs, aggs)
        _agree(m, reg, aggs, hs)


def _window(m, reg: Registry, rng: random.Random, hs, aggs) -> None:  # type: ignore[no-untyped-def]
    upcoming = reg.windows + 1
    gap = rng.random() < 0.3  # nobody bids: a window of inactivity for everyone
    bidders = [n for i, n in enumerate(sorted(hs))
               if not gap and rng.random() < 0.7 and reg.eligible(n, upcoming)]
    for i, n in enumerate(bidders):  # rising prices: merit order = this order
        m.bid(hs[n], power_w=-1000, price_mtok=1000 * (i + 1))
    window, _, end = m.announce()
    assert window == reg.announce()
    m.client.clear(m.op, window)
    for n in bidders:  # target 33,333 W > 4 x 1000 W: every eligible bid is awarded
        reg.take_part(n, window, awarded=True)
    outcomes = {n: rng.choice(list(Outcome)) for n in bidders}
    for n, outcome in outcomes.items():
        if outcome is not Outcome.NO_REPORT:
            m.commit(hs[n], window)
    _agree(m, reg, aggs, hs)
    _choose(m, reg, rng, hs, aggs)  # awards pending: a bidder's change is refused
    if not bidders:
        return
    m.at(end)
    for n, outcome in outcomes.items():  # 1000 W x 600 s = 166.7 Wh; 95 % tolerance
        if outcome is not Outcome.NO_REPORT:
            delivered = 200 if outcome is Outcome.PERFORMED else 10
            m.client.submit_report(m.stranger, m.report(hs[n], window, delivered=delivered,
                                                        seq_from=window * 100,
                                                        seq_to=window * 100 + 1))
    m.client.settle(m.op, window)
    m.client.check(m.op, window)
    for n, outcome in outcomes.items():
        reg.rate(n, window, outcome)
