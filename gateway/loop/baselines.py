"""DR baselines as pure code: what the home would have drawn in a DR window, and a hash of the inputs.

No I/O, no clock, no store: the caller passes the main meter's load history (`History`) and the window;
`compute` returns a `Baseline` (power per slot of the window) whose `input_hash` covers the method, its
parameters, the window and every history value read, so anyone holding the same history can recompute
the baseline a Report names. The rules, their sources and the hash encoding are in docs/baselines.md.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

from gateway.errors import DrgwError
from gateway.measurement.eip712 import keccak256

SLOT_S = 300
DAY_S = 86_400
HASH_TAG = b"drgw-baseline/1"  # first bytes of the hashed encoding; bump with any encoding change
_EPOCH = dt.date(1970, 1, 1)


class BaselineUnavailable(DrgwError):
    """The history does not hold what the method needs; the message says what is missing and the way out."""


class Method(IntEnum):
    """Baseline method ids, as they go on chain in the Report (uint16). 0 is the simulator's rated load."""

    CONTRACTED = 1
    PRE_EVENT = 2
    TEN_IN_TEN = 3
    HIGH_X_OF_Y = 4
    RECENT_DAYS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One interval of main-meter load: mean active power (W, import positive), share of good readings."""

    start_s: int
    avg_w: float
    coverage: float


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """The load history a baseline is computed from. Missing slots are missing data (coverage 0)."""

    slot_s: int
    slots: tuple[Slot, ...]
    utc_offset_s: int = 0
    event_days: frozenset[dt.date] = frozenset()
    holidays: frozenset[dt.date] = frozenset()

    def __post_init__(self) -> None:
        if not 0 < self.slot_s <= DAY_S or DAY_S % self.slot_s:
            # Whole days must be whole slots: a day-matched baseline reads "the same slot, k days ago".
            raise ValueError(f"History.slot_s must divide 86400 (60, 300, 900, 3600...), got {self.slot_s}")
        if abs(self.utc_offset_s) > 14 * 3600:
            raise ValueError(f"History.utc_offset_s must be within +/-14 h, got {self.utc_offset_s} s")
        previous: int | None = None
        for i, slot in enumerate(self.slots):
            where = f"History.slots[{i}] (start_s={slot.start_s})"
            if slot.start_s % self.slot_s:
                raise ValueError(f"{where} is not on the {self.slot_s} s grid (start_s % slot_s must be 0)")
            if previous is not None and slot.start_s <= previous:
                raise ValueError(f"{where} is not after the slot before it: sort by start_s, no duplicates")
            if not math.isfinite(slot.avg_w) or not 0.0 <= slot.coverage <= 1.0:
                raise ValueError(f"{where}: avg_w must be finite and coverage in 0..1, "
                                 f"got {slot.avg_w!r}, {slot.coverage!r}")
            previous = slot.start_s

    def local_date(self, t_s: int) -> dt.date:
        """The local calendar date of unix time `t_s` (one fixed offset: DST changes are not modelled)."""
        return _EPOCH + dt.timedelta(days=(t_s + self.utc_offset_s) // DAY_S)

    def is_working_day(self, day: dt.date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def local_text(self, t_s: int) -> str:
        return dt.datetime.fromtimestamp(t_s + self.utc_offset_s, dt.UTC).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True, slots=True)
class _Rule:
    default: int | float
    lo: int | float
    hi: int | float
    integer: bool = True


_COVERAGE = _Rule(0.9, 0.0, 1.0, integer=False)
_LOOKBACK = _Rule(45, 1, 366)
_ADJUSTMENT = MappingProxyType({
    "cap": _Rule(0.2, 0.0, 1.0, integer=False), "adjust_from_min": _Rule(240, 1, 1440),
    "adjust_to_min": _Rule(60, 0, 1439), "min_coverage": _COVERAGE, "lookback_days": _LOOKBACK})
_RULES: Mapping[Method, Mapping[str, _Rule]] = MappingProxyType({
    Method.CONTRACTED: MappingProxyType({}),
    Method.PRE_EVENT: MappingProxyType({"minutes": _Rule(30, 1, 1440), "min_coverage": _COVERAGE}),
    Method.TEN_IN_TEN: MappingProxyType({"days": _Rule(10, 1, 60), "min_days": _Rule(5, 1, 60),
                                         "adjust": _Rule(1, 0, 1), **_ADJUSTMENT}),
    Method.HIGH_X_OF_Y: MappingProxyType({"x": _Rule(5, 1, 60), "y": _Rule(10, 1, 60),
                                          "min_days": _Rule(5, 1, 60), "adjust": _Rule(0, 0, 1),
                                          **_ADJUSTMENT}),
    Method.RECENT_DAYS: MappingProxyType({"days": _Rule(5, 1, 60), "min_days": _Rule(5, 1, 60),
                                          "min_coverage": _COVERAGE, "lookback_days": _LOOKBACK}),
})


def _method(value: Method | int) -> Method:
    try:
        return Method(value)
    except ValueError:
        raise ValueError(f"unknown baseline method id {value!r}; "
                         f"known: {', '.join(f'{m.value}={m.name}' for m in Method)}") from None


def _checked(method: Method, name: str, value: object) -> int | float:
    rules = _RULES[method]
    if name not in rules:
        close = difflib.get_close_matches(name, list(rules), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown baseline parameter '{name}' for {method.name}; {hint}"
                         f"allowed: {', '.join(sorted(rules)) or 'none'}")
    rule = rules[name]
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or (rule.integer and not float(value).is_integer()) or not rule.lo <= value <= rule.hi):
        kind = "an integer" if rule.integer else "a number"
        raise ValueError(f"baseline parameter '{name}' of {method.name} must be {kind} in "
                         f"{rule.lo}..{rule.hi}, got {value!r}")
    return int(value) if rule.integer else float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineSpec:
    """What an event asks for. `params` is normalised to sorted (name, value) pairs; unset ones default."""

    method: Method
    params: tuple[tuple[str, int | float], ...] = ()
    curve_w: tuple[float, ...] = ()

    @classmethod
    def make(
        cls, method: Method | int, *, curve_w: Iterable[float] = (), **params: int | float
    ) -> BaselineSpec:
        """`BaselineSpec.make(Method.HIGH_X_OF_Y, x=4, y=5)`: parameters as keywords, validated."""
        return cls(method=_method(method), params=tuple(params.items()), curve_w=tuple(curve_w))

    def __post_init__(self) -> None:
        method = _method(self.method)
        given = list(self.params.items() if isinstance(self.params, Mapping) else self.params)  # JSON form
        names = [name for name, _ in given]
        if len(set(names)) != len(names):
            raise ValueError(f"baseline parameters repeat a name: {names}")
        params = tuple(sorted((name, _checked(method, name, value)) for name, value in given))
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "curve_w", tuple(float(v) for v in self.curve_w))
        if (method is Method.CONTRACTED) != bool(self.curve_w):
            raise ValueError("curve_w is required for CONTRACTED (one W value per window slot) "
                             "and not allowed for any other method")
        if not all(math.isfinite(v) for v in self.curve_w):
            raise ValueError("curve_w values must be finite numbers of W")
        self._check_together()

    def _check_together(self) -> None:
        p, name = self.param, self.method.name
        for low, high in (("min_days", "days"), ("x", "y"), ("min_days", "y")):
            if low in _RULES[self.method] and high in _RULES[self.method] and p(low) > p(high):
                raise ValueError(f"baseline parameter '{low}' ({p(low)}) of {name} must not exceed "
                                 f"'{high}' ({p(high)})")
        if "adjust_to_min" in _RULES[self.method] and p("adjust_to_min") >= p("adjust_from_min"):
            raise ValueError(f"baseline parameter 'adjust_to_min' ({p('adjust_to_min')}) of {name} must be "
                             f"less than 'adjust_from_min' ({p('adjust_from_min')}): both count minutes "
                             "back from the window start")

    def param(self, name: str) -> int | float:
        """The value of a parameter: as given, else the method's default."""
        given = dict(self.params)
        return given[name] if name in given else _RULES[self.method][name].default

    def resolved(self) -> tuple[tuple[str, int | float], ...]:
        """Every parameter of the method, given or default, sorted by name (what the input hash covers)."""
        return tuple((name, self.param(name)) for name in sorted(_RULES[self.method]))


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


