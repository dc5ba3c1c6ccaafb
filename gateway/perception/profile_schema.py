"""The profile schema: one device profile read strictly from a mapping (a YAML file's content).

The schema is documented in docs/profiles.md. Every key is checked: an unknown one, a missing one or a
bad value raises ProfileError naming the file, the place and the fix, in the way Klipper reports a bad
printer.cfg option. Pure: the mapping comes in already read (gateway.config.profiles reads the files).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import ProfileError
from gateway.perception.dlt645_values import profile_item
from gateway.perception.names import check_name_unit, normalise_unit
from gateway.perception.profiles import (
    BAUD_RATES,
    BIT_TABLES,
    MODBUS_MAX_REGISTERS,
    POLL_CLASSES,
    PROTOCOLS,
    REGISTER_COUNT,
    TABLES,
    TYPES,
    PlausibleRange,
    Point,
    Probe,
    Profile,
    SimulationHints,
    TransportDefaults,
)
from gateway.schema import Fields, expect_one_of


def did_you_mean(word: str, choices: list[str]) -> str:
    """"; did you mean 'x'?" for the closest of `choices`, or "" when none is close."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def profile_from_mapping(data: Any, *, path: Path) -> Profile:
    """The profile a file at `path` holds (`path` names it and its errors; it is not read here)."""
    top = Fields(data, where=str(path), error=ProfileError)
    top.require_int("schema", choices=(1,))
    kind = top.require_str("kind", choices=("meter", "appliance"))
    transport_fields = top.sub("transport", required=True)
    transport = _transport(transport_fields)
    bases = _address_bases(transport_fields, transport)
    points = _points(top, path=path, kind=kind, transport=transport, bases=bases)
    probe: Probe | None = None
    plausible: tuple[PlausibleRange, ...] = ()
    if "probe" in top:
        probe, plausible = _probes(top.sub("probe"), transport, bases, points)
    barriers: list[tuple[str, int]] = []
    for i, raw in enumerate(top.list("barriers")):
        barriers.extend(_barrier(raw, where=f"{path}: barriers[{i}]", bases=bases))
    profile = Profile(
        name=path.stem, path=path, kind=kind,
        vendor=top.require_str("vendor"), model=top.require_str("model"),
        description=top.optional_str("description") or "", source=top.require_str("source"),
        phases=top.optional_int("phases", choices=(1, 2, 3)),
        transport=transport, probe=probe, barriers=tuple(sorted(set(barriers))), points=tuple(points),
        simulation=_simulation(top.sub("simulation") if "simulation" in top else None, points),
        plausible=plausible,
    )
    if kind == "meter" and profile.phases is None:
        raise ProfileError(f"{path}: 'phases' is required for a meter; set it to 1 or 3")
    top.reject_unknown()
    return profile


def _points(top: Fields, *, path: Path, kind: str, transport: TransportDefaults,
            bases: Mapping[str, int]) -> list[Point]:
    """The `registers` (a meter's) and `writable` (an appliance's) entries, checked as a whole."""
    points: list[Point] = []
    for i, entry in enumerate(top.list("registers", required=kind == "meter")):
        points.append(_point(Fields(entry, where=f"{path}: registers[{i}]", error=ProfileError),
                             transport, bases, writable=False))
    for i, entry in enumerate(top.list("writable", required=kind == "appliance")):
        points.append(_point(Fields(entry, where=f"{path}: writable[{i}]", error=ProfileError),
                             transport, bases, writable=True))
    _check_points(points, path=path, transport=transport)
    return points


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
        min_interval_ms=f.optional_number("min_interval_ms", minimum=0, maximum=10_000, unit="ms",
                                          default=0.0),
        gap_reads=bool(f.optional_bool("gap_reads")),
    )
    f.reject_unknown()
    return transport


def _address_bases(f: Fields, transport: TransportDefaults) -> dict[str, int]:
    raw = f.peek("address_base", 0)
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            f.fail("address_base", f"{raw} is out of range; use a whole number of at least 0")
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
    table = f.require_str("table", choices=("holding", "coil") if writable else TABLES)
    printed, address = _pdu_address(f, "address", table, bases)
    rtype, count = _register_type(f, table)
    unit = _unit(f, name)
    scale, scale_factor = _scale(f)
    lo, hi, values = _limits(f, writable=writable)
    invalid = _invalid(f)
    f.optional_str("note")
    point = Point(
        name=name, table=table, address=address, printed_address=printed, type=rtype, count=count,
        byte_order=f.optional_str("byte_order", choices=("big", "little")) or transport.byte_order,
        word_order=f.optional_str("word_order", choices=("big", "little")) or transport.word_order,
        scale=float(scale if scale is not None else 1), offset=float(f.optional_number("offset") or 0),
        scale_factor=scale_factor, unit=normalise_unit(unit),
        poll=f.optional_str("poll", choices=POLL_CLASSES) or "normal",
        invalid=invalid, writable=writable, min=lo, max=hi, values=values,
        default=f.optional_number("default"),
    )
    if point.default is not None:  # what a simulator starts from: a value the point may hold
        try:
            point.check_write(point.default)
        except ProfileError as exc:
            f.fail("default", str(exc))
    f.reject_unknown()
    return point


