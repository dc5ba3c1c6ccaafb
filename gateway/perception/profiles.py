"""Device profiles: the typed model of a meter or appliance description, and its vocabulary.

A profile is data (docs/profiles.md): `profile_schema` reads one strictly from a mapping, and the config
layer (gateway.config.profiles) finds and reads the YAML files. Nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from gateway.errors import ProfileError

PROTOCOLS = ("modbus", "dlt645")
TABLES = ("input", "holding", "coil", "discrete")
BIT_TABLES = ("coil", "discrete")
POLL_CLASSES = ("fast", "normal", "slow")
# Seconds between two reads of a poll class, unless the config's [poll] says otherwise: power moves
# fast, energy counters slowly (one polling rate per class, as Home Assistant's coordinators).
DEFAULT_INTERVALS: Mapping[str, float] = MappingProxyType({"fast": 1.0, "normal": 5.0, "slow": 60.0})
REGISTER_COUNT = {
    "u16": 1, "s16": 1, "u32": 2, "s32": 2, "f32": 2, "u64": 4, "s64": 4, "f64": 4, "bool": 1,
}
TYPES = (*REGISTER_COUNT, "string")
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
MODBUS_MAX_REGISTERS = 125  # Modbus Application Protocol v1.1b3, 6.3: quantity 1..125 (0x7D)
MODBUS_MAX_BITS = 2000  # ibid. 6.1: coils quantity 1..2000 (0x7D0)


@dataclass(frozen=True, slots=True)
class Point:
    """One register entry or writable point, with its address already turned into a PDU address."""

    name: str
    table: str
    address: int
    printed_address: int
    type: str
    count: int
    byte_order: str
    word_order: str
    scale: float
    offset: float
    scale_factor: str | None
    unit: str
    poll: str
    invalid: tuple[int, ...]
    writable: bool
    min: float | None
    max: float | None
    values: tuple[float, ...] | None
    default: float | None

    @property
    def end(self) -> int:
        """One past the last register (or bit) address this point occupies."""
        return self.address + self.count

    def check_write(self, value: float) -> None:
        """Refuse a write outside the point's allowed values, before it reaches the wire."""
        if not self.writable:
            raise ProfileError(f"point {self.name!r} is not writable")
        # `values` and a min..max range may be combined: 0 (pause) or 6..16 A for an EV charger.
        if self.values is not None and value in self.values:
            return
        ranged = self.min is not None and self.max is not None
        if ranged and self.min <= value <= self.max:  # type: ignore[operator]
            return
        allowed = [f"{v:g}" for v in self.values or ()]
        if ranged:
            allowed.append(f"{self.min:g}..{self.max:g} {self.unit}".strip())
        raise ProfileError(f"{self.name}: {value:g} is not allowed; use {' or '.join(allowed)}")


@dataclass(frozen=True, slots=True)
class TransportDefaults:
    protocol: str
    baud: int
    parity: str
    stopbits: int
    units: tuple[int, int]
    byte_order: str
    word_order: str
    max_registers: int
    min_interval_ms: float
    # The model answers a read that spans registers no point covers (with zeros or whatever it holds)
    # instead of exception 02: known from a manual or from field use, cited in the profile. False is
    # "not known": the planner still merges across small gaps and learns a barrier where refused.
    gap_reads: bool = False


@dataclass(frozen=True, slots=True)
class Probe:
    table: str
    address: int
    type: str
    count: int
    byte_order: str
    word_order: str
    expect: tuple[int | float | str, ...]


@dataclass(frozen=True, slots=True)
class PlausibleRange:
    """One check of a plausibility probe: `point` (a register of the profile, read with its own type,
    word order and scale) must read `min`..`max` in the point's unit, e.g. voltage_l1_v 80..300 V."""

    point: Point
    min: float
    max: float

    def holds(self, value: float) -> bool:
        return self.min <= value <= self.max


@dataclass(frozen=True, slots=True)
class SimulationHints:
    values: Mapping[str, float | str]
    behaviour: str | None
    rated_power_w: float | None


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    path: Path
    kind: str
    vendor: str
    model: str
    description: str
    source: str
    phases: int | None
    transport: TransportDefaults
    probe: Probe | None
    barriers: tuple[tuple[str, int], ...]
    points: tuple[Point, ...]
    simulation: SimulationHints
    # The plausibility probe (docs/profiles.md, probe): values in range at the profile's own
    # registers, the first a gate and the rest its confirmation. Empty when the profile has none.
    plausible: tuple[PlausibleRange, ...] = ()

    def point(self, name: str) -> Point:
        for point in self.points:
            if point.name == name:
                return point
        raise ProfileError(f"profile {self.name!r} has no point {name!r}")

    @property
    def probed(self) -> bool:
        """Whether a scan can propose this profile: it has an identity or a plausibility probe."""
        return self.probe is not None or bool(self.plausible)

    @property
    def writable(self) -> tuple[Point, ...]:
        return tuple(p for p in self.points if p.writable)
