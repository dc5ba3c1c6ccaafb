"""Draws an EventPicture (gateway.loop.plot): the load panel (kW: the load before, during and after
the shaded window, baseline, target, actions labelled) over the energy panel (Wh: delivered so far
against required, the verdict written on it), on the event's own time line.

matplotlib is imported lazily (the optional `drgw[plot]` extra, slow to import), and the Agg canvas
is used directly, never pyplot, so no global figure state is touched. `figure` builds the Figure
without saving it (tests read its artists); `draw` saves it as a PNG.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.loop.plot import (
    ACTION_COLOUR,
    ACTUAL_COLOUR,
    BASELINE_COLOUR,
    CONTEXT_COLOUR,
    FAILED_COLOUR,
    TARGET_COLOUR,
    WINDOW_COLOUR,
    EventPicture,
    Series,
    tick_spacing,
)

DPI = 100
DELIVERED_COLOUR = "#17becf"  # tab10 cyan
PERFORMED_COLOUR = "#1a7f37"
PENDING_COLOUR = "#555555"


def _load_matplotlib() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:
        raise ConfigError("drgw event plot needs matplotlib: pip install 'drgw[plot]'") from exc
    return FigureCanvasAgg


def minutes(pic: EventPicture, t_s: float) -> float:
    """A time on the event's own line: minutes from the window's start (simulated, x time_scale)."""
    return (t_s - pic.window[0]) / 60.0 * pic.time_scale


def _line(ax: Any, pic: EventPicture, series: Series | None, colour: str, label: str, **kw: Any) -> None:
    if series is None:
        return
    xs = [minutes(pic, t) for t in series.t_s]
    if series.step:
        ax.step(xs, series.kw, where="post", color=colour, label=label, **kw)
    else:
        ax.plot(xs, series.kw, color=colour, label=label, **kw)


def _power_panel(ax: Any, pic: EventPicture, fontsize: float) -> None:
    ax.axvspan(0.0, minutes(pic, pic.window[1]), color=WINDOW_COLOUR, label="DR window")
    _line(ax, pic, pic.context, CONTEXT_COLOUR, "load before/after (slot averages)", linewidth=1.5)
    _line(ax, pic, pic.baseline, BASELINE_COLOUR, "baseline", linewidth=2)
    _line(ax, pic, pic.target, TARGET_COLOUR, "awarded target", linewidth=2)
    _line(ax, pic, pic.actual, ACTUAL_COLOUR, "actual load", linewidth=2)
    _actions(ax, pic, fontsize)
    ax.set_ylabel("kW")
    ax.grid(True, alpha=0.3)


def _actions(ax: Any, pic: EventPicture, fontsize: float) -> None:
    """A dashed line per action, labelled along it; a label closer to the one before than a line of
    text is wide goes to the bottom of the panel instead, so neighbours do not overprint."""
    lo, hi = minutes(pic, pic.span[0]), minutes(pic, pic.span[1])
    per_px = (hi - lo) / max(1.0, ax.get_window_extent().width)
    last_top: float | None = None
    for mark in pic.actions:
        colour = ACTION_COLOUR if mark.ok else FAILED_COLOUR
        x = minutes(pic, mark.t_s)
        ax.axvline(x, color=colour, linestyle="--", linewidth=1.2)
        top = last_top is None or (x - last_top) / per_px > fontsize * 1.8
        last_top = x if top else last_top
        ax.annotate(mark.text, xy=(x, 1.0 if top else 0.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -3 if top else 3), textcoords="offset points", rotation=90,
                    va="top" if top else "bottom", ha="left", fontsize=fontsize, color=colour)


def verdict_text(pic: EventPicture) -> str:
    e = pic.energy
    delivered = "—" if e.delivered_wh is None else f"{e.delivered_wh:.0f} Wh"
    required = "—" if e.required_wh is None else f"{e.required_wh:.0f} Wh"
    return f"delivered {delivered} of {required} required\n{e.verdict}"


def _energy_panel(ax: Any, pic: EventPicture, fontsize: float) -> None:
    e = pic.energy
    ax.axvspan(0.0, minutes(pic, pic.window[1]), color=WINDOW_COLOUR)
    _line(ax, pic, e.delivered, DELIVERED_COLOUR, "delivered (Wh)", linewidth=2)
    if e.required_wh is not None:
        ax.hlines(e.required_wh, 0.0, minutes(pic, pic.window[1]), colors=TARGET_COLOUR,
                  linestyles="--", linewidth=1.5, label="required (Wh)")
    colour = PENDING_COLOUR if e.performed is None else PERFORMED_COLOUR if e.performed else FAILED_COLOUR
    ax.text(0.99, 0.9, verdict_text(pic), transform=ax.transAxes, ha="right", va="top",
            fontsize=fontsize + 1, color=colour, fontweight="bold",
            bbox={"facecolor": "white", "edgecolor": colour, "alpha": 0.9, "boxstyle": "round"})
    ax.set_ylabel("Wh")
    ax.grid(True, alpha=0.3)


def _time_axis(ax: Any, pic: EventPicture, tz: tzinfo) -> None:
    """x: minutes from the window's start; the label says when the window was, on the clock."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    lo, hi = minutes(pic, pic.span[0]), minutes(pic, pic.span[1])
    pad = (hi - lo) * 0.01
    ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MultipleLocator(tick_spacing((hi - lo) * 60) / 60))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    start, end = (datetime.fromtimestamp(t, tz) for t in pic.window)
    offset = start.strftime("%z")
    when = f"window {start:%H:%M:%S}–{end:%H:%M:%S} UTC{offset[:3]}:{offset[3:]}"
    if pic.time_scale == 1:
        ax.set_xlabel(f"minutes from the window's start\n({when})")
    else:
        ax.set_xlabel(f"simulated minutes from the window's start\n(clock x{pic.time_scale:g}; {when})")


def fit_title(fig: Any, text: str, width_px: int) -> Any:
    """The title wrapped to the figure's width, then shrunk until the renderer says it fits."""
    size = min(11.0, max(7.0, width_px / 100))
    while True:
        chars = max(16, int(width_px * 0.94 / (size * 0.6 * DPI / 72)))
        title = fig.suptitle("\n".join(textwrap.wrap(text, chars, break_on_hyphens=False)), fontsize=size)
        if title.get_window_extent(fig.canvas.get_renderer()).width <= width_px * 0.98 or size <= 5:
            return title
        size -= 0.5


def figure(pic: EventPicture, *, width_px: int, height_px: int, tz: tzinfo) -> Any:
    """The matplotlib Figure of `pic` (not saved)."""
    canvas_class = _load_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    canvas_class(fig)
    power, energy = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    fontsize = min(8.0, max(6.0, width_px / 150))
    _time_axis(energy, pic, tz)
    energy.xaxis.label.set_fontsize(fontsize + 1)
    _power_panel(power, pic, fontsize)
    _energy_panel(energy, pic, fontsize)
    handles: list[Any] = []
    labels: list[str] = []
    for ax in (power, energy):
        h, lab = ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    fig.legend(handles, labels, loc="outside lower center", fontsize=fontsize,
               ncol=max(1, min(len(labels), width_px // 150)))
    fit_title(fig, pic.title, width_px)
    return fig


def draw(pic: EventPicture, path: Path, *, width_px: int, height_px: int, tz: tzinfo) -> Path:
    """Render `pic` as a PNG of exactly width_px x height_px at `path`; returns the path."""
    fig = figure(pic, width_px=width_px, height_px=height_px, tz=tz)
    try:
        fig.savefig(path, dpi=DPI, format="png")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the plot: {exc.strerror}") from exc
    return path
