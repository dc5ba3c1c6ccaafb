"""Scenario files: a simulated home described in TOML, read strictly (format in docs/simulation.md).

Every table is checked key by key: an unknown key fails with the file, the table and a "did you
mean" suggestion; a bad value names the key and what to write instead. Parsing is pure: it reads the
scenario (and any CSV recording or profile it names) and returns frozen values; nothing is started.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware_shims.appliances import phases_of
from firmware_shims.device import DeviceSettings
from firmware_shims.faults import BadCrc, ExceptionReply, Fault, NoReply, Reboot, SlowTurnaround
from firmware_shims.loads import (
    ConstantLoad,
    CsvReplay,
    DailyCurve,
    LoadModel,
    NoisyLoad,
    parse_hhmm,
)
from firmware_shims.physics import Grid
from firmware_shims.registers import Value
from firmware_shims.servers import split_host_port
from firmware_shims.wire import BAUD_RATES, LineSettings
from gateway.config.profiles import load_profile
from gateway.errors import ConfigError
from gateway.perception.profiles import Profile
from gateway.protocol import dlt645
from gateway.schema import Fields

TRANSPORTS = ("tcp", "rtu", "dlt645")
SERIAL_TRANSPORTS = ("rtu", "dlt645")  # devices on a simulated RS-485 line (a [[bus]])
# The keys each table accepts. Unknown keys are reported before missing ones: "option 'power' is not
# valid; did you mean 'power_w'?" helps more than "option 'power_w' is required".
TOP_KEYS = ("simulation", "bus", "device")
SIMULATION_KEYS = ("speed", "start")
BUS_KEYS = ("name", "baud", "parity", "stopbits", "wire_timing")
DEVICE_KEYS = ("name", "profile", "transport", "address", "unit", "load", "fault", "feeds",
               "values", "power_factor", "voltage_v", "frequency_hz", "noise", "phase_split",
               "strict_addresses", "rated_power_w", "capacity_wh", "soc_pct", "phases",
               "meter_address")
LOAD_KEYS = {"constant": ("kind", "power_w"), "daily": ("kind", "points", "utc_offset_h"),
             "csv": ("kind", "path", "column", "loop"),
             "noise": ("kind", "pct", "seed", "slot_s", "base")}
LOAD_KINDS = tuple(LOAD_KEYS)
FAULT_KEYS = ("no_reply", "exception", "bad_crc", "delay_s", "reboot_s")


@dataclass(frozen=True, slots=True)
class BusSpec:
    """One simulated RS-485 bus."""

    name: str
    line: LineSettings
    wire_timing: bool = False


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device as the scenario describes it."""

    name: str
    profile: Profile
    transport: str
    address: str
    unit: int
    load: LoadModel | None = None
    settings: DeviceSettings = field(default_factory=DeviceSettings)
    faults: tuple[Fault, ...] = ()
    feeds: str | None = None
    values: Mapping[str, Value] = field(default_factory=dict)
    meter_address: str | None = None  # a DL/T 645 meter's 12-digit address (transport dlt645)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A simulated home: devices, buses, and how fast simulated time runs."""

    devices: tuple[DeviceSpec, ...]
    buses: tuple[BusSpec, ...] = ()
    speed: float = 1.0
    start: float | None = None  # simulated POSIX time at start; None = now
    path: Path | None = None

    def bus(self, name: str) -> BusSpec:
        for bus in self.buses:
            if bus.name == name:
                return bus
        first = next(d for d in self.devices
                     if d.transport in SERIAL_TRANSPORTS and d.address == name)
        t = first.profile.transport
        line = LineSettings(baud=t.baud, parity=t.parity, stopbits=t.stopbits)
        return BusSpec(name=name, line=line)


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the scenario: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return scenario_from_mapping(data, path=path)


def check_keys(raw: Any, allowed: tuple[str, ...], *, where: str) -> None:
    """Fail on the first key of a table that is not one of `allowed`, suggesting the closest."""
    if not isinstance(raw, dict):
        return  # Fields reports a table of the wrong type
    for key in raw:
        if key not in allowed:
            hint = _hint(str(key), list(allowed))
            raise ConfigError(f"{where}: option {key!r} is not valid{hint}")


