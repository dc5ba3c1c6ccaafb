"""Waiting for a deadline to a tenth of a millisecond, for the RTU silent interval between frames.

asyncio's timers are only as fine as the selector's timeout, and epoll takes whole milliseconds:
CPython's selectors.EpollSelector rounds the timeout up, so `asyncio.sleep(0.00365)` (t3.5 at 9600
baud) returns 0.4-1.4 ms late, a tenth of a t3.5 and more lost on every transaction. `sleep_until`
waits on the loop while more than FINE_WAIT_S remains, then sleeps the rest in `time.sleep`
(clock_nanosleep: about 0.08 ms late here). The tail holds the event loop for less than FINE_WAIT_S,
half of it on average; it is a sleep, not a spin, so it costs no CPU.
"""

from __future__ import annotations

import asyncio
import time

FINE_WAIT_S = 0.001  # one epoll tick: the loop's timer may be this late, never early


async def sleep_until(deadline: float) -> None:
    """Return at loop time `deadline` (at once if it has passed), late by about 0.1 ms."""
    loop = asyncio.get_running_loop()
    coarse = deadline - loop.time() - FINE_WAIT_S
    if coarse > 0:
        await asyncio.sleep(coarse)
    fine = deadline - loop.time()
    if fine > 0:
        time.sleep(fine)
