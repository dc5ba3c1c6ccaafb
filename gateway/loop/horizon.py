"""How far the main meter's committed samples reach, and waiting for them at a window's end.

Samples reach the loop only once committed, and the store commits a poll cycle up to about a second
after it was read (group commit), so a window's end timer fires before the window's last samples
are in. Judging then would leave them out of the verdict and out of the Report's Merkle root; the
loop waits instead, at most WAIT_S (a dead meter costs this delay, no more). At a window's start it
waits too (at most START_WAIT_S), so the pre-event baseline has the samples taken before the start,
and keeps the recent samples (`since`) so that those taken at or after the start, but seen before the
window was opened, are still judged by it: a sample counts by the time it was taken, not when it came.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque

log = logging.getLogger(__name__)

WAIT_S = 15.0  # at most this long for the main meter's first sample at or after a window's end
START_WAIT_S = 3.0  # at a window's start: group commit delays a sample by ~1.2 s at most (pipeline.py)
KEEP = 256  # recent samples kept for `since` (two minutes at the fastest 0.5 s poll)


class SampleHorizon:
    """The newest main-meter sample time seen; `through(t)` returns once one at or after `t` is."""

    def __init__(self, device: str | None, wait_s: float = WAIT_S) -> None:
        self.device, self.wait_s = device, wait_s
        self.seen_s = -math.inf
        self._changed = asyncio.Event()
        self._recent: deque[tuple[float, float]] = deque(maxlen=KEEP)

    def saw(self, t: float, watts: float | None = None) -> None:
        if t > self.seen_s:
            self.seen_s = t
            self._changed.set()
            if watts is not None:
                self._recent.append((t, watts))

    def since(self, start_s: float) -> list[tuple[float, float]]:
        """The kept samples (time, W) taken at or after `start_s`, oldest first."""
        return [(t, w) for t, w in self._recent if t >= start_s]

    async def through(self, end_s: float, wait_s: float | None = None) -> bool:
        """True once a sample taken at or after `end_s` was seen (samples are committed in order,
        so every earlier one is in); False, logged, after `wait_s` without one."""
        if self.device is None:
            return True
        try:
            async with asyncio.timeout(self.wait_s if wait_s is None else wait_s):
                while self.seen_s < end_s:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            log.warning("DR: no sample of %s at or after %.0f within %.0f s; going on with the "
                        "samples in", self.device, end_s, self.wait_s if wait_s is None else wait_s)
            return False
        return True
