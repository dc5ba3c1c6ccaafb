"""Live check of one DR event: the main meter's samples against the baseline, projected to the window's end.

Pure: samples come in with their timestamps, nothing reads a clock. Energy is integrated by the
trapezoid rule between consecutive samples, clipped to the window [start, end) with the power at a
bound interpolated linearly. An interval between two samples longer than `max_gap_s` is not bridged:
it counts as missing time, delivers nothing, and lowers the coverage. Formulas: docs/closed-loop.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import DrgwError
from gateway.loop.events import Direction, DrEvent

DEFAULT_MAX_GAP_S = 30.0
DEFAULT_TAU_S = 60.0
# The baseline is defined on [start, end); it is read at most this far before `end` so that a
# baseline which refuses t == end (a half-open last slot) still answers for the last sample.
_EDGE_S = 1e-3


class BaselineLike(Protocol):
    """What the checker needs of a baseline (gateway.loop.baselines.Baseline provides it)."""

    def power_at(self, t_s: float) -> float:
        """Baseline power in W at `t_s` inside the window."""
        ...

    def energy_wh(self, start_s: float, end_s: float) -> float:
        """Integral of the baseline over [start_s, end_s] inside the window, in Wh."""
        ...


class SampleError(DrgwError):
    """A sample the checker cannot use: out of time order or not a finite number."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckState:
    """The event's standing after a sample. Energies in Wh over the covered part of the window.

    performance_w is the response in the wanted direction (baseline - actual for REDUCE, actual -
    baseline for INCREASE); recent_w its exponentially weighted mean, which the projection assumes
    for the remaining time.
    """

    t_s: float
    baseline_w: float
    actual_w: float
    performance_w: float
    deviation_w: float  # performance - award
    recent_w: float
    baseline_wh: float  # baseline energy over the covered time
    actual_wh: float  # measured energy over the covered time
    delivered_wh: float
    projected_wh: float  # delivered so far + recent_w x remaining time
    required_wh: float  # award x window hours x (1 - tolerance)
    remaining_s: float
    covered_s: float
    coverage: float  # covered / elapsed window time (1.0 before the window starts)
    shortfall: bool  # projected < required


