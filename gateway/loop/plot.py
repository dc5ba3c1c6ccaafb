"""The picture of one DR event from its journal: baseline, actual load, awarded target and actions.

`plot_event` draws it (for `drgw event plot` and the demo). The series are computed here without
matplotlib (pure, testable); `draw` imports matplotlib lazily (it is the optional `drgw[plot]` extra
and slow to import) and uses the Agg canvas directly, never pyplot, so no global figure state is
touched.
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
from gateway.loop.journal import ActionRow, EventRow, Journal

# Fixed colours so a reader (and the test) can tell the series apart: matplotlib's tab10 blue,
# orange, green, and a purple for actions; failed actions in red.
BASELINE_COLOUR = "#1f77b4"
ACTUAL_COLOUR = "#ff7f0e"
TARGET_COLOUR = "#2ca02c"
ACTION_COLOUR = "#9467bd"
FAILED_COLOUR = "#d62728"
WINDOW_COLOUR = "#dddddd"
DPI = 100


@dataclass(frozen=True, slots=True)
class Series:
    """One line of the plot: times (unix s) and values (kW); `step` draws it as steps after each x."""

    t_s: tuple[float, ...]
    kw: tuple[float, ...]
    step: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EventPicture:
    """Everything `draw` puts on the canvas, in plain numbers."""

    title: str
    window: tuple[float, float]
    span: tuple[float, float]  # x limits: the window, widened to trace data before/after it
    baseline: Series | None
    target: Series | None
    actual: Series | None
    actions: tuple[tuple[float, str, bool], ...]  # (t_s, "device.point=value", ok)


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


def trace_series(trace: Sequence[Sample], watts: Callable[[Sample], float | None]) -> Series | None:
    """One figure of the trace in kW. Where two samples are further apart than the checker bridges,
    a NaN point breaks the line (matplotlib leaves a gap): missing data is not drawn as a ramp."""
    ts: list[float] = []
    kws: list[float] = []
    for s in trace:
        w = watts(s)
        if w is None:
            continue
        if ts and s.t_s - ts[-1] > DEFAULT_MAX_GAP_S:
            ts.append((ts[-1] + s.t_s) / 2)
            kws.append(math.nan)
        ts.append(s.t_s)
        kws.append(w / 1000.0)
    return Series(tuple(ts), tuple(kws), step=False) if ts else None


def _number(value: float) -> str:
    return f"{value:g}"


def picture(event: EventRow, *, trace: Sequence[Sample], actions: Sequence[ActionRow],
            verdict: str) -> EventPicture:
    """What to draw for `event`; ConfigError when there is neither a baseline nor a trace."""
    body = event.body
    award_w = float(body.get("award_w") or 0)
    increase = body.get("direction") == "increase"
    baseline = baseline_steps(body, event.start_s, event.end_s)
    if baseline is None:  # no stored baseline: the one the checker saw, sample by sample
        baseline = trace_series(trace, lambda s: s.baseline_w)
    actual = trace_series(trace, lambda s: s.actual_w)
    if baseline is None and actual is None:
        raise ConfigError(f"event {event.event_id} ({event.state}) has no baseline and no trace "
                          "samples in the journal: nothing to plot")
    target = None if baseline is None else target_of(baseline, award_w=award_w, increase=increase)
    times = [event.start_s, event.end_s, *(s.t_s for s in trace)]
    span = (min(times), max(times))
    title = (f"{event.event_id}: award {award_w / 1000:.2f} kW "
             f"{'increase' if increase else 'reduce'}, {verdict}")
    marks = tuple((a.t_s, f"{a.device}.{a.point}={_number(a.value)}", a.ok) for a in actions)
    return EventPicture(title=title, window=(event.start_s, event.end_s), span=span,
                        baseline=baseline, target=target, actual=actual, actions=marks)


def _load_matplotlib() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:
        raise ConfigError("drgw event plot needs matplotlib: pip install 'drgw[plot]'") from exc
    return FigureCanvasAgg


# Tick spacings a reader counts in: 1, 2, 5, 10, 15, 30 minutes, 1, 2, 3, 6, 12 hours, 1 day.
_TICKS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def tick_spacing(span_s: float, *, most: int = 10) -> int:
    """The smallest spacing of _TICKS_S that puts at most `most` ticks on a span of `span_s`."""
    return next((step for step in _TICKS_S if span_s / step <= most), _TICKS_S[-1])


def _time_axis(ax: Any, pic: EventPicture, tz: tzinfo) -> None:
    """x in unix seconds (no date converters, whose API is untyped), labelled in local time.

    The ticks are multiples of the spacing in unix time, i.e. whole UTC minutes/hours; in a zone
    with a half-hour offset the hourly ticks fall on :30, which the labels show as they are.
    """
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    pad = max((pic.span[1] - pic.span[0]) * 0.02, 1.0)
    ax.set_xlim(pic.span[0] - pad, pic.span[1] + pad)
    clock = "%H:%M" if pic.span[1] - pic.span[0] < 86400 else "%m-%d %H:%M"
    ax.xaxis.set_major_locator(MultipleLocator(tick_spacing(pic.span[1] - pic.span[0] + 2 * pad)))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _pos: datetime.fromtimestamp(x, tz).strftime(clock)))
    offset = datetime.fromtimestamp(pic.window[0], tz).strftime("%z")
    ax.set_xlabel(f"local time (UTC{offset[:3]}:{offset[3:]})")


def _series(ax: Any, pic: EventPicture) -> None:
    ax.axvspan(pic.window[0], pic.window[1], color=WINDOW_COLOUR, label="DR window")
    for series, colour, label in ((pic.baseline, BASELINE_COLOUR, "baseline"),
                                  (pic.target, TARGET_COLOUR, "awarded target"),
                                  (pic.actual, ACTUAL_COLOUR, "actual load")):
        if series is None:
            continue
        if series.step:
            ax.step(series.t_s, series.kw, where="post", color=colour, linewidth=2, label=label)
        else:
            ax.plot(series.t_s, series.kw, color=colour, linewidth=2, label=label)
    for t_s, text, ok in pic.actions:
        colour = ACTION_COLOUR if ok else FAILED_COLOUR
        ax.axvline(t_s, color=colour, linestyle="--", linewidth=1.5)
        ax.annotate(text if ok else f"{text} (failed)", xy=(t_s, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -3), textcoords="offset points", rotation=90, va="top", ha="left",
                    fontsize=8, color=colour)


def draw(pic: EventPicture, path: Path, *, width_px: int, height_px: int, tz: tzinfo) -> Path:
    """Render `pic` as a PNG of exactly width_px x height_px at `path`; returns the path."""
    canvas_class = _load_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    canvas_class(fig)
    ax = fig.add_subplot()
    _series(ax, pic)
    _time_axis(ax, pic, tz)
    ax.set_ylabel("kW")
    ax.set_title(pic.title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=DPI, format="png")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the plot: {exc.strerror}") from exc
    return path


# ----------------------------------------------------------------------------- one event, end to end

def verdict_word(outcome: Mapping[str, Any] | None) -> str | None:
    """"performed" or "short" once judged, None before (or for a cancelled event)."""
    verdict = outcome.get("verdict") if outcome else None
    if not isinstance(verdict, Mapping) or "performed" not in verdict:
        return None
    return "performed" if verdict["performed"] else "short"


def title_verdict(event: EventRow, outcome: Mapping[str, Any] | None) -> str:
    """How the title ends: the verdict with the shortfall, or why there is none yet."""
    word = verdict_word(outcome)
    if word == "short":
        shortfall = (outcome or {}).get("verdict", {}).get("shortfall_wh")
        return "short" if shortfall is None else f"short by {shortfall} Wh"
    return word or f"no verdict ({event.state})"


def plot_event(journal: Journal, event_id: str, path: Path, *, width_px: int = 1200,
               height_px: int = 600, tz: tzinfo | None = None) -> Path:
    """Draw the event `event_id` of `journal` as a PNG at `path`; returns the path.

    Times are labelled in `tz`, by default the machine's zone at the event's start. ConfigError when
    the journal has no such event, there is nothing to draw, or matplotlib is missing.
    """
    event = journal.event(event_id)
    if event is None:
        raise ConfigError(f"no event {event_id!r} in {journal.path}; `drgw event list` shows them all")
    pic = picture(event, trace=samples(journal.trace(event.event_id)),
                  actions=journal.actions(event.event_id),
                  verdict=title_verdict(event, journal.outcome(event.event_id)))
    zone = tz or datetime.fromtimestamp(event.start_s).astimezone().tzinfo
    assert zone is not None  # astimezone() always attaches one
    return draw(pic, path, width_px=width_px, height_px=height_px, tz=zone)
