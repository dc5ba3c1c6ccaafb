"""Local days and matched history: which past days resemble a future slot, and what was measured then.

A household's habits follow its wall clock, not UTC: "19:00 on a weekday" is 17:00 UTC in a Berlin
summer and 18:00 UTC in winter. So a future slot is matched with the same local time of day on earlier
local days of the same kind (weekday or weekend), each day read with its own UTC offset; a window on a
DST-change day is matched by its local start time on ordinary days. The zone is an argument (a
`zoneinfo.ZoneInfo` the shell loaded), so nothing here reads the clock or the tz database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.forecast.series import SlotSeries

DAY_S = 86_400


def is_weekend(day: dt.date) -> bool:
    return day.weekday() >= 5  # date.weekday(): Monday 0 .. Sunday 6 (Python datetime docs)


def day_kind(day: dt.date) -> str:
    return "weekend" if is_weekend(day) else "weekday"


@dataclass(frozen=True, slots=True)
class MatchedDay:
    """An earlier local day of the same kind, and the UTC start of the target's local time on it."""

    day: dt.date
    start_s: int


def local_day(t_s: int, zone: dt.tzinfo) -> dt.date:
    return dt.datetime.fromtimestamp(t_s, zone).date()


def matched_days(*, start_s: int, span_s: int, now_s: int, zone: dt.tzinfo,
                 lookback_days: int) -> list[MatchedDay]:
    """The days of the same kind as `start_s`'s local day within `lookback_days` before it, newest
    first, whose copy of [start_s, start_s + span_s) had ended by `now_s` (only what was measured)."""
    local = dt.datetime.fromtimestamp(start_s, zone)
    wall = local.timetz().replace(tzinfo=None)  # keeps `fold`: the second 02:30 of a fall-back night
    weekend = is_weekend(local.date())
    found = []
    for back in range(1, lookback_days + 1):
        day = local.date() - dt.timedelta(days=back)
        if is_weekend(day) != weekend:
            continue
        t0 = int(dt.datetime.combine(day, wall, tzinfo=zone).timestamp())
        if t0 + span_s <= now_s:
            found.append(MatchedDay(day, t0))
    return found


def window_values(series: SlotSeries, start_s: int, end_s: int) -> tuple[list[float], float]:
    """The values of the series' slots that start in [start_s, end_s) and have data, and their share
    of those slots (0 when the window lies outside the series)."""
    first = max(0, -(-(start_s - series.start_s) // series.slot_s))
    last = min(len(series.values), -(-(end_s - series.start_s) // series.slot_s))
    if last <= first:
        return [], 0.0
    present = [v for v in series.values[first:last] if v is not None]
    return present, len(present) / (last - first)


def window_mean(series: SlotSeries, start_s: int, end_s: int) -> tuple[float | None, float]:
    """The mean W of the slots with data in [start_s, end_s) (equal weights: one slot length), and
    their share; None when none has data."""
    present, coverage = window_values(series, start_s, end_s)
    if not present:
        return None, 0.0
    return sum(present) / len(present), coverage


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile of ascending values (numpy's default 'linear' method)."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
