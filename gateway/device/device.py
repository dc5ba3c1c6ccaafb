"""One configured device on a bus: its settings, its schedule, what it taught the planner, its health.

Pure bookkeeping: times are arguments (monotonic seconds for scheduling, wall seconds for readings);
the bus owner does the I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.errors import DrgwError
from gateway.perception.codec import INTEGER_TYPES, decode_point, encode_point, packed_reader, response_packer
from gateway.perception.planner import RTU_REQUEST_OVERHEAD, PlannedRead, ReadPlanner
from gateway.perception.profiles import POLL_CLASSES, Point, Profile
from gateway.perception.readings import Quality, Reading
from gateway.protocol import modbus

DEFAULT_INTERVALS: Mapping[str, float] = {"fast": 1.0, "normal": 5.0, "slow": 60.0}


class DeviceError(DrgwError):
    """A device did not answer, or answered garbage: the cycle failed."""

    exit_code = 3


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
    overhead_bytes: int = RTU_REQUEST_OVERHEAD

    @property
    def min_interval(self) -> float:
        return self.profile.transport.min_interval_ms / 1000.0


class DeviceState:
    """Schedule, planner and health of one device, owned by its bus owner."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        transport = spec.profile.transport
        self.planner = ReadPlanner(max_registers=transport.max_registers,
                                   barriers=frozenset(spec.profile.barriers),
                                   overhead_bytes=spec.overhead_bytes)
        self._due: dict[str, float] = {}
        self._classes = tuple(c for c in POLL_CLASSES
                              if any(p.poll == c for p in spec.profile.points))
        self.backoff_until = 0.0
        self.failures = 0  # consecutive failed cycles
        self.retry_pending = False
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.scale_factors: dict[str, int] = {}  # latest value of each scale-factor register
        self.sf_names = frozenset(p.scale_factor for p in spec.profile.points if p.scale_factor)
        self.requests = self.timeouts = self.protocol_errors = self.splits = 0
        self.cycles = self.failed_cycles = self.overruns = self.writes = 0
        self.exceptions = self.link_errors = 0  # Modbus exception responses; transport failures

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
        points = [p for p in self.spec.profile.points if p.poll in classes]
        if self.failures >= 2:  # backing off: probe with the first request only
            plan = self.planner.plan(self.with_scale_factors(points))
            return list(plan.reads[0].points) if plan.reads else []
        return self.with_scale_factors(points)

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

    # --------------------------------------------------------------------------- decoding

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


def decode_read(state: DeviceState, read: PlannedRead, values: Sequence[int],
                now: float) -> list[Reading]:
    """Turn one response into readings; scale-factor registers are decoded first.

    Runs the read's precompiled ReadDecoder (kept in the read's cache slot); the readings are exactly
    those of decode_read_reference, which tests/unit/test_decode_fast.py checks for every profile.
    """
    decoder = read.decoder
    if not isinstance(decoder, ReadDecoder) or decoder.sf_names is not state.sf_names:
        decoder = ReadDecoder(read, state.sf_names)
        object.__setattr__(read, "decoder", decoder)  # PlannedRead is frozen; `decoder` is its cache slot
    return decoder.decode(state, values, now)


def decode_read_reference(state: DeviceState, read: PlannedRead, values: Sequence[int],
                          now: float) -> list[Reading]:
    """decode_read the plain way, point by point through codec.decode_point: the meaning of a decode,
    and the path for a response the decoder was not compiled for (too short, words out of range)."""
    points = sorted(read.points, key=lambda p: p.name not in state.sf_names)
    return [_point_reading(state, point, read.words_of(point, values), now) for point in points]


