"""Reputation and two-way selection of households and aggregators: the registry contract's rules.

A score is an integer in [0, max]. Each winning bid moves its household's and its aggregator's score:
+gain when the household performs, -shortfall_loss when it reports short, -no_report_loss when it
sends no Report. Below `threshold` a participant is suspended for `suspension_windows` windows (its
bids are not eligible); when that is over it counts as being at the threshold again (it recovers).
Inactivity: a participant loses `inactivity_loss` per window it took no part in (at most
`inactivity_cap` windows per gap, never below the threshold), applied lazily from its last active
window exactly as DRRegistry.sol does. `Registry` mirrors the contract's registry step for step
(households choose aggregators, aggregators set a minimum score, rankings) and is differential-tested
against it (tests/integration/chain/test_registry_differential.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    inactivity_loss: int = 5
    inactivity_cap: int = 20

    def as_tuple(self) -> tuple[int, ...]:
        return (self.initial, self.max, self.gain, self.shortfall_loss, self.no_report_loss,
                self.threshold, self.suspension_windows, self.inactivity_loss,
                self.inactivity_cap)


@dataclass(frozen=True, slots=True, kw_only=True)
class Standing:
    """A participant's stored score, the first window it may take part in again, and the last
    window it was active in (inactivity is charged from there)."""

    score: int
    suspended_until: int = 0
    last_active: int = 0

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
    return replace(standing, score=score, suspended_until=until)


def effective_score(standing: Standing, window_id: int, rules: ReputationRules) -> int:
    """The contract's `_effective`: the score as window `window_id` sees it.

    A finished suspension recovers to the threshold; a score above the threshold loses
    inactivity_loss for each window strictly between last_active and window_id (at most
    inactivity_cap of them) and never falls below the threshold by inactivity alone.
    """
    score = standing.score
    if score < rules.threshold:
        return rules.threshold if standing.suspended_until <= window_id else score
    gap = min(max(0, window_id - standing.last_active - 1), rules.inactivity_cap)
    return max(rules.threshold, score - gap * rules.inactivity_loss)


def took_part(standing: Standing, window_id: int, rules: ReputationRules) -> Standing:
    """The contract's `_takePart` for one participant: charge inactivity up to the window, mark it."""
    if window_id <= standing.last_active:
        return standing
    return replace(standing, score=effective_score(standing, window_id, rules),
                   last_active=window_id)


