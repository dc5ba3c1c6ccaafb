"""The DL/T 645 bus owner: polls DL/T 645-2007 meters on one RS-485 line as BusOwner polls Modbus.

It keeps BusOwner's contract: one asyncio task per bus, strictly one request at a time, poll
classes scheduled by DeviceState (one retry behind the other meters, then exponential backoff, a
single probing request while backing off), `Sample`s of typed `Reading`s to the sink, ad-hoc reads
ahead of the schedule. What differs is the wire (gateway.protocol.dlt645): one data identifier (or one
data block) per request, the answer is the first frame from the addressed meter before the deadline.

A garbled answer (bad checksum, a stale frame) is retried at once, up to `retries` times: that is
line noise. Silence is not retried in place, so a dead meter costs the others one timeout per cycle.
A meter that answers "no requested data" for an item is not asked for it again (like a Modbus
register the planner marks unsupported); a refused data block is read item by item from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from gateway.device.device import DeviceError, DeviceSpec, DeviceState
from gateway.device.reopen import Backoff, ReopeningLink
from gateway.device.schedule import PollScheduler
from gateway.device.transport import Link, LinkError, SerialLink
from gateway.perception import dlt645_values as values
from gateway.perception.profiles import DEFAULT_INTERVALS, Point, Profile
from gateway.perception.readings import Quality, Reading, Sample
from gateway.protocol import dlt645

log = logging.getLogger(__name__)

SampleSink = Callable[[Sample], None]
REPLY_OVERHEAD = dlt645.FRAME_OVERHEAD + 4 + dlt645.PREAMBLE  # frame + DI + FE bytes some meters send
# DL/T 645-2007 frames are delimited by 68H/16H and the length byte, so it needs no silent interval
# like Modbus RTU; a short gap lets slow meters re-arm their receivers. 20 ms is our choice.
DEFAULT_FRAME_GAP = 0.02


@dataclass(frozen=True, slots=True)
class Dlt645Settings:
    frame_gap: float = DEFAULT_FRAME_GAP  # seconds of quiet line before each request
    char_time: float = 11 / 2400  # seconds per character: 8E1 (11 bits) at 2400 baud
    preamble: int = dlt645.PREAMBLE  # FE wake-up bytes before each request
    retries: int = 1  # immediate retries of a garbled answer

    @classmethod
    def for_line(cls, *, baud: int, parity: str, stopbits: int,
                 frame_gap: float | None = None) -> Dlt645Settings:
        bits = 1 + 8 + (0 if parity == "N" else 1) + stopbits
        return cls(frame_gap=DEFAULT_FRAME_GAP if frame_gap is None else frame_gap,
                   char_time=bits / baud)


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """A DL/T 645 meter as configured: profile, 12-digit address, how patiently to talk to it."""

    name: str
    profile: Profile
    address: str
    intervals: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_INTERVALS))
    timeout: float = 1.0


class MeterState(DeviceState):
    """DeviceState's schedule and health, plus what this meter taught us about its data items."""

    def __init__(self, spec: MeterSpec) -> None:
        super().__init__(DeviceSpec(name=spec.name, profile=spec.profile, unit=0,
                                    intervals=spec.intervals, timeout=spec.timeout))
        self.address = dlt645.check_address(spec.address)
        self.refused_blocks: set[int] = set()
        self.missing: set[int] = set()  # items the meter answered "no requested data" for

    def points_for(self, classes: Sequence[str]) -> list[Point]:
        points = [p for p in self.spec.profile.points if p.poll in classes]
        return points[:1] if self.failures >= 2 else points  # backing off: probe with one item


class GarbledAnswer(DeviceError):
    """Something came back, but not a valid answer to our request."""


