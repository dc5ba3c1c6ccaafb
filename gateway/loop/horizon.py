"""How far the main meter's committed samples reach, and waiting for them at a window's end.

Samples reach the loop only once committed, and the store commits a poll cycle up to about a second
after it was read (group commit), so a window's end timer fires before the window's last samples
are in. Judging then would leave them out of the verdict and out of the Report's Merkle root; the
loop waits instead, at most WAIT_S (a dead meter costs this delay, no more).
"""

from __future__ import annotations

import asyncio
import logging
import math

log = logging.getLogger(__name__)

WAIT_S = 15.0  # at most this long for the main meter's first sample at or after a window's end


class SampleHorizon:
    """The newest main-meter sample time seen; `through(t)` returns once one at or after `t` is."""

    def __init__(self, device: str | None, wait_s: float = WAIT_S) -> None:
        self.device, self.wait_s = device, wait_s
        self.seen_s = -math.inf
        self._changed = asyncio.Event()

    def saw(self, t: float) -> None:
        if t > self.seen_s:
            self.seen_s = t
            self._changed.set()

    async def through(self, end_s: float) -> bool:
        """True once a sample taken at or after `end_s` was seen (samples are committed in order,
        so every earlier one is in); False, logged, after `wait_s` without one."""
        if self.device is None:
            return True
        try:
            async with asyncio.timeout(self.wait_s):
                while self.seen_s < end_s:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            log.warning("DR: no sample of %s at or after the window's end within %.0f s; the window "
                        "is judged on the samples in", self.device, self.wait_s)
            return False
        return True
