"""How much a household's levers can shed (REDUCE) or add (INCREASE) over a future window, with odds.

The method (docs/forecast.md): the window's local time of day is matched on the earlier days of the
same kind (weekday or weekend, the last LOOKBACK_DAYS days, each on its own UTC offset). On each
matched day every lever gets the W it could have delivered over that day's copy of the window, from
its own measured load there:
- setpoint (an EV charger's current limit): REDUCE sheds load - floor_w while the device draws more
  than its floor, nothing while it is idle; INCREASE adds add_w while it draws (it is connected).
- switch (a relay-switched load): REDUCE sheds its measured load (what it drew while on); INCREASE
  adds add_w for the share of the window it was off.
- battery: its state of charge now, carried to the window's start by replaying that day's measured
  charge and discharge over the same lead time (so a window far ahead inherits a day's worth of
  spread instead of trusting today's SoC), then REDUCE = min(full_w, energy above reserve / window
  hours) less what it was discharging anyway, INCREASE = min(add_w, room below 100 % / hours) plus it.
A lever's value is the mean over the window's slots: delivery is judged on energy over the window
(gateway/loop/verdict.py, required_wh = award_w x seconds).

The levers' values are summed per matched day before any statistics, so their correlations are kept
(an absent household has neither its EV nor its boiler). The forecast is the empirical distribution
of those daily totals: `deliverable_w(c)` is the largest W that at least a share c of the matched
days reached. A day is used only when every lever has data for at least MIN_COVERAGE of the window.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.forecast.calendar import MatchedDay, day_kind, local_day, matched_days, window_values
from gateway.forecast.series import LeverHistory

DIRECTIONS = ("reduce", "increase")
KINDS = ("setpoint", "switch", "battery")
LOOKBACK_DAYS = 42  # six weeks: 30 weekdays or 12 weekend days, recent enough for a household's habits
MIN_COVERAGE = 0.5  # share of a window's slots a lever needs data for on a matched day
DRAWING_W = 50.0  # a setpoint device drawing more than this is connected (an EV's standby is below)


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexForecast:
    """The W the household's levers can deliver over [start_s, end_s) in `direction`.

    `samples` are the matched days' totals in ascending order (the empirical distribution);
    `per_lever` the mean W of each lever over those days."""

    start_s: int
    end_s: int
    direction: str
    mean_w: float
    per_lever: Mapping[str, float]
    basis: str
    samples: tuple[float, ...] = field(default=())

    def deliverable_w(self, confidence: float) -> float:
        """The largest W that at least `confidence` of the matched days reached: #(total < W) <=
        n x (1 - confidence). 0 with no matched days (nothing to promise on)."""
        if not 0.0 < confidence <= 1.0:
            raise ValueError(f"confidence must be in (0, 1], got {confidence!r}")
        if not self.samples:
            return 0.0
        below = math.floor(len(self.samples) * (1.0 - confidence) + 1e-9)  # 1e-9: 10 x (1 - 0.8)
        return self.samples[below]


def forecast_flex(levers: Sequence[LeverHistory], *, start_s: int, end_s: int, now_s: int,
                  zone: dt.tzinfo, direction: str) -> FlexForecast:
    """The forecast of what `levers` can deliver over [start_s, end_s), from what they did on the
    matched days measured by `now_s`. ValueError for a bad direction, window or lever kind."""
    _check(levers, start_s, end_s, direction)
    span_s, lead_s = end_s - start_s, max(0, start_s - now_s)
    days = matched_days(start_s=start_s, span_s=span_s, now_s=now_s, zone=zone, lookback_days=LOOKBACK_DAYS)
    rows: list[tuple[MatchedDay, list[float]]] = []
    for day in days:
        values = [_lever_day(lever, day, span_s, lead_s, direction) for lever in levers]
        if all(v is not None for v in values):
            rows.append((day, [v for v in values if v is not None]))
    what = f"{day_kind(local_day(start_s, zone))}s at {_clock(start_s, zone)}"
    if not levers or not rows:
        return FlexForecast(start_s=start_s, end_s=end_s, direction=direction, mean_w=0.0,
                            per_lever=MappingProxyType({lv.key: 0.0 for lv in levers}),
                            basis=_nothing(levers, days, what))
    totals = sorted(sum(values) for _, values in rows)
    per_lever = {lv.key: sum(values[i] for _, values in rows) / len(rows) for i, lv in enumerate(levers)}
    used = [day for day, _ in rows]
    lines = [_describe(lv, used, span_s, lead_s, direction, what) for lv in levers]
    return FlexForecast(start_s=start_s, end_s=end_s, direction=direction, mean_w=sum(totals) / len(totals),
                        per_lever=MappingProxyType(per_lever), samples=tuple(totals),
                        basis=f"{len(rows)} matched {what}: " + "; ".join(lines))


def _check(levers: Sequence[LeverHistory], start_s: int, end_s: int, direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if end_s <= start_s:
        raise ValueError(f"the window must end after it starts, got start_s={start_s} end_s={end_s}")
    for lever in levers:
        if lever.kind not in KINDS:
            raise ValueError(f"lever {lever.key!r}: kind {lever.kind!r} is not one of {', '.join(KINDS)}")


def _clock(t_s: int, zone: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(t_s, zone).strftime("%H:%M")


def _nothing(levers: Sequence[LeverHistory], days: list[MatchedDay], what: str) -> str:
    if not levers:
        return "no levers: nothing to shed or add"
    if not days:
        return f"no measured history of {what} in the last {LOOKBACK_DAYS} days: cannot promise anything"
    return (f"{len(days)} {what} in the last {LOOKBACK_DAYS} days, none with data for every lever "
            f"({', '.join(lv.key for lv in levers)}) over {MIN_COVERAGE:.0%} of the window: "
            "cannot promise anything")


def _lever_day(lever: LeverHistory, day: MatchedDay, span_s: int, lead_s: int,
               direction: str) -> float | None:
    """What the lever could have delivered over the day's copy of the window; None without data."""
    values, coverage = window_values(lever.load, day.start_s, day.start_s + span_s)
    if coverage < MIN_COVERAGE:
        return None
    if lever.kind == "battery":
        return _battery_day(lever, day, span_s, lead_s, sum(values) / len(values), direction)
    return sum(_slot_value(lever, v, direction) for v in values) / len(values)