def scenario_from_mapping(data: Mapping[str, Any], *, path: Path) -> Scenario:
    check_keys(data, TOP_KEYS, where=str(path))
    top = Fields(dict(data), where=str(path))
    check_keys(data.get("simulation", {}), SIMULATION_KEYS, where=f"{path}: simulation")
    sim = top.sub("simulation")
    speed = sim.optional_number("speed") or 1.0
    if speed <= 0:
        sim.fail("speed", "must be above 0 (1 = real time, 60 = a minute per second)")
    start_text = sim.optional_str("start")
    start = None
    if start_text is not None:
        try:
            start = datetime.fromisoformat(start_text).timestamp()
        except ValueError:
            sim.fail("start",
                     f"{start_text!r} is not an ISO 8601 time such as '2024-06-01T07:00:00'")
    sim.reject_unknown()
    buses = tuple(_bus(raw, where=f"{path}: bus[{i}]") for i, raw in enumerate(top.list("bus")))
    devices = tuple(_device(raw, where=f"{path}: device[{i}]", base=path.parent)
                    for i, raw in enumerate(top.list("device", required=True)))
    top.reject_unknown()
    if not devices:
        raise ConfigError(f"{path}: a scenario needs at least one [[device]]")
    _check_references(devices, buses, path=path)
    return Scenario(devices=devices, buses=buses, speed=speed, start=start, path=path)


def _bus(raw: Any, *, where: str) -> BusSpec:
    check_keys(raw, BUS_KEYS, where=where)
    f = Fields(raw, where=where)
    name = f.require_str("name")
    line = LineSettings(
        baud=f.optional_int("baud", choices=BAUD_RATES) or 9600,
        parity=f.optional_str("parity", choices=("N", "E", "O")) or "N",
        stopbits=f.optional_int("stopbits", choices=(1, 2)) or 1,
    )
    spec = BusSpec(name=name, line=line, wire_timing=bool(f.optional_bool("wire_timing")))
    f.reject_unknown()
    return spec


def _profile(f: Fields, base: Path) -> Profile:
    ref = f.require_str("profile")
    candidate = base / ref
    target: str | Path = candidate if ("/" in ref or ref.endswith((".yaml", ".yml"))) else ref
    try:
        return load_profile(target)
    except ConfigError as exc:
        raise ConfigError(f"{f.where}: profile: {exc}") from exc


def _device(raw: Any, *, where: str, base: Path) -> DeviceSpec:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        where = f"{where} ({raw['name']})"
    check_keys(raw, DEVICE_KEYS, where=where)
    f = Fields(raw, where=where)
    name = f.require_str("name")
    profile = _profile(f, base)
    transport = f.require_str("transport", choices=TRANSPORTS)
    address = f.require_str("address")
    if transport == "tcp":
        split_host_port(address, where=f.where)
    protocol = "dlt645" if transport == "dlt645" else "modbus"
    if profile.transport.protocol != protocol:
        f.fail("profile", f"{profile.name} is a {profile.transport.protocol} profile; transport "
               f"{transport!r} needs a {protocol} profile")
    meter_address = _meter_address(f) if transport == "dlt645" else None
    unit = 0 if meter_address is not None else f.require_int("unit")
    first, last = profile.transport.units
    if meter_address is None and not first <= unit <= last:
        f.fail("unit", f"{unit} is outside the unit range {first}..{last} of {profile.name}")
    settings = _settings(f, profile)
    load = _load(f.optional("load"), where=f"{where}: load", base=base) if "load" in f else None
    faults = (_faults(f.optional("fault"), where=f"{where}: fault", transport=transport)
              if "fault" in f else ())
    values = f.optional_mapping("values") or {}
    names = [p.name for p in profile.points]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{f.where}: values: {key!r} is not a point of {profile.name}"
                              f"{_hint(key, names)}")
        if not isinstance(value, int | float | str) or isinstance(value, bool):
            f.fail("values", f"{key} must be a number or a text, found {value!r}")
    spec = DeviceSpec(name=name, profile=profile, transport=transport, address=address, unit=unit,
                      load=load, settings=settings, faults=faults, feeds=f.optional_str("feeds"),
                      values=dict(values), meter_address=meter_address)
    f.reject_unknown()
    return spec


