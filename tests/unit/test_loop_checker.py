"""Live checker: trapezoid integration, window clipping, gaps and coverage, projection and shortfall."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pytest

from gateway.loop.checker import LiveChecker, SampleError
from gateway.loop.events import Direction, DrEvent, EventSource

START, END = 10_000, 10_600


class StepBaseline:
    """A baseline of constant-power slots over [start, end) that refuses to answer outside it, as
    gateway.loop.baselines.Baseline does."""

    def __init__(self, slots_w: Sequence[float], *, start: int = START, end: int = END) -> None:
        self.start, self.end, self.slots_w = start, end, tuple(slots_w)
        self.slot_s = (end - start) / len(self.slots_w)

    def power_at(self, t_s: float) -> float:
        if not self.start <= t_s < self.end:
            raise ValueError(f"t={t_s} outside the window")
        return self.slots_w[int((t_s - self.start) // self.slot_s)]

    def energy_wh(self, start_s: float, end_s: float) -> float:
        total = 0.0
        for i, watts in enumerate(self.slots_w):
            s0 = self.start + i * self.slot_s
            overlap = min(end_s, s0 + self.slot_s, self.end) - max(start_s, s0, self.start)
            total += watts * max(overlap, 0.0)
        return total / 3600


def event(**changes: object) -> DrEvent:
    base = DrEvent(event_id="mqtt:1", source=EventSource.MQTT, modification=1, start_s=START,
                   end_s=END, award_w=2000, direction=Direction.REDUCE, tolerance_bps=500)
    return replace(base, **changes)  # type: ignore[arg-type]


def feed(checker: LiveChecker, samples: Sequence[tuple[float, float]]) -> None:
    for t, w in samples:
        checker.observe(t, w)


def test_constant_response_over_the_whole_window() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0]), now_s=9_000)
    assert c.state is None
    feed(c, [(t, 1000.0) for t in range(9_990, 10_601, 10)])
    s = c.final()
    assert s.baseline_wh == pytest.approx(500.0) and s.actual_wh == 1000 * 600 / 3600
    assert s.delivered_wh == pytest.approx(2000 * 600 / 3600)
    assert s.required_wh == pytest.approx(2000 * 600 * 0.95 / 3600)  # 316.67 Wh
    assert (s.covered_s, s.coverage, s.remaining_s, s.shortfall) == (600, 1.0, 0, False)
    assert s.projected_wh == s.delivered_wh
    assert (s.performance_w, s.deviation_w) == (2000, 0)


def test_intervals_are_clipped_at_both_bounds_with_interpolated_power() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0]), now_s=START, max_gap_s=600)
    # 9995..10005 crosses the start: 1500 W at 10000 by interpolation; 10595..10605 crosses the end
    feed(c, [(9_995, 1000.0), (10_005, 2000.0), (10_595, 2000.0), (10_605, 1000.0)])
    s = c.final()
    joules = (1500 + 2000) / 2 * 5 + 2000 * 590 + (2000 + 1500) / 2 * 5
    assert s.actual_wh * 3600 == joules == 1_197_500
    assert s.covered_s == 600 and s.coverage == 1.0


def test_samples_outside_the_window_add_nothing() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0]), now_s=0)
    s = c.observe(9_000, 500.0)
    s = c.observe(9_010, 500.0)
    assert (s.actual_wh, s.baseline_wh, s.delivered_wh, s.covered_s, s.coverage) == (0, 0, 0, 0, 1.0)
    assert s.baseline_w == 3000  # read at the start: the baseline exists only in the window
    assert s.remaining_s == 600 and s.projected_wh == pytest.approx(2500 * 600 / 3600)
    feed(c, [(10_700, 500.0), (10_710, 500.0)])
    assert c.final().actual_wh == 0 and c.final().coverage == 0


def test_a_gap_longer_than_the_maximum_is_missing_time_and_delivers_nothing() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0]), now_s=START, max_gap_s=30)
    samples = [(float(t), 1000.0) for t in range(10_000, 10_101, 10)]
    samples += [(float(t), 1000.0) for t in range(10_200, 10_601, 10)]  # 10100..10200 is a gap
    feed(c, samples[:11])
    mid = c.observe(10_200, 1000.0)
    assert mid.covered_s == 100 and mid.coverage == pytest.approx(100 / 200)
    feed(c, samples[12:])
    s = c.final()
    assert s.covered_s == 500 and s.coverage == pytest.approx(500 / 600)
    assert s.baseline_wh == pytest.approx(3000 * 500 / 3600)
    assert s.delivered_wh == pytest.approx(2000 * 500 / 3600)  # 277.8 < 316.7 required
    assert s.shortfall
    # exactly max_gap_s apart is still bridged
    edge = LiveChecker(event(), StepBaseline([3000.0]), now_s=START, max_gap_s=30)
    feed(edge, [(10_000, 1000.0), (10_030, 1000.0)])
    assert edge.state is not None and edge.state.covered_s == 30


def test_time_after_the_last_sample_and_before_the_first_counts_as_missing() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0]), now_s=START)
    feed(c, [(t, 1000.0) for t in range(10_060, 10_541, 10)])
    s = c.final()
    assert s.covered_s == 480 and s.coverage == pytest.approx(0.8)
    assert (s.t_s, s.remaining_s) == (END, 0)
    empty = LiveChecker(event(), StepBaseline([3000.0]), now_s=START).final()
    assert (empty.covered_s, empty.coverage, empty.delivered_wh, empty.performance_w) == (0, 0, 0, 0)
    assert empty.shortfall


def test_trapezoid_of_a_ramp_and_a_stepped_baseline_are_exact() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0, 2400.0]), now_s=START, max_gap_s=120)
    # actual ramps 0 -> 1200 W linearly over the window, sampled irregularly
    times = [10_000, 10_007, 10_100, 10_150, 10_151, 10_263, 10_300, 10_399, 10_480, 10_600]
    feed(c, [(float(t), 2.0 * (t - START)) for t in times])
    s = c.final()
    assert s.actual_wh == pytest.approx(1200 / 2 * 600 / 3600, rel=1e-12)  # 100 Wh
    assert s.baseline_wh == pytest.approx((3000 * 300 + 2400 * 300) / 3600, rel=1e-12)  # 450 Wh
    assert s.delivered_wh == pytest.approx(350, rel=1e-12)
    assert s.baseline_w == 2400  # the last slot, read just before the end


def test_increase_events_count_load_above_the_baseline() -> None:
    c = LiveChecker(event(direction=Direction.INCREASE, award_w=1000), StepBaseline([500.0]), now_s=START)
    s = c.observe(START, 2000.0)
    assert (s.performance_w, s.deviation_w) == (1500, 500)
    feed(c, [(t, 2000.0) for t in range(10_010, 10_601, 10)])
    s = c.final()
    assert s.delivered_wh == pytest.approx(1500 * 600 / 3600)
    assert s.required_wh == pytest.approx(1000 * 600 * 0.95 / 3600) and not s.shortfall


def test_projection_follows_recent_performance_and_flags_a_shortfall() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0]), now_s=START, tau_s=60)
    feed(c, [(float(t), 1000.0) for t in range(9_990, 10_301, 10)])
    s = c.observe(10_310, 1000.0)
    assert s.recent_w == pytest.approx(2000)
    assert s.projected_wh == pytest.approx(2000 * 600 / 3600) and not s.shortfall
    # the response collapses to 500 W at 10320: the EWMA moves by 1 - e^(-10/60) per 10 s sample
    s = c.observe(10_320, 2500.0)
    alpha = 1 - math.exp(-10 / 60)
    assert s.recent_w == pytest.approx(2000 + alpha * (500 - 2000))
    # the trapezoid of the 10310..10320 step
    assert s.delivered_wh == pytest.approx((2000 * 310 + (2000 + 500) / 2 * 10) / 3600)
    assert s.projected_wh == pytest.approx(s.delivered_wh + s.recent_w * 280 / 3600)
    for t in range(10_330, 10_500, 10):
        s = c.observe(t, 2500.0)
    assert s.shortfall and s.projected_wh < s.required_wh
    assert s.deviation_w == 500 - 2000


def test_a_modified_active_event_keeps_its_energy_and_takes_the_new_award_and_end() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0], end=10_900), now_s=START)
    feed(c, [(t, 1000.0) for t in range(10_000, 10_301, 10)])
    c.retarget(event(modification=2, end_s=10_900, award_w=1000, tolerance_bps=0))
    s = c.observe(10_310, 1000.0)
    assert s.delivered_wh == pytest.approx(2000 * 310 / 3600)
    assert s.required_wh == 1000 * 900 / 3600 and s.remaining_s == 590
    feed(c, [(t, 1000.0) for t in range(10_320, 10_901, 10)])
    assert c.final().covered_s == 900
    with pytest.raises(ValueError, match="only end, award and tolerance may change"):
        c.retarget(event(start_s=10_100))


def test_bad_samples_are_refused_with_the_event_named() -> None:
    c = LiveChecker(event(), StepBaseline([3000.0]), now_s=START)
    c.observe(10_010, 1000.0)
    with pytest.raises(SampleError, match="'mqtt:1': sample at 10010 is not after the previous one"):
        c.observe(10_010, 900.0)
    with pytest.raises(SampleError, match="not finite"):
        c.observe(10_020, math.nan)
    with pytest.raises(ValueError, match="max_gap_s and tau_s must be > 0"):
        LiveChecker(event(), StepBaseline([3000.0]), now_s=START, max_gap_s=0)