class Dlt645BusOwner(PollScheduler):
    """Owns one DL/T 645 line: schedules its meters' poll cycles and serialises every request."""

    def __init__(self, *, link: Link, settings: Dlt645Settings, meters: Sequence[MeterSpec],
                 sink: SampleSink, wall_clock: Callable[[], float] = time.time) -> None:
        self.link = link
        self.settings = settings
        self.devices: dict[str, MeterState] = {spec.name: MeterState(spec) for spec in meters}
        self._sink = sink
        self._wall = wall_clock
        self._parser = dlt645.Dlt645Parser()
        self._urgent: asyncio.Queue[tuple[Callable[[], object], asyncio.Future[object]]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._quiet_since = 0.0
        self.requests = 0
        self.timeouts = 0

    # ------------------------------------------------------------------------------ schedule loop

    async def run(self) -> None:
        """Poll until cancelled."""
        loop = asyncio.get_running_loop()
        for state in self.devices.values():
            state.start(loop.time())
        try:
            while True:
                await self._run_urgent()
                now = loop.time()
                port_at = await self._tend_port(now)
                due_at, state = min(((s.next_due(), s) for s in self.devices.values()),
                                    key=lambda pair: pair[0])
                if due_at > now:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):  # no extra Task, as in bus.py
                        async with asyncio.timeout(min(due_at, port_at) - now):
                            await self._wake.wait()
                    continue
                await self._poll(state, state.due_classes(now))
        finally:
            await self.link.close()

    # ------------------------------------------------------------------------------ reading

    async def read_points(self, state: MeterState, points: Sequence[Point]) -> list[Reading]:
        """Read these points now. Raises DeviceError when the meter does not answer."""
        formats = {p.address: values.BcdFormat.from_type_name(p.type) for p in points}
        known = {di: item.format for di, item in values.STANDARD_ITEMS.items()} | formats
        readings = [_error(p, "the meter does not have this data item", self._wall())
                    for p in points if p.address in state.missing]
        wanted = [di for di in formats if di not in state.missing]
        pending = values.plan_reads(wanted, refused=state.refused_blocks)
        while pending:
            di, members = pending.pop(0)
            try:
                value = await self.read_item(state, di, reply_size=sum(known[m].size for m in members))
                parts = values.split_block(members, value, known) if len(members) > 1 else {di: value}
            except (dlt645.MeterError, dlt645.RemoteProtocolError) as exc:
                if len(members) > 1:  # a block it will not give: its items one by one from now on
                    state.refused_blocks.add(di)
                    state.splits += 1
                    pending[:0] = [(m, (m,)) for m in members if m in formats]
                    continue
                if isinstance(exc, dlt645.MeterError) and exc.code & dlt645.NO_REQUESTED_DATA:
                    state.missing.add(di)
                readings += [_error(p, str(exc), self._wall()) for p in points if p.address == di]
                continue
            now = self._wall()
            readings += [_decode(p, parts[p.address], now) for p in points if p.address in parts]
        order = {p.name: i for i, p in enumerate(points)}
        return sorted(readings, key=lambda r: order[r.name])

    async def read_item(self, state: MeterState, di: int, *, reply_size: int) -> bytes:
        """The value bytes of one data identifier (or block). Raises MeterError when the meter
        refuses, DeviceError when it stays silent or keeps answering garbage."""
        request = dlt645.read_request(state.address, di, preamble=self.settings.preamble)
        for attempt in range(self.settings.retries + 1):
            try:
                frame = await self.exchange(request, reply_bytes=REPLY_OVERHEAD + reply_size,
                                            accept=lambda f: f.from_meter and f.address == state.address,
                                            state=state)
                return dlt645.read_reply_value(frame, address=state.address, di=di)
            except (GarbledAnswer, dlt645.RemoteProtocolError) as exc:
                remote = isinstance(exc, dlt645.RemoteProtocolError)  # its message names the meter
                state.protocol_errors += remote
                if attempt == self.settings.retries:
                    raise DeviceError(str(exc) if remote else f"meter {state.address}: {exc}") from exc
        raise AssertionError("unreachable")

    async def exchange(self, request: bytes, *, reply_bytes: int, accept: Callable[[dlt645.Frame], bool],
                       state: MeterState | None = None, patience: float = 1.0) -> dlt645.Frame:
        """Send one request and return the first frame `accept` takes. The wait is the meter's
        adaptive timeout, or `patience` beyond the wire time without a meter. Raises DeviceError on
        silence, GarbledAnswer when only noise or unexpected frames came back."""
        loop = asyncio.get_running_loop()
        wait = self._quiet_since + self.settings.frame_gap - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        wire = (len(request) + reply_bytes) * self.settings.char_time
        timeout = state.timeout(wire) if state is not None else wire + patience
        who = f"meter {state.address}" if state is not None else "the line"
        self.link.discard_input()
        self._parser.clear()
        self.requests += 1
        if state is not None:
            state.requests += 1
        sent_at = loop.time()
        try:
            await self.link.write(request)
            frame, noise = await self._receive(sent_at + timeout, accept)
        except LinkError as exc:
            if state is not None:
                state.link_errors += 1
            raise DeviceError(str(exc)) from exc
        finally:
            self._quiet_since = loop.time()
        if frame is None and noise:
            if state is not None:
                state.protocol_errors += 1
            raise GarbledAnswer(f"no valid answer within {timeout * 1000:.0f} ms ({noise})")
        if frame is None:
            self.timeouts += 1
            if state is not None:
                state.timeouts += 1
            raise DeviceError(f"{who}: no answer within {timeout * 1000:.0f} ms")
        if state is not None:
            state.observe_latency(loop.time() - sent_at - wire)
        return frame

    async def _receive(self, deadline: float, accept: Callable[[dlt645.Frame], bool]
                       ) -> tuple[dlt645.Frame | None, str]:
        loop = asyncio.get_running_loop()
        noise, dropped = "", 0  # the first problem says most: later drops are its debris
        while True:
            event = self._parser.next_event()
            if isinstance(event, dlt645.Frame):
                if accept(event):
                    return event, noise
                if event.from_meter and not noise:  # our own request echoed back is not noise
                    noise = f"unexpected frame from {event.address}, control 0x{event.control:02X}"
                continue
            if isinstance(event, dlt645.Discarded):
                dropped += event.count
                noise = noise or event.reason
                noise = f"{noise.split(' [')[0]} [{dropped} byte(s) dropped]"
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None, noise
            data = await self.link.read(remaining)
            if data:
                self._parser.feed(data)

    async def read_address(self, *, timeout: float = 1.0) -> str:
        """Ask whoever is on the line for its address (13H to AA..AA): one meter per line, since
        every meter answers this and two answers collide. Raises DeviceError when none answers."""
        request = dlt645.read_address_request(preamble=self.settings.preamble)
        frame = await self.exchange(request, reply_bytes=REPLY_OVERHEAD + 6, patience=timeout,
                                    accept=lambda f: f.from_meter and f.function == dlt645.READ_ADDRESS)
        try:
            return dlt645.parse_address_reply(frame)
        except dlt645.RemoteProtocolError as exc:
            raise GarbledAnswer(str(exc)) from exc

    async def has_item(self, address: str, di: int, *, timeout: float = 1.0) -> bool:
        """Does the meter at `address` have data item `di`? False when it answers "no requested
        data" (or any other refusal); DeviceError when it does not answer."""
        request = dlt645.read_request(address, di, preamble=self.settings.preamble)
        frame = await self.exchange(request, reply_bytes=REPLY_OVERHEAD + 4, patience=timeout,
                                    accept=lambda f: f.from_meter and f.address == address)
        try:
            dlt645.read_reply_value(frame, address=address, di=di)
        except dlt645.MeterError:
            return False
        except dlt645.RemoteProtocolError as exc:
            raise GarbledAnswer(str(exc)) from exc
        return True

    # ------------------------------------------------------------------------------ commands

    async def write(self, device: str, name: str, value: float) -> NoReturn:
        raise DeviceError(f"{device}: {name} cannot be written: DL/T 645 meters are read only here")

    async def transact(self, state: DeviceState, request: object) -> NoReturn:
        """Modbus register access (fleet `read_register`) has no meaning on a DL/T 645 line."""
        raise DeviceError(f"{state.spec.name} is a DL/T 645 meter: it has data identifiers, not "
                          "Modbus registers")

    async def read_now(self, device: str, names: Sequence[str] | None = None) -> list[Reading]:
        """Read some or all points of a meter now, ahead of the schedule."""
        state = self.devices[device]
        points = [p for p in state.spec.profile.points if names is None or p.name in names]

        async def job() -> list[Reading]:
            return await self.read_points(state, points)

        return await self.submit(job)  # type: ignore[return-value]