def _slot_value(lever: LeverHistory, load_w: float, direction: str) -> float:
    """A setpoint's or switch's W in one slot of measured load `load_w`."""
    if lever.kind == "setpoint":
        if direction == "reduce":
            return max(0.0, load_w - lever.floor_w)
        return lever.add_w if load_w > DRAWING_W else 0.0
    if direction == "reduce":
        return max(0.0, load_w)
    on_share = min(1.0, max(0.0, load_w) / lever.full_w) if lever.full_w > 0 else 0.0
    return lever.add_w * (1.0 - on_share)


def _battery_day(lever: LeverHistory, day: MatchedDay, span_s: int, lead_s: int, own_w: float,
                 direction: str) -> float:
    """A battery's W over the window on a day like `day`: its SoC now, replayed to the window's start
    along that day's measured discharge (positive) and charge (negative), and its own discharge in
    the window `own_w` (already in the baseline, so not extra)."""
    soc = battery_soc_at_window(lever, day.start_s, lead_s)
    if soc is None or lever.capacity_wh is None:
        return 0.0
    hours = span_s / 3600
    if direction == "reduce":
        above_wh = max(0.0, (soc - lever.reserve_pct) / 100 * lever.capacity_wh)
        return max(0.0, min(lever.full_w, above_wh / hours) - own_w)
    room_wh = max(0.0, (100.0 - soc) / 100 * lever.capacity_wh)
    return max(0.0, min(lever.add_w, room_wh / hours) + own_w)


def battery_soc_at_window(lever: LeverHistory, window_start_s: int, lead_s: int) -> float | None:
    """The SoC (%) the battery would have at a window starting `lead_s` from now if it behaved as it
    did before `window_start_s` (a matched day's copy): SoC now less the energy it discharged over
    [window_start_s - lead_s, window_start_s) on that day. Slots without data count as idle."""
    if lever.soc_pct is None or not lever.capacity_wh:
        return None
    if lead_s <= 0:
        return lever.soc_pct
    values, coverage = window_values(lever.load, window_start_s - lead_s, window_start_s)
    mean_w = sum(values) / len(values) * coverage if values else 0.0
    used_wh = mean_w * lead_s / 3600
    return min(100.0, max(0.0, lever.soc_pct - used_wh / lever.capacity_wh * 100))


def _describe(lever: LeverHistory, days: list[MatchedDay], span_s: int, lead_s: int, direction: str,
              what: str) -> str:
    """One human clause on what the lever's figure was learned from."""
    if lever.kind == "battery":
        return _describe_battery(lever, days, span_s, lead_s, direction)
    means = [window_values(lever.load, d.start_s, d.start_s + span_s)[0] for d in days]
    if lever.kind == "setpoint":
        drawing = [sum(v) / len(v) for v in means if v and sum(v) / len(v) > DRAWING_W]
        level = f", {sum(drawing) / len(drawing) / 1000:.1f} kW when on" if drawing else ""
        return f"{lever.key}: drawing on {len(drawing)} of {len(days)} matched {what}{level}"
    slots = [v for values in means for v in values]
    on = sum(1 for v in slots if lever.full_w > 0 and v >= lever.full_w / 2)
    return f"{lever.key}: on {on / max(1, len(slots)):.0%} of matched slots"


def _describe_battery(lever: LeverHistory, days: list[MatchedDay], span_s: int, lead_s: int,
                      direction: str) -> str:
    if lever.soc_pct is None or not lever.capacity_wh:
        return f"{lever.key}: no state of charge or capacity known, counted as 0"
    hours = span_s / 3600
    if direction == "reduce":
        energy_wh = max(0.0, (lever.soc_pct - lever.reserve_pct) / 100 * lever.capacity_wh)
        power_w = min(lever.full_w, energy_wh / hours)
        now = f"{energy_wh / 1000:.1f} kWh above reserve -> {power_w / 1000:.1f} kW"
    else:
        energy_wh = max(0.0, (100.0 - lever.soc_pct) / 100 * lever.capacity_wh)
        now = f"{energy_wh / 1000:.1f} kWh of room -> {min(lever.add_w, energy_wh / hours) / 1000:.1f} kW"
    if lead_s <= 0:
        return f"{lever.key}: {now} for {hours:g} h"
    socs = [s for d in days if (s := battery_soc_at_window(lever, d.start_s, lead_s)) is not None]
    spread = f"{min(socs):.0f}-{max(socs):.0f} %" if socs else "unknown"
    return (f"{lever.key}: {now} for {hours:g} h if the window began now; SoC {lever.soc_pct:.0f} % now, "
            f"{spread} at the start after replaying {lead_s / 3600:.1f} h of the matched days")
