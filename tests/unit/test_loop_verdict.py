"""Verdict at window end: contract integers, gap filling, and agreement with the market model."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.loop.checker import BaselineLike, LiveChecker
from gateway.loop.events import Direction, DrEvent, EventSource
from gateway.loop.verdict import judge, required_wh, whole_wh
from gateway.market import model as market
from tests.unit.test_loop_checker import StepBaseline, feed


def event(start: int = 10_000, end: int = 10_600, **changes: object) -> DrEvent:
    base = DrEvent(event_id="chain:0x" + "ab" * 20 + ":7", source=EventSource.CHAIN, modification=1,
                   start_s=start, end_s=end, award_w=2000, direction=Direction.REDUCE,
                   tolerance_bps=500, window=7)
    return replace(base, **changes)  # type: ignore[arg-type]


def run(ev: DrEvent, baseline: BaselineLike, samples: list[tuple[float, float]]) -> market.Outcome:
    checker = LiveChecker(ev, baseline, now_s=ev.start_s)
    feed(checker, samples)
    v = judge(ev, checker.final(), baseline)
    return market.verdict(v.delivered_wh, v.award_w, v.seconds, v.tolerance_bps)


def test_a_full_window_in_contract_units() -> None:
    ev, baseline = event(), StepBaseline([3000.0])
    checker = LiveChecker(ev, baseline, now_s=ev.start_s)
    feed(checker, [(t, 1100.0) for t in range(10_000, 10_601, 5)])
    v = judge(ev, checker.final(), baseline)
    assert (v.baseline_wh, v.actual_wh, v.delivered_wh) == (500, 183, 317)  # 183.33 rounds down
    assert (v.award_w, v.seconds, v.tolerance_bps, v.window) == (2000, 600, 500, 7)
    assert v.required_wh == 317  # ceil(316.67)
    assert v.performed and v.shortfall_wh == 0 and v.coverage == 1.0
    # one Wh less is short, by one Wh
    short = judge(ev, replace(checker.final(), actual_wh=184.0), baseline)
    assert (short.delivered_wh, short.performed, short.shortfall_wh) == (316, False, 1)


def test_missing_time_is_filled_with_the_baseline_so_it_delivers_nothing() -> None:
    ev, baseline = event(), StepBaseline([3000.0, 2000.0])
    checker = LiveChecker(ev, baseline, now_s=ev.start_s, max_gap_s=30)
    feed(checker, [(t, 1000.0) for t in range(10_000, 10_301, 10)])  # data only in the first half
    final = checker.final()
    assert final.coverage == 0.5
    v = judge(ev, final, baseline)
    assert v.baseline_wh == (3000 * 300 + 2000 * 300) // 3600 == 416  # 250 + 166.67
    assert v.actual_wh == (1000 * 300 + 2000 * 300) // 3600 == 250  # 83.33 + the baseline's 166.67
    assert v.delivered_wh == 166 and not v.performed
    assert v.shortfall_wh == 317 - 166 and v.coverage == 0.5


def test_increase_and_negative_energies() -> None:
    ev = event(direction=Direction.INCREASE, award_w=1000)
    baseline = StepBaseline([500.0])
    checker = LiveChecker(ev, baseline, now_s=ev.start_s)
    feed(checker, [(t, 2000.0) for t in range(10_000, 10_601, 10)])
    v = judge(ev, checker.final(), baseline)
    assert (v.baseline_wh, v.actual_wh, v.delivered_wh, v.performed) == (83, 333, 250, True)
    # a net-exporting household: signed int64 energies, floored (docs/closed-loop.md, "Verdict")
    exporting = LiveChecker(event(), StepBaseline([-200.0]), now_s=10_000)
    feed(exporting, [(t, -3000.0) for t in range(10_000, 10_601, 10)])
    v = judge(event(), exporting.final(), StepBaseline([-200.0]))
    # baseline -200 W x 600 s = -33.33 Wh -> floor -34; actual -3000 W x 600 s = -500 Wh;
    # delivered = -34 - (-500) = 466 >= required 317
    assert (v.baseline_wh, v.actual_wh, v.delivered_wh, v.performed) == (-34, -500, 466, True)


def test_a_pv_household_exporting_in_the_window_is_credited_fully() -> None:
    """Baseline 1500 W import, the household exports 600 W through the window: 1500 x 600 / 3600 =
    250 Wh against -600 x 600 / 3600 = -100 Wh, so it delivered 350 Wh (>= 317 required). Clamped at
    0 as before, actual would have been 0 and delivered 250: short."""
    ev, baseline = event(), StepBaseline([1500.0])
    checker = LiveChecker(ev, baseline, now_s=ev.start_s)
    feed(checker, [(t, -600.0) for t in range(10_000, 10_601, 5)])
    v = judge(ev, checker.final(), baseline)
    assert (v.baseline_wh, v.actual_wh, v.delivered_wh, v.performed) == (250, -100, 350, True)


def test_whole_wh_absorbs_float_noise_but_not_real_fractions() -> None:
    assert whole_wh(sum([0.1] * 10) * 100) == 100  # 99.99999999999999
    assert whole_wh(99.9999) == 99 and whole_wh(-5.0) == -5
    assert whole_wh(-0.5) == -1 and whole_wh(-33.4) == -34  # floor for negatives too, not toward zero
    with pytest.raises(ValueError, match="int64"):
        whole_wh(2.0**70)
    with pytest.raises(ValueError, match="not finite"):
        whole_wh(float("inf"))


@settings(max_examples=300, deadline=None)
@given(
    baseline_w=st.integers(-20_000, 20_000), actual_w=st.integers(-20_000, 20_000),  # export < 0
    award_w=st.integers(1, 20_000), tolerance_bps=st.integers(0, 10_000),
    minutes=st.integers(1, 60), reduce=st.booleans(),
)
def test_the_verdict_is_the_contracts_for_constant_loads(baseline_w: int, actual_w: int, award_w: int,
                                                         tolerance_bps: int, minutes: int,
                                                         reduce: bool) -> None:
    seconds = minutes * 60
    ev = event(end=10_000 + seconds, award_w=award_w, tolerance_bps=tolerance_bps,
               direction=Direction.REDUCE if reduce else Direction.INCREASE)
    baseline = StepBaseline([float(baseline_w)], end=ev.end_s)
    checker = LiveChecker(ev, baseline, now_s=ev.start_s)
    feed(checker, [(float(t), float(actual_w)) for t in range(ev.start_s, ev.end_s + 1, 15)])
    v = judge(ev, checker.final(), baseline)
    # the same integers gateway/master/simulate.py puts in a Report for constant loads (Python's //
    # floors, for negative energies too: the rule of whole_wh)
    assert v.baseline_wh == baseline_w * seconds // 3600
    assert v.actual_wh == actual_w * seconds // 3600
    assert v.delivered_wh == market.delivered_wh(reduce=reduce, baseline_wh=v.baseline_wh,
                                                 actual_wh=v.actual_wh)
    # DRMarket.check(): deliveredWh*3600*10000 >= awardW*seconds*(10000-toleranceBps), by multiplication
    contract = v.delivered_wh * 3600 * 10_000 >= award_w * seconds * (10_000 - tolerance_bps)
    assert v.performed is contract
    assert (market.verdict(v.delivered_wh, award_w, seconds, tolerance_bps)
            is market.Outcome.PERFORMED) is contract
    assert (v.shortfall_wh == 0) is contract
    assert v.shortfall_wh == max(0, v.required_wh - v.delivered_wh)


@given(award_w=st.integers(1, 1_000_000), seconds=st.integers(1, 14_400),
       tolerance_bps=st.integers(0, 10_000))
def test_required_wh_is_the_least_whole_wh_that_performs(award_w: int, seconds: int,
                                                         tolerance_bps: int) -> None:
    need = required_wh(award_w, seconds, tolerance_bps)
    ok = market.Outcome.PERFORMED
    assert market.verdict(need, award_w, seconds, tolerance_bps) is ok
    assert need == 0 or market.verdict(need - 1, award_w, seconds, tolerance_bps) is not ok


def test_with_the_real_baseline_class() -> None:
    from gateway.loop.baselines import Baseline, Method

    ev = event(start=10_050, end=10_650)  # starts mid-slot of a 300 s grid
    baseline = Baseline(method=Method.CONTRACTED, window_start_s=10_050, window_end_s=10_650, slot_s=300,
                        slots_w=(3000.0, 3000.0, 1800.0), input_hash=b"\x00" * 32)
    checker = LiveChecker(ev, baseline, now_s=ev.start_s)
    feed(checker, [(t, 1000.0) for t in range(10_050, 10_651, 10)])
    final = checker.final()
    assert final.baseline_w == 1800.0  # last sample at the end reads the last slot
    v = judge(ev, final, baseline)
    assert v.baseline_wh == (3000 * 450 + 1800 * 150) // 3600 == 450
    assert (v.actual_wh, v.delivered_wh, v.performed) == (166, 284, False)
    assert run(ev, baseline, [(t, 800.0) for t in range(10_050, 10_651, 10)]) is market.Outcome.PERFORMED
