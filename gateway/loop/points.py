"""The loop's port to the devices' points, and reading the levers' values as a window opens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, MutableMapping
from typing import Protocol

from gateway.errors import DrgwError
from gateway.loop.policy import Key, Lever

log = logging.getLogger(__name__)

READ_ATTEMPTS = 3  # a bus hiccup must not cost the event a lever


class PointIO(Protocol):
    async def write(self, device: str, name: str, value: float) -> None: ...
    async def read(self, device: str, name: str) -> float | None: ...


async def read_levers(io: PointIO, levers: Iterable[Lever], current: MutableMapping[Key, float]) -> None:
    """Each lever's present value into `current` (a value already there wins); an unreadable lever
    is logged and left out (the policy skips it: it could not be restored)."""
    for lever in levers:
        value = None
        for attempt in range(READ_ATTEMPTS):
            try:
                value = await io.read(lever.device, lever.point)
                break
            except (DrgwError, OSError, TimeoutError) as exc:
                if attempt == READ_ATTEMPTS - 1:
                    log.error("DR lever %s.%s unreadable, left out: %s", lever.device,
                              lever.point, exc)
        if value is not None:
            current.setdefault(lever.key, value)


RESTORE_ATTEMPTS = 4  # a restore is tried this often: a shed point must not stay shed after the window
RETRY_S = 0.5  # first pause between two attempts (doubling): a bus or device busy for a moment


async def write_point(io: PointIO, device: str, point: str, value: float, *,
                      attempts: int = 1) -> str | None:
    """Write device.point = value, up to `attempts` times; None once written, else the last error
    (each failure is logged)."""
    error = "not attempted"
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(RETRY_S * 2 ** (attempt - 1))
        try:
            await io.write(device, point, value)
            return None
        except (DrgwError, OSError, TimeoutError) as exc:
            error = str(exc)
            more = f"; trying again ({attempt + 1} of {attempts})" if attempt + 1 < attempts else ""
            log.error("DR action %s.%s = %g failed: %s%s", device, point, value, exc, more)
    return error
