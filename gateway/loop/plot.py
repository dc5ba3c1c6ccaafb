"""The picture of one DR event from its journal: the load before, during and after the window against
the baseline and the awarded target, the energy delivered against the energy required, the verdict,
and the actions taken.

The series are computed here without matplotlib (pure, testable); `gateway.loop.plot_draw` draws
them (matplotlib is the optional `drgw[plot]` extra, imported lazily). Times stay unix seconds in
the picture; the drawing puts them on the event's own time line, minutes from the window's start,
scaled by `time_scale` (the demo's clock runs `speed` times faster: its 30 s window is 10 simulated
minutes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.loop.checker import DEFAULT_MAX_GAP_S
from gateway.loop.history import LoadSlot
from gateway.loop.journal import ActionRow, EventRow, Journal

# Fixed colours so a reader (and the test) can tell the series apart: matplotlib's tab10 blue,
# orange, green, and a purple for actions; failed actions and a short verdict in red.
BASELINE_COLOUR = "#1f77b4"
ACTUAL_COLOUR = "#ff7f0e"
CONTEXT_COLOUR = "#c7a17a"  # the load outside the window: slot averages, a paler orange
TARGET_COLOUR = "#2ca02c"
ACTION_COLOUR = "#9467bd"
FAILED_COLOUR = "#d62728"
WINDOW_COLOUR = "#dddddd"
DEFAULT_SLOT_S = 60  # [dr] slot_s's default: the load history's granularity


@dataclass(frozen=True, slots=True)
class Series:
    """One line of the plot: times (unix s) and values; `step` draws it as steps after each x."""

    t_s: tuple[float, ...]
    kw: tuple[float, ...]
    step: bool


@dataclass(frozen=True, slots=True)
class Mark:
    """One action: when, what it wrote ("ev.ev_current_limit_a 10→6"), and whether it worked."""

    t_s: float
    text: str
    ok: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Energy:
    """The window's energy story: delivered so far (a series, Wh), required, and the verdict."""

    delivered: Series | None  # cumulative Wh over the window (the checker's trace)
    delivered_wh: float | None  # final (verdict) or latest (trace)
    required_wh: float | None
    verdict: str  # "performed", "short by 12 Wh", or why there is none yet ("no verdict (active)")
    performed: bool | None  # None before the verdict


@dataclass(frozen=True, slots=True, kw_only=True)
class EventPicture:
    """Everything the drawing puts on the canvas, in plain numbers."""

    title: str
    window: tuple[float, float]
    span: tuple[float, float]  # x limits: the window with as much context before and after
    baseline: Series | None
    target: Series | None
    actual: Series | None  # the checker's samples (kW)
    context: Series | None  # the load history's slot averages around the window (kW)
    actions: tuple[Mark, ...]
    energy: Energy
    time_scale: float = 1.0  # simulated seconds per real second (the demo's speed)


def baseline_steps(body: Mapping[str, Any], start_s: float, end_s: float) -> Series | None:
    """The baseline's slots clipped to the window, as steps; None when the body carries none.

    Slots lie on the `slot_s` grid, so the first may begin before the window (gateway.loop.baselines).
    """
    base = body.get("baseline")
    if not isinstance(base, Mapping):
        return None
    slots = base.get("slots_w")
    slot_s = base.get("slot_s")
    if not isinstance(slots, list) or not slots or not isinstance(slot_s, int) or slot_s <= 0:
        return None
    window_start = base.get("window_start_s", start_s)
    first = int(window_start) - int(window_start) % slot_s
    ts: list[float] = []
    kws: list[float] = []
    for i, watts in enumerate(slots):
        a, b = max(first + i * slot_s, start_s), min(first + (i + 1) * slot_s, end_s)
        if b > a:
            ts.append(a)
            kws.append(float(watts) / 1000.0)
    if not ts:
        return None
    # a step plot needs the closing edge: repeat the last value at the window's end
    return Series((*ts, end_s), (*kws, kws[-1]), step=True)


