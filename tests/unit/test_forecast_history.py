"""The synthetic household history (gateway/demo/history.py) the forecasts are measured on."""

from __future__ import annotations

import datetime as dt
import statistics

from gateway.demo.history import EV_FLOOR_1P_W, EV_FLOOR_3P_W, FLEXIBLE, RIGID, Household, generate

START = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())  # a Monday, UTC midnight
SLOT = 900


def test_same_seed_same_history_other_seed_other_history() -> None:
    a = generate(FLEXIBLE, weeks=2, seed=7, start_s=START)
    assert a == generate(FLEXIBLE, weeks=2, seed=7, start_s=START)
    assert a.meter != generate(FLEXIBLE, weeks=2, seed=8, start_s=START).meter
    assert len(a.meter.values) == 2 * 7 * 96  # 2 weeks of 96 quarter hours


def test_weekend_mornings_differ_from_weekdays_and_an_absence_is_low() -> None:
    # A household without levers and no trips: at 09:00-10:00 the weekend shape (1.5-1.7 x base) is
    # about 1.6 / 0.8 = 2x the weekday's (people out). With trips: the days away run at 0.35 x base,
    # below half of the days at home (whose shape averages about 1.0 x base).
    home = generate(Household(ev=False, boiler=False, battery=False, trips_per_4_weeks=0), weeks=4,
                    seed=1, start_s=START)
    assert not home.away_days
    by_kind: dict[bool, list[float]] = {True: [], False: []}
    for i, v in enumerate(home.meter.values):
        t = dt.datetime.fromtimestamp(START + i * SLOT, dt.UTC)
        if t.hour == 9 and v is not None:
            by_kind[t.weekday() >= 5].append(v)
    assert statistics.median(by_kind[True]) > 1.5 * statistics.median(by_kind[False])
    trips = generate(RIGID, weeks=8, seed=1, start_s=START)
    assert trips.away_days
    daily: dict[bool, list[float]] = {True: [], False: []}
    for i, v in enumerate(trips.meter.values):
        day = dt.datetime.fromtimestamp(START + i * SLOT, dt.UTC).date()
        daily[day in trips.away_days].append(v or 0.0)
    assert statistics.mean(daily[True]) < 0.5 * statistics.mean(daily[False])


def test_levers_match_the_household_and_the_meter_is_their_sum() -> None:
    flexible = generate(FLEXIBLE, weeks=2, seed=3, start_s=START)
    assert [lv.key for lv in flexible.levers] == ["ev", "boiler", "battery"]
    assert generate(RIGID, weeks=2, seed=3, start_s=START).levers == ()
    only_ev = generate(Household(ev=True, boiler=False, battery=False), weeks=2, seed=3, start_s=START)
    assert [lv.key for lv in only_ev.levers] == ["ev"]
    ev = only_ev.levers[0]
    # An EV session: 7-11 kW; the floor is 6 A (IEC 61851-1) on one or three phases of 230 V.
    assert 7000 * 0.9 < max(v or 0.0 for v in ev.load.values) < 11_000 * 1.1
    assert ev.floor_w == (EV_FLOOR_3P_W if ev.full_w > 7400 else EV_FLOOR_1P_W)
    battery = flexible.levers[2]
    assert battery.soc_pct == flexible.soc_pct[-1] and battery.capacity_wh == 10_000.0
    assert all(0.0 <= s <= 100.0 for s in flexible.soc_pct)


def test_truth_is_power_less_floor_in_a_full_session_slot() -> None:
    # A slot where the EV drew its power for the whole slot (load > 5 kW and equal neighbours): the
    # shed it could have given is that load less the floor, from the generator's own session state.
    h = generate(Household(ev=True, boiler=False, battery=False, ev_power_w=7000.0), weeks=2, seed=5,
                 start_s=START)
    load, shed = h.levers[0].load.values, h.shed_w["ev"].values
    full = [i for i in range(1, len(load) - 1)
            if (load[i] or 0) > 5000 and load[i - 1] == load[i] == load[i + 1]]
    assert full
    for i in full:
        assert shed[i] == round((load[i] or 0.0) - EV_FLOOR_1P_W, 1)
    first = START + full[0] * SLOT
    window = h.realised_w(start_s=first, end_s=first + SLOT, direction="reduce")
    assert window == {"ev": shed[full[0]]}


def test_known_at_truncates_to_what_was_measured() -> None:
    h = generate(FLEXIBLE, weeks=2, seed=2, start_s=START)
    now = START + 3 * 86_400 + 7 * SLOT + 100  # mid-slot: that slot is not finished
    meter, levers = h.known_at(now)
    assert meter.end_s == START + 3 * 86_400 + 7 * SLOT
    assert all(lv.load.end_s == meter.end_s for lv in levers)
    assert levers[2].soc_pct == h.soc_pct[3 * 96 + 7]
