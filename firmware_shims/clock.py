"""Clocks for simulated time: real time sped up (or slowed down), and a hand-driven clock for tests.

A simulated device asks its clock for the simulated POSIX time in seconds. `ScaledClock` maps the
monotonic clock onto simulated time at a fixed speed; `ManualClock` only moves when a test moves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ScaledClock:
    """Simulated time = start + (monotonic now - origin) x speed."""

    start: float
    origin: float
    speed: float = 1.0
    monotonic: Callable[[], float] = field(default=time.monotonic)

    def __call__(self) -> float:
        return self.start + (self.monotonic() - self.origin) * self.speed

    @classmethod
    def starting_now(cls, *, speed: float = 1.0, start: float | None = None) -> ScaledClock:
        """A clock that reads `start` (default: the wall-clock time) now and runs at `speed`."""
        return cls(start=time.time() if start is None else start, origin=time.monotonic(),
                   speed=speed)


class ManualClock:
    """A clock that stands still until `advance()` or `set()` moves it."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self.now += seconds

    def set(self, now: float) -> None:
        self.now = now