def _register_type(f: Fields, table: str) -> tuple[str, int]:
    """A Modbus point's type and the registers (or bits) it spans: a string's `length`, else its type's."""
    rtype = f.require_str("type", choices=TYPES)
    if (table in BIT_TABLES) != (rtype == "bool"):
        f.fail("type", "coil and discrete points have type 'bool'; register tables cannot")
    if rtype != "string":
        return rtype, REGISTER_COUNT[rtype]
    count = f.require_int("length")
    if not 1 <= count <= MODBUS_MAX_REGISTERS:
        f.fail("length", "a string spans 1..125 registers")
    return rtype, count


def _unit(f: Fields, name: str) -> str:
    """The point's unit as written, once its name and unit agree (docs/profiles.md, names)."""
    unit = f.require_str("unit", allow_empty=True)
    problem = check_name_unit(name, unit)
    if problem:
        f.fail("name", problem)
    return unit


def _scale(f: Fields) -> tuple[float | None, str | None]:
    """A fixed `scale`, or the name of a `scale_factor` register (a power of ten read at run time)."""
    scale = f.optional_number("scale")
    scale_factor = f.optional_str("scale_factor")
    if scale_factor is not None and scale not in (None, 1):
        f.fail("scale_factor", "use either 'scale' or 'scale_factor', not both")
    if scale == 0:
        f.fail("scale", "must not be 0")
    return scale, scale_factor


def _limits(f: Fields, *, writable: bool) -> tuple[float | None, float | None,
                                                   tuple[float, ...] | None]:
    """A writable point's allowed values: `min`..`max`, a list of `values`, or both."""
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
    return lo, hi, tuple(float(v) for v in values) if values is not None else None


def _invalid(f: Fields) -> tuple[int, ...]:
    """Raw values the device sends for "not available" (0x8000 and the like)."""
    invalid = f.optional_list("invalid") or []
    if not all(isinstance(v, int) for v in invalid):
        f.fail("invalid", "must be a list of raw whole numbers such as 0x8000")
    return tuple(invalid)


def _dlt645_point(f: Fields, *, writable: bool) -> Point:
    """A DL/T 645 point (docs/dlt645.md): a data identifier in `address`, its BCD format in `type`
    (a leading '-' marks a signed format) and its size in bytes in `count`; table 'dlt645'."""
    if writable:
        f.fail("name", "DL/T 645 profiles describe meters: they have no writable points")
    name = f.require_str("name")
    unit = _unit(f, name)
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
                               f"point in this profile{did_you_mean(point.scale_factor, list(by_name))}")
        if sf.type not in ("s16", "u16"):
            raise ProfileError(f"{path}: {point.name}: scale_factor register {sf.name} must be s16")


IDENTITY_KEYS = ("table", "address", "type", "length", "expect", "address_base")
PLAUSIBLE_EXAMPLE = ("[{point: voltage_l1_v, min: 80, max: 300}, "
                     "{point: frequency_hz, min: 45, max: 65}]")


def _probes(f: Fields, transport: TransportDefaults, bases: Mapping[str, int],
            points: Sequence[Point]) -> tuple[Probe | None, tuple[PlausibleRange, ...]]:
    """The `probe` section: an identification register (table, address, type, expect), a
    plausibility probe (`plausible`), or both."""
    raw = f.optional_list("plausible")
    plausible = () if raw is None else _plausible(f, raw, points)
    if not any(key in f for key in IDENTITY_KEYS):
        if not plausible:
            f.fail("table", "a probe needs an identification register (table, address, type, "
                   f"expect), a plausible list such as {PLAUSIBLE_EXAMPLE}, or both")
        f.reject_unknown()
        return None, plausible
    return _probe(f, transport, bases), plausible


def _plausible(f: Fields, raw: Sequence[Any], points: Sequence[Point]) -> tuple[PlausibleRange, ...]:
    """A plausibility probe: points of this profile and the range each must read in its unit."""
    if len(raw) < 2:
        f.fail("plausible", f"list a value and at least one confirmation, as {PLAUSIBLE_EXAMPLE}: "
               "one register in range is too weak a sign of a model")
    by_name = {p.name: p for p in points}
    checks: list[PlausibleRange] = []
    for i, entry in enumerate(raw):
        e = Fields(entry, where=f"{f.where}: plausible[{i}]", error=ProfileError)
        name = e.require_str("point")
        point = by_name.get(name)
        if point is None:
            e.fail("point", f"{name!r} is not a point of this profile{did_you_mean(name, list(by_name))}")
        if point.table not in ("input", "holding") or point.type == "string" or point.scale_factor:
            e.fail("point", f"{name} is not a number in an input or holding register with a fixed "
                   "scale; a plausibility check reads one")
        lo, hi = e.require_number("min"), e.require_number("max")
        if lo >= hi:
            e.fail("min", f"min {lo:g} must be below max {hi:g} ({point.unit or 'no unit'})")
        e.reject_unknown()
        checks.append(PlausibleRange(point=point, min=lo, max=hi))
    if len({(c.point.table, c.point.address) for c in checks}) < len(checks):
        f.fail("plausible", "each check reads a different register")
    return tuple(checks)


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
            f.fail("values", f"{key!r} is not a point of this profile{did_you_mean(str(key), names)}")
    hints = SimulationHints(
        values=dict(values),
        behaviour=f.optional_str("behaviour", choices=("ev_charger", "relay", "battery")),
        rated_power_w=f.optional_number("rated_power_w", minimum=1, maximum=1_000_000, unit="W"),
    )
    f.reject_unknown()
    return hints
