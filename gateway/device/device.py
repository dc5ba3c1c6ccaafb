"""One configured device on a bus: its settings, its schedule, what it taught the planner, its health.

Pure bookkeeping: times are arguments (monotonic seconds for scheduling, wall seconds for readings);
the bus owner does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.errors import DrgwError
from gateway.perception.codec import encode_point
from gateway.perception.identify import ModelCheck
from gateway.perception.planner import RTU_REQUEST_OVERHEAD, PlannedRead, ReadPlanner
from gateway.perception.profiles import DEFAULT_INTERVALS, POLL_CLASSES, Point, Profile
from gateway.perception.readings import Quality, Reading
from gateway.protocol import modbus


class DeviceError(DrgwError):
    """A device did not answer, or answered garbage: the cycle failed."""

    exit_code = 3


class WrongModel(DeviceError):
    """The device answers, but its probe registers say it is not its profile's model: polling it
    would sign another meter's registers decoded by the wrong table as good data."""


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device as configured: which profile, which unit, how patiently to talk to it."""

    name: str
    profile: Profile
    unit: int
    intervals: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_INTERVALS))
    timeout: float = 1.0  # the longest wait for an answer, seconds
    min_timeout: float = 0.05  # adaptive timeouts never go below this (plus wire time)
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    overhead_bytes: int | None = None  # what a new request costs the planner; None: the bus's
    check_model: bool = True  # run the profile's probe before polling (docs/config.md)

    @property
    def min_interval(self) -> float:
        return self.profile.transport.min_interval_ms / 1000.0


class DeviceState:
    """Schedule, planner and health of one device, owned by its bus owner."""

    def __init__(self, spec: DeviceSpec, *, request_overhead: int = RTU_REQUEST_OVERHEAD) -> None:
        """`request_overhead`: what a new request costs on this device's bus, in bytes (the
        planner's trade of gap registers against requests), unless the spec sets its own."""
        self.spec = spec
        transport = spec.profile.transport
        # The points other points are scaled by (a power of ten read at run time, SunSpec style).
        self.sf_names = frozenset(p.scale_factor for p in spec.profile.points if p.scale_factor)
        self.planner = ReadPlanner(max_registers=transport.max_registers,
                                   barriers=frozenset(spec.profile.barriers),
                                   overhead_bytes=request_overhead if spec.overhead_bytes is None
                                   else spec.overhead_bytes, sf_names=self.sf_names)
        self._due: dict[str, float] = {}
        self._classes = tuple(c for c in POLL_CLASSES
                              if any(p.poll == c for p in spec.profile.points))
        self.backoff_until = 0.0
        self.failures = 0  # consecutive failed cycles
        self.retry_pending = False
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.scale_factors: dict[str, int] = {}  # latest value of each scale-factor register
        self.requests = self.timeouts = self.protocol_errors = self.splits = 0
        self.cycles = self.failed_cycles = self.overruns = self.writes = 0
        self.exceptions = self.link_errors = 0  # Modbus exception responses; transport failures
        self.model: ModelCheck | None = None  # the last model check (None: not checked since a failure)
        self._points: dict[tuple[str, ...], list[Point]] = {}  # points_for, by poll classes

    # --------------------------------------------------------------------------- schedule

    def start(self, now: float) -> None:
        for cls in self._classes:
            self._due[cls] = now

    def next_due(self) -> float:
        if not self._due:
            return float("inf")
        return max(min(self._due.values()), self.backoff_until)

    def due_classes(self, now: float) -> tuple[str, ...]:
        """Every class due now: they are read together, so their points share requests."""
        if self.backoff_until > now:
            return ()
        return tuple(c for c in self._classes if self._due[c] <= now + 0.005)

    def cycle_done(self, started: float, classes: Iterable[str]) -> None:
        self.cycles += 1
        self.failures = 0
        self.retry_pending = False
        self.backoff_until = 0.0
        for cls in classes:
            interval = self.spec.intervals[cls]
            due = self._due[cls] + interval
            if due <= started:  # fell behind by a whole interval: skip, do not burst
                self.overruns += 1
                due = started + interval
            self._due[cls] = due

    def resume(self, now: float) -> None:
        """The bus's port is back after an outage: poll now, not when the back-off that the
        outage's failed cycles built up would end."""
        self.backoff_until = min(self.backoff_until, now)

    def cycle_failed(self, now: float, classes: Iterable[str], reason: str) -> None:
        self.failed_cycles += 1
        self.failures += 1
        if self.failures == 1 and not self.retry_pending:
            # One retry, placed behind whatever else is due now rather than repeated in place.
            self.retry_pending = True
            self.backoff_until = now
            return
        self.retry_pending = False
        delay = min(self.spec.backoff_initial * 2 ** max(0, self.failures - 2), self.spec.backoff_max)
        self.backoff_until = now + delay
        for cls in classes:
            self._due[cls] = max(self._due[cls], now)

    # --------------------------------------------------------------------------- points

    def points_for(self, classes: Sequence[str]) -> list[Point]:
        key = tuple(classes)
        points = self._points.get(key)
        if points is None:  # the profile is fixed: one list per set of classes due together
            points = self._points[key] = self.with_scale_factors(
                [p for p in self.spec.profile.points if p.poll in classes])
        if self.failures >= 2:  # backing off: probe with the first request only
            plan = self.planner.plan(points)
            return list(plan.reads[0].points) if plan.reads else []
        return points

    def with_scale_factors(self, points: Sequence[Point]) -> list[Point]:
        names = {p.name for p in points}
        extra = [self.spec.profile.point(p.scale_factor) for p in points
                 if p.scale_factor and p.scale_factor not in names]
        return list(points) + list({p.name: p for p in extra}.values())

    # --------------------------------------------------------------------------- timeouts

    def observe_latency(self, latency: float) -> None:
        """RFC 6298-style smoothing of the device's turnaround (round trip less wire time)."""
        latency = max(latency, 0.0)
        if self._srtt is None:
            self._srtt, self._rttvar = latency, latency / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - latency)
            self._srtt = 0.875 * self._srtt + 0.125 * latency

    def timeout(self, wire_time: float) -> float:
        if self._srtt is None:
            return self.spec.timeout + wire_time
        adaptive = max(self.spec.min_timeout, 2 * (self._srtt + 4 * self._rttvar))
        return wire_time + min(adaptive, self.spec.timeout)

    # --------------------------------------------------------------------------- readings, writes

    def exception_readings(self, read: PlannedRead, message: str, now: float) -> list[Reading]:
        return [Reading(name=p.name, value=None, unit=p.unit, quality=Quality.ERROR, time=now,
                        error=message) for p in read.points]

    def error_readings(self, classes: Sequence[str], now: float, message: str) -> list[Reading]:
        return [Reading(name=p.name, value=None, unit=p.unit, quality=Quality.ERROR, time=now,
                        error=message)
                for p in self.spec.profile.points if p.poll in classes]

    def write_request(self, name: str, value: float) -> modbus.WriteRequest:
        point = self.spec.profile.point(name)
        point.check_write(value)
        words = encode_point(point, value, sf=self.scale_factors.get(point.scale_factor or "", 0))
        if point.table == "coil":
            function = modbus.WRITE_SINGLE_COIL
        elif len(words) == 1:
            function = modbus.WRITE_SINGLE_REGISTER
        else:
            function = modbus.WRITE_MULTIPLE_REGISTERS
        return modbus.WriteRequest(unit=self.spec.unit, function=function, address=point.address,
                                   values=tuple(words))