def _point_reading(state: DeviceState, point: Point, words: Sequence[int], now: float) -> Reading:
    raw_first = words[0] if point.type != "bool" else None
    if point.invalid and raw_first is not None and _raw_int(words) in point.invalid:
        return Reading(name=point.name, value=None, unit=point.unit, quality=Quality.ERROR, time=now,
                       error="not available")
    sf = state.scale_factors.get(point.scale_factor, 0) if point.scale_factor else 0
    try:
        value = decode_point(point, words, sf=sf)
    except (ValueError, OverflowError) as exc:
        return Reading(name=point.name, value=None, unit=point.unit, quality=Quality.ERROR, time=now,
                       error=str(exc))
    if point.name in state.sf_names and isinstance(value, int | float):
        sf_value = int(value)
        state.scale_factors[point.name] = sf_value - 0x10000 if sf_value > 0x7FFF else sf_value
    if isinstance(value, float) and value != value:  # NaN: the meter says "no value"
        return Reading(name=point.name, value=None, unit=point.unit, quality=Quality.ERROR, time=now,
                       error="NaN")
    return Reading(name=point.name, value=value, unit=point.unit, quality=Quality.OK, time=now)


def _raw_int(words: Sequence[int]) -> int:
    value = 0
    for word in words:
        value = (value << 16) | word
    return value


_reading = Reading  # positional: (name, value, unit, quality, time, error)

# How a ReadDecoder step decodes its point.
_NUMBER = 0  # a numeric register value: unpacked from the packed response, scaled in line
_BOOL = 1  # a coil or discrete input
_GENERIC = 2  # strings and scale-factor registers: _point_reading on the point's words


class _Step(NamedTuple):
    """One point of a read, precompiled. ReadDecoder.decode unpacks these fields in this order."""

    name: str
    unit: str
    kind: int
    unpack: Callable[[bytes, int], tuple[Any, ...]] | None  # _NUMBER: a Struct's unpack_from
    little: bool  # _NUMBER: read the response packed with little-endian words
    offset: int  # _NUMBER: byte offset of the point in the packed response
    start: int  # index of the point's first word (or bit) in the response
    end: int
    scale: float
    add: float  # the point's offset
    integer: bool  # an integer type with scale 1 and offset 0: an int result when its sf is 0 too
    sf_name: str | None
    invalid: tuple[int, ...]  # raw "not available" values, checked here for _NUMBER steps only
    point: Point


