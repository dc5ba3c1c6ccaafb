"""The event plot tells the story: read from the figure's matplotlib objects (axes, labels, texts,
patches, lines), not from pixels, for an event journalled in a real SQLite journal.

The event: a 600 s reduction window at T0 (2026-07-01 14:00 UTC), award 1.5 kW, a 60 s load history
before and after it, two actions, and a verdict of 270 Wh delivered against 238 Wh required.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import matplotlib.colors
import pytest

from gateway.loop import plot, plot_draw
from gateway.loop.history import LoadSlot
from gateway.loop.journal import ActionRow, Journal

T0 = 1_782_914_400  # 2026-07-01 14:00:00 UTC
EVENT = "chain:0x" + "ab" * 20 + ":3"  # a market event's id: 48 characters, no spaces
IST = timezone(timedelta(hours=5, minutes=30))  # 14:00 UTC is 19:30 here


def journal_with_event(path: Path, *, window_s: int = 600, performed: bool = True) -> Journal:
    j = Journal(path)
    base = {"method": "pre_event", "method_id": 2, "input_hash": "0x" + "12" * 32, "slot_s": 60,
            "window_start_s": T0, "slots_w": [2500.0] * (window_s // 60 or 1), "days_used": []}
    j.save_event(event_id=EVENT, modification=0, state="completed", start_s=T0, end_s=T0 + window_s,
                 body={"source": "mqtt", "award_w": 1500, "direction": "reduce", "baseline": base},
                 now_ms=1)
    # the checker's samples in the window: 2.5 kW baseline, 0.9 kW actual, delivered growing
    rows = [(T0 + t, 2500.0, 900.0, 1600.0, 1600.0 * t / 3600, 270.0, 237.5, 0)
            for t in range(0, window_s + 1, max(1, window_s // 20))]
    j.add_trace(EVENT, rows)
    # the load history: ten 60 s slots of 2.4 kW before the window, ten of 2.6 kW after it
    j.add_slots("main", [LoadSlot(T0 - 600 + 60 * i, 60, 2400.0 * 60, 60.0) for i in range(10)])
    j.add_slots("main", [LoadSlot(T0 + window_s + 60 * i, 60, 2600.0 * 60, 60.0) for i in range(10)])
    j.add_action(EVENT, ActionRow(T0 + 30, "ev", "ev_current_limit_a", 6, 16, "short", True, None))
    j.add_action(EVENT, ActionRow(T0 + 40, "boiler", "relay_1_on", 0, 1, "short", False, "timeout"))
    verdict = {"delivered_wh": 270, "required_wh": 238, "performed": performed,
               "shortfall_wh": 0 if performed else 30}
    j.save_outcome(EVENT, verdict=verdict, report=None, report_id=None, chain_state=None, now_ms=2)
    return j


def figure_of(j: Journal, *, width_px: int = 1200, height_px: int = 600, time_scale: float = 1.0) -> Any:
    event = j.event(EVENT)
    assert event is not None
    pic = plot.picture(event, trace=plot.samples(j.trace(EVENT)), actions=j.actions(EVENT),
                       outcome=j.outcome(EVENT), context=plot.load_context(j, event),
                       time_scale=time_scale)
    return plot_draw.figure(pic, width_px=width_px, height_px=height_px, tz=IST)


def hex_of(colour: Any) -> str:
    return str(matplotlib.colors.to_hex(colour))


def window_span(ax: Any) -> tuple[float, float]:
    (patch,) = [p for p in ax.patches if hex_of(p.get_facecolor()) == plot.WINDOW_COLOUR]
    return patch.get_x(), patch.get_x() + patch.get_width()


def test_window_shaded_with_context_on_the_events_own_time_line(tmp_path: Path) -> None:
    fig = figure_of(journal_with_event(tmp_path / "drgw.db"))
    power, energy = fig.axes[:2]
    assert window_span(power) == pytest.approx((0.0, 10.0))  # 600 s = minutes 0..10 of the event
    lo, hi = energy.get_xlim()
    assert lo < -9.9 and hi > 19.9  # ten minutes of context before and after
    assert energy.get_xlabel() == ("minutes from the window's start\n"
                                   "(window 19:30:00–19:40:00 UTC+05:30)")
    context = [ln for ln in power.get_lines() if hex_of(ln.get_color()) == plot.CONTEXT_COLOUR]
    xs = [x for x in context[0].get_xdata() if x == x]
    assert min(xs) == pytest.approx(-10.0) and max(xs) == pytest.approx(20.0)
    assert {round(y, 3) for y in context[0].get_ydata() if y == y} == {2.4, 2.6}  # kW, before/after


def test_delivered_against_required_and_the_verdict_on_the_chart(tmp_path: Path) -> None:
    fig = figure_of(journal_with_event(tmp_path / "drgw.db"))
    energy = fig.axes[1]
    texts = [t.get_text() for t in energy.texts]
    assert "delivered 270 Wh of 238 Wh required\nperformed" in texts
    required = [c for c in energy.collections if hex_of(c.get_colors()[0]) == plot.TARGET_COLOUR]
    assert required[0].get_segments()[0][0][1] == pytest.approx(238.0)  # the required line, in Wh
    short = figure_of(journal_with_event(tmp_path / "short.db", performed=False))
    (text,) = [t for t in short.axes[1].texts if "required" in t.get_text()]
    assert text.get_text().endswith("short by 30 Wh") and hex_of(text.get_color()) == plot.FAILED_COLOUR


def test_actions_are_labelled_with_what_they_wrote(tmp_path: Path) -> None:
    power = figure_of(journal_with_event(tmp_path / "drgw.db")).axes[0]
    labels = {t.get_text(): t for t in power.texts}
    assert set(labels) == {"ev.ev_current_limit_a 16→6", "boiler.relay_1_on 1→0 (failed)"}
    assert hex_of(labels["boiler.relay_1_on 1→0 (failed)"].get_color()) == plot.FAILED_COLOUR
    assert labels["ev.ev_current_limit_a 16→6"].xy[0] == pytest.approx(0.5)  # 30 s in


@pytest.mark.parametrize("width", [300, 500, 1200])
def test_the_title_fits_at_any_width_and_keeps_the_verdict(tmp_path: Path, width: int) -> None:
    fig = figure_of(journal_with_event(tmp_path / "drgw.db"), width_px=width, height_px=400)
    title = fig._suptitle
    extent = title.get_window_extent(fig.canvas.get_renderer())
    assert extent.width <= width
    assert title.get_text().replace("\n", " ").endswith("reduction awarded, performed")


def test_the_demo_time_line_is_in_simulated_minutes(tmp_path: Path) -> None:
    # the demo at speed 20: a 30 s window is 10 simulated minutes
    fig = figure_of(journal_with_event(tmp_path / "drgw.db", window_s=30), time_scale=20)
    power, energy = fig.axes[:2]
    assert window_span(power) == pytest.approx((0.0, 10.0))
    assert energy.get_xlabel().startswith("simulated minutes from the window's start\n(clock x20;")
