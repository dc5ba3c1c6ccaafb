"""Reputation of households and aggregators (the contract's rules) and the reputation simulation.

A score is an integer in [0, max]. Each winning bid moves its household's and its aggregator's score:
+gain when the household performs, -shortfall_loss when it reports short, -no_report_loss when it
sends no Report. Below `threshold` a participant is suspended for `suspension_windows` windows (its
bids are not eligible); when that is over it counts as being at the threshold again (it recovers).
`simulate_completion` compares households that pick aggregators by reputation with ones that pick at
random, with the same unreliable participants, and returns both DR completion rates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.market.model import Outcome


@dataclass(frozen=True, slots=True, kw_only=True)
class ReputationRules:
    """The contract's `reputationRules`, same field order."""

    initial: int = 500
    max: int = 1000
    gain: int = 20
    shortfall_loss: int = 100
    no_report_loss: int = 150
    threshold: int = 300
    suspension_windows: int = 5

    def as_tuple(self) -> tuple[int, int, int, int, int, int, int]:
        return (self.initial, self.max, self.gain, self.shortfall_loss, self.no_report_loss,
                self.threshold, self.suspension_windows)


@dataclass(frozen=True, slots=True, kw_only=True)
class Standing:
    """A participant's score and the first window id it may take part in again."""

    score: int
    suspended_until: int = 0

    def suspended(self, window_id: int) -> bool:
        return window_id < self.suspended_until


def next_standing(
    standing: Standing, window_id: int, outcome: Outcome, rules: ReputationRules
) -> Standing:
    """The contract's `_nextReputation`: recover to the threshold, then apply the outcome."""
    score, until = standing.score, standing.suspended_until
    if score < rules.threshold and until <= window_id:
        score = rules.threshold
    if outcome is Outcome.PERFORMED:
        score = min(rules.max, score + rules.gain)
    else:
        loss = rules.shortfall_loss if outcome is Outcome.SHORTFALL else rules.no_report_loss
        score = max(0, score - loss)
        if score < rules.threshold:
            until = window_id + 1 + rules.suspension_windows
    return Standing(score=score, suspended_until=until)


def effective_score(standing: Standing, window_id: int, rules: ReputationRules) -> int:
    """Score as the next outcome in `window_id` would see it (after a finished suspension)."""
    if standing.score < rules.threshold and standing.suspended_until <= window_id:
        return rules.threshold
    return standing.score


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletionRates:
    """DR completion (performed awards / all awards) with aggregators chosen both ways."""

    by_reputation: float
    at_random: float
    rounds: int
    users: int
    aggregators: int


def simulate_completion(
    *, users: int, aggregators: int, rounds: int, seed: int,
    rules: ReputationRules | None = None,
) -> CompletionRates:
    """Run the same population twice: households choose aggregators by reputation, or at random.

    Each household has a reliability (probability it delivers when its own equipment is asked) and
    each aggregator one (probability its dispatch reaches the home in time); an award completes when
    both succeed. Reliabilities are drawn once from `seed`, so both runs face the same participants.
    """
    if users < 1 or aggregators < 1 or rounds < 1:
        raise ValueError("users, aggregators and rounds must be at least 1")
    rules = rules or ReputationRules()
    population = random.Random(seed)
    user_rel = [population.choice((0.99, 0.97, 0.93, 0.6)) for _ in range(users)]
    agg_rel = [population.uniform(0.5, 0.99) for _ in range(aggregators)]
    rates = [
        _run(user_rel, agg_rel, rounds, random.Random(seed + 1), rules, by_reputation=flag)
        for flag in (True, False)
    ]
    return CompletionRates(by_reputation=rates[0], at_random=rates[1], rounds=rounds,
                           users=users, aggregators=aggregators)


def _run(
    user_rel: list[float], agg_rel: list[float], rounds: int, rng: random.Random,
    rules: ReputationRules, *, by_reputation: bool,
) -> float:
    users = [Standing(score=rules.initial) for _ in user_rel]
    aggs = [Standing(score=rules.initial) for _ in agg_rel]
    done = asked = 0
    for window_id in range(1, rounds + 1):
        open_aggs = [a for a, s in enumerate(aggs) if not s.suspended(window_id)]
        for u, rel in enumerate(user_rel):
            if users[u].suspended(window_id) or not open_aggs or rng.random() < 0.5:
                continue  # suspended, or not bidding / not awarded this window
            if by_reputation:  # likelier the better the score, so load spreads over the good
                weights = [effective_score(aggs[a], window_id, rules) ** 2 + 1 for a in open_aggs]
                a = rng.choices(open_aggs, weights=weights)[0]
            else:
                a = rng.choice(open_aggs)
            ok = rng.random() < rel and rng.random() < agg_rel[a]
            outcome = Outcome.PERFORMED if ok else Outcome.SHORTFALL
            users[u] = next_standing(users[u], window_id, outcome, rules)
            aggs[a] = next_standing(aggs[a], window_id, outcome, rules)
            asked += 1
            done += ok
    return done / asked if asked else 0.0