class ReadDecoder:
    """The decode of one planned read, compiled once: per point a Struct and its byte offset into the
    whole response packed as bytes, so a cycle costs one pack per response and one unpack per point,
    not a slice, a list, a reversal, a pack and an unpack per point (codec.decode_point). Values are
    bit-identical to decode_read_reference: the same float operations in the same order
    (raw x scale x 10^sf + offset).
    """

    def __init__(self, read: PlannedRead, sf_names: frozenset[str]) -> None:
        self.read = read
        self.sf_names = sf_names
        self.count = read.count
        points = sorted(read.points, key=lambda p: p.name not in sf_names)
        # A hand-made read whose points stick out of it decodes the reference way (it reports short
        # words as errors).
        self.compiled = all(read.address <= p.address and p.end <= read.end for p in points)
        self.steps = tuple(self._step(point) for point in points)
        # Pack the response only in the byte orders some point reads.
        packings = {s.little for s in self.steps if s.kind == _NUMBER}
        self._pack_big = response_packer(self.count, little=False).pack if False in packings else None
        self._pack_little = response_packer(self.count, little=True).pack if True in packings else None
        self._bulk = self._bulk_plan(points) if self.compiled else None

    def _bulk_plan(self, points: Sequence[Point]) -> tuple[struct.Struct, tuple[tuple[
            str, str, float, float, bool], ...]] | None:
        """One Struct for the whole response when every point is a plain number (no scale factor, no
        "not available" sentinel) read in one byte order, in address order, without overlaps: then a
        cycle costs one unpack, not one a point. None otherwise."""
        if not self.steps or any(s.kind != _NUMBER or s.sf_name or s.invalid for s in self.steps):
            return None
        readers = [packed_reader(p) for p in points]
        prefixes = {unpacker.format[0] for unpacker, _ in readers}
        if len(prefixes) != 1 or len({little for _, little in readers}) != 1:
            return None
        fmt, at = prefixes.pop(), 0
        for step, (unpacker, _) in zip(self.steps, readers, strict=True):
            if step.offset < at:  # out of order or overlapping
                return None
            fmt += "x" * (step.offset - at) + unpacker.format[1:]
            at = step.offset + unpacker.size
        return struct.Struct(fmt), tuple((s.name, s.unit, s.scale, s.add, s.integer)
                                         for s in self.steps)

    def _step(self, point: Point) -> _Step:
        start = point.address - self.read.address
        kind = _GENERIC
        unpack: Callable[[bytes, int], tuple[Any, ...]] | None = None
        little = False
        if point.name in self.sf_names or point.type == "string":
            pass
        elif point.type == "bool":
            kind = _BOOL
        else:
            kind = _NUMBER
            unpacker, little = packed_reader(point)
            unpack = unpacker.unpack_from
        integer = point.type in INTEGER_TYPES and point.scale == 1 and point.offset == 0
        return _Step(name=point.name, unit=point.unit, kind=kind, unpack=unpack, little=little,
                     offset=2 * start, start=start, end=start + point.count, scale=point.scale,
                     add=point.offset, integer=integer, sf_name=point.scale_factor or None,
                     invalid=point.invalid if kind == _NUMBER else (), point=point)

    def decode(self, state: DeviceState, values: Sequence[int], now: float) -> list[Reading]:
        count = self.count
        if not self.compiled or len(values) < count:
            return decode_read_reference(state, self.read, values, now)
        words = values if len(values) == count else values[:count]
        try:
            big_bytes = self._pack_big(*words) if self._pack_big else b""
            little_bytes = self._pack_little(*words) if self._pack_little else b""
        except struct.error:  # not 16-bit words: the reference path fails (or not) the same way
            return decode_read_reference(state, self.read, values, now)
        if self._bulk is not None:
            return self._decode_bulk(big_bytes or little_bytes, now)
        factors = state.scale_factors
        readings: list[Reading] = []
        append = readings.append
        ok, error = Quality.OK, Quality.ERROR
        for (name, unit, kind, unpack, in_little, offset, start, end, scale, add, integer, sf_name,
             invalid, point) in self.steps:  # unpacked as a tuple: attribute reads cost more here
            if kind != _NUMBER:
                if kind == _BOOL:
                    append(_reading(name, 1 if values[start] else 0, unit, ok, now, ""))
                else:
                    append(_point_reading(state, point, values[start:end], now))
                continue
            if invalid and _raw_int(values[start:end]) in invalid:
                append(_reading(name, None, unit, error, now, "not available"))
                continue
            raw = unpack(little_bytes if in_little else big_bytes, offset)[0]  # type: ignore[misc]
            if sf_name is None:
                # No scale factor: sf is 0 and x 10.0 ** 0 (1.0) changes no float, so it is left out.
                value = raw * scale + add
                if integer:
                    value = int(value)
            else:
                sf = factors.get(sf_name, 0)
                try:
                    value = raw * scale * (10.0 ** sf) + add
                except OverflowError as exc:  # 10.0 ** sf out of range: as codec.decode_point reports it
                    append(_reading(name, None, unit, error, now, str(exc)))
                    continue
                if integer and sf == 0:
                    value = int(value)
            if value != value:  # NaN: the meter says "no value"
                append(_reading(name, None, unit, error, now, "NaN"))
            else:
                append(_reading(name, value, unit, ok, now, ""))
        return readings

    def _decode_bulk(self, packed: bytes, now: float) -> list[Reading]:
        """decode's number case for every point at once (see _bulk_plan): the same float operations."""
        unpacker, steps = self._bulk  # type: ignore[misc]
        readings: list[Reading] = []
        append, make = readings.append, tuple.__new__  # Reading(...) without the Python-level __new__
        ok, error = Quality.OK, Quality.ERROR
        for (name, unit, scale, add, integer), raw in zip(steps, unpacker.unpack_from(packed),
                                                             strict=True):
            value = raw * scale + add
            if integer:
                value = int(value)
            if value != value:  # NaN: the meter says "no value"
                append(make(Reading, (name, None, unit, error, now, "NaN")))
            else:
                append(make(Reading, (name, value, unit, ok, now, "")))
        return readings