def target_of(baseline: Series, *, award_w: float, increase: bool) -> Series:
    """The awarded target: baseline - award for a reduction, baseline + award for an increase."""
    shift = (award_w if increase else -award_w) / 1000.0
    return Series(baseline.t_s, tuple(kw + shift for kw in baseline.kw), step=baseline.step)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One row of the live trace (Journal.trace). The checker's figures are NULL where it had none,
    e.g. the baseline before the window opens."""

    t_s: float
    baseline_w: float | None
    actual_w: float | None
    performance_w: float | None
    delivered_wh: float | None
    projected_wh: float | None
    required_wh: float | None
    shortfall: bool


def samples(rows: Iterable[Sequence[Any]]) -> list[Sample]:
    """Journal.trace rows as Samples; a non-finite figure counts as missing."""
    def figure(value: Any) -> float | None:
        return float(value) if value is not None and math.isfinite(value) else None

    return [Sample(t_s=float(r[0]), baseline_w=figure(r[1]), actual_w=figure(r[2]),
                   performance_w=figure(r[3]), delivered_wh=figure(r[4]), projected_wh=figure(r[5]),
                   required_wh=figure(r[6]), shortfall=bool(r[7])) for r in rows]


def trace_series(trace: Sequence[Sample], value: Callable[[Sample], float | None], *,
                 per: float = 1000.0) -> Series | None:
    """One figure of the trace, divided by `per` (W -> kW by default). Where two samples are further
    apart than the checker bridges, a NaN point breaks the line (matplotlib leaves a gap): missing
    data is not drawn as a ramp."""
    ts: list[float] = []
    kws: list[float] = []
    for s in trace:
        v = value(s)
        if v is None:
            continue
        if ts and s.t_s - ts[-1] > DEFAULT_MAX_GAP_S:
            ts.append((ts[-1] + s.t_s) / 2)
            kws.append(math.nan)
        ts.append(s.t_s)
        kws.append(v / per)
    return Series(tuple(ts), tuple(kws), step=False) if ts else None


def context_series(slots: Sequence[LoadSlot], *, window: tuple[float, float]) -> Series | None:
    """The load history's slots outside the window as steps of their average kW (slots that were
    not seen at all are left out, and a missing slot breaks the line)."""
    ts: list[float] = []
    kws: list[float] = []
    for slot in sorted(slots, key=lambda s: s.start_s):
        end = slot.start_s + slot.slot_s
        if slot.covered_s <= 0 or (slot.start_s < window[1] and end > window[0]):
            continue
        if ts and slot.start_s > ts[-1]:  # not adjacent: a gap after the last step
            ts.append(ts[-1])
            kws.append(math.nan)
        elif ts:  # adjacent: the next step starts where the last one's closing edge was
            ts.pop()
            kws.pop()
        ts += [float(slot.start_s), float(end)]
        kws += [slot.avg_w / 1000.0, slot.avg_w / 1000.0]
    return Series(tuple(ts), tuple(kws), step=True) if ts else None


# Tick spacings a reader counts in: 1, 2, 5, 10, 15, 30 minutes, 1, 2, 3, 6, 12 hours, 1 day.
_TICKS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def tick_spacing(span_s: float, *, most: int = 10) -> int:
    """The smallest spacing of _TICKS_S that puts at most `most` ticks on a span of `span_s`."""
    return next((step for step in _TICKS_S if span_s / step <= most), _TICKS_S[-1])


def _number(value: float) -> str:
    return f"{value:g}"


def action_text(a: ActionRow) -> str:
    before = "" if a.previous is None else f"{_number(a.previous)}→"
    return f"{a.device}.{a.point} {before}{_number(a.value)}" + ("" if a.ok else " (failed)")


def energy_of(trace: Sequence[Sample], outcome: Mapping[str, Any] | None, *, state: str,
              window: tuple[float, float]) -> Energy:
    """Delivered vs required: the verdict's figures once judged, the trace's latest before."""
    inside = [s for s in trace if window[0] <= s.t_s <= window[1]]
    verdict = (outcome or {}).get("verdict")
    last = next((s for s in reversed(inside) if s.delivered_wh is not None), None)
    delivered = None if last is None else last.delivered_wh
    required = next((s.required_wh for s in reversed(inside) if s.required_wh is not None), None)
    performed = None
    if isinstance(verdict, Mapping) and "performed" in verdict:
        delivered, required = verdict.get("delivered_wh", delivered), verdict.get("required_wh", required)
        performed = bool(verdict["performed"])
    if performed is None:
        word = f"no verdict ({state})"
    elif performed:
        word = "performed"
    else:
        short = verdict.get("shortfall_wh") if isinstance(verdict, Mapping) else None
        word = "short" if short is None else f"short by {_number(float(short))} Wh"
    return Energy(delivered=trace_series(inside, lambda s: s.delivered_wh, per=1.0),
                  delivered_wh=None if delivered is None else float(delivered),
                  required_wh=None if required is None else float(required), verdict=word,
                  performed=performed)


def picture(event: EventRow, *, trace: Sequence[Sample], actions: Sequence[ActionRow],
            outcome: Mapping[str, Any] | None, context: Sequence[LoadSlot] = (),
            time_scale: float = 1.0) -> EventPicture:
    """What to draw for `event`; ConfigError when there is neither a baseline nor a trace."""
    body = event.body
    award_w = float(body.get("award_w") or 0)
    increase = body.get("direction") == "increase"
    window = (float(event.start_s), float(event.end_s))
    baseline = baseline_steps(body, *window)
    if baseline is None:  # no stored baseline: the one the checker saw, sample by sample
        baseline = trace_series(trace, lambda s: s.baseline_w)
    actual = trace_series(trace, lambda s: s.actual_w)
    if baseline is None and actual is None:
        raise ConfigError(f"event {event.event_id} ({event.state}) has no baseline and no trace "
                          "samples in the journal: nothing to plot")
    target = None if baseline is None else target_of(baseline, award_w=award_w, increase=increase)
    energy = energy_of(trace, outcome, state=event.state, window=window)
    around = window[1] - window[0]  # as much context before and after as the window is long
    title = (f"DR event {event.event_id}: {award_w / 1000:.2f} kW "
             f"{'increase' if increase else 'reduction'} awarded, {energy.verdict}")
    return EventPicture(title=title, window=window, span=(window[0] - around, window[1] + around),
                        baseline=baseline, target=target, actual=actual,
                        context=context_series(context, window=window),
                        actions=tuple(Mark(a.t_s, action_text(a), a.ok) for a in actions),
                        energy=energy, time_scale=time_scale)


# ----------------------------------------------------------------------------- one event, end to end

def verdict_word(outcome: Mapping[str, Any] | None) -> str | None:
    """"performed" or "short" once judged, None before (or for a cancelled event)."""
    verdict = outcome.get("verdict") if outcome else None
    if not isinstance(verdict, Mapping) or "performed" not in verdict:
        return None
    return "performed" if verdict["performed"] else "short"


def load_context(journal: Journal, event: EventRow) -> list[LoadSlot]:
    """The main meter's load history around the window, at the baseline's slot size (else the
    default's): what the household drew before and after."""
    devices = journal.slot_devices()
    if not devices:
        return []
    base = event.body.get("baseline")
    slot_s = base.get("slot_s") if isinstance(base, Mapping) else None
    around = event.end_s - event.start_s
    for size in dict.fromkeys((slot_s if isinstance(slot_s, int) else DEFAULT_SLOT_S, DEFAULT_SLOT_S)):
        found = journal.slots(devices[0], slot_s=size, start_s=event.start_s - around - size,
                              end_s=event.end_s + around)
        if found:
            return found
    return []


def plot_event(journal: Journal, event_id: str, path: Path, *, width_px: int = 1200,
               height_px: int = 600, tz: tzinfo | None = None, time_scale: float = 1.0) -> Path:
    """Draw the event `event_id` of `journal` as a PNG at `path`; returns the path.

    Clock times are given in `tz`, by default the machine's zone at the event's start; the time axis
    is minutes from the window's start, times `time_scale`. ConfigError when the journal has no such
    event, there is nothing to draw, or matplotlib is missing.
    """
    from gateway.loop.plot_draw import draw

    event = journal.event(event_id)
    if event is None:
        raise ConfigError(f"no event {event_id!r} in {journal.path}; `drgw event list` shows them all")
    pic = picture(event, trace=samples(journal.trace(event.event_id)),
                  actions=journal.actions(event.event_id), outcome=journal.outcome(event.event_id),
                  context=load_context(journal, event), time_scale=time_scale)
    zone = tz or datetime.fromtimestamp(event.start_s).astimezone().tzinfo
    assert zone is not None  # astimezone() always attaches one
    return draw(pic, path, width_px=width_px, height_px=height_px, tz=zone)