def _decode(point: Point, raw: bytes, now: float) -> Reading:
    try:
        number = values.BcdFormat.from_type_name(point.type).decode(raw)
    except dlt645.RemoteProtocolError as exc:
        return _error(point, str(exc), now)
    return Reading(name=point.name, value=number * point.scale + point.offset, unit=point.unit,
                   quality=Quality.OK, time=now)


def _error(point: Point, message: str, now: float) -> Reading:
    return Reading(name=point.name, value=None, unit=point.unit, quality=Quality.ERROR, time=now,
                   error=message)


class Dlt645SerialLink(SerialLink):
    """SerialLink, tolerant of pseudo-terminals: Linux ptys drop the even parity DL/T 645 lines use
    (PARENB), and pyserial then fails to reopen one with EINVAL. A simulated line (firmware_shims)
    carries no parity bits, so on a pty we fall back to N rather than fail."""

    async def open(self) -> None:
        try:
            await super().open()
        except (LinkError, termios.error) as exc:  # pyserial lets termios.error through
            if self.parity == "N" or not os.path.realpath(self.port).startswith("/dev/pts/"):
                if isinstance(exc, LinkError):
                    raise
                raise LinkError(f"{self.port}: cannot set up the serial port ({exc})") from exc
            log.info("%s is a pseudo-terminal: opening it without parity", self.port)
            self.parity = "N"
            await super().open()


