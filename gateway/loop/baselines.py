"""DR baselines as pure code: what the home would have drawn in a DR window, and a hash of the inputs.

No I/O, no clock, no store: the caller passes the main meter's load history (`History`) and the window;
`compute` returns a `Baseline` (power per slot of the window) whose `input_hash` covers the method, its
parameters, the window, the calendar and every history value read, so anyone holding the same history
can recompute the baseline a Report names. This module holds the methods; what an event asks for is in
baseline_spec.py, the history and its local calendar in baseline_history.py, the hash encoding in
baseline_hash.py (all re-exported here). The rules, their sources and the encoding: docs/baselines.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import DrgwError
from gateway.loop.baseline_hash import HASH_TAG, ZONE_TAG, input_hash
from gateway.loop.baseline_history import DAY_S, SLOT_S, History, Slot
from gateway.loop.baseline_spec import BaselineSpec, Method

__all__ = ["DAY_S", "HASH_TAG", "SLOT_S", "ZONE_TAG", "Baseline", "BaselineSpec", "BaselineUnavailable",
           "History", "Method", "Slot", "compute"]


class BaselineUnavailable(DrgwError):
    """The history does not hold what the method needs; the message says what is missing and the way out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    """Baseline power per slot of the window. The slots are the `slot_s` grid slots overlapping the window:
    the first may start before `window_start_s` and the last end after `window_end_s`."""

    method: Method
    window_start_s: int
    window_end_s: int
    slot_s: int
    slots_w: tuple[float, ...]
    input_hash: bytes
    days_used: tuple[dt.date, ...] = ()
    adjustment: float = 1.0
    inputs_end_s: int | None = None  # no history slot ending after this was read (the commit time)

    @property
    def first_slot_s(self) -> int:
        return self.window_start_s - self.window_start_s % self.slot_s

    def power_at(self, t_s: float) -> float:
        """Baseline power (W) at time `t_s`, in the half-open window [start, end)."""
        if not self.window_start_s <= t_s < self.window_end_s:
            raise ValueError(f"t={t_s} is outside the baseline's window "
                             f"[{self.window_start_s}, {self.window_end_s})")
        return self.slots_w[int((t_s - self.first_slot_s) // self.slot_s)]

    def energy_wh(self, start_s: float | None = None, end_s: float | None = None) -> float:
        """Integral of the baseline (Wh) over [start, end] clipped to the window (whole window by default)."""
        if start_s is not None and end_s is not None and end_s < start_s:
            raise ValueError(f"energy_wh: end_s ({end_s}) is before start_s ({start_s})")
        a = self.window_start_s if start_s is None else max(start_s, self.window_start_s)
        b = self.window_end_s if end_s is None else min(end_s, self.window_end_s)
        total = 0.0
        for i, watts in enumerate(self.slots_w):
            s0 = self.first_slot_s + i * self.slot_s
            overlap = min(b, s0 + self.slot_s) - max(a, s0)
            if overlap > 0:
                total += watts * overlap
        return total / 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Day:
    """A candidate day of a day-matched method: its local date, how far back, its window mean."""

    date: dt.date
    shift_s: int
    mean_w: float


class _Reader:
    """Slot lookup over one History that remembers every slot it returned: those go into the input hash."""

    __slots__ = ("by_start", "cut_s", "read", "slot_s")

    def __init__(self, history: History, cut_s: int | None = None) -> None:
        self.slot_s = history.slot_s
        self.by_start = {slot.start_s: slot for slot in history.slots}
        self.read: set[int] = set()
        self.cut_s = cut_s  # a slot that ends after it is not an input (measured after the commit)

    def get(self, start_s: int) -> Slot | None:
        slot = self.by_start.get(start_s)
        if slot is None or slot.coverage <= 0.0:
            return None
        if self.cut_s is not None and start_s + self.slot_s > self.cut_s:
            return None
        self.read.add(start_s)
        return slot

    def slots_read(self) -> list[Slot]:
        return [self.by_start[s] for s in sorted(self.read)]

    def period(self, a: int, b: int) -> tuple[float, float | None]:
        """(coverage share, coverage-weighted mean W) of [a, b); slots count by overlap x coverage."""
        weight = acc = 0.0
        for s in range(a - a % self.slot_s, b, self.slot_s):
            slot = self.get(s)
            if slot is not None:
                w = (min(b, s + self.slot_s) - max(a, s)) * slot.coverage
                weight, acc = weight + w, acc + w * slot.avg_w
        return weight / (b - a), (acc / weight if weight > 0 else None)

    def across_days(self, start_s: int, shifts: Iterable[int]) -> float | None:
        """Coverage-weighted mean of slot `start_s` moved back by each shift (one a day); None if no data."""
        weight = acc = 0.0
        for shift in shifts:
            slot = self.get(start_s - shift)
            if slot is not None:
                weight, acc = weight + slot.coverage, acc + slot.coverage * slot.avg_w
        return acc / weight if weight > 0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    spec: BaselineSpec
    history: History
    start_s: int
    end_s: int
    cut_s: int | None = None

    @property
    def first_s(self) -> int:
        return self.start_s - self.start_s % self.history.slot_s

    @property
    def inputs_end_s(self) -> int:
        """Where measured inputs end: the window's first slot, or the commit's slot if earlier."""
        return self.first_s if self.cut_s is None else min(self.first_s, self.cut_s)

    @property
    def starts(self) -> range:
        return range(self.first_s, self.end_s, self.history.slot_s)

    def adjustment_period(self) -> tuple[int, int] | None:
        if not self.spec.takes("adjust") or not self.spec.param("adjust"):
            return None
        return (self.first_s - int(self.spec.param("adjust_from_min")) * 60,
                self.first_s - int(self.spec.param("adjust_to_min")) * 60)

    def span(self, a: int, b: int) -> str:
        return f"{self.history.local_text(a)}-{self.history.local_text(b)[-5:]}"

    def unavailable(self, what: str) -> BaselineUnavailable:
        return BaselineUnavailable(f"{self.spec.method.name} baseline for the window starting "
                                   f"{self.history.local_text(self.start_s)} (local): {what}")


def compute(spec: BaselineSpec, history: History, *, window_start_s: int, window_end_s: int,
            inputs_end_s: int | None = None) -> Baseline:
    """The baseline `spec` asks for over [window_start_s, window_end_s), from `history` alone.

    `inputs_end_s` (the commit time) makes it a baseline fixed before the window: only history slots
    that ended by then (on the slot grid) are read, and PRE_EVENT's period ends there
    (docs/baselines.md, "Committed baselines")."""
    for name, value in (("window_start_s", window_start_s), ("window_end_s", window_end_s),
                        ("inputs_end_s", window_start_s if inputs_end_s is None else inputs_end_s)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer of unix seconds, got {value!r}")
    if window_end_s <= window_start_s:
        raise ValueError(f"window_end_s ({window_end_s}) must be after window_start_s ({window_start_s})")
    # a contracted curve reads no measurement: nothing to cut, and its hash stays the curve's own
    measured = inputs_end_s is not None and spec.method is not Method.CONTRACTED
    cut = inputs_end_s - inputs_end_s % history.slot_s if measured and inputs_end_s is not None else None
    job = _Job(spec=spec, history=history, start_s=window_start_s, end_s=window_end_s, cut_s=cut)
    reader = _Reader(history, cut)
    days: tuple[dt.date, ...] = ()
    adjustment = 1.0
    if spec.method is Method.CONTRACTED:
        if len(spec.curve_w) != len(job.starts):
            raise ValueError(f"CONTRACTED curve_w has {len(spec.curve_w)} values but the window spans "
                             f"{len(job.starts)} slots of {history.slot_s} s: give one value per slot")
        values = spec.curve_w
    elif spec.method is Method.PRE_EVENT:
        values = _pre_event(job, reader)
        days = tuple(sorted({history.local_date(s) for s in reader.read}))
    else:
        if window_end_s - window_start_s > DAY_S:
            raise ValueError(f"a {spec.method.name} window must not exceed one day, got "
                             f"{window_end_s - window_start_s} s")
        values, days, adjustment = _day_matched(job, reader)
    return Baseline(method=spec.method, window_start_s=window_start_s, window_end_s=window_end_s,
                    slot_s=history.slot_s, slots_w=tuple(values), days_used=days, adjustment=adjustment,
                    inputs_end_s=cut,
                    input_hash=input_hash(spec=spec, history=history, window_start_s=window_start_s,
                                          window_end_s=window_end_s, days=days, read=reader.slots_read(),
                                          inputs_end_s=cut))


def _pre_event(job: _Job, reader: _Reader) -> tuple[float, ...]:
    # The period ends at the start of the window's first slot, never inside it: that slot's average
    # already holds load from the event itself when the window starts mid-slot. A committed baseline
    # ends it at the commit instead: only measurements made before the commitment are its inputs.
    b = job.inputs_end_s
    a = b - int(job.spec.param("minutes")) * 60
    coverage, mean = reader.period(a, b)
    if mean is None or coverage < job.spec.param("min_coverage"):
        need = job.spec.param("min_coverage")
        raise job.unavailable(f"readings cover {coverage:.0%} of {job.span(a, b)}, {need:.0%} needed; "
                              "wait for data or lower min_coverage")
    return (mean,) * len(job.starts)


def _candidates(job: _Job, reader: _Reader, wanted: int) -> tuple[list[_Day], str]:
    """The `wanted` most recent eligible days, newest first, and a note of what was excluded."""
    spec, history = job.spec, job.history
    event_day = history.local_date(job.start_s)
    # RECENT_DAYS always takes working days; the others match the event day type (CAISO, PG&E; see docs).
    working = spec.method is Method.RECENT_DAYS or history.is_working_day(event_day)
    adjust = job.adjustment_period()
    found: list[_Day] = []
    skipped = {"other day type": 0, "DR event": 0, "low coverage": 0}
    for k in range(1, int(spec.param("lookback_days")) + 1):
        # the same local time k days back: with a time zone, each day with its own UTC offset
        day, shift = event_day - dt.timedelta(days=k), history.days_back(job.start_s, k)
        if history.is_working_day(day) != working:
            skipped["other day type"] += 1
            continue
        if day in history.event_days:
            skipped["DR event"] += 1
            continue
        coverage, mean = reader.period(job.start_s - shift, job.end_s - shift)
        if adjust is not None:
            coverage = min(coverage, reader.period(adjust[0] - shift, adjust[1] - shift)[0])
        if mean is None or coverage < spec.param("min_coverage"):
            skipped["low coverage"] += 1
            continue
        found.append(_Day(date=day, shift_s=shift, mean_w=mean))
        if len(found) == wanted:
            break
    kind = "working" if working else "weekend/holiday"
    note = f"{kind} days; skipped " + ", ".join(f"{n} {why}" for why, n in skipped.items())
    return found, note


def _day_matched(job: _Job, reader: _Reader) -> tuple[tuple[float, ...], tuple[dt.date, ...], float]:
    spec = job.spec
    high = spec.method is Method.HIGH_X_OF_Y
    wanted = int(spec.param("y" if high else "days"))
    found, note = _candidates(job, reader, wanted)
    if len(found) < spec.param("min_days"):
        raise job.unavailable(f"needs at least {spec.param('min_days')} eligible days in the "
                              f"{spec.param('lookback_days')} days before, found {len(found)} ({note}); "
                              "record more history, lower min_days, or use PRE_EVENT")
    if high:  # the X days with the highest window load; ties go to the more recent day
        found = sorted(found, key=lambda c: (-c.mean_w, c.shift_s))[: int(spec.param("x"))]
    shifts = sorted(c.shift_s for c in found)
    values: list[float] = []
    for s in job.starts:
        mean = reader.across_days(s, shifts)
        if mean is None:
            raise job.unavailable(f"no reading for the slot at {job.history.local_text(s)[-5:]} on any "
                                  "selected day")
        values.append(mean)
    adjustment = _day_of_adjustment(job, reader, shifts)
    days = tuple(sorted(c.date for c in found))
    return tuple(v * adjustment for v in values), days, adjustment


def _day_of_adjustment(job: _Job, reader: _Reader, shifts: list[int]) -> float:
    """Event-day load over the adjustment period / baseline over the same slots, capped to 1 +/- cap.

    Both sums weight each slot by the event day's overlap x coverage, so a gap on the event day takes
    the same slot out of numerator and denominator (like is compared with like)."""
    period = job.adjustment_period()
    if period is None:
        return 1.0
    a, b = period
    slot_s, spec = job.history.slot_s, job.spec
    num = den = weight = 0.0
    for s in range(a - a % slot_s, b, slot_s):
        event = reader.get(s)
        if event is None:
            continue
        w = (min(b, s + slot_s) - max(a, s)) * event.coverage
        weight += w
        base = reader.across_days(s, shifts)
        if base is not None:
            num, den = num + w * event.avg_w, den + w * base
    span, need = job.span(a, b), spec.param("min_coverage")
    if weight / (b - a) < need:
        raise job.unavailable(f"the day-of adjustment needs readings over {span}; they cover "
                              f"{weight / (b - a):.0%}, {need:.0%} needed; or set adjust=0")
    cap = float(spec.param("cap"))
    if den > 0:
        return min(max(num / den, 1.0 - cap), 1.0 + cap)
    if den == 0 and num == 0:
        return 1.0
    raise job.unavailable(f"a multiplicative day-of adjustment is undefined: the baseline over {span} is "
                          f"{den / weight:.1f} W (not positive, e.g. net export); set adjust=0")