def _meter_address(f: Fields) -> str:
    """transport = "dlt645": the meter's 12-digit address, and no Modbus unit."""
    if "unit" in f:
        f.fail("unit", "a dlt645 meter has meter_address = \"000000000001\" instead of a unit")
    try:
        return dlt645.check_address(f.require_str("meter_address"))
    except dlt645.LocalProtocolError as exc:
        f.fail("meter_address", str(exc))


def _hint(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _settings(f: Fields, profile: Profile) -> DeviceSettings:
    defaults = DeviceSettings()
    pf = f.optional_number("power_factor")
    if pf is not None and not 0 < pf <= 1:
        f.fail("power_factor", f"{pf:g} is not a power factor; use a number in (0, 1], e.g. 0.95")
    split = f.optional_list("phase_split")
    if split is not None and not all(isinstance(s, int | float) and s >= 0 for s in split):
        f.fail("phase_split", "must list one share >= 0 per phase, e.g. [0.5, 0.3, 0.2]")
    phases_set = f.optional_int("phases", choices=(1, 2, 3))
    phases = phases_set or phases_of(profile)
    if split is not None and len(split) != phases:
        f.fail("phase_split", f"needs {phases} shares, one per phase, found {len(split)}")
    soc = f.optional_number("soc_pct")
    if soc is not None and not 0 <= soc <= 100:
        f.fail("soc_pct", f"{soc:g} is not a state of charge; use 0..100")
    capacity = f.optional_number("capacity_wh")
    if capacity is not None and capacity <= 0:
        f.fail("capacity_wh", "must be above 0")
    strict = f.optional_bool("strict_addresses")
    return DeviceSettings(
        power_factor=pf if pf is not None else defaults.power_factor,
        grid=Grid(voltage_v=f.optional_number("voltage_v") or 230.0,
                  frequency_hz=f.optional_number("frequency_hz") or 50.0,
                  noise=bool(f.optional_bool("noise")), seed=f.peek("name")),
        phase_split=tuple(float(s) for s in split) if split is not None else None,
        strict_addresses=not profile.transport.gap_reads if strict is None else strict,
        rated_power_w=f.optional_number("rated_power_w"),
        capacity_wh=capacity if capacity is not None else defaults.capacity_wh,
        soc_pct=soc if soc is not None else defaults.soc_pct,
        phases=phases_set,
    )


def _load(raw: Any, *, where: str, base: Path) -> LoadModel:
    f = Fields(raw, where=where)
    kind = f.require_str("kind", choices=LOAD_KINDS)
    check_keys(raw, LOAD_KEYS[kind], where=where)
    model: LoadModel
    if kind == "constant":
        model = ConstantLoad(f.require_number("power_w"))
    elif kind == "daily":
        points = []
        for j, entry in enumerate(f.require_list("points")):
            where = f"{f.where}: points[{j}]"
            if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                    or not isinstance(entry[1], int | float)):
                raise ConfigError(
                    f"{where}: write each point as [\"HH:MM\", watts], e.g. [\"07:30\", 1200]")
            points.append((parse_hhmm(entry[0], where=where), float(entry[1])))
        offset_h = f.optional_number("utc_offset_h")
        try:
            model = DailyCurve(points=tuple(points),
                               utc_offset_s=None if offset_h is None else offset_h * 3600.0)
        except ConfigError as exc:
            raise ConfigError(f"{f.where}: points: {exc}") from exc
    elif kind == "csv":
        loop = f.optional_bool("loop")
        model = CsvReplay.from_file(base / f.require_str("path"), column=f.optional_str("column"),
                                    loop=True if loop is None else loop)
    else:
        pct = f.require_number("pct")
        if pct < 0:
            f.fail("pct", "must be >= 0 (one standard deviation, in percent)")
        if not isinstance(f.peek("base"), dict):
            f.fail("base", "the noise needs a [device.load.base] table: the model it is added to")
        model = NoisyLoad(base=_load(f.peek("base"), where=f"{where}: base", base=base), pct=pct,
                          seed=f.optional_int("seed") or 0,
                          slot_s=f.optional_number("slot_s") or 1.0)
    f.reject_unknown()
    return model