def serial_owner(*, port: str, baud: int, parity: str, stopbits: int, meters: Sequence[MeterSpec],
                 sink: SampleSink, frame_gap: float | None = None,
                 wall_clock: Callable[[], float] | None = None,
                 reopen: Backoff | None = None) -> Dlt645BusOwner:
    """An owner on a serial port (pyserial via SerialLink), the line set up for DL/T 645; with
    `reopen`, a lost port is reopened with that back-off (gateway.device.reopen: the agent's owners)."""
    settings = Dlt645Settings.for_line(baud=baud, parity=parity, stopbits=stopbits, frame_gap=frame_gap)
    kwargs = {} if wall_clock is None else {"wall_clock": wall_clock}
    link: Link = Dlt645SerialLink(port, baud=baud, parity=parity, stopbits=stopbits)
    if reopen is not None:
        link = ReopeningLink(link, backoff=reopen)
    return Dlt645BusOwner(link=link, settings=settings, meters=meters, sink=sink, **kwargs)


async def find_meter(*, port: str, baud: int, parity: str, timeout: float,
                     stopbits: int = 1) -> tuple[str, str] | None:
    """`drgw scan --protocol dlt645` and `drgw read` without an address: the address of the meter on
    this line and the generic profile that fits it (a meter that has phase B voltage, 02 01 02 00,
    is three-phase); None when nothing answers, GarbledAnswer when what answers cannot be read (two
    meters answering at once)."""
    owner = serial_owner(port=port, baud=baud, parity=parity, stopbits=stopbits, meters=[],
                         sink=lambda sample: None)
    await owner.link.open()
    try:
        try:
            address = await owner.read_address(timeout=timeout)
        except GarbledAnswer as exc:
            raise GarbledAnswer(f"{port} at {baud} baud: an answer came back garbled ({exc}); with "
                                "two or more meters on the line their answers collide: connect one "
                                "at a time") from exc
        except DeviceError:
            return None
        three = await owner.has_item(address, 0x02010200, timeout=timeout)
        return address, "dlt645_three_phase" if three else "dlt645_single_phase"
    finally:
        await owner.link.close()
