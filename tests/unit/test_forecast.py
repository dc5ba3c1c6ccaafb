"""Flexibility and load forecasts (gateway/forecast/) on small hand-built histories.

Every expected figure is worked out by hand in the comment beside it from the series the test builds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest

from gateway.forecast.flex import FlexForecast, forecast_flex
from gateway.forecast.load import forecast_load
from gateway.forecast.series import LeverHistory, SlotSeries

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
SLOT = 900
MONDAY = dt.date(2024, 1, 8)  # a Monday
FRIDAY = dt.date(2024, 1, 12)


def at(day: dt.date, hour: int, zone: dt.tzinfo = UTC) -> int:
    return int(dt.datetime.combine(day, dt.time(hour), tzinfo=zone).timestamp())


def series(first: dt.date, days: int, value: Callable[[dt.datetime], float | None],
           zone: dt.tzinfo = UTC) -> SlotSeries:
    """`days` local days of 15-min slots from `first`'s midnight; value() gets each slot's local start."""
    start, end = at(first, 0, zone), at(first + dt.timedelta(days=days), 0, zone)
    return SlotSeries(slot_s=SLOT, start_s=start, values=tuple(
        value(dt.datetime.fromtimestamp(t, zone)) for t in range(start, end, SLOT)))


def ev(load: SlotSeries) -> LeverHistory:
    return LeverHistory(key="ev", kind="setpoint", full_w=7000.0, floor_w=1400.0, add_w=3000.0, load=load)


def ev_on(days: set[int], hours: range = range(19, 20)) -> Callable[[dt.datetime], float | None]:
    """7 kW on the given days of the month during the given local hours, idle otherwise."""
    return lambda t: 7000.0 if t.day in days and t.hour in hours else 0.0


def evening(levers: list[LeverHistory], direction: str = "reduce", day: dt.date = FRIDAY,
            zone: dt.tzinfo = UTC, hours: int = 1) -> FlexForecast:
    return forecast_flex(levers, start_s=at(day, 19, zone), end_s=at(day, 19 + hours, zone),
                         now_s=at(day, 12, zone), zone=zone, direction=direction)


def test_ev_charging_on_three_of_four_matched_weekdays() -> None:
    # Mon 8 .. Thu 11 Jan measured; the EV drew 7 kW over 19:00-20:00 on Mon, Tue, Wed, not Thu.
    # Friday 19:00-20:00 matches those 4 weekdays (the weekend before has no data). Shed per day:
    # 7000 - floor 1400 = 5600 on 3 days, 0 on one: samples [0, 5600, 5600, 5600], mean 4200.
    # deliverable(c) is the largest W reached on >= c of the days: 0.75 -> 5600 (3 of 4), 0.9 -> 0.
    f = forecast_flex([ev(series(MONDAY, 4, ev_on({8, 9, 10})))], start_s=at(FRIDAY, 19),
                      end_s=at(FRIDAY, 20), now_s=at(FRIDAY, 12), zone=UTC, direction="reduce")
    assert f.mean_w == pytest.approx(4200.0)
    assert f.per_lever == {"ev": pytest.approx(4200.0)}
    assert f.deliverable_w(0.5) == pytest.approx(5600.0)
    assert f.deliverable_w(0.75) == pytest.approx(5600.0)
    assert f.deliverable_w(0.9) == 0.0
    assert "drawing on 3 of 4 matched weekdays at 19:00, 7.0 kW when on" in f.basis


def test_only_days_of_the_same_kind_and_measured_by_now_are_matched() -> None:
    # Two weeks from Mon 8 Jan; the EV charges at 19:00 on the weekend days 13, 14 only. A weekday
    # window (Mon 22) must not learn from them: 10 matched weekdays, all idle -> 0. The weekend
    # window (Sat 20) matches Sat 13 and Sun 14 (both charging) -> 5600 at 0.95.
    # now = 12:00 the same day, so that day's 19:00 is not yet measured and not matched.
    load = series(MONDAY, 14, ev_on({13, 14}))
    weekday = evening([ev(load)], day=dt.date(2024, 1, 22))
    weekend = evening([ev(load)], day=dt.date(2024, 1, 20))
    assert weekday.deliverable_w(0.5) == 0.0 and weekday.basis.startswith("10 matched weekdays")
    assert weekend.deliverable_w(0.95) == pytest.approx(5600.0)
    assert weekend.basis.startswith("2 matched weekends")


def test_boiler_duty_cycle_reduce_and_increase() -> None:
    # A 2 kW boiler over 19:00-20:00 (4 slots) on Mon..Thu: on in 4, 2, 1, 0 of the slots.
    # REDUCE sheds its measured load: per day 2000, 1000, 500, 0 -> mean 875; samples [0, 500, 1000,
    # 2000]: 0.75 -> 500 (reached on 3 of 4 days). On 7 of 16 slots = 44 %.
    # INCREASE adds add_w 2000 for the share it was off: 0, 1000, 1500, 2000 -> mean 1125, 0.5 -> 1500.
    on_slots = {8: 4, 9: 2, 10: 1, 11: 0}
    load = series(MONDAY, 4, lambda t: 2000.0 if t.hour == 19 and t.minute // 15 < on_slots[t.day] else 0.0)
    boiler = LeverHistory(key="boiler", kind="switch", full_w=2000.0, add_w=2000.0, load=load)
    shed, add = evening([boiler]), evening([boiler], "increase")
    assert shed.mean_w == pytest.approx(875.0)
    assert shed.deliverable_w(0.75) == pytest.approx(500.0)
    assert "boiler: on 44% of matched slots" in shed.basis
    assert add.mean_w == pytest.approx(1125.0)
    assert add.deliverable_w(0.5) == pytest.approx(1500.0)


def battery(soc: float, load: Callable[[dt.datetime], float | None] = lambda t: 0.0) -> LeverHistory:
    return LeverHistory(key="battery", kind="battery", full_w=3000.0, add_w=3000.0, soc_pct=soc,
                        capacity_wh=10_000.0, reserve_pct=20.0, load=series(MONDAY, 4, load))


def test_battery_energy_above_reserve_limits_a_long_window() -> None:
    # SoC 80 % of 10 kWh, reserve 20 %: 6 kWh above reserve. Idle on the matched days (no own
    # discharge, nothing to replay). A 1 h window: min(3000, 6000 / 1) = 3000; 4 h: 6000 / 4 = 1500.
    # INCREASE, 1 h: room 20 % = 2 kWh -> min(3000, 2000) = 2000.
    assert evening([battery(80.0)], hours=1).deliverable_w(0.95) == pytest.approx(3000.0)
    assert evening([battery(80.0)], hours=4).deliverable_w(0.95) == pytest.approx(1500.0)
    assert evening([battery(80.0)], "increase").deliverable_w(0.95) == pytest.approx(2000.0)


def test_battery_soc_is_replayed_over_the_lead_time_of_matched_days() -> None:
    # now 12:00, window 19:00-21:00 (lead 7 h). On every matched day the battery discharged 1 kW over
    # 15:00-17:00 = 2 kWh = 20 % of 10 kWh: SoC 80 -> 60 % at 19:00, 4 kWh above reserve ->
    # min(3000, 4000 / 2 h) = 2000 W on every day.
    f = evening([battery(80.0, lambda t: 1000.0 if 15 <= t.hour < 17 else 0.0)], hours=2)
    assert f.deliverable_w(0.9) == pytest.approx(2000.0)
    assert "60-60 % at the start" in f.basis


def test_battery_own_discharge_in_the_window_is_not_extra() -> None:
    # Lead 0 (now = window start 19:00), SoC 80 %: 3000 W possible for 1 h; on the matched days it
    # already discharged 1000 W in 19:00-20:00, which the baseline holds: extra = 3000 - 1000 = 2000.
    lever = battery(80.0, lambda t: 1000.0 if t.hour == 19 else 0.0)
    f = forecast_flex([lever], start_s=at(FRIDAY, 19), end_s=at(FRIDAY, 20), now_s=at(FRIDAY, 19),
                      zone=UTC, direction="reduce")
    assert f.deliverable_w(0.9) == pytest.approx(2000.0)


def test_levers_are_combined_per_day_so_correlation_is_kept() -> None:
    # The EV (shed 5600 when on) charges Mon and Tue, the 2 kW boiler is on 19:00-20:00 Wed and Thu:
    # every day one of them delivers. Per-day totals [2000, 2000, 5600, 5600]: 0.95 -> 2000, 0.5 ->
    # 5600, mean 3800. Combining the levers' own distributions rank by rank (as if they moved
    # together) would give [0, 0, 7600, 7600] and 0 at 0.95.
    boiler = series(MONDAY, 4, lambda t: 2000.0 if t.day in {10, 11} and t.hour == 19 else 0.0)
    levers = [ev(series(MONDAY, 4, ev_on({8, 9}))),
              LeverHistory(key="boiler", kind="switch", full_w=2000.0, load=boiler)]
    f = evening(levers)
    assert f.deliverable_w(0.95) == pytest.approx(2000.0)
    assert f.deliverable_w(0.5) == pytest.approx(5600.0)
    assert f.mean_w == pytest.approx(3800.0)
    assert f.per_lever == {"ev": pytest.approx(2800.0), "boiler": pytest.approx(1000.0)}


def test_missing_slots_drop_a_day_or_average_what_is_there() -> None:
    # Mon: the EV's 19:00 hour is missing entirely -> the day is dropped (no data for the lever).
    # Tue: 2 of 4 slots missing, the 2 present at 7 kW -> coverage 50 % is enough: 5600.
    # Wed, Thu: 7 kW -> 5600. 3 days used: samples [5600, 5600, 5600].
    def value(t: dt.datetime) -> float | None:
        if t.hour == 19 and (t.day == 8 or (t.day == 9 and t.minute >= 30)):
            return None
        return 7000.0 if t.hour == 19 else 0.0
    f = evening([ev(series(MONDAY, 4, value))])
    assert f.basis.startswith("3 matched weekdays")
    assert f.deliverable_w(0.95) == pytest.approx(5600.0)


def test_setpoint_increase_adds_while_connected() -> None:
    # INCREASE: a setpoint adds add_w (3000) while the device draws; drawing on 3 of 4 days -> mean
    # 2250, 0.75 -> 3000, 0.9 -> 0.
    f = evening([ev(series(MONDAY, 4, ev_on({8, 9, 10})))], "increase")
    assert f.mean_w == pytest.approx(2250.0)
    assert f.deliverable_w(0.75) == pytest.approx(3000.0)
    assert f.deliverable_w(0.9) == 0.0


def test_dst_matches_local_wall_clock_time() -> None:
    # Berlin springs forward on Sun 31 Mar 2024. The EV charged at 19:00 local Mon 25..Fri 29 Mar
    # (CET, 18:00 UTC). The window Mon 1 Apr 19:00 CEST is 17:00 UTC: matched by local time it
    # finds all 5 sessions (5600 each); matched by UTC it would read 18:00 CET, idle.
    load = series(dt.date(2024, 3, 25), 7, ev_on({25, 26, 27, 28, 29}), zone=BERLIN)
    f = evening([ev(load)], day=dt.date(2024, 4, 1), zone=BERLIN)
    assert f.deliverable_w(0.95) == pytest.approx(5600.0)
    assert "5 matched weekdays at 19:00" in f.basis


def test_no_history_promises_nothing_and_says_why() -> None:
    empty = SlotSeries(slot_s=SLOT, start_s=at(MONDAY, 0), values=())
    f = evening([ev(empty)])
    assert f.mean_w == 0.0 and f.deliverable_w(0.5) == 0.0
    assert "cannot promise anything" in f.basis and "ev" in f.basis
    assert evening([]).basis == "no levers: nothing to shed or add"


def test_bad_arguments_name_the_field() -> None:
    load = series(MONDAY, 1, lambda t: 0.0)
    with pytest.raises(ValueError, match="direction 'down'"):
        evening([ev(load)], "down")
    with pytest.raises(ValueError, match="lever 'x': kind 'dimmer'"):
        evening([LeverHistory(key="x", kind="dimmer", full_w=1.0, load=load)])
    with pytest.raises(ValueError, match="confidence"):
        evening([ev(load)]).deliverable_w(0.0)


def flat_days(levels: dict[int, float], hour_bump: tuple[int, float] | None = None,
              first: dt.date = MONDAY, days: int = 4,
              zone: dt.tzinfo = UTC) -> SlotSeries:
    """Days at a level per day of month, optionally another level in one local hour."""
    def value(t: dt.datetime) -> float:
        if hour_bump and t.hour == hour_bump[0]:
            return hour_bump[1]
        return levels.get(t.day, levels.get(0, 0.0))
    return series(first, days, value, zone)


def test_load_profile_median_and_weekday_weekend() -> None:
    # Mon 8 .. Sun 14 Jan: weekdays 400 W, the weekend 800 W. From Fri 12 Jan 12:00 the next 24 h
    # are Fri 12:00-24:00 (48 slots, matched Mon-Thu, all 400) and Sat 00:00-12:00 (48 slots,
    # matched weekend days: none measured yet -> the last week's mean, the fallback, 400).
    # The last 24 h measured 400 = profile 400: level 1. Then from Mon 15 00:00: weekdays 400 again.
    history = flat_days({8: 400, 9: 400, 10: 400, 11: 400, 12: 400, 13: 800, 14: 800}, days=7)
    f = forecast_load(history, now_s=at(FRIDAY, 12), zone=UTC)
    assert f.start_s == at(FRIDAY, 12) and len(f.mean_w) == 96
    assert f.mean_w[0] == pytest.approx(400.0)
    sunday = forecast_load(history, now_s=at(dt.date(2024, 1, 14), 0), zone=UTC)
    # Sun 14 00:00: the weekend slots match Sat 13 (800); the last 24 h (Sat) measured 800 against
    # a profile of 800 (no earlier weekend: the fallback slots are skipped) -> 800.
    assert sunday.mean_w[0] == pytest.approx(800.0)


def test_load_interval_is_the_10_90_spread_of_matched_days() -> None:
    # Mon..Fri 8-12 Jan at 100, 200, 300, 400, 500 W (one level a day); the next Monday 00:00 slot
    # matches those 5 weekdays: sorted [100..500], median 300, 10 % at position 0.4 -> 140, 90 % at
    # 3.6 -> 460. The weekend is 600 W: the last 24 h (Sun 14) measured 600 against its profile from
    # Sat 13 (600) -> level 1.
    history = flat_days({8: 100, 9: 200, 10: 300, 11: 400, 12: 500, 0: 600}, days=7)
    f = forecast_load(history, now_s=at(dt.date(2024, 1, 15), 0), zone=UTC)
    assert (f.low_w[0], f.mean_w[0], f.high_w[0]) == pytest.approx((140.0, 300.0, 460.0))
    assert "scaled x1.00" in f.basis


def test_recent_level_scales_the_profile() -> None:
    # Mon-Wed 400 W, Thu 200 W (a day mostly away). From Fri 00:00: Thursday's slots were profiled at
    # median(400, 400, 400) = 400 and measured 200 (below the 90 % cap): ratio 0.5, level =
    # 1 + 0.3 x (0.5 - 1) = 0.85. Friday's profile: median of [200, 400, 400, 400] = 400 -> 340 W.
    history = flat_days({8: 400, 9: 400, 10: 400, 11: 200})
    f = forecast_load(history, now_s=at(FRIDAY, 0), zone=UTC)
    assert f.mean_w[0] == pytest.approx(340.0)
    assert "x0.85" in f.basis and "0.50" in f.basis


def test_load_on_a_dst_day_follows_local_time() -> None:
    # Berlin, Mon 25 Mar .. Sun 31 Mar 2024 (the spring-forward day): 500 W, 1000 W at 19:00-20:00
    # local every day. From Mon 1 Apr 00:00 CEST the slot at 19:00 CEST (17:00 UTC) is 1000 W and
    # 18:00 CEST is 500 W; a UTC-matched profile would put the evening at 20:00 CEST.
    history = flat_days({0: 500.0}, hour_bump=(19, 1000.0), first=dt.date(2024, 3, 25), days=7, zone=BERLIN)
    monday = dt.date(2024, 4, 1)
    f = forecast_load(history, now_s=at(monday, 0, BERLIN), zone=BERLIN)
    slot = (at(monday, 19, BERLIN) - f.start_s) // SLOT
    assert f.mean_w[slot] == pytest.approx(1000.0)
    assert f.mean_w[slot - 1] == pytest.approx(500.0) and f.mean_w[slot + 4] == pytest.approx(500.0)


def test_empty_load_history_forecasts_zero_and_says_so() -> None:
    f = forecast_load(SlotSeries(slot_s=SLOT, start_s=0, values=()), now_s=at(FRIDAY, 0), zone=UTC)
    assert set(f.mean_w) == {0.0} and f.basis == "no measured history: forecast 0 W"