class _Reader:
    """Slot lookup over one History that remembers every slot it returned: those go into the input hash."""

    __slots__ = ("by_start", "read", "slot_s")

    def __init__(self, history: History) -> None:
        self.slot_s = history.slot_s
        self.by_start = {slot.start_s: slot for slot in history.slots}
        self.read: set[int] = set()

    def get(self, start_s: int) -> Slot | None:
        slot = self.by_start.get(start_s)
        if slot is None or slot.coverage <= 0.0:
            return None
        self.read.add(start_s)
        return slot

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
        """Coverage-weighted mean of slot `start_s` moved back by each shift (whole days); None if no data."""
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

    @property
    def first_s(self) -> int:
        return self.start_s - self.start_s % self.history.slot_s

    @property
    def starts(self) -> range:
        return range(self.first_s, self.end_s, self.history.slot_s)

    def adjustment_period(self) -> tuple[int, int] | None:
        if "adjust" not in _RULES[self.spec.method] or not self.spec.param("adjust"):
            return None
        return (self.first_s - int(self.spec.param("adjust_from_min")) * 60,
                self.first_s - int(self.spec.param("adjust_to_min")) * 60)

    def span(self, a: int, b: int) -> str:
        return f"{self.history.local_text(a)}-{self.history.local_text(b)[-5:]}"

    def unavailable(self, what: str) -> BaselineUnavailable:
        return BaselineUnavailable(f"{self.spec.method.name} baseline for the window starting "
                                   f"{self.history.local_text(self.start_s)} (local): {what}")


