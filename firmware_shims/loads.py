"""Load models: what a simulated home or appliance draws, in watts, as a pure function of time.

Every model answers `power_w(t, t0)` where `t` is the simulated POSIX time in seconds and `t0` the
moment the simulation started. Nothing here reads a clock or keeps state between calls: noise is
drawn from a generator seeded by (seed, time slot), so two reads in the same slot agree and a run
with the same clock is repeatable.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from gateway.errors import ConfigError

DAY_S = 86_400.0


class LoadModel(Protocol):
    """Anything that says how many watts are drawn at simulated time t (import positive)."""

    def power_w(self, t: float, t0: float) -> float: ...


@dataclass(frozen=True, slots=True)
class ConstantLoad:
    """The same power all the time."""

    watts: float

    def power_w(self, t: float, t0: float) -> float:
        return self.watts


def _interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Linear interpolation on sorted xs; flat outside the range."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def parse_hhmm(text: str, *, where: str) -> float:
    """'07:30' -> seconds after midnight; names the place in the file when it is not a time."""
    try:
        hours, minutes = text.split(":")
        h, m = int(hours), int(minutes)
    except ValueError:
        raise ConfigError(
            f"{where}: {text!r} is not a time of day; write it as HH:MM, e.g. '07:30'") from None
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ConfigError(f"{where}: {text!r} is not a time of day between 00:00 and 24:00")
    return h * 3600.0 + m * 60.0


@dataclass(frozen=True, slots=True)
class DailyCurve:
    """A power curve over one day: (seconds after midnight, W) points, linearly interpolated.

    The curve wraps around midnight: between the last point and the first point of the next day the
    power moves linearly from one to the other. `utc_offset_s` says which time zone "midnight" is
    in; None means the machine's local zone at time t.
    """

    points: tuple[tuple[float, float], ...]
    utc_offset_s: float | None = None

    def __post_init__(self) -> None:
        if not self.points:
            raise ConfigError("a daily curve needs at least one (HH:MM, W) point")
        if any(b[0] <= a[0] for a, b in itertools.pairwise(self.points)):
            raise ConfigError("the points of a daily curve must be in increasing time order")

    def seconds_of_day(self, t: float) -> float:
        offset = self.utc_offset_s
        if offset is None:
            offset = float(time.localtime(t).tm_gmtoff)
        return (t + offset) % DAY_S

    def power_w(self, t: float, t0: float) -> float:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        # Extend by one point on each side, a day away, so the curve wraps smoothly at midnight.
        xs = [xs[-1] - DAY_S, *xs, xs[0] + DAY_S]
        ys = [ys[-1], *ys, ys[0]]
        return _interpolate(xs, ys, self.seconds_of_day(t))


@dataclass(frozen=True, slots=True)
class CsvReplay:
    """Replays recorded power: (seconds since the first sample, W), linearly interpolated.

    Seconds count from the start of the simulation; with `loop` the recording repeats, otherwise the
    last value holds after its end.
    """

    times_s: tuple[float, ...]
    powers_w: tuple[float, ...]
    loop: bool = True

    def power_w(self, t: float, t0: float) -> float:
        elapsed = max(0.0, t - t0)
        span = self.times_s[-1]
        if self.loop and span > 0:
            elapsed %= span
        return _interpolate(self.times_s, self.powers_w, elapsed)

    @classmethod
    def from_file(cls, path: Path, *, column: str | None = None, loop: bool = True) -> CsvReplay:
        """Read a CSV whose first column is a time (seconds, or an ISO 8601 timestamp) and whose
        power column is `column` (default: the second column). The first row is a header."""
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the load recording: {exc.strerror}") from exc
        if len(rows) < 2:
            raise ConfigError(f"{path}: needs a header row and at least one sample")
        header = [h.strip() for h in rows[0]]
        index = 1
        if column is not None:
            if column not in header:
                raise ConfigError(
                    f"{path}: no column {column!r}; the header has {', '.join(header)}")
            index = header.index(column)
        times: list[float] = []
        powers: list[float] = []
        for line, row in enumerate(rows[1:], start=2):
            if not row or not "".join(row).strip():
                continue
            try:
                times.append(_parse_time(row[0]))
                powers.append(float(row[index]))
            except (ValueError, IndexError):
                raise ConfigError(f"{path}: line {line}: expected a time and a number of watts "
                                  f"in column {header[index]!r}, found {row!r}") from None
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ConfigError(f"{path}: times must increase from one row to the next")
        start = times[0]
        return cls(times_s=tuple(x - start for x in times), powers_w=tuple(powers), loop=loop)


def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True, slots=True)
class NoisyLoad:
    """Gaussian noise of `pct` percent (one standard deviation) on top of another model.

    The noise is constant within a slot of `slot_s` seconds and drawn from a generator seeded by
    (seed, slot), so it is repeatable and every register read in one slot sees the same value.
    """

    base: LoadModel
    pct: float
    seed: int = 0
    slot_s: float = 1.0

    def power_w(self, t: float, t0: float) -> float:
        noise = self.pct / 100.0 * gaussian(self.seed, t, self.slot_s)
        return self.base.power_w(t, t0) * (1.0 + noise)


def gaussian(seed: int | str, t: float, slot_s: float = 1.0) -> float:
    """A standard normal draw that depends only on (seed, the time slot of t)."""
    slot = math.floor(t / slot_s) if slot_s > 0 else t
    return random.Random(f"{seed}:{slot}").gauss(0.0, 1.0)
