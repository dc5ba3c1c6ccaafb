"""The household's load for the next 24 h, slot by slot, with a central 80 % interval.

The method (docs/forecast.md, measured by bench/forecast.py): each future slot's seasonal profile is
the median of the same local time of day on the earlier days of the same kind (weekday or weekend)
in the last LOOKBACK_DAYS days; the median, not the mean, because the absolute error is what is
scored and a kettle's spike or a day away should not move it. The profile is then scaled by the
recent level: the last LEVEL_S of measured load (each slot capped at its matched days' 90th
percentile, so one EV session is not a new level) over the same profile computed for those slots (a
cold spell, or a household away since yesterday, shows there first), shrunk towards 1 by
LEVEL_WEIGHT and clamped to LEVEL_CLAMP so that one odd evening cannot halve tomorrow. The interval
is the 10th and 90th percentile of the matched days' values, scaled the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.forecast.calendar import matched_days, quantile, window_mean
from gateway.forecast.series import SlotSeries

LOOKBACK_DAYS = 28  # four weeks: 20 weekdays or 8 weekend days
LEVEL_S = 86_400  # the recent window the level adjustment compares
LEVEL_WEIGHT = 0.3  # share of the recent level's deviation carried forward; bench/forecast.py: 0.3 is
# near the best of 0/0.3/0.6/1 for every household (the levers' noise makes a full weight overreact)
LEVEL_CLAMP = (0.5, 1.6)
LOW_Q, HIGH_Q = 0.1, 0.9
MIN_COVERAGE = 0.5  # share of a slot's history samples needed to use that day's value


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadForecast:
    """Forecast mean W per slot from start_s, slot i covering [start_s + i x slot_s, + slot_s);
    low_w/high_w the 10 % and 90 % quantiles (the central 80 % interval)."""

    start_s: int
    slot_s: int
    mean_w: tuple[float, ...]
    low_w: tuple[float, ...]
    high_w: tuple[float, ...]
    basis: str

    @property
    def end_s(self) -> int:
        return self.start_s + self.slot_s * len(self.mean_w)


def forecast_load(history: SlotSeries, *, now_s: int, zone: dt.tzinfo, horizon_s: int = 86400,
                  slot_s: int = 900) -> LoadForecast:
    """The forecast for the slots from the first slot boundary at or after now_s to horizon_s later,
    from the main meter's `history` as measured by now_s."""
    if slot_s <= 0 or horizon_s < slot_s:
        raise ValueError(f"need slot_s > 0 and horizon_s >= slot_s, got slot_s={slot_s} "
                         f"horizon_s={horizon_s}")
    start_s = -(-now_s // slot_s) * slot_s
    level, level_line = _recent_level(history, now_s=now_s, zone=zone, slot_s=slot_s)
    means, lows, highs, days_used = [], [], [], []
    for i in range(horizon_s // slot_s):
        values = _matched_values(history, start_s + i * slot_s, now_s=now_s, zone=zone, slot_s=slot_s)
        if not values:
            values = _fallback(history, now_s)
        values.sort()
        days_used.append(len(values))
        means.append(quantile(values, 0.5) * level if values else 0.0)
        lows.append(quantile(values, LOW_Q) * level if values else 0.0)
        highs.append(quantile(values, HIGH_Q) * level if values else 0.0)
    basis = (f"median of {min(days_used)}-{max(days_used)} matched days per slot (same local time, "
             f"weekday/weekend, last {LOOKBACK_DAYS} days), {level_line}") if max(days_used) else \
        "no measured history: forecast 0 W"
    return LoadForecast(start_s=start_s, slot_s=slot_s, mean_w=tuple(means), low_w=tuple(lows),
                        high_w=tuple(highs), basis=basis)


def _matched_values(history: SlotSeries, t_s: int, *, now_s: int, zone: dt.tzinfo,
                    slot_s: int) -> list[float]:
    """The measured mean W of the slot [t_s, t_s + slot_s) on each matched earlier day."""
    values = []
    for day in matched_days(start_s=t_s, span_s=slot_s, now_s=now_s, zone=zone, lookback_days=LOOKBACK_DAYS):
        mean, coverage = window_mean(history, day.start_s, day.start_s + slot_s)
        if mean is not None and coverage >= MIN_COVERAGE:
            values.append(mean)
    return values


def _fallback(history: SlotSeries, now_s: int) -> list[float]:
    """Without matched days (a short history): the mean of the last week's measured load, if any."""
    mean, _ = window_mean(history, now_s - 7 * 86_400, now_s)
    return [mean] if mean is not None else []


def _recent_level(history: SlotSeries, *, now_s: int, zone: dt.tzinfo, slot_s: int) -> tuple[float, str]:
    """The factor the profile is scaled by: measured / profile over the last LEVEL_S, each past slot's
    profile taken from the days matched before it (as it would have been forecast)."""
    measured = profiled = 0.0
    end = now_s // slot_s * slot_s
    for t in range(end - LEVEL_S, end, slot_s):
        actual, coverage = window_mean(history, t, t + slot_s)
        if actual is None or coverage < MIN_COVERAGE:
            continue
        values = sorted(_matched_values(history, t, now_s=t, zone=zone, slot_s=slot_s))
        if values:  # capped at the slot's usual high: one EV session is not a change of level
            measured += min(actual, quantile(values, HIGH_Q))
            profiled += quantile(values, 0.5)
    if profiled <= 0:
        return 1.0, "no recent level adjustment (no profile for the last 24 h)"
    ratio = measured / profiled
    low, high = LEVEL_CLAMP
    level = min(high, max(low, 1.0 + LEVEL_WEIGHT * (ratio - 1.0)))
    return level, f"scaled x{level:.2f} by the last 24 h (measured/profile {ratio:.2f})"
