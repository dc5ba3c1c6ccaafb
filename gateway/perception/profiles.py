"""Device profiles: the typed model of a meter or appliance description, loaded strictly from YAML.

The schema is documented in docs/profiles.md. Loading checks every key: an unknown one, a missing one or
a bad value raises ProfileError naming the file, the place and the fix, in the way Klipper reports a
bad printer.cfg option. Nothing here performs device I/O.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ProfileError
from gateway.perception.dlt645_values import profile_item
from gateway.perception.names import check_name_unit, normalise_unit
from gateway.schema import Fields, expect_one_of

PROTOCOLS = ("modbus", "dlt645")
TABLES = ("input", "holding", "coil", "discrete")
BIT_TABLES = ("coil", "discrete")
POLL_CLASSES = ("fast", "normal", "slow")
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

    def point(self, name: str) -> Point:
        for point in self.points:
            if point.name == name:
                return point
        raise ProfileError(f"profile {self.name!r} has no point {name!r}")

    @property
    def writable(self) -> tuple[Point, ...]:
        return tuple(p for p in self.points if p.writable)


# ---------------------------------------------------------------------------------------- search


def profile_dirs() -> list[Path]:
    """Folders searched for profiles: $DRGW_PROFILES, a source checkout, the installed share dir."""
    dirs: list[Path] = []
    env = os.environ.get("DRGW_PROFILES")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    checkout = Path(__file__).resolve().parents[2] / "device_profiles"
    if checkout.is_dir():
        dirs.append(checkout)
    installed = Path(sys.prefix) / "share" / "drgw" / "device_profiles"
    if installed.is_dir():
        dirs.append(installed)
    return dirs


def profile_paths() -> list[Path]:
    """Every profile file, first folder wins when two folders hold the same name."""
    found: dict[str, Path] = {}
    for folder in profile_dirs():
        for sub in ("meters", "appliances"):
            for path in sorted((folder / sub).glob("*.yaml")):
                found.setdefault(path.stem, path)
    return [found[name] for name in sorted(found)]


def load_profile(name_or_path: str | Path) -> Profile:
    """Load one profile by name (`eastron_sdm630`) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return parse_profile(path)
    for candidate in profile_paths():
        if candidate.stem == str(name_or_path):
            return parse_profile(candidate)
    names = [p.stem for p in profile_paths()]
    raise ProfileError(
        f"no device profile named {name_or_path!r}{_suggest(str(name_or_path), names)}; "
        f"`drgw profiles list` shows the {len(names)} known profiles"
    )


def load_all() -> list[Profile]:
    return [parse_profile(path) for path in profile_paths()]


