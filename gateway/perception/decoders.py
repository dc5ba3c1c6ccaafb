"""Register decoding: one read's response words -> readings, compiled once when the read is planned.

`decode_read_reference` is the meaning of a decode: point by point through codec.decode_point. A
`ReadDecoder` gives bit-identical readings faster (tests/unit/test_decode_fast.py checks it for every
profile). What a decode needs of its device (which points are scale factors, the latest value of each)
comes in as an argument: the scale factors read are written back into the mapping handed in. Pure code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from gateway.perception.codec import INTEGER_TYPES, decode_point, packed_reader, response_packer
from gateway.perception.profiles import Point
from gateway.perception.readings import Quality, Reading


class ReadSpan(Protocol):
    """What a decoder is compiled from: where a read's words start, how many, which points they hold."""

    @property
    def address(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def points(self) -> tuple[Point, ...]: ...


class CompiledRead(ReadSpan, Protocol):
    """A planned read with its decoder (gateway.perception.planner.PlannedRead)."""

    @property
    def decoder(self) -> ReadDecoder: ...


class ScaleFactors(Protocol):
    """A device's scale-factor registers: their names, and the latest value of each (updated by a decode)."""

    @property
    def sf_names(self) -> frozenset[str]: ...
    @property
    def scale_factors(self) -> MutableMapping[str, int]: ...


@dataclass(frozen=True, slots=True)
class Span:
    """A ReadSpan as a plain value, for compiling a decoder before its read exists."""

    address: int
    count: int
    points: tuple[Point, ...]


def decode_read(state: ScaleFactors, read: CompiledRead, values: Sequence[int],
                now: float) -> list[Reading]:
    """Turn one response into readings; scale-factor registers are decoded first.

    Runs the decoder the planner compiled for this read; a read planned with other scale-factor names
    than the device's decodes the reference way.
    """
    decoder = read.decoder
    if decoder.sf_names is not state.sf_names and decoder.sf_names != state.sf_names:
        return decode_read_reference(state, read, values, now)
    return decoder.decode(values, now, state.scale_factors)


def decode_read_reference(state: ScaleFactors, read: ReadSpan, values: Sequence[int],
                          now: float) -> list[Reading]:
    """decode_read the plain way, point by point through codec.decode_point: the meaning of a decode,
    and the path for a response the decoder was not compiled for (too short, words out of range)."""
    return _reference(read.address, read.points, values, now, state.sf_names, state.scale_factors)


def _reference(address: int, points: Sequence[Point], values: Sequence[int], now: float,
               sf_names: frozenset[str], factors: MutableMapping[str, int]) -> list[Reading]:
    ordered = sorted(points, key=lambda p: p.name not in sf_names)
    return [_point_reading(point, values[point.address - address:point.address - address + point.count],
                           now, sf_names, factors)
            for point in ordered]


def _point_reading(point: Point, words: Sequence[int], now: float, sf_names: frozenset[str],
                   factors: MutableMapping[str, int]) -> Reading:
    raw_first = words[0] if point.type != "bool" else None
    if point.invalid and raw_first is not None and _raw_int(words) in point.invalid:
        return Reading(name=point.name, value=None, unit=point.unit, quality=Quality.ERROR, time=now,
                       error="not available")
    sf = factors.get(point.scale_factor, 0) if point.scale_factor else 0
    try:
        value = decode_point(point, words, sf=sf)
    except (ValueError, OverflowError) as exc:
        return Reading(name=point.name, value=None, unit=point.unit, quality=Quality.ERROR, time=now,
                       error=str(exc))
    if point.name in sf_names and isinstance(value, int | float):
        sf_value = int(value)
        factors[point.name] = sf_value - 0x10000 if sf_value > 0x7FFF else sf_value
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


_Bulk = tuple[struct.Struct, tuple[tuple[str, str, float, float, bool], ...]]


class ReadDecoder:
    """The decode of one planned read, compiled once: per point a Struct and its byte offset into the
    whole response packed as bytes, so a cycle costs one pack per response and one unpack per point,
    not a slice, a list, a reversal, a pack and an unpack per point (codec.decode_point). Values are
    bit-identical to decode_read_reference: the same float operations in the same order
    (raw x scale x 10^sf + offset). Immutable once built.
    """

    __slots__ = ("_bulk", "_pack_big", "_pack_little", "address", "compiled", "count", "points",
                 "sf_names", "steps")

    def __init__(self, read: ReadSpan, sf_names: frozenset[str]) -> None:
        self.sf_names = sf_names
        self.address, self.count = read.address, read.count
        # Scale-factor registers first: a point of the same read may be scaled by one.
        self.points = tuple(sorted(read.points, key=lambda p: p.name not in sf_names))
        # A hand-made read whose points stick out of it decodes the reference way (it reports short
        # words as errors).
        end = read.address + read.count
        self.compiled = all(read.address <= p.address and p.end <= end for p in self.points)
        self.steps = tuple(self._step(point) for point in self.points)
        # Pack the response only in the byte orders some point reads.
        packings = {s.little for s in self.steps if s.kind == _NUMBER}
        self._pack_big = response_packer(self.count, little=False).pack if False in packings else None
        self._pack_little = response_packer(self.count, little=True).pack if True in packings else None
        self._bulk = self._bulk_plan(self.points) if self.compiled else None

    def _bulk_plan(self, points: Sequence[Point]) -> _Bulk | None:
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
        start = point.address - self.address
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

    def reference(self, values: Sequence[int], now: float,
                  factors: MutableMapping[str, int]) -> list[Reading]:
        """decode_read_reference for this read."""
        return _reference(self.address, self.points, values, now, self.sf_names, factors)

    def _packed(self, values: Sequence[int]) -> tuple[bytes, bytes] | None:
        """The response packed in the byte orders its points read, or None when it cannot be (too
        short, or not 16-bit words): the reference path then fails (or not) the same way."""
        count = self.count
        if not self.compiled or len(values) < count:
            return None
        words = values if len(values) == count else values[:count]
        try:
            return (self._pack_big(*words) if self._pack_big else b"",
                    self._pack_little(*words) if self._pack_little else b"")
        except struct.error:
            return None

    def decode(self, values: Sequence[int], now: float,
               factors: MutableMapping[str, int]) -> list[Reading]:
        """The readings of one response; scale-factor registers read update `factors`."""
        packed = self._packed(values)
        if packed is None:
            return self.reference(values, now, factors)
        big_bytes, little_bytes = packed
        if self._bulk is not None:
            return self._decode_bulk(big_bytes or little_bytes, now)
        readings: list[Reading] = []
        append = readings.append
        ok, error = Quality.OK, Quality.ERROR
        for (name, unit, kind, unpack, in_little, offset, start, end, scale, add, integer, sf_name,
             invalid, point) in self.steps:  # unpacked as a tuple: attribute reads cost more here
            if kind != _NUMBER:
                if kind == _BOOL:
                    append(_reading(name, 1 if values[start] else 0, unit, ok, now, ""))
                else:
                    append(_point_reading(point, values[start:end], now, self.sf_names, factors))
                continue
            if invalid and _raw_int(values[start:end]) in invalid:
                append(_reading(name, None, unit, error, now, "not available"))
                continue
            raw = unpack(little_bytes if in_little else big_bytes, offset)[0]  # type: ignore[misc]
            if sf_name is not None:
                append(_scaled_reading(name, unit, raw * scale, add, factors.get(sf_name, 0), integer,
                                       now))
                continue
            # No scale factor: sf is 0 and x 10.0 ** 0 (1.0) changes no float, so it is left out.
            value = raw * scale + add
            if integer:
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


def _scaled_reading(name: str, unit: str, scaled: float, add: float, sf: int, integer: bool,
                    now: float) -> Reading:
    """A number scaled by a scale-factor register: (raw x scale) x 10^sf + offset, the operations and
    order of codec.decode_point; an int when the type is an integer one and nothing scaled it."""
    try:
        value = scaled * (10.0 ** sf) + add
    except OverflowError as exc:  # 10.0 ** sf out of range: as codec.decode_point reports it
        return _reading(name, None, unit, Quality.ERROR, now, str(exc))
    if integer and sf == 0:
        value = int(value)
    if value != value:  # NaN: the meter says "no value"
        return _reading(name, None, unit, Quality.ERROR, now, "NaN")
    return _reading(name, value, unit, Quality.OK, now, "")
