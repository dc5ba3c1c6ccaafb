"""What every bus owner does the same way, whatever its protocol: urgent jobs ahead of the poll
schedule, and one poll cycle of a device turned into a Sample (readings, or error readings and the
failure logged). BusOwner (Modbus) and Dlt645BusOwner inherit it; each brings its `read_points`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from gateway.device.device import DeviceError, DeviceState
from gateway.perception.readings import Reading, Sample

log = logging.getLogger("gateway.device.bus")


class PollScheduler:
    _sink: Callable[[Sample], None]
    _wall: Callable[[], float]
    _urgent: asyncio.Queue[tuple[Callable[[], object], asyncio.Future[object]]]
    _wake: asyncio.Event

    async def read_points(self, state: Any, points: Sequence[Any]) -> list[Reading]:
        raise NotImplementedError

    async def _run_urgent(self) -> None:
        while not self._urgent.empty():
            job, future = self._urgent.get_nowait()
            if future.cancelled():
                continue
            try:
                result = await job()  # type: ignore[misc]
            except Exception as exc:  # handed to the caller, never kills the bus
                future.set_exception(exc)
            else:
                future.set_result(result)

    async def submit(self, job: Callable[[], object]) -> object:
        """Run `job` (an async callable using this bus) ahead of the poll schedule."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._urgent.put_nowait((job, future))
        self._wake.set()
        return await future

    async def _poll(self, state: DeviceState, classes: tuple[str, ...]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            readings = await self.read_points(state, state.points_for(classes))
        except DeviceError as exc:
            state.cycle_failed(loop.time(), classes, str(exc))
            readings = state.error_readings(classes, self._wall(), str(exc))
            # Every failure is logged; gateway.ops.logs.RepeatFilter rate-limits a flapping meter.
            log.warning("%s: %s", state.spec.name, exc, extra={"device": state.spec.name})
        else:
            if state.failures:
                log.warning("%s: answering again after %d failed cycle(s)", state.spec.name,
                            state.failures, extra={"device": state.spec.name, "state_change": True})
            state.cycle_done(started, classes)
        self._sink(Sample(device=state.spec.name, time=self._wall(), readings=tuple(readings),
                          poll=classes))
