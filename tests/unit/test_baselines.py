"""DR baselines (gateway/loop/baselines.py) on synthetic histories with known values."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DrgwError
from gateway.loop.baselines import (
    Baseline,
    BaselineSpec,
    BaselineUnavailable,
    History,
    Method,
    Slot,
    compute,
)

DAY = 86_400
EPOCH = date(1970, 1, 1)
EVENT_DAY = date(2024, 6, 4)  # a Tuesday
FIRST_DAY = date(2024, 4, 15)  # a Monday, 50 days before
Level = Callable[[date, int], float]  # (local date, local second of day) -> W


def at(day: date, hh: int, mm: int = 0, ss: int = 0, offset: int = 0) -> int:
    """Unix seconds of local time `day hh:mm:ss` at UTC offset `offset`."""
    return (day - EPOCH).days * DAY + hh * 3600 + mm * 60 + ss - offset


def make_history(level: Level, *, until: int, slot_s: int = 300, offset: int = 0,
                 coverage: Level = lambda d, t: 1.0, first: date = FIRST_DAY,
                 event_days: frozenset[date] = frozenset(),
                 holidays: frozenset[date] = frozenset()) -> History:
    """Every slot from local midnight of `first` up to `until` (exclusive), as `level` and `coverage` say."""
    start = at(first, 0, offset=offset)
    slots = []
    for s in range(start - start % slot_s, until - until % slot_s, slot_s):
        local = s + offset
        d, tod = EPOCH + timedelta(days=local // DAY), local % DAY
        cov = coverage(d, tod)
        if cov > 0:
            slots.append(Slot(start_s=s, avg_w=level(d, tod), coverage=cov))
    return History(slot_s=slot_s, slots=tuple(slots), utc_offset_s=offset, event_days=event_days,
                   holidays=holidays)


def day_index(d: date) -> int:
    return (d - FIRST_DAY).days


def per_day(d: date, tod: int) -> float:
    """Weekdays: 1000 + 10 W per day since FIRST_DAY, flat over the day. Weekends: 5000 W."""
    return 5000.0 if d.weekday() >= 5 else 1000.0 + 10 * day_index(d)


def run(spec: BaselineSpec, history: History, start: int, end: int) -> Baseline:
    return compute(spec, history, window_start_s=start, window_end_s=end)


def weekdays_before(day: date, n: int, skip: frozenset[date] = frozenset()) -> list[date]:
    out: list[date] = []
    while len(out) < n:
        day -= timedelta(days=1)
        if day.weekday() < 5 and day not in skip:
            out.append(day)
    return out


WIN = (at(EVENT_DAY, 17), at(EVENT_DAY, 17, 10))


# --- TEN_IN_TEN -------------------------------------------------------------------------------------------

def test_ten_in_ten_averages_the_ten_most_recent_weekdays() -> None:
    history = make_history(per_day, until=WIN[0])
    b = run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0), history, *WIN)
    days = weekdays_before(EVENT_DAY, 10)
    assert days[0] == date(2024, 6, 3) and days[-1] == date(2024, 5, 21)
    expected = sum(1000.0 + 10 * day_index(d) for d in days) / 10  # 1000 + 10 * mean index = 1419.0
    assert b.slots_w == pytest.approx((expected, expected)) and expected == 1419.0
    assert b.days_used == tuple(sorted(days))
    assert b.energy_wh() == pytest.approx(expected * 600 / 3600)
    assert (b.method, b.slot_s, b.adjustment, len(b.input_hash)) == (Method.TEN_IN_TEN, 300, 1.0, 32)


def test_ten_in_ten_skips_event_days_holidays_and_low_coverage_days() -> None:
    event, holiday, patchy = date(2024, 5, 31), date(2024, 5, 27), date(2024, 5, 29)
    # `patchy` lost half of every slot between 16:00 and 18:00: 50% coverage over the window hours.
    history = make_history(per_day, until=WIN[0], event_days=frozenset({event}),
                           holidays=frozenset({holiday}),
                           coverage=lambda d, t: 0.5 if d == patchy and 16 * 3600 <= t < 18 * 3600 else 1.0)
    b = run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0), history, *WIN)
    days = weekdays_before(EVENT_DAY, 10, skip=frozenset({event, holiday, patchy}))
    assert not {event, holiday, patchy} & set(b.days_used)
    assert b.days_used == tuple(sorted(days)) and b.days_used[0] == date(2024, 5, 16)
    assert b.slots_w[0] == pytest.approx(sum(1000.0 + 10 * day_index(d) for d in days) / 10)
    # min_coverage 0.5 lets the patchy day back in (the holiday and the event day stay out).
    looser = run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0, min_coverage=0.5), history, *WIN)
    assert patchy in looser.days_used and holiday not in looser.days_used


def test_weekend_event_uses_weekend_and_holiday_days() -> None:
    saturday = date(2024, 6, 8)
    holiday = date(2024, 5, 27)
    level: Level = lambda d, t: 7000.0 if d == holiday else per_day(d, t)  # noqa: E731
    history = make_history(level, until=at(saturday, 12), holidays=frozenset({holiday}))
    b = run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0), history, at(saturday, 12), at(saturday, 12, 10))
    assert all(d.weekday() >= 5 or d == holiday for d in b.days_used) and holiday in b.days_used
    assert len(b.days_used) == 10 and b.slots_w[0] == pytest.approx((9 * 5000 + 7000) / 10)


@pytest.mark.parametrize(("event_level", "cap", "ratio"), [
    (1419.0 * 1.1, 0.2, 1.1),   # inside the cap: multiplied in as is
    (1419.0 * 1.5, 0.2, 1.2),   # capped above
    (1419.0 * 0.5, 0.2, 0.8),   # capped below
    (1419.0 * 1.5, 0.3, 1.3),   # a wider cap
    (1419.0 * 1.5, 0.0, 1.0),   # cap 0: no adjustment at all
])
def test_day_of_adjustment_and_its_cap(event_level: float, cap: float, ratio: float) -> None:
    # The event day runs at `event_level` from 13:00 on; the adjustment hours are 13:00-16:00.
    level: Level = lambda d, t: event_level if d == EVENT_DAY and t >= 13 * 3600 else per_day(d, t)  # noqa: E731
    history = make_history(level, until=WIN[0])
    b = run(BaselineSpec.make(Method.TEN_IN_TEN, cap=cap), history, *WIN)
    assert b.adjustment == pytest.approx(ratio)
    assert b.slots_w == pytest.approx((1419.0 * ratio,) * 2)


def test_adjustment_reads_only_its_hours() -> None:
    # A spike from 16:00 on (inside the last hour before the window) must not move the adjustment.
    level: Level = lambda d, t: 9999.0 if d == EVENT_DAY and t >= 16 * 3600 else per_day(d, t)  # noqa: E731
    history = make_history(level, until=WIN[0])
    b = run(BaselineSpec.make(Method.TEN_IN_TEN), history, *WIN)
    # The event day itself (1000 + 10 * 50 = 1500 W) against the baseline 1419 W, under the cap.
    assert b.adjustment == pytest.approx(1500.0 / 1419.0)
    shifted = run(BaselineSpec.make(Method.TEN_IN_TEN, adjust_to_min=0), history, *WIN)
    assert shifted.adjustment == pytest.approx(1.2)  # 15:00-17:00 now includes the spike: capped


# --- HIGH_X_OF_Y, RECENT_DAYS ------------------------------------------------------------------------------

def test_high_x_of_y_takes_the_highest_days_of_the_most_recent_y() -> None:
    recent = weekdays_before(EVENT_DAY, 5)  # Jun 3, May 31, 30, 29, 28
    levels = dict(zip(recent, (1200.0, 1800.0, 1500.0, 1800.0, 9000.0), strict=True))
    level: Level = lambda d, t: levels.get(d, 20_000.0) if d.weekday() < 5 else 5000.0  # noqa: E731
    history = make_history(level, until=WIN[0])
    b = run(BaselineSpec.make(Method.HIGH_X_OF_Y, x=3, y=4, min_days=3), history, *WIN)
    # Of the 4 most recent weekdays (not May 28, nor the 20 kW days before it): 1800, 1800, 1500.
    assert b.days_used == (date(2024, 5, 29), date(2024, 5, 30), date(2024, 5, 31))
    assert b.slots_w == pytest.approx((1700.0, 1700.0))
    tie = run(BaselineSpec.make(Method.HIGH_X_OF_Y, x=1, y=4, min_days=1), history, *WIN)
    assert tie.days_used == (date(2024, 5, 31),)  # a tie goes to the more recent day


def test_high_x_of_y_with_adjustment() -> None:
    level: Level = lambda d, t: 1650.0 if d == EVENT_DAY else per_day(d, t)  # noqa: E731
    history = make_history(level, until=WIN[0])
    b = run(BaselineSpec.make(Method.HIGH_X_OF_Y, x=5, y=10, adjust=1), history, *WIN)
    top = weekdays_before(EVENT_DAY, 5)  # levels rise over time, so the top 5 are the most recent
    base = sum(1000.0 + 10 * day_index(d) for d in top) / 5
    assert b.days_used == tuple(sorted(top))
    assert b.adjustment == pytest.approx(1650.0 / base)
    assert b.slots_w[0] == pytest.approx(1650.0)


def test_recent_days_uses_working_days_even_for_a_weekend_event() -> None:
    saturday = date(2024, 6, 8)
    history = make_history(per_day, until=at(saturday, 9), holidays=frozenset({date(2024, 6, 6)}))
    b = run(BaselineSpec.make(Method.RECENT_DAYS, days=3, min_days=3), history, at(saturday, 9),
            at(saturday, 9, 30))
    assert b.days_used == (date(2024, 6, 4), date(2024, 6, 5), date(2024, 6, 7))
    assert b.slots_w == pytest.approx((1000.0 + 10 * (50 + 51 + 53) / 3,) * 6)


# --- PRE_EVENT, CONTRACTED, windows that start mid-slot ---------------------------------------------------

def test_pre_event_is_the_coverage_weighted_mean_of_the_minutes_before() -> None:
    # 16:30-17:00 in 5-minute slots: 100, 200, ..., 600 W; the 16:40 slot (300 W) has 50% coverage.
    level: Level = lambda d, t: 100.0 * ((t - 16 * 3600 - 1800) // 300 + 1) if t >= 16.5 * 3600 else 50.0  # noqa: E731
    history = make_history(level, until=WIN[0], first=EVENT_DAY,
                           coverage=lambda d, t: 0.5 if t == 16 * 3600 + 2400 else 1.0)
    b = run(BaselineSpec.make(Method.PRE_EVENT), history, *WIN)
    expected = (100 + 200 + 0.5 * 300 + 400 + 500 + 600) / 5.5
    assert b.slots_w == pytest.approx((expected, expected)) and b.days_used == (EVENT_DAY,)
    hour = run(BaselineSpec.make(Method.PRE_EVENT, minutes=60), history, *WIN)
    assert hour.slots_w[0] == pytest.approx((6 * 50 + 100 + 200 + 150 + 400 + 500 + 600) / 11.5)


def test_pre_event_with_a_mid_slot_window_stops_at_the_slot_boundary() -> None:
    start = at(EVENT_DAY, 17, 2, 30)
    level: Level = lambda d, t: 9999.0 if t >= 17 * 3600 else 400.0  # noqa: E731
    history = make_history(level, until=at(EVENT_DAY, 17, 5), first=EVENT_DAY)  # holds the 17:00 slot
    b = run(BaselineSpec.make(Method.PRE_EVENT), history, start, start + 600)
    assert b.slots_w == (400.0, 400.0, 400.0)  # slots 17:00, 17:05, 17:10 overlap 17:02:30-17:12:30
    assert b.energy_wh() == pytest.approx(400.0 * 600 / 3600)


def test_day_matched_mid_slot_window_power_and_energy() -> None:
    level: Level = lambda d, t: float(t // 300)  # noqa: E731  (slot number of the day: 17:00 -> 204)
    history = make_history(level, until=at(EVENT_DAY, 17))
    start = at(EVENT_DAY, 17, 2, 30)
    b = run(BaselineSpec.make(Method.RECENT_DAYS), history, start, start + 600)
    assert b.first_slot_s == at(EVENT_DAY, 17) and b.slots_w == (204.0, 205.0, 206.0)
    assert (b.power_at(start), b.power_at(start + 150), b.power_at(start + 599)) == (204.0, 205.0, 206.0)
    assert b.energy_wh() == pytest.approx((204 * 150 + 205 * 300 + 206 * 150) / 3600)
    assert b.energy_wh(start + 150, start + 450) == pytest.approx(205 * 300 / 3600)
    assert b.energy_wh(start - 1000, start) == 0.0
    for outside in (start - 1, start + 600):
        with pytest.raises(ValueError, match="outside the baseline's window"):
            b.power_at(outside)
    with pytest.raises(ValueError, match="before start_s"):
        b.energy_wh(start + 10, start)


def test_contracted_curve_is_the_baseline() -> None:
    history = History(slot_s=60, slots=())
    b = run(BaselineSpec.make(Method.CONTRACTED, curve_w=[1000.0 + i for i in range(10)]), history, *WIN)
    assert b.slots_w == tuple(1000.0 + i for i in range(10)) and b.days_used == ()
    assert b.energy_wh() == pytest.approx(sum(1000.0 + i for i in range(10)) * 60 / 3600)
    with pytest.raises(ValueError, match="curve_w has 2 values but the window spans 10 slots of 60 s"):
        run(BaselineSpec.make(Method.CONTRACTED, curve_w=[1.0, 2.0]), history, *WIN)


# --- missing data -----------------------------------------------------------------------------------------

def test_fewer_days_than_asked_down_to_the_minimum() -> None:
    history = make_history(per_day, until=WIN[0], first=date(2024, 5, 27))  # 6 weekdays before Jun 4
    b = run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0), history, *WIN)
    assert len(b.days_used) == 6
    short = make_history(per_day, until=WIN[0], first=date(2024, 5, 30))  # 3 weekdays
    with pytest.raises(BaselineUnavailable, match=r"at least 5 eligible days .* found 3 \(working days"):
        run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0), short, *WIN)
    assert len(run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0, min_days=3), short, *WIN).days_used) == 3


def test_missing_data_errors_say_what_is_missing() -> None:
    history = make_history(per_day, until=at(EVENT_DAY, 12))  # the event day stops at noon
    with pytest.raises(BaselineUnavailable, match=r"day-of adjustment needs readings over "
                                                  r"2024-06-04 13:00-16:00; they cover 0%"):
        run(BaselineSpec.make(Method.TEN_IN_TEN), history, *WIN)
    with pytest.raises(BaselineUnavailable, match=r"PRE_EVENT .* cover 0% of 2024-06-04 16:30-17:00"):
        run(BaselineSpec.make(Method.PRE_EVENT), history, *WIN)
    assert issubclass(BaselineUnavailable, DrgwError)
    # A slot missing on every selected day cannot be filled.
    gap = make_history(per_day, until=WIN[0], coverage=lambda d, t: 0.0 if t == 17 * 3600 else 1.0)
    with pytest.raises(BaselineUnavailable, match="no reading for the slot at 17:00"):
        run(BaselineSpec.make(Method.RECENT_DAYS, min_coverage=0.4), gap, *WIN)


def test_net_export_cannot_take_a_multiplicative_adjustment() -> None:
    history = make_history(lambda d, t: -800.0, until=WIN[0])
    with pytest.raises(BaselineUnavailable, match=r"undefined: the baseline over .* is -800\.0 W"):
        run(BaselineSpec.make(Method.TEN_IN_TEN), history, *WIN)
    assert run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0), history, *WIN).slots_w == (-800.0, -800.0)


# --- local time -------------------------------------------------------------------------------------------

def test_utc_offset_decides_the_day_type() -> None:
    friday = date(2024, 5, 31)
    start = at(friday, 23)  # 23:00 UTC Friday; 01:00 Saturday at UTC+2
    for offset, weekend in ((0, False), (7200, True)):
        history = make_history(per_day, until=start, offset=offset)
        b = run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0), history, start, start + 600)
        assert all((d.weekday() >= 5) == weekend for d in b.days_used)


# --- input hash -------------------------------------------------------------------------------------------

def replace_slot(history: History, start_s: int, **changes: float) -> History:
    slots = tuple(dataclasses.replace(s, **changes) if s.start_s == start_s else s  # type: ignore[arg-type]
                  for s in history.slots)
    return dataclasses.replace(history, slots=slots)


def test_input_hash_is_deterministic_and_sensitive() -> None:
    history = make_history(per_day, until=WIN[0])
    spec = BaselineSpec.make(Method.TEN_IN_TEN)
    first = run(spec, history, *WIN)
    again = run(BaselineSpec.make(Method.TEN_IN_TEN, cap=0.2), make_history(per_day, until=WIN[0]), *WIN)
    assert again == first  # an explicit default is the same spec, hence the same hash
    used = at(date(2024, 5, 31), 17, 5)  # a window slot of a selected day
    variants = [
        run(spec, replace_slot(history, used, avg_w=per_day(date(2024, 5, 31), 0) + 1e-9), *WIN),
        run(spec, replace_slot(history, used, coverage=0.999), *WIN),
        run(spec, replace_slot(history, at(EVENT_DAY, 14), avg_w=1501.0), *WIN),  # adjustment hours
        run(BaselineSpec.make(Method.TEN_IN_TEN, cap=0.25), history, *WIN),  # same values, other params
        run(spec, history, WIN[0], WIN[1] - 60),
        run(BaselineSpec.make(Method.TEN_IN_TEN, adjust=0), history, *WIN),
        run(BaselineSpec.make(Method.RECENT_DAYS, days=10, min_days=5), history, *WIN),
    ]
    hashes = {first.input_hash} | {v.input_hash for v in variants}
    assert len(hashes) == len(variants) + 1
    assert variants[3].slots_w == first.slots_w  # the cap did not bind, yet the hash moved
    # A slot no method step reads (long before the lookback) does not move the hash.
    unused = replace_slot(history, at(FIRST_DAY, 3), avg_w=1.0)
    assert run(spec, unused, *WIN).input_hash == first.input_hash


def test_contracted_hash_covers_the_curve() -> None:
    history = History(slot_s=300, slots=())
    a = run(BaselineSpec.make(Method.CONTRACTED, curve_w=[500.0, 600.0]), history, *WIN)
    b = run(BaselineSpec.make(Method.CONTRACTED, curve_w=[500.0, 600.5]), history, *WIN)
    c = run(BaselineSpec.make(Method.CONTRACTED, curve_w=[-0.0, 600.0]), history, *WIN)
    d = run(BaselineSpec.make(Method.CONTRACTED, curve_w=[0.0, 600.0]), history, *WIN)
    assert a.input_hash != b.input_hash and c.input_hash == d.input_hash


# --- validation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "params", "message"), [
    (Method.TEN_IN_TEN, {"dayz": 10}, "parameter 'dayz' for TEN_IN_TEN; did you mean 'days'"),
    (Method.PRE_EVENT, {"minutes": 0}, "'minutes' of PRE_EVENT must be an integer in 1..1440, got 0"),
    (Method.PRE_EVENT, {"minutes": 2.5}, "must be an integer in 1..1440, got 2.5"),
    (Method.TEN_IN_TEN, {"cap": 1.5}, "'cap' of TEN_IN_TEN must be a number in 0.0..1.0, got 1.5"),
    (Method.TEN_IN_TEN, {"cap": float("nan")}, "'cap' of TEN_IN_TEN must be a number"),
    (Method.TEN_IN_TEN, {"adjust": True}, "'adjust' of TEN_IN_TEN must be an integer in 0..1, got True"),
    (Method.HIGH_X_OF_Y, {"x": 6, "y": 5, "min_days": 5}, r"'x' \(6\) of HIGH_X_OF_Y must not exceed 'y'"),
    (Method.TEN_IN_TEN, {"days": 4}, r"'min_days' \(5\) of TEN_IN_TEN must not exceed 'days' \(4\)"),
    (Method.TEN_IN_TEN, {"adjust_to_min": 240}, "'adjust_to_min' .* must be less than 'adjust_from_min'"),
    (Method.CONTRACTED, {"minutes": 30}, "parameter 'minutes' for CONTRACTED; allowed: none"),
])
def test_bad_params_name_the_parameter_and_range(method: Method, params: dict[str, float],
                                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BaselineSpec.make(method, curve_w=[1.0] if method is Method.CONTRACTED else (), **params)


def test_spec_normalises_and_rejects_bad_shapes() -> None:
    spec = BaselineSpec(method=3, params=(("days", 8.0), ("cap", 0.1)))  # type: ignore[arg-type]
    assert spec.method is Method.TEN_IN_TEN and spec.params == (("cap", 0.1), ("days", 8))
    assert spec.param("min_days") == 5 and dict(spec.resolved())["lookback_days"] == 45
    as_mapping = BaselineSpec(method=Method.TEN_IN_TEN, params={"days": 8, "cap": 0.1})  # type: ignore[arg-type]
    assert as_mapping == spec and hash(as_mapping) == hash(spec)
    with pytest.raises(ValueError, match="unknown baseline method id 9; known: 1=CONTRACTED"):
        BaselineSpec.make(9)
    with pytest.raises(ValueError, match="curve_w is required for CONTRACTED"):
        BaselineSpec.make(Method.CONTRACTED)
    with pytest.raises(ValueError, match="not allowed for any other method"):
        BaselineSpec.make(Method.PRE_EVENT, curve_w=[1.0])
    with pytest.raises(ValueError, match="repeat a name"):
        BaselineSpec(method=Method.PRE_EVENT, params=(("minutes", 5), ("minutes", 6)))
    history = History(slot_s=300, slots=())
    with pytest.raises(ValueError, match=r"window_end_s .* must be after window_start_s"):
        run(BaselineSpec.make(Method.PRE_EVENT), history, WIN[1], WIN[0])
    with pytest.raises(ValueError, match="window_start_s must be an integer"):
        compute(BaselineSpec.make(Method.PRE_EVENT), history, window_start_s=1.5, window_end_s=900)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not exceed one day"):
        run(BaselineSpec.make(Method.RECENT_DAYS), history, 0, DAY + 300)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"slot_s": 7}, "slot_s must divide 86400"),
    ({"slots": (Slot(start_s=301, avg_w=1.0, coverage=1.0),)}, r"\(start_s=301\) is not on the 300 s grid"),
    ({"slots": (Slot(start_s=600, avg_w=1.0, coverage=1.0), Slot(start_s=300, avg_w=1.0, coverage=1.0))},
     r"slots\[1\] .* is not after the slot before it"),
    ({"slots": (Slot(start_s=0, avg_w=1.0, coverage=1.5),)}, "coverage in 0..1"),
    ({"slots": (Slot(start_s=0, avg_w=float("inf"), coverage=1.0),)}, "avg_w must be finite"),
    ({"utc_offset_s": 15 * 3600}, "utc_offset_s must be within"),
])
def test_bad_history_is_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"slot_s": 300, "slots": ()}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        History(**fields)  # type: ignore[arg-type]


# --- property: a constant history gives that constant -----------------------------------------------------

SPECS = (
    BaselineSpec.make(Method.PRE_EVENT, minutes=45),
    BaselineSpec.make(Method.TEN_IN_TEN, days=3, min_days=3),
    BaselineSpec.make(Method.HIGH_X_OF_Y, x=2, y=3, min_days=3, adjust=1),
    BaselineSpec.make(Method.RECENT_DAYS, days=3, min_days=3),
)


@settings(max_examples=40, deadline=None)
@given(
    constant=st.floats(min_value=0.0, max_value=20_000.0),
    coverage=st.floats(min_value=0.95, max_value=1.0),
    slot_s=st.sampled_from((300, 900, 3600)),
    offset=st.integers(min_value=-12 * 4, max_value=14 * 4).map(lambda q: q * 900),
    start=st.integers(min_value=0, max_value=14 * DAY),
    minutes=st.integers(min_value=1, max_value=600),
)
def test_constant_history_gives_that_constant(constant: float, coverage: float, slot_s: int, offset: int,
                                              start: int, minutes: int) -> None:
    window_start = at(EVENT_DAY, 0) + start
    history = make_history(lambda d, t: constant, until=window_start, slot_s=slot_s, offset=offset,
                           coverage=lambda d, t: coverage, first=EVENT_DAY - timedelta(days=14))
    for spec in SPECS:
        b = run(spec, history, window_start, window_start + minutes * 60)
        assert b.slots_w == pytest.approx((constant,) * len(b.slots_w), rel=1e-9, abs=1e-9)
        assert b.energy_wh() == pytest.approx(constant * minutes / 60, rel=1e-9, abs=1e-9)
        assert run(spec, history, window_start, window_start + minutes * 60) == b
