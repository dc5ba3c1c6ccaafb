"""Load history for baselines: the main meter's power folded into fixed slots of energy and coverage.

Pure: samples (time, W) go in, finished slots come out. Between two samples the power is held at
the earlier value (a meter's reading stands for the interval after it), but never across a gap
longer than `max_gap_s`: that time counts as missing, so a slot's coverage says how much of it was
seen and the baseline methods can drop days with too little data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadSlot:
    start_s: int
    slot_s: int
    energy_ws: float  # watt-seconds seen in the slot
    covered_s: float  # seconds of the slot with a valid reading

    @property
    def avg_w(self) -> float:
        return self.energy_ws / self.covered_s if self.covered_s > 0 else 0.0

    @property
    def coverage(self) -> float:
        return min(1.0, self.covered_s / self.slot_s)


class SlotAccumulator:
    def __init__(self, *, slot_s: int, max_gap_s: float) -> None:
        if slot_s <= 0:
            raise ValueError("slot_s must be > 0")
        self.slot_s = slot_s
        self.max_gap_s = max_gap_s
        self._last: tuple[float, float] | None = None
        self._open: dict[int, list[float]] = {}  # slot start -> [energy_ws, covered_s]

    def add(self, t_s: float, power_w: float) -> list[LoadSlot]:
        """Take one sample; return the slots that can no longer change (older than this sample)."""
        last = self._last
        if last is not None and t_s <= last[0]:
            return []  # out of order or repeated: the interval is already accounted for
        if last is not None and t_s - last[0] <= self.max_gap_s:
            self._spread(last[0], t_s, last[1])
        self._last = (t_s, power_w)
        current = int(t_s // self.slot_s) * self.slot_s
        done = sorted(s for s in self._open if s < current)
        return [self._close(s) for s in done]

    def flush(self) -> list[LoadSlot]:
        """All slots still open (at shutdown): partial, with their coverage as seen."""
        return [self._close(s) for s in sorted(self._open)]

    def open_view(self, before_s: float) -> list[LoadSlot]:
        """The slots still open that start before `before_s`, as seen so far (not closed)."""
        return [LoadSlot(start_s=s, slot_s=self.slot_s, energy_ws=acc[0], covered_s=acc[1])
                for s, acc in sorted(self._open.items()) if s < before_s]

    def _spread(self, t0: float, t1: float, power_w: float) -> None:
        t = t0
        while t < t1:
            start = int(t // self.slot_s) * self.slot_s
            end = min(t1, start + self.slot_s)
            acc = self._open.setdefault(start, [0.0, 0.0])
            acc[0] += power_w * (end - t)
            acc[1] += end - t
            t = end

    def _close(self, start: int) -> LoadSlot:
        energy, covered = self._open.pop(start)
        return LoadSlot(start_s=start, slot_s=self.slot_s, energy_ws=energy, covered_s=covered)