def _faults(raw: Any, *, where: str, transport: str) -> tuple[Fault, ...]:
    check_keys(raw, FAULT_KEYS, where=where)
    f = Fields(raw, where=where)
    faults: list[Fault] = []
    if f.optional_bool("no_reply"):
        faults.append(NoReply())
    code = f.optional_int("exception")
    if code is not None:
        try:
            faults.append(ExceptionReply(code))
        except ConfigError as exc:
            f.fail("exception", str(exc))
    if f.optional_bool("bad_crc"):
        if transport not in SERIAL_TRANSPORTS:  # dlt645: a wrong checksum byte instead
            f.fail("bad_crc", "applies to rtu devices only (and dlt645 meters, as a wrong checksum): "
                   "Modbus TCP frames carry no CRC")
        faults.append(BadCrc())
    delay = f.optional_number("delay_s")
    if delay is not None:
        if delay < 0:
            f.fail("delay_s", "must be >= 0 seconds")
        faults.append(SlowTurnaround(delay))
    reboot = f.optional_number("reboot_s")
    if reboot is not None:
        if reboot < 0:
            f.fail("reboot_s", "must be >= 0 seconds")
        faults.append(Reboot(reboot))
    f.reject_unknown()
    return tuple(faults)


def _check_references(devices: tuple[DeviceSpec, ...], buses: tuple[BusSpec, ...], *,
                      path: Path) -> None:
    names = [d.name for d in devices]
    for i, device in enumerate(devices):
        where = f"{path}: device[{i}] ({device.name})"
        if names.count(device.name) > 1:
            raise ConfigError(f"{where}: name: {device.name!r} is used twice; names must be unique")
        if device.feeds is not None:
            if device.feeds not in names:
                raise ConfigError(f"{where}: feeds: no device named {device.feeds!r}"
                                  f"{_hint(device.feeds, names)}")
            if device.feeds == device.name:
                raise ConfigError(f"{where}: feeds: a device cannot feed itself")
        for other in devices[:i]:
            same_wire = other.transport == device.transport and other.address == device.address
            dynamic = device.transport == "tcp" and device.address.endswith(":0")
            if same_wire and device.meter_address is not None:
                if other.meter_address == device.meter_address:
                    raise ConfigError(f"{where}: meter_address: {device.meter_address} is already "
                                      f"used by {other.name} on {device.address}")
                continue
            if other.address == device.address and {other.transport, device.transport} == {
                    "rtu", "dlt645"}:
                raise ConfigError(f"{where}: address: bus {device.address!r} already carries "
                                  f"{other.transport} devices; a simulated bus speaks one protocol")
            if same_wire and not dynamic and other.unit == device.unit:
                raise ConfigError(f"{where}: unit: {device.unit} is already used by {other.name} "
                                  f"on {device.address}; give each device on a bus its own unit")
    bus_names = [b.name for b in buses]
    for i, bus in enumerate(buses):
        if bus_names.count(bus.name) > 1:
            raise ConfigError(f"{path}: bus[{i}]: name: {bus.name!r} is used twice")
        if not any(d.transport in SERIAL_TRANSPORTS and d.address == bus.name for d in devices):
            raise ConfigError(f"{path}: bus[{i}]: no rtu or dlt645 device has address = {bus.name!r}; "
                              "remove the bus or put a device on it")
    for i, device in enumerate(devices):
        if device.transport in SERIAL_TRANSPORTS and bus_names and device.address not in bus_names:
            raise ConfigError(f"{path}: device[{i}] ({device.name}): address: no [[bus]] named "
                              f"{device.address!r}{_hint(device.address, bus_names)}")