class LiveChecker:
    """Integrates one event's samples. Feed it the main meter's samples from shortly before the start
    (the last one before the start anchors the first interval) until the first sample at or after the
    end, then take `final()`."""

    def __init__(self, event: DrEvent, baseline: BaselineLike, *, now_s: float,
                 max_gap_s: float = DEFAULT_MAX_GAP_S, tau_s: float = DEFAULT_TAU_S) -> None:
        if max_gap_s <= 0 or tau_s <= 0:
            raise ValueError("max_gap_s and tau_s must be > 0")
        self.event = event
        self.baseline = baseline
        self.max_gap_s = max_gap_s
        self.tau_s = tau_s
        self._sign = 1.0 if event.direction is Direction.REDUCE else -1.0
        self.required_wh = event.award_w * event.seconds * (10_000 - event.tolerance_bps) / 36_000_000
        self._last: tuple[float, float] | None = None  # (t, actual W) of the previous sample
        self._actual_ws = 0.0  # W·s: exact for integer powers and times, rounded once at the end
        self._baseline_wh = 0.0
        self._covered_s = 0.0
        self._recent_w: float | None = None
        self._state: CheckState | None = None
        # when the shell created the checker; after a restart mid-window it feeds the stored samples
        # of the elapsed part first, so samples before `started_s` are expected
        self.started_s = now_s

    @property
    def state(self) -> CheckState | None:
        """The state after the last sample; None before the first one."""
        return self._state

    def observe(self, t_s: float, actual_w: float) -> CheckState:
        """Take one sample of the main meter's active power (W, import positive)."""
        if not (math.isfinite(t_s) and math.isfinite(actual_w)):
            raise SampleError(f"event {self.event.event_id!r}: sample ({t_s}, {actual_w}) is not finite")
        if self._last is not None and t_s <= self._last[0]:
            raise SampleError(f"event {self.event.event_id!r}: sample at {t_s} is not after the "
                              f"previous one at {self._last[0]}; feed samples in time order")
        baseline_w = self.baseline.power_at(self._inside(t_s))
        performance = self._sign * (baseline_w - actual_w)
        if self._last is not None:
            self._integrate(self._last, (t_s, actual_w))
        if self._recent_w is None or self._last is None:
            self._recent_w = performance
        else:
            # time-weighted EWMA: irregular samples weigh by the time they stand for
            alpha = 1.0 - math.exp(-(t_s - self._last[0]) / self.tau_s)
            self._recent_w += alpha * (performance - self._recent_w)
        self._last = (t_s, actual_w)
        self._state = self._make_state(t_s, baseline_w, actual_w)
        return self._state

    def retarget(self, event: DrEvent) -> None:
        """Take a newer modification of the active event (the book allows end, award and tolerance to
        change then; start, baseline and direction are fixed). Energy so far is kept: a shortened end
        lies after `now` (EventBook refuses otherwise), so no integrated interval is past it."""
        old = self.event
        if (event.event_id, event.start_s, event.direction) != (old.event_id, old.start_s, old.direction):
            raise ValueError(f"retarget of {old.event_id!r}: only end, award and tolerance may change")
        self.event = event
        self.required_wh = event.award_w * event.seconds * (10_000 - event.tolerance_bps) / 36_000_000

    def final(self) -> CheckState:
        """The state at the end of the window. Time after the last sample counts as missing, so call
        it after the first sample at or after the end (or once that sample is overdue)."""
        if self._state is None:
            # no sample at all: nothing measured, nothing delivered; coverage 0 says so
            baseline_w = self.baseline.power_at(self._inside(self.event.end_s))
            return self._make_state(self.event.end_s, baseline_w, baseline_w)
        return self._make_state(self.event.end_s, self._state.baseline_w, self._state.actual_w)

    # ---- internals

    def _inside(self, t_s: float) -> float:
        return min(max(t_s, float(self.event.start_s)), self.event.end_s - _EDGE_S)

    def _integrate(self, a: tuple[float, float], b: tuple[float, float]) -> None:
        (t0, p0), (t1, p1) = a, b
        lo, hi = max(t0, self.event.start_s), min(t1, self.event.end_s)
        if hi <= lo or t1 - t0 > self.max_gap_s:
            return  # outside the window, or a gap: missing time, nothing delivered
        slope = (p1 - p0) / (t1 - t0)
        p_lo, p_hi = p0 + slope * (lo - t0), p0 + slope * (hi - t0)
        self._actual_ws += (p_lo + p_hi) / 2 * (hi - lo)
        self._baseline_wh += self.baseline.energy_wh(lo, hi)
        self._covered_s += hi - lo

    def _make_state(self, t_s: float, baseline_w: float, actual_w: float) -> CheckState:
        ev = self.event
        elapsed = min(max(t_s - ev.start_s, 0.0), float(ev.seconds))
        remaining = ev.seconds - elapsed
        actual_wh = self._actual_ws / 3600
        delivered = self._sign * (self._baseline_wh - actual_wh)
        recent = 0.0 if self._recent_w is None else self._recent_w
        projected = delivered + recent * remaining / 3600
        performance = self._sign * (baseline_w - actual_w)
        return CheckState(
            t_s=t_s, baseline_w=baseline_w, actual_w=actual_w, performance_w=performance,
            deviation_w=performance - ev.award_w, recent_w=recent, baseline_wh=self._baseline_wh,
            actual_wh=actual_wh, delivered_wh=delivered, projected_wh=projected,
            required_wh=self.required_wh, remaining_s=remaining, covered_s=self._covered_s,
            coverage=self._covered_s / elapsed if elapsed > 0 else 1.0,
            shortfall=projected < self.required_wh,
        )