class SelectionRefused(ValueError):
    """A registry call the contract reverts; `error` is the contract's custom error name."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error


@dataclass(frozen=True, slots=True, kw_only=True)
class HouseholdEntry:
    standing: Standing
    aggregator: str
    pending_awards: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregatorEntry:
    standing: Standing
    min_score: int = 0


class Registry:
    """The contract's registry: participants, their standing, two-way selection and rankings.

    `windows` is the id of the latest announced window (the contract's `windowCount`), the
    reference "now" of scores, admissions and new participants' activity; the caller advances it
    with `announce()` as the market announces windows. Dicts keep registration order, which is the
    contract's tie order in rankings.
    """

    def __init__(self, rules: ReputationRules) -> None:
        self.rules = rules
        self.windows = 0
        self.households: dict[str, HouseholdEntry] = {}
        self.aggregators: dict[str, AggregatorEntry] = {}

    def announce(self) -> int:
        self.windows += 1
        return self.windows

    def register_aggregator(self, aggregator: str) -> None:
        if aggregator in self.aggregators:
            raise SelectionRefused("AggregatorExists", aggregator)
        start = Standing(score=self.rules.initial, last_active=self.windows)
        self.aggregators[aggregator] = AggregatorEntry(standing=start)

    def register_household(self, wallet: str, aggregator: str) -> None:
        if wallet in self.households:
            raise SelectionRefused("HouseholdExists", wallet)
        self._require_admits(aggregator, wallet, self.rules.initial)
        start = Standing(score=self.rules.initial, last_active=self.windows)
        self.households[wallet] = HouseholdEntry(standing=start, aggregator=aggregator)

    def choose_aggregator(self, wallet: str, aggregator: str) -> None:
        """The contract's `chooseAggregator` (same checks, same order)."""
        h = self.households.get(wallet)
        if h is None:
            raise SelectionRefused("UnknownHousehold", wallet)
        if h.pending_awards > 0:
            raise SelectionRefused("AwardsPending", f"{wallet} has {h.pending_awards}")
        if h.aggregator == aggregator:
            raise SelectionRefused("SameAggregator", f"{wallet} is already with {aggregator}")
        self._require_admits(aggregator, wallet, self.household_score(wallet))
        self.households[wallet] = replace(h, aggregator=aggregator)

    def set_min_score(self, aggregator: str, min_score: int) -> None:
        a = self.aggregators.get(aggregator)
        if a is None:
            raise SelectionRefused("UnknownAggregator", aggregator)
        if not 0 <= min_score <= self.rules.max:
            raise SelectionRefused("MinScoreInvalid", f"{min_score} > {self.rules.max}")
        self.aggregators[aggregator] = replace(a, min_score=min_score)

    def admits(self, aggregator: str, score: int) -> bool:
        """Whether `aggregator` would admit a household with effective `score` now."""
        try:
            self._require_admits(aggregator, "", score)
        except SelectionRefused:
            return False
        return True

    def _require_admits(self, aggregator: str, wallet: str, score: int) -> None:
        a = self.aggregators.get(aggregator)
        if a is None:
            raise SelectionRefused("UnknownAggregator", aggregator)
        if a.standing.suspended(self.windows):
            raise SelectionRefused("AggregatorSuspended", aggregator)
        if score < a.min_score:
            raise SelectionRefused("ScoreBelowMinimum", f"{wallet} {score} < {a.min_score}")

    def take_part(self, wallet: str, window_id: int, *, awarded: bool) -> None:
        """The contract's `_takePart`: an eligible bid of `wallet` in `window_id`."""
        h = self.households[wallet]
        self.households[wallet] = replace(
            h, standing=took_part(h.standing, window_id, self.rules),
            pending_awards=h.pending_awards + int(awarded))
        a = self.aggregators[h.aggregator]
        self.aggregators[h.aggregator] = replace(
            a, standing=took_part(a.standing, window_id, self.rules))

    def rate(self, wallet: str, window_id: int, outcome: Outcome) -> None:
        """The contract's `_rateHousehold`: one awarded bid's outcome for both participants."""
        h = self.households[wallet]
        self.households[wallet] = replace(
            h, standing=next_standing(h.standing, window_id, outcome, self.rules),
            pending_awards=max(0, h.pending_awards - 1))
        a = self.aggregators[h.aggregator]
        self.aggregators[h.aggregator] = replace(
            a, standing=next_standing(a.standing, window_id, outcome, self.rules))

    def eligible(self, wallet: str, window_id: int) -> bool:
        """Neither the household nor its aggregator is suspended in the window (clearing's test)."""
        h = self.households[wallet]
        return not (h.standing.suspended(window_id)
                    or self.aggregators[h.aggregator].standing.suspended(window_id))

    def household_score(self, wallet: str) -> int:
        return effective_score(self.households[wallet].standing, self.windows, self.rules)

    def aggregator_score(self, aggregator: str) -> int:
        return effective_score(self.aggregators[aggregator].standing, self.windows, self.rules)

    def rank_households(self) -> list[tuple[str, int]]:
        """The contract's `rankHouseholds`: effective score descending, ties in registration order."""
        return self._rank([(w, self.household_score(w)) for w in self.households])

    def rank_aggregators(self) -> list[tuple[str, int]]:
        return self._rank([(a, self.aggregator_score(a)) for a in self.aggregators])

    def _rank(self, rows: list[tuple[str, int]]) -> list[tuple[str, int]]:
        top = self.rules.max + 1  # a score above a since lowered max sorts as max + 1
        return sorted(rows, key=lambda r: -min(r[1], top))  # sorted() is stable
