"""What every bus owner does the same way, whatever its protocol: urgent jobs ahead of the poll
schedule, one poll cycle of a device turned into a Sample (readings, or error readings and the
failure logged), and a lost serial port reopened (gateway.device.reopen). BusOwner (Modbus) and
Dlt645BusOwner inherit it; each brings its `read_points`."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.device.device import DeviceError, DeviceState
from gateway.device.reopen import PortHealth, PortLost, ReopeningLink
from gateway.device.transport import Link
from gateway.perception.readings import Reading, Sample

log = logging.getLogger("gateway.device.bus")


class PollScheduler:
    _sink: Callable[[Sample], None]
    _wall: Callable[[], float]
    _urgent: asyncio.Queue[tuple[Callable[[], object], asyncio.Future[object]]]
    _wake: asyncio.Event
    link: Link
    devices: Mapping[str, DeviceState]

    async def read_points(self, state: Any, points: Sequence[Any]) -> list[Reading]:
        raise NotImplementedError

    async def read_cycle(self, state: Any, points: Sequence[Any]) -> list[Reading]:
        """One poll cycle's reads; an owner may check something first (BusOwner: the model)."""
        return await self.read_points(state, points)

    def port_health(self) -> PortHealth | None:
        """The bus port's outages and reconnects; None for a link that is not reopened (TCP)."""
        return self.link.health() if isinstance(self.link, ReopeningLink) else None

    async def _tend_port(self, now: float) -> float:
        """Reopen a lost port when its time has come, and poll every device at once when it is
        back. Returns when to look again: inf while the port is up (or is not a ReopeningLink)."""
        port = self.link
        if not isinstance(port, ReopeningLink) or not port.lost:
            return math.inf
        if port.retry_at <= now and await port.reopen():
            for state in self.devices.values():
                state.resume(now)
            return math.inf
        return port.retry_at

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
            readings = await self.read_cycle(state, state.points_for(classes))
        except DeviceError as exc:
            state.cycle_failed(loop.time(), classes, str(exc))
            readings = state.error_readings(classes, self._wall(), str(exc))
            # Every failure is logged; gateway.ops.logs.RepeatFilter rate-limits a flapping meter.
            # A lost port was logged once for the whole bus (gateway.device.reopen).
            level = logging.DEBUG if isinstance(exc.__cause__, PortLost) else logging.WARNING
            log.log(level, "%s: %s", state.spec.name, exc, extra={"device": state.spec.name})
        else:
            if state.failures:
                log.warning("%s: answering again after %d failed cycle(s)", state.spec.name,
                            state.failures, extra={"device": state.spec.name, "state_change": True})
            state.cycle_done(started, classes)
        self._sink(Sample(device=state.spec.name, time=self._wall(), readings=tuple(readings),
                          poll=classes))
