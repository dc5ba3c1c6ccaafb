"""Two-way selection by reputation vs at random, simulated on the registry's reference rules.

`drgw market reputation-sim` runs this. Every score, suspension, inactivity charge, ranking and
admission goes through `gateway.market.reputation.Registry` (differential-tested against
DRRegistry.sol); only the participants' behaviour is modelled here, and it is stated in full:

- Households: reliability r_u ~ Beta(4, 1) (mean 0.8, about 1 in 10 below 0.56), drawn once per seed;
  each window a household bids with probability 0.7 (so it is sometimes inactive).
- Aggregators: dispatch quality q_a ~ Uniform(0.80, 0.99), drawn once per seed.
- A window: every eligible bid (household and aggregator not suspended) is awarded; it performs
  with probability r_u x q_a; it fails as no Report when the aggregator's dispatch failed
  (probability 1 - q_a), else as a shortfall.
- Every `reselect_every` windows each household (in registration order) picks an aggregator:
  by reputation, the best-ranked one (`rank_aggregators`) that admits it, where every aggregator
  admits by `minScore` (`min_score`, set once); at random, a uniformly drawn one, which admits it on
  a coin flip. Households start with a uniformly drawn aggregator in both arms.
- Completion rate = performed awards / all awards.

Both arms of a seed face the same population; behaviour draws come from separate streams.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.market.model import Outcome
from gateway.market.reputation import Registry, ReputationRules, SelectionRefused

BID_PROBABILITY = 0.7
RELIABILITY_BETA = (4.0, 1.0)
QUALITY_RANGE = (0.80, 0.99)


@dataclass(frozen=True, slots=True, kw_only=True)
class Population:
    """One seed's participants: household reliabilities and aggregator dispatch qualities."""

    reliability: tuple[float, ...]
    quality: tuple[float, ...]

    @classmethod
    def draw(cls, *, users: int, aggregators: int, seed: int) -> Population:
        rng = random.Random(seed)
        return cls(reliability=tuple(rng.betavariate(*RELIABILITY_BETA) for _ in range(users)),
                   quality=tuple(rng.uniform(*QUALITY_RANGE) for _ in range(aggregators)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Arm:
    """How participants select each other: by reputation (ranking + minScore) or at random."""

    by_reputation: bool
    min_score: int = 500
    reselect_every: int = 10


def completion_rate(population: Population, *, rounds: int, seed: int, arm: Arm,
                    rules: ReputationRules) -> float:
    """Run `rounds` windows on a fresh `Registry`; performed awards / all awards."""
    rng = random.Random(seed * 2 + arm.by_reputation)
    reg = Registry(rules)
    aggs = [f"a{i}" for i in range(len(population.quality))]
    users = [f"u{i}" for i in range(len(population.reliability))]
    for a in aggs:
        reg.register_aggregator(a)
        if arm.by_reputation:
            reg.set_min_score(a, arm.min_score)
    for u in users:
        reg.register_household(u, rng.choice(aggs))
    performed = awarded = 0
    for _ in range(rounds):
        window = reg.announce()
        if window % arm.reselect_every == 1:
            _reselect(reg, users, aggs, rng, arm)
        bidders = [u for u in users if rng.random() < BID_PROBABILITY and reg.eligible(u, window)]
        for u in bidders:  # clearing: every eligible bid takes part and is awarded
            reg.take_part(u, window, awarded=True)
        for u, i in ((u, users.index(u)) for u in bidders):  # check: one outcome per award
            quality = population.quality[aggs.index(reg.households[u].aggregator)]
            dispatched = rng.random() < quality
            ok = dispatched and rng.random() < population.reliability[i]
            outcome = (Outcome.PERFORMED if ok
                       else Outcome.SHORTFALL if dispatched else Outcome.NO_REPORT)
            reg.rate(u, window, outcome)
            awarded += 1
            performed += ok
    return performed / awarded if awarded else 0.0


def _reselect(reg: Registry, users: Sequence[str], aggs: Sequence[str], rng: random.Random,
              arm: Arm) -> None:
    for u in users:
        if arm.by_reputation:
            score = reg.household_score(u)
            best = next((a for a, _ in reg.rank_aggregators() if reg.admits(a, score)), None)
        else:
            best = rng.choice(aggs) if rng.random() < 0.5 else None  # drawn, then a coin flip
        if best is None or best == reg.households[u].aggregator:
            continue
        try:
            reg.choose_aggregator(u, best)
        except SelectionRefused:
            continue  # e.g. the drawn aggregator is suspended: stay


@dataclass(frozen=True, slots=True, kw_only=True)
class Spread:
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(mean=statistics.fmean(values), std=statistics.pstdev(values),
                   min=min(values), max=max(values))


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectionStudy:
    """Completion rates per seed for both arms, and their spread."""

    seeds: tuple[int, ...]
    by_reputation: tuple[float, ...]
    at_random: tuple[float, ...]
    users: int
    aggregators: int
    rounds: int

    def spread(self, *, by_reputation: bool) -> Spread:
        return Spread.of(self.by_reputation if by_reputation else self.at_random)

    def difference(self) -> Spread:
        return Spread.of([r - q for r, q in zip(self.by_reputation, self.at_random, strict=True)])

    def reputation_wins(self) -> int:
        return sum(r > q for r, q in zip(self.by_reputation, self.at_random, strict=True))


def study(*, users: int, aggregators: int, rounds: int, seeds: Sequence[int],
          rules: ReputationRules | None = None) -> SelectionStudy:
    """Both arms on the same populations, one per seed."""
    if users < 1 or aggregators < 1 or rounds < 1 or not seeds:
        raise ValueError("users, aggregators, rounds and the number of seeds must be at least 1")
    rules = rules or ReputationRules()
    rates: dict[bool, list[float]] = {True: [], False: []}
    for seed in seeds:
        population = Population.draw(users=users, aggregators=aggregators, seed=seed)
        for flag in (True, False):
            rates[flag].append(completion_rate(population, rounds=rounds, seed=seed,
                                               arm=Arm(by_reputation=flag), rules=rules))
    return SelectionStudy(seeds=tuple(seeds), by_reputation=tuple(rates[True]),
                          at_random=tuple(rates[False]), users=users, aggregators=aggregators,
                          rounds=rounds)