def _suggest(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------------------------------- parse


def parse_profile(path: Path) -> Profile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the profile: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    return profile_from_mapping(data, path=path)


def profile_from_mapping(data: Any, *, path: Path) -> Profile:
    top = Fields(data, where=str(path), error=ProfileError)
    top.require_int("schema", choices=(1,))
    kind = top.require_str("kind", choices=("meter", "appliance"))
    transport_fields = top.sub("transport", required=True)
    transport = _transport(transport_fields)
    bases = _address_bases(transport_fields, transport)
    points: list[Point] = []
    for i, entry in enumerate(top.list("registers", required=kind == "meter")):
        points.append(_point(Fields(entry, where=f"{path}: registers[{i}]", error=ProfileError),
                             transport, bases, writable=False))
    for i, entry in enumerate(top.list("writable", required=kind == "appliance")):
        points.append(_point(Fields(entry, where=f"{path}: writable[{i}]", error=ProfileError),
                             transport, bases, writable=True))
    _check_points(points, path=path, transport=transport)
    probe = None
    if "probe" in top:
        probe = _probe(top.sub("probe"), transport, bases)
    barriers: list[tuple[str, int]] = []
    for i, raw in enumerate(top.list("barriers")):
        barriers.extend(_barrier(raw, where=f"{path}: barriers[{i}]", bases=bases))
    profile = Profile(
        name=path.stem,
        path=path,
        kind=kind,
        vendor=top.require_str("vendor"),
        model=top.require_str("model"),
        description=top.optional_str("description") or "",
        source=top.require_str("source"),
        phases=top.optional_int("phases", choices=(1, 2, 3)),
        transport=transport,
        probe=probe,
        barriers=tuple(sorted(set(barriers))),
        points=tuple(points),
        simulation=_simulation(top.sub("simulation") if "simulation" in top else None, points),
    )
    if kind == "meter" and profile.phases is None:
        raise ProfileError(f"{path}: 'phases' is required for a meter; set it to 1 or 3")
    top.reject_unknown()
    return profile


def _transport(f: Fields) -> TransportDefaults:
    units = f.optional_list("units") or [1, 247]
    if len(units) != 2 or not all(isinstance(u, int) for u in units) or not 0 <= units[0] <= units[1] <= 247:
        f.fail("units", "must be [first, last] with 0 <= first <= last <= 247")
    max_registers = f.optional_int("max_registers") or MODBUS_MAX_REGISTERS
    if not 1 <= max_registers <= MODBUS_MAX_REGISTERS:
        f.fail("max_registers", f"must be 1..{MODBUS_MAX_REGISTERS} (the Modbus limit)")
    f.optional("address_base")  # parsed by _address_bases; mark as known
    protocol = f.optional_str("protocol", choices=PROTOCOLS) or "modbus"
    # DL/T 645-2007 bytes are 8E1 (clause 5, byte format); 2400 baud is the usual meter default.
    dlt = protocol == "dlt645"
    transport = TransportDefaults(
        protocol=protocol,
        baud=f.optional_int("baud", choices=BAUD_RATES) or (2400 if dlt else 9600),
        parity=f.optional_str("parity", choices=("N", "E", "O")) or ("E" if dlt else "N"),
        stopbits=f.optional_int("stopbits", choices=(1, 2)) or 1,
        units=(units[0], units[1]),
        byte_order=f.optional_str("byte_order", choices=("big", "little")) or "big",
        word_order=f.optional_str("word_order", choices=("big", "little")) or "big",
        max_registers=max_registers,
        min_interval_ms=float(f.optional_number("min_interval_ms") or 0),
    )
    f.reject_unknown()
    return transport


def _address_bases(f: Fields, transport: TransportDefaults) -> dict[str, int]:
    raw = f.peek("address_base", 0)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return dict.fromkeys(TABLES, raw)
    if isinstance(raw, dict):
        bases = dict.fromkeys(TABLES, 0)
        for key, value in raw.items():
            expect_one_of(key, TABLES, where=f"{f.where}: address_base", error=ProfileError)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                f.fail("address_base", f"the base of table {key!r} must be a whole number >= 0")
            bases[key] = value
        return bases
    f.fail("address_base", "must be a whole number (0 or 1) or a mapping such as "
           "{input: 30001, holding: 40001}")
    raise AssertionError  # unreachable: fail raises


def _pdu_address(f: Fields, key: str, table: str, bases: Mapping[str, int]) -> tuple[int, int]:
    """Printed address -> PDU address. An entry's own `address_base` wins over the transport's: some
    manuals print most registers as 30001-style numbers and a few (identity) as hex PDU addresses."""
    printed = f.require_int(key)
    own_base = f.optional_int("address_base")
    base = bases[table] if own_base is None else own_base
    address = printed - base
    if not 0 <= address <= 0xFFFF:
        f.fail(key, f"{printed} minus the {table} address base {base} is {address}, "
               "outside 0..65535; check 'address_base' in transport or set it on this entry")
    return printed, address


def _point(f: Fields, transport: TransportDefaults, bases: Mapping[str, int], *,
           writable: bool) -> Point:
    if transport.protocol == "dlt645":
        return _dlt645_point(f, writable=writable)
    name = f.require_str("name")
    table_choices = ("holding", "coil") if writable else TABLES
    table = f.require_str("table", choices=table_choices)
    printed, address = _pdu_address(f, "address", table, bases)
    rtype = f.require_str("type", choices=TYPES)
    if (table in BIT_TABLES) != (rtype == "bool"):
        f.fail("type", "coil and discrete points have type 'bool'; register tables cannot")
    if rtype == "string":
        count = f.require_int("length")
        if not 1 <= count <= MODBUS_MAX_REGISTERS:
            f.fail("length", "a string spans 1..125 registers")
    else:
        count = REGISTER_COUNT[rtype]
    unit = f.require_str("unit", allow_empty=True)
    problem = check_name_unit(name, unit)
    if problem:
        f.fail("name", problem)
    scale = f.optional_number("scale")
    scale_factor = f.optional_str("scale_factor")
    if scale_factor is not None and scale not in (None, 1):
        f.fail("scale_factor", "use either 'scale' or 'scale_factor', not both")
    if scale == 0:
        f.fail("scale", "must not be 0")
    lo, hi = f.optional_number("min"), f.optional_number("max")
    values = f.optional_list("values")
    if writable:
        if values is None and (lo is None or hi is None):
            f.fail("min", "a writable point needs 'min' and 'max', or 'values'")
        if lo is not None and hi is not None and lo > hi:
            f.fail("min", f"min {lo:g} is above max {hi:g}")
    elif lo is not None or hi is not None or values is not None or "default" in f:
        f.fail("min", "'min', 'max', 'values' and 'default' belong under 'writable'")
    if values is not None and not all(isinstance(v, int | float) for v in values):
        f.fail("values", "must be a list of numbers")
    invalid = f.optional_list("invalid") or []
    if not all(isinstance(v, int) for v in invalid):
        f.fail("invalid", "must be a list of raw whole numbers such as 0x8000")
    f.optional_str("note")
    point = Point(
        name=name, table=table, address=address, printed_address=printed, type=rtype, count=count,
        byte_order=f.optional_str("byte_order", choices=("big", "little")) or transport.byte_order,
        word_order=f.optional_str("word_order", choices=("big", "little")) or transport.word_order,
        scale=float(scale if scale is not None else 1), offset=float(f.optional_number("offset") or 0),
        scale_factor=scale_factor, unit=normalise_unit(unit),
        poll=f.optional_str("poll", choices=POLL_CLASSES) or "normal",
        invalid=tuple(invalid), writable=writable, min=lo, max=hi,
        values=tuple(float(v) for v in values) if values is not None else None,
        default=f.optional_number("default"),
    )
    f.reject_unknown()
    return point


def _dlt645_point(f: Fields, *, writable: bool) -> Point:
    """A DL/T 645 point (docs/dlt645.md): a data identifier in `address`, its BCD format in `type`
    (a leading '-' marks a signed format) and its size in bytes in `count`; table 'dlt645'."""
    if writable:
        f.fail("name", "DL/T 645 profiles describe meters: they have no writable points")
    name, unit = f.require_str("name"), f.require_str("unit", allow_empty=True)
    problem = check_name_unit(name, unit)
    if problem:
        f.fail("name", problem)
    di, fmt = profile_item(f)
    scale = f.optional_number("scale")
    if scale == 0:
        f.fail("scale", "must not be 0")
    f.optional_str("note")
    point = Point(
        name=name, table="dlt645", address=di, printed_address=di, type=fmt.type_name,
        count=fmt.size, byte_order="little", word_order="little",
        scale=float(scale if scale is not None else 1), offset=float(f.optional_number("offset") or 0),
        scale_factor=None, unit=normalise_unit(unit),
        poll=f.optional_str("poll", choices=POLL_CLASSES) or "normal", invalid=(), writable=False,
        min=None, max=None, values=None, default=None,
    )
    f.reject_unknown()
    return point


def _check_points(points: list[Point], *, path: Path, transport: TransportDefaults) -> None:
    seen: dict[str, int] = {}
    for i, point in enumerate(points):
        if point.name in seen:
            raise ProfileError(f"{path}: point {point.name!r} is defined twice "
                               f"(entries {seen[point.name]} and {i}); names must be unique")
        seen[point.name] = i
        if point.count > transport.max_registers:
            raise ProfileError(f"{path}: {point.name} spans {point.count} registers, more than "
                               f"max_registers {transport.max_registers}")
    by_name = {p.name: p for p in points}
    for point in points:
        if point.scale_factor is None:
            continue
        sf = by_name.get(point.scale_factor)
        if sf is None:
            raise ProfileError(f"{path}: {point.name}: scale_factor {point.scale_factor!r} names no "
                               f"point in this profile{_suggest(point.scale_factor, list(by_name))}")
        if sf.type not in ("s16", "u16"):
            raise ProfileError(f"{path}: {point.name}: scale_factor register {sf.name} must be s16")


def _probe(f: Fields, transport: TransportDefaults, bases: Mapping[str, int]) -> Probe:
    table = f.require_str("table", choices=("input", "holding"))
    _, address = _pdu_address(f, "address", table, bases)
    rtype = f.require_str("type", choices=tuple(t for t in TYPES if t != "bool"))
    count = f.require_int("length") if rtype == "string" else REGISTER_COUNT[rtype]
    expect = f.require_list("expect")
    if not expect or not all(isinstance(v, int | float | str) for v in expect):
        f.fail("expect", "must list the accepted values, e.g. [0x0070]")
    probe = Probe(
        table=table, address=address, type=rtype, count=count,
        byte_order=f.optional_str("byte_order", choices=("big", "little")) or transport.byte_order,
        word_order=f.optional_str("word_order", choices=("big", "little")) or transport.word_order,
        expect=tuple(expect),
    )
    f.reject_unknown()
    return probe


def _barrier(raw: Any, *, where: str, bases: Mapping[str, int]) -> list[tuple[str, int]]:
    """A barrier is a printed address (applies to the register tables) or {table, address}."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        out = []
        for table in ("input", "holding"):
            address = raw - bases[table]
            if 0 <= address <= 0xFFFF:
                out.append((table, address))
        if not out:
            raise ProfileError(f"{where}: {raw} is not an address in any register table")
        return out
    f = Fields(raw, where=where, error=ProfileError)
    table = f.require_str("table", choices=TABLES)
    _, address = _pdu_address(f, "address", table, bases)
    f.reject_unknown()
    return [(table, address)]


def _simulation(f: Fields | None, points: list[Point]) -> SimulationHints:
    if f is None:
        return SimulationHints(values={}, behaviour=None, rated_power_w=None)
    values = f.optional_mapping("values") or {}
    names = [p.name for p in points]
    for key in values:
        if key not in names:
            f.fail("values", f"{key!r} is not a point of this profile{_suggest(str(key), names)}")
    hints = SimulationHints(
        values=dict(values),
        behaviour=f.optional_str("behaviour", choices=("ev_charger", "relay", "battery")),
        rated_power_w=f.optional_number("rated_power_w"),
    )
    f.reject_unknown()
    return hints
