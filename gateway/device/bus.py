"""The bus owner: the one asyncio task that talks on a physical bus (a serial port or a TCP endpoint).

Everything that goes on the wire of that bus goes through its owner, strictly one request at a time,
with the configured gap between frames. Poll cycles are jobs with a due time; the owner sleeps until
the earliest one (no busy waiting) or until a write/ad-hoc read is queued, which go first.

A device that stops answering costs the others at most one timeout at a time: a failed cycle is not
retried in place but put back in the schedule behind the devices already due, and after repeated
failures the device backs off exponentially, probing with a single request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gateway.device.device import DeviceError, DeviceSpec, DeviceState, WrongModel
from gateway.device.model_check import check_model, wrong_model_message
from gateway.device.pacing import sleep_until
from gateway.device.schedule import PollScheduler
from gateway.device.transport import Link, LinkError
from gateway.errors import DrgwError
from gateway.perception.decoders import decode_read
from gateway.perception.identify import Fit, ModelCheck
from gateway.perception.planner import RTU_REQUEST_OVERHEAD, TCP_REQUEST_OVERHEAD
from gateway.perception.readings import Sample
from gateway.protocol import modbus

log = logging.getLogger(__name__)

SampleSink = Callable[[Sample], None]
T = TypeVar("T")


class BusBusy(DrgwError):
    """The bus is already granted to another scan."""


@dataclass(frozen=True, slots=True)
class BusSettings:
    framing: str  # "rtu" or "tcp"
    frame_gap: float = 0.0  # seconds of silence before each request (RTU: >= 3.5 characters)
    char_time: float = 0.0  # seconds per character on the wire (RTU), for adaptive timeouts

    @property
    def request_overhead(self) -> int:
        """What one more request costs, in bytes of gap registers worth reading instead
        (gateway.perception.planner). On a line (RTU, or RTU over TCP through a converter) it is
        the request, the reply's frame and two silent intervals: ~20 bytes. On Modbus TCP the bytes
        are nearly free and the round trip is the cost, here and in the device: reading the 12- and
        16-register gaps of an SDM630's basic block takes one request instead of three."""
        return TCP_REQUEST_OVERHEAD if self.framing == "tcp" else RTU_REQUEST_OVERHEAD


