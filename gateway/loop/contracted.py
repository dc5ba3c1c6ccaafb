"""The household's contracted load curve (`[dr.contracted]`), sampled onto a window's baseline slots.

Pure. A market award carries no curve of its own, so a household whose baseline method is CONTRACTED
holds its curve in the config: W from each local time of day on (a step function over the day, in
the household's `[dr] time_zone`). `curve_w` samples it per slot of a window, giving the
`BaselineSpec.curve_w` whose hash is the baseline's input hash (docs/baselines.md, "Contracted
curves for market awards").
"""

from __future__ import annotations

import datetime as dt
import re

DAY_S = 86_400
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
MAX_W = 1_000_000.0  # a household's contracted load, either sign (negative: contracted export)


def parse_time_of_day(text: str) -> int:
    """"HH:MM" (00:00..23:59) as seconds of the day; ValueError otherwise."""
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day: write HH:MM, 00:00..23:59 (e.g. \"17:30\")")
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60


def value_at(points: tuple[tuple[int, float], ...], second_of_day: int) -> float:
    """The curve at a local second of the day: the last point at or before it; before the first
    point of the day, the day's last point (the curve repeats every day)."""
    if not points:
        raise ValueError("the contracted curve has no points")
    held = points[-1][1]
    for at, watts in points:
        if at > second_of_day:
            break
        held = watts
    return held


def curve_w(points: tuple[tuple[int, float], ...], *, window_start_s: int, window_end_s: int,
            slot_s: int, zone: dt.tzinfo) -> tuple[float, ...]:
    """One value per grid slot overlapping the window (the baseline's slots, docs/baselines.md), each
    the curve at the slot's first instant inside the window, in local time."""
    first = window_start_s - window_start_s % slot_s
    out = []
    for start in range(first, window_end_s, slot_s):
        local = dt.datetime.fromtimestamp(max(start, window_start_s), zone)
        out.append(value_at(points, local.hour * 3600 + local.minute * 60 + local.second))
    return tuple(out)