def compute(spec: BaselineSpec, history: History, *, window_start_s: int, window_end_s: int) -> Baseline:
    """The baseline `spec` asks for over [window_start_s, window_end_s), from `history` alone."""
    for name, value in (("window_start_s", window_start_s), ("window_end_s", window_end_s)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer of unix seconds, got {value!r}")
    if window_end_s <= window_start_s:
        raise ValueError(f"window_end_s ({window_end_s}) must be after window_start_s ({window_start_s})")
    job = _Job(spec=spec, history=history, start_s=window_start_s, end_s=window_end_s)
    reader = _Reader(history)
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
                    input_hash=_input_hash(job, days, reader))


def _pre_event(job: _Job, reader: _Reader) -> tuple[float, ...]:
    # The period ends at the start of the window's first slot, never inside it: that slot's average
    # already holds load from the event itself when the window starts mid-slot.
    b = job.first_s
    a = b - int(job.spec.param("minutes")) * 60
    coverage, mean = reader.period(a, b)
    if mean is None or coverage < job.spec.param("min_coverage"):
        need = job.spec.param("min_coverage")
        raise job.unavailable(f"readings cover {coverage:.0%} of {job.span(a, b)}, {need:.0%} needed; "
                              "wait for data or lower min_coverage")
    return (mean,) * len(job.starts)


def _candidates(job: _Job, reader: _Reader, wanted: int) -> tuple[list[tuple[int, float]], str]:
    """The `wanted` most recent eligible days as (shift_s, window mean W), and a note of what was excluded."""
    spec, history = job.spec, job.history
    event_day = history.local_date(job.start_s)
    # RECENT_DAYS always takes working days; the others match the event day type (CAISO, PG&E; see docs).
    working = spec.method is Method.RECENT_DAYS or history.is_working_day(event_day)
    adjust = job.adjustment_period()
    found: list[tuple[int, float]] = []
    skipped = {"other day type": 0, "DR event": 0, "low coverage": 0}
    for k in range(1, int(spec.param("lookback_days")) + 1):
        day, shift = event_day - dt.timedelta(days=k), k * DAY_S
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
        found.append((shift, mean))
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
        found = sorted(found, key=lambda c: (-c[1], c[0]))[: int(spec.param("x"))]
    shifts = sorted(shift for shift, _ in found)
    values: list[float] = []
    for s in job.starts:
        mean = reader.across_days(s, shifts)
        if mean is None:
            raise job.unavailable(f"no reading for the slot at {job.history.local_text(s)[-5:]} on any "
                                  "selected day")
        values.append(mean)
    adjustment = _day_of_adjustment(job, reader, shifts)
    days = tuple(sorted(job.history.local_date(job.start_s - shift) for shift in shifts))
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


def _f64(value: float) -> bytes:
    return struct.pack(">d", value + 0.0)  # + 0.0 turns -0.0 into 0.0: one encoding per value


def _input_hash(job: _Job, days: tuple[dt.date, ...], reader: _Reader) -> bytes:
    """keccak256 of the canonical encoding in docs/baselines.md ("Input hash")."""
    spec, history = job.spec, job.history
    parts = [HASH_TAG, struct.pack(">Hqqii", spec.method, job.start_s, job.end_s, history.slot_s,
                                   history.utc_offset_s)]
    params = spec.resolved()
    parts.append(struct.pack(">H", len(params)))
    for name, value in params:
        raw = name.encode("ascii")
        parts += [struct.pack(">B", len(raw)), raw, _f64(value)]
    parts.append(struct.pack(">I", len(spec.curve_w)))
    parts += [_f64(v) for v in spec.curve_w]
    parts.append(struct.pack(">H", len(days)))
    parts += [struct.pack(">i", (day - _EPOCH).days) for day in days]
    read = sorted(reader.read)
    parts.append(struct.pack(">I", len(read)))
    for s in read:
        slot = reader.by_start[s]
        parts += [struct.pack(">q", s), _f64(slot.avg_w), _f64(slot.coverage)]
    return keccak256(b"".join(parts))
