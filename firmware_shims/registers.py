"""The register image of a simulated device: which point (or probe) occupies each Modbus address.

`RegisterMap` is built once from a Profile. Given the current engineering values of the points it
answers a read of (table, address, count) with the words a real device would send, or with the
Modbus exception a real device would answer: 02 for an address no point covers (when strict; else
for a read that covers no point at all) or a read that crosses a barrier, 03 for a quantity above
the device's limit (Modbus Application Protocol v1.1b3, 6.3/6.4: "Quantity of Registers" out of
range is exception 03). Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pymodbus.constants import ExcCodes

from gateway.errors import ProfileError
from gateway.perception.codec import decode_point, encode_point, encode_raw
from gateway.perception.profiles import BIT_TABLES, Point, Probe, Profile

# Modbus function code -> the table it addresses (MODBUS Application Protocol v1.1b3, 6.1-6.17).
FUNCTION_TABLES = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding",
                   16: "holding", 22: "holding", 23: "holding", 4: "input"}
READ_FUNCTIONS = (1, 2, 3, 4)
_INTEGER_RANGE = {"u16": (0, 0xFFFF), "s16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFF_FFFF),
                  "s32": (-0x8000_0000, 0x7FFF_FFFF), "u64": (0, 2**64 - 1),
                  "s64": (-(2**63), 2**63 - 1)}

Value = float | int | str


@dataclass(frozen=True, slots=True)
class Slot:
    """One address: the point (or the probe, when `point` is None) and the word index inside it."""

    point: Point | None
    index: int


def encode_saturating(point: Point, value: Value, *, sf: int) -> list[int]:
    """encode_point, but a number too large for an integer register saturates at its limit, the
    way a meter's counter register does rather than refusing to answer."""
    if point.type == "string":
        text = value if isinstance(value, str) else (f"{value:g}" if value else "")
        return encode_point(point, text)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = 0.0
    try:
        return encode_point(point, value, sf=sf)
    except ProfileError:
        lo, hi = _INTEGER_RANGE.get(point.type, (0, 0))
        raw = (float(value) - point.offset) / (point.scale * 10.0**sf)
        return encode_raw(point, max(lo, min(hi, round(raw))))


class RegisterMap:
    """Address -> slot for each table of one profile, plus barriers and limits."""

    __slots__ = ("_barriers", "_max_registers", "_probe", "_slots", "profile")

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._slots: dict[str, dict[int, Slot]] = {}
        for point in profile.points:
            table = self._slots.setdefault(point.table, {})
            for i in range(point.count):
                table[point.address + i] = Slot(point, i)
        self._probe: Probe | None = profile.probe
        if self._probe is not None:
            # The identification register answers the profile's expected value, whatever else
            # is mapped there: that is what identifies the model (docs/profiles.md, probe).
            table = self._slots.setdefault(self._probe.table, {})
            for i in range(self._probe.count):
                table[self._probe.address + i] = Slot(None, i)
        self._barriers = profile.barriers
        self._max_registers = profile.transport.max_registers

    def covers(self, table: str, address: int) -> bool:
        return address in self._slots.get(table, {})

    def points_in(self, table: str, address: int, count: int) -> list[Point]:
        """The points that have at least one word in [address, address + count)."""
        slots = self._slots.get(table, {})
        seen: dict[str, Point] = {}
        for a in range(address, address + count):
            slot = slots.get(a)
            if slot is not None and slot.point is not None:
                seen.setdefault(slot.point.name, slot.point)
        return list(seen.values())

    def check_read(self, table: str, address: int, count: int, *, strict: bool) -> ExcCodes | None:
        limit = 2000 if table in BIT_TABLES else self._max_registers
        if not 1 <= count <= limit:
            return ExcCodes.ILLEGAL_VALUE
        for barrier_table, barrier in self._barriers:
            if barrier_table == table and address < barrier < address + count:
                return ExcCodes.ILLEGAL_ADDRESS
        slots = self._slots.get(table, {})
        covered = [a in slots for a in range(address, address + count)]
        # Strict: any unmapped register is refused. Otherwise gaps between mapped registers read as
        # zeros, but a read of nothing mapped at all is still refused (no evidence says otherwise).
        refused = not all(covered) if strict else not any(covered)
        if refused:
            return ExcCodes.ILLEGAL_ADDRESS
        return None

    def read(self, table: str, address: int, count: int, values: Mapping[str, Value], *,
             strict: bool) -> list[int] | list[bool] | ExcCodes:
        """Words (or bits) for a read request, given every point's current engineering value."""
        problem = self.check_read(table, address, count, strict=strict)
        if problem is not None:
            return problem
        slots = self._slots.get(table, {})
        if table in BIT_TABLES:
            return [bool(_number(values.get(s.point.name, 0))) if s and s.point else False
                    for s in (slots.get(a) for a in range(address, address + count))]
        words: list[int] = []
        cache: dict[str | None, list[int]] = {}
        for a in range(address, address + count):
            slot = slots.get(a)
            if slot is None:
                words.append(0)
                continue
            key = slot.point.name if slot.point is not None else None
            if key not in cache:
                cache[key] = self._encode(slot.point, values)
            words.append(cache[key][slot.index])
        return words

    def _encode(self, point: Point | None, values: Mapping[str, Value]) -> list[int]:
        if point is None:
            assert self._probe is not None
            return encode_raw(self._probe, self._probe.expect[0])
        default: Value = "" if point.type == "string" else 0
        return encode_saturating(point, values.get(point.name, default), sf=self.sf(point, values))

    @staticmethod
    def sf(point: Point, values: Mapping[str, Value]) -> int:
        if point.scale_factor is None:
            return 0
        return int(_number(values.get(point.scale_factor, 0)))

    def decode_write(self, table: str, address: int, data: Sequence[int] | Sequence[bool],
                     values: Mapping[str, Value]) -> dict[str, float] | ExcCodes:
        """The engineering values a write request sets, or the exception a device would answer:
        02 when a word falls outside the writable points or only part of a point is written,
        03 when a value is outside the point's allowed range."""
        slots = self._slots.get(table, {})
        end = address + len(data)
        out: dict[str, float] = {}
        for a in range(address, end):
            slot = slots.get(a)
            if slot is None or slot.point is None or not slot.point.writable:
                return ExcCodes.ILLEGAL_ADDRESS
            point = slot.point
            if point.address < address or point.end > end:
                return ExcCodes.ILLEGAL_ADDRESS
            if point.name in out:
                continue
            words = [int(w) for w in data[point.address - address:point.end - address]]
            value = decode_point(point, words, sf=self.sf(point, values))
            if isinstance(value, str):
                return ExcCodes.ILLEGAL_VALUE
            try:
                point.check_write(float(value))
            except ProfileError:
                return ExcCodes.ILLEGAL_VALUE
            out[point.name] = float(value)
        return out


def _number(value: Value) -> float:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return 0.0
    return float(value)