class BusOwner(PollScheduler):
    """Owns one bus: schedules the poll cycles of its devices and serialises every request."""

    def __init__(self, *, link: Link, settings: BusSettings, devices: Sequence[DeviceSpec],
                 sink: SampleSink, wall_clock: Callable[[], float] = time.time) -> None:
        self.link = link
        self.settings = settings
        self.devices = {spec.name: DeviceState(spec, request_overhead=settings.request_overhead)
                        for spec in devices}
        self._sink = sink
        self._wall = wall_clock
        self._codec: modbus.RtuClientConnection | modbus.TcpClientConnection = (
            modbus.RtuClientConnection() if settings.framing == "rtu" else modbus.TcpClientConnection())
        self._urgent: asyncio.Queue[tuple[Callable[[], object], asyncio.Future[object]]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._quiet_since = 0.0  # monotonic time the last frame ended
        self.requests = 0
        self.timeouts = 0
        self.scanning: str | None = None  # what a running scan covers (BusOwner.scan)

    # ------------------------------------------------------------------------------ schedule loop

    async def run(self) -> None:
        """Poll until cancelled."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for state in self.devices.values():
            state.start(now)
        task = asyncio.current_task()
        try:
            while True:
                # Python 3.11's asyncio.wait_for returns the inner result when a cancellation
                # arrives just as the inner future finished (cpython gh-86296): a refused TCP
                # connect then becomes a failed cycle and the cancel is lost, and a stopping
                # agent would wait for this task forever. A pending cancel is honoured here.
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError
                await self._run_urgent()
                now = loop.time()
                port_at = await self._tend_port(now)
                due_at, state = self._next_due()
                if due_at > now:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(due_at, port_at) - now):  # no extra Task
                            await self._wake.wait()
                    continue
                classes = state.due_classes(now)
                await self._poll(state, classes)
        finally:
            await self.link.close()

    def _next_due(self) -> tuple[float, DeviceState]:
        return min(((s.next_due(), s) for s in self.devices.values()), key=lambda pair: pair[0])

    async def read_cycle(self, state: DeviceState, points: Sequence[object]) -> list:  # type: ignore[type-arg]
        """A poll cycle's reads, after the model check when one is due: before the first cycle and
        after a failed one (the meter may have been swapped). A device that is not its profile's
        model raises WrongModel, so its cycles fail with error readings instead of signing another
        meter's registers as good data (docs/config.md, check_model)."""
        last = state.model
        # An unproven check of a profile with a probe (a busy device, say) is repeated next cycle.
        unsettled = last is not None and last.fit is Fit.UNPROVEN and state.spec.profile.probed
        if state.spec.check_model and (last is None or state.failures or unsettled):
            check = await check_model(functools.partial(self.transact, state), state.spec)
            if last is None or last.fit is not check.fit:
                log.info("%s: model check: %s (%s)", state.spec.name, check.fit, check.evidence,
                         extra={"device": state.spec.name})
            state.model = check
            if check.ruled_out:
                raise WrongModel(f"{wrong_model_message(state.spec, check)}; `drgw scan` identifies "
                                 "it; for a variant the probe does not know, set check_model = "
                                 "false on the device")
        return await self.read_points(state, points)

    async def verify_model(self, device: str) -> ModelCheck:
        """Run the device's model check now, ahead of the schedule (`drgw doctor`)."""
        state = self.devices[device]

        async def job() -> ModelCheck:
            return await check_model(functools.partial(self.transact, state), state.spec)

        return await self.submit(job)  # type: ignore[return-value]

    async def read_points(self, state: DeviceState, points: Sequence[object]) -> list:  # type: ignore[type-arg]
        """Read these points now, splitting reads the device refuses. Raises DeviceError on timeout."""
        readings = []
        pending = list(state.planner.plan(points).reads)  # type: ignore[arg-type]
        while pending:
            read = pending.pop(0)
            request = modbus.ReadRequest(unit=state.spec.unit, function=read.function,
                                         address=read.address, count=read.count)
            answer = await self.transact(state, request)
            if isinstance(answer, modbus.ExceptionResponse):
                if answer.code == modbus.ILLEGAL_DATA_ADDRESS and len(read.points) > 1:
                    state.planner.split(read)
                    pending[:0] = state.planner.plan(read.points).reads
                    state.splits += 1
                    continue
                if answer.code == modbus.ILLEGAL_DATA_ADDRESS:
                    state.planner.split(read)  # marks the point unsupported
                readings.extend(state.exception_readings(read, answer.message, self._wall()))
                continue
            readings.extend(decode_read(state, read, answer.values, self._wall()))
        return readings

    async def transact(self, state: DeviceState, request: modbus.Request
                       ) -> modbus.Response | modbus.ExceptionResponse:
        """One request and its answer, with the gap before it. Raises DeviceError on no answer."""
        loop = asyncio.get_running_loop()  # once a request (Python 3.11 asks getpid() each call)
        await self._quiet_line(loop, max(self.settings.frame_gap, state.spec.min_interval))
        wire = self._wire_time(request)
        timeout = state.timeout(wire)
        frame = self._codec.send(request)
        self.requests += 1
        state.requests += 1
        sent_at = loop.time()
        answer: modbus.Response | modbus.ExceptionResponse | None = None
        try:
            await self.link.write(frame)
            answer = await self._receive(loop, sent_at + timeout)
        except LinkError as exc:
            state.link_errors += 1
            self._codec.abandon()
            raise DeviceError(str(exc)) from exc
        except modbus.RemoteProtocolError as exc:
            await self._resync()
            state.protocol_errors += 1
            raise DeviceError(f"unit {request.unit}: {exc}") from exc
        finally:
            # The silent interval runs from the reply's last byte as the port handed it over
            # (Serial Line 2.5.1.1), not from whenever this task got round to it: parsing, decoding
            # and planning the next read then happen inside the gap instead of after it. Without
            # a reply heard since the request went out, it runs from now.
            heard = self.link.last_heard
            self._quiet_since = heard if answer is not None and heard >= sent_at else loop.time()
        if answer is None:
            self._codec.abandon()
            await self._resync()
        self._check_answered(state, request, answer, timeout)
        assert answer is not None
        state.observe_latency(loop.time() - sent_at - wire)
        if isinstance(answer, modbus.ExceptionResponse):
            state.exceptions += 1
        return answer

    async def _quiet_line(self, loop: asyncio.AbstractEventLoop, gap: float) -> None:
        """Wait until the line has been silent for `gap`: since our last frame or its reply, and
        since any byte heard after it (a late reply to a request we gave up on; Serial Line
        2.5.1.1 counts silence from the last character on the line, whoever sent it). What
        arrived meanwhile cannot answer the request about to go out, so it is dropped."""
        while (deadline := max(self._quiet_since, self.link.last_heard) + gap) > loop.time():
            await sleep_until(deadline)
        if self.link.last_heard > self._quiet_since:
            self.link.discard_input()

    def _check_answered(self, state: DeviceState, request: modbus.Request,
                        answer: modbus.Response | modbus.ExceptionResponse | None,
                        timeout: float) -> None:
        """Silence, or a gateway answering for a silent unit: a timeout, counted, as DeviceError."""
        if answer is None:
            why = f"no answer within {timeout * 1000:.0f} ms"
        elif isinstance(answer, modbus.ExceptionResponse) and answer.code in modbus.GATEWAY_EXCEPTIONS:
            # A TCP-to-RTU gateway answering for a unit that did not (Application Protocol 7,
            # exceptions 0A/0B): the unit's silence, as a timeout is on a serial line.
            why = f"no answer: the gateway reports {answer.message} (exception {answer.code:02X})"
        else:
            return
        self.timeouts += 1
        state.timeouts += 1
        raise DeviceError(f"unit {request.unit}: {why}")

    async def _receive(self, loop: asyncio.AbstractEventLoop, deadline: float
                       ) -> modbus.Response | modbus.ExceptionResponse | None:
        while True:
            event = self._codec.next_event()
            if not isinstance(event, type(modbus.NEED_DATA)):
                return event  # type: ignore[return-value]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            data = await self.link.read(remaining)
            if data:
                self._codec.receive_data(data)

    async def _resync(self) -> None:
        """After a timeout or a garbled frame, let the line go quiet and drop what is buffered."""
        if self.settings.framing == "rtu":
            await asyncio.sleep(max(self.settings.frame_gap, 3.5 * self.settings.char_time))
        self.link.discard_input()
        self._codec.abandon()

    def _wire_time(self, request: modbus.Request) -> float:
        if self.settings.framing != "rtu":
            return 0.0
        out = modbus.rtu_request_bytes(request)
        back = request.response_length_rtu() if isinstance(request, modbus.ReadRequest) else 8
        return (out + back) * self.settings.char_time

    # ------------------------------------------------------------------------------ commands

    async def write(self, device: str, name: str, value: float) -> None:
        state = self.devices[device]
        request = state.write_request(name, value)

        async def job() -> None:
            answer = await self.transact(state, request)
            if isinstance(answer, modbus.ExceptionResponse):
                raise DeviceError(f"{device}: the device refused writing {name} = {value:g}: "
                                  f"{answer.message}")
            state.writes += 1

        await self.submit(job)

    async def read_now(self, device: str, names: Sequence[str] | None = None) -> list:  # type: ignore[type-arg]
        """Read some or all points of a device now, ahead of the schedule."""
        state = self.devices[device]
        points = [p for p in state.spec.profile.points if names is None or p.name in names]

        async def job() -> list:  # type: ignore[type-arg]
            return await self.read_points(state, state.with_scale_factors(points))

        return await self.submit(job)  # type: ignore[return-value]

    # ------------------------------------------------------------------------------ scan

    async def scan(self, units: Sequence[int], probe: Callable[[int], Awaitable[T]], *,
                   deadline: float) -> tuple[list[T], int]:
        """Probe `units` in order while the devices keep being polled; returns (results, units probed).

        Each unit's probes run as one urgent job, so the bus is the scan's alone for that unit and a
        poll cycle waits at most one unit's probes (a short timeout each) instead of the whole scan.
        No unit is started at or after `deadline` (loop time). One scan per bus at a time: a second
        raises BusBusy with what the first is doing.
        """
        if self.scanning is not None:
            raise BusBusy(f"a scan of {self.scanning} is already running on this bus; retry when "
                          "it has replied")
        loop = asyncio.get_running_loop()
        self.scanning = f"units {units[0]}-{units[-1]}" if units else "no units"
        results: list[T] = []
        try:
            for unit in units:
                if loop.time() >= deadline:
                    break
                results.append(await self.submit(functools.partial(probe, unit)))  # type: ignore[arg-type]
        finally:
            self.scanning = None
        return results, len(results)
