"""Accuracy of the load and flexibility forecasts (gateway/forecast/) on simulated household history.

Each household (gateway/demo/history.py: EV only, boiler only, EV + boiler + battery, no levers) is
generated for --weeks weeks with several seeds, in Europe/Berlin from a Monday in February (so the
spring DST change falls inside). Over the last --eval-weeks weeks the bench walks forward day by day
from each local midnight, knowing only what was measured by then:

1. load   the 24 h load forecast's MAE and nMAE (MAE / mean load) against two seasonal-naive
          forecasts (the same slot one week earlier, and one day earlier), and how often the
          measured load fell inside the forecast's 10-90 % interval (80 % if it were calibrated).
2. flex   for each --windows window that day and each confidence, how often the household's
          realised deliverable (the generator's truth: what its levers could really have shed or
          added) fell below deliverable_w(confidence) -- about 1 - confidence if calibrated -- and
          the mean bid (deliverable_w) and the mean realised W.

Run: .venv/bin/python bench/forecast.py [--weeks 10] [--eval-weeks 4] [--seeds 4] [--slot 900]
No pass/fail: the figures are printed for docs/forecast.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from gateway.demo.history import BOILER_ONLY, EV_ONLY, FLEXIBLE, RIGID, Household, SyntheticHistory, generate
from gateway.forecast.flex import forecast_flex
from gateway.forecast.load import forecast_load

ZONE = ZoneInfo("Europe/Berlin")
FIRST_DAY = dt.date(2024, 2, 5)  # a Monday; 10 weeks reach past 2024-03-31, the spring DST change
HOUSEHOLDS = {"ev": EV_ONLY, "boiler": BOILER_ONLY, "ev+boiler+battery": FLEXIBLE, "no levers": RIGID}
CONFIDENCES = (0.5, 0.8, 0.9, 0.95)
WINDOWS = (("reduce", 7, 1), ("reduce", 18, 1), ("reduce", 19, 2), ("increase", 13, 1))  # (dir, hour, h)


@dataclass
class LoadScore:
    abs_err: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    slots: int = 0
    load: float = 0.0
    inside: int = 0


@dataclass
class FlexScore:
    windows: int = 0
    realised: float = 0.0
    below: dict[float, int] = field(default_factory=lambda: defaultdict(int))
    bid: dict[float, float] = field(default_factory=lambda: defaultdict(float))


def midnight(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=ZONE).timestamp())


def score_load(h: SyntheticHistory, now_s: int, score: LoadScore) -> None:
    meter, _ = h.known_at(now_s)
    forecast = forecast_load(meter, now_s=now_s, zone=ZONE)
    values, slot_s = h.meter.values, h.meter.slot_s
    first = (forecast.start_s - h.meter.start_s) // slot_s
    per_slot = forecast.slot_s // slot_s
    for i, mean in enumerate(forecast.mean_w):
        k = first + i * per_slot
        actual = _mean(values[k:k + per_slot])
        week = _mean(values[k - 7 * 86400 // slot_s:][:per_slot])
        day = _mean(values[k - 86400 // slot_s:][:per_slot])
        if actual is None or week is None or day is None:
            continue
        score.slots += 1
        score.load += actual
        score.abs_err["forecast"] += abs(mean - actual)
        score.abs_err["naive week"] += abs(week - actual)
        score.abs_err["naive day"] += abs(day - actual)
        score.inside += forecast.low_w[i] <= actual <= forecast.high_w[i]


def _mean(values: tuple[float | None, ...]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def score_flex(h: SyntheticHistory, now_s: int, day: dt.date, scores: dict[str, FlexScore]) -> None:
    _, levers = h.known_at(now_s)
    if not levers:
        return
    for direction, hour, hours in WINDOWS:
        start = int(dt.datetime.combine(day, dt.time(hour), tzinfo=ZONE).timestamp())
        end = start + hours * 3600
        forecast = forecast_flex(levers, start_s=start, end_s=end, now_s=now_s, zone=ZONE,
                                 direction=direction)
        realised = sum(h.realised_w(start_s=start, end_s=end, direction=direction).values())
        score = scores[f"{direction} {hour:02d}:00+{hours}h"]
        score.windows += 1
        score.realised += realised
        for c in CONFIDENCES:
            bid = forecast.deliverable_w(c)
            score.bid[c] += bid
            score.below[c] += realised < bid - 1e-6


def run(household: Household, args: argparse.Namespace) -> tuple[LoadScore, dict[str, FlexScore]]:
    load, flex = LoadScore(), defaultdict[str, FlexScore](FlexScore)
    for seed in range(args.seeds):
        h = generate(household, weeks=args.weeks, seed=seed, start_s=midnight(FIRST_DAY), zone=ZONE,
                     slot_s=args.slot)
        first_eval = FIRST_DAY + dt.timedelta(weeks=args.weeks - args.eval_weeks)
        for d in range(args.eval_weeks * 7 - 1):  # the last day's next 24 h would run past the history
            day = first_eval + dt.timedelta(days=d)
            score_load(h, midnight(day), load)
            score_flex(h, midnight(day), day, flex)
    return load, flex


def print_load(name: str, s: LoadScore) -> None:
    mean = s.load / s.slots
    cells = "  ".join(f"{k} {v / s.slots:6.0f} W {v / s.slots / mean:5.1%}" for k, v in s.abs_err.items())
    print(f"  {name:18s} mean {mean:5.0f} W | MAE, nMAE: {cells} | in 10-90 %: {s.inside / s.slots:5.1%}")


def print_flex(name: str, scores: dict[str, FlexScore]) -> None:
    for window, s in scores.items():
        cells = "  ".join(f"{c:.2f}: {s.below[c] / s.windows:5.1%} {s.bid[c] / s.windows / 1000:4.1f}"
                          for c in CONFIDENCES)
        print(f"  {name:18s} {window:16s} n={s.windows:3d} realised {s.realised / s.windows / 1000:4.1f} kW "
              f"| conf: below, bid kW  {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=10)
    parser.add_argument("--eval-weeks", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--slot", type=int, default=900)
    args = parser.parse_args()
    print(f"{len(HOUSEHOLDS)} households x {args.seeds} seeds, {args.weeks} weeks of {args.slot} s slots "
          f"from {FIRST_DAY} ({ZONE.key}); walk-forward over the last {args.eval_weeks} weeks "
          "from each midnight")
    results = {name: run(household, args) for name, household in HOUSEHOLDS.items()}
    print("\n1. load, next 24 h (forecast vs seasonal naive: same slot a week / a day earlier)")
    for name, (load, _) in results.items():
        print_load(name, load)
    print("\n2. flex: share of windows whose realised deliverable was below the bid (goal ~ 1 - confidence)")
    for name, (_, flex) in results.items():
        print_flex(name, flex)


if __name__ == "__main__":
    main()
