"""The device layer's part of the config: the `[poll]`, `[[bus]]` and `[[device]]` sections, read strictly.

Every key is checked; errors name the file, the table and the fix. The sections are exactly what `drgw
scan` prints as a draft, so a scan result pastes in. Profiles arrive through the `load_profile` the
caller hands in (the config layer reads the files): this layer reads none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.perception.profiles import DEFAULT_INTERVALS, POLL_CLASSES, Profile
from gateway.protocol import dlt645
from gateway.schema import Bounds, Fields

ProfileSource = Callable[[str], Profile]  # a profile's name -> the Profile (raises ConfigError)
POLL_INTERVAL = Bounds(0.05, 86400, "seconds")


@dataclass(frozen=True, slots=True)
class BusConfig:
    name: str
    tcp: str | None
    serial: str | None
    baud: int
    parity: str
    stopbits: int
    frame_gap: float | None  # seconds; None = the 3.5-character silent interval
    protocol: str = "modbus"  # or "dlt645" (docs/dlt645.md): picks the bus owner
    tcp_framing: str = "tcp"  # a tcp bus: "tcp" (MBAP, Modbus TCP) or "rtu" (RTU over TCP)

    @property
    def framing(self) -> str:
        return self.tcp_framing if self.tcp else "rtu"


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    name: str
    profile: Profile
    bus: str
    unit: int
    timeout: float
    intervals: Mapping[str, float]
    role: str  # "main" (the household's main meter), "meter" or "appliance"
    address: str | None = None  # a DL/T 645 meter's 12-digit address; None on Modbus buses
    check_model: bool = True  # check the profile's probe before polling (docs/config.md)


@dataclass(frozen=True, slots=True)
class DevicesConfig:
    buses: tuple[BusConfig, ...]
    devices: tuple[DeviceConfig, ...]

    def bus(self, name: str) -> BusConfig:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(name)


def parse_devices(top: Fields, *, load_profile: ProfileSource) -> DevicesConfig:
    """Read the `[poll]`, `[[bus]]` and `[[device]]` parts of a config (marks their keys known)."""
    where = top.where
    defaults = _intervals(top.sub("poll"), DEFAULT_INTERVALS)
    buses: list[BusConfig] = []
    for i, raw in enumerate(top.list("bus")):
        buses.append(_bus(Fields(raw, where=f"{where}: bus[{i}]", error=ConfigError), buses))
    devices: list[DeviceConfig] = []
    for i, raw in enumerate(top.list("device")):
        f = Fields(raw, where=f"{where}: device[{i}]", error=ConfigError)
        devices.append(_device(f, buses=buses, devices=devices, defaults=defaults,
                               load_profile=load_profile))
    if sum(d.role == "main" for d in devices) > 1:
        raise ConfigError(f"{where}: more than one device has role = \"main\"; keep one")
    return DevicesConfig(buses=tuple(buses), devices=tuple(devices))


def _intervals(f: Fields, defaults: Mapping[str, float]) -> dict[str, float]:
    out = dict(defaults)
    for cls in POLL_CLASSES:
        value = f.peek(cls)
        if value is None:
            continue
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or not POLL_INTERVAL.holds(value)):
            f.fail(cls, f"a poll interval is {POLL_INTERVAL.text('a number')}, found {value!r}")
        out[cls] = float(value)
    f.reject_unknown()
    return out


def _bus(f: Fields, before: Sequence[BusConfig]) -> BusConfig:
    """One `[[bus]]`; `before` are the buses already read (names must be unique)."""
    tcp, serial = f.optional_str("tcp"), f.optional_str("serial")
    if (tcp is None) == (serial is None):
        f.fail("tcp", "a bus has exactly one of tcp = \"host:port\" or serial = \"/dev/ttyUSB0\"")
    # 3.5 characters are 128 ms at 300 baud (Modbus over serial line v1.02, 2.5.1.1); a second is plenty.
    gap_ms = f.optional_number("frame_gap_ms", minimum=0, maximum=1000, unit="ms")
    protocol = f.optional_str("protocol", choices=("modbus", "dlt645")) or "modbus"
    dlt = protocol == "dlt645"  # DL/T 645 meters: 8E1, usually at 2400 baud
    if dlt and tcp is not None:
        f.fail("tcp", "a DL/T 645 bus is an RS-485 line: write serial = \"/dev/ttyUSB0\"")
    framing = f.optional_str("framing", choices=("tcp", "rtu"))
    if framing == "tcp" and serial is not None:
        f.fail("framing", "a serial line always frames RTU; framing = \"tcp\" (Modbus TCP) or "
               "\"rtu\" (RTU over TCP, a serial-to-Ethernet converter) applies to a tcp bus")
    bus = BusConfig(
        name=f.require_str("name"), tcp=tcp, serial=serial,
        baud=f.optional_int("baud", minimum=300, maximum=4_000_000, unit="baud",
                            default=2400 if dlt else 9600),
        parity=f.optional_str("parity", choices=("N", "E", "O")) or ("E" if dlt else "N"),
        stopbits=f.optional_int("stopbits", choices=(1, 2)) or 1,
        frame_gap=None if gap_ms is None else gap_ms / 1000.0, protocol=protocol,
        tcp_framing=framing or "tcp",
    )
    f.reject_unknown()
    if any(b.name == bus.name for b in before):
        f.fail("name", f"bus {bus.name!r} is defined twice")
    return bus


def _device(f: Fields, *, buses: Sequence[BusConfig], devices: Sequence[DeviceConfig],
            defaults: Mapping[str, float], load_profile: ProfileSource) -> DeviceConfig:
    """One `[[device]]`; `devices` are those already read (names and bus addresses must be unique)."""
    name = f.require_str("name")
    bus_name = f.require_str("bus")
    bus_names = [b.name for b in buses]
    if bus_name not in bus_names:
        f.fail("bus", f"no [[bus]] is named {bus_name!r}; define it or use one of "
               f"{', '.join(bus_names) or '(none defined)'}")
    protocol = buses[bus_names.index(bus_name)].protocol
    unit, address = _bus_address(f, bus_name, protocol)
    profile = _profile(f, protocol, bus_name, load_profile)
    timeout = f.optional_number("timeout", minimum=0.05, maximum=60, unit="seconds", default=1.0)
    role = f.optional_str("role", choices=("main", "meter", "appliance"))
    device = DeviceConfig(
        name=name, profile=profile, bus=bus_name, unit=unit, timeout=timeout,
        intervals=_intervals(f.sub("poll"), defaults),
        role=role or ("appliance" if profile.kind == "appliance" else "meter"),
        address=address, check_model=_check_model(f, profile),
    )
    f.reject_unknown()
    _check_unique(f, device, devices)
    return device


def _check_model(f: Fields, profile: Profile) -> bool:
    """`check_model = false` skips the probe check before polling: for a variant of the model whose
    identification register the profile does not list."""
    check = f.optional_bool("check_model")
    if check is not None and profile.transport.protocol != "modbus":
        f.fail("check_model", f"{profile.name} is a {profile.transport.protocol} profile: it has no "
               "probe to check; remove the key")
    return check is not False


def _bus_address(f: Fields, bus: str, protocol: str) -> tuple[int, str | None]:
    """A device's Modbus unit, or a DL/T 645 meter's address (unit 0) on a protocol = "dlt645" bus."""
    address = _meter_address(f, bus) if protocol == "dlt645" else None
    # Modbus over serial line v1.02, 2.2: 0 is the broadcast address, 1..247 the devices' addresses
    unit = 0 if address is not None else f.require_int("unit", minimum=0, maximum=247)
    if address is None and "address" in f:
        f.fail("address", "only devices on a protocol = \"dlt645\" bus have an address; "
               "a Modbus device has unit = 1..247")
    return unit, address


def _meter_address(f: Fields, bus: str) -> str:
    """A DL/T 645 meter's address: 12 decimal digits, as text (a number would lose leading zeros)."""
    if "unit" in f:
        f.fail("unit", f"bus {bus!r} speaks DL/T 645: give the meter's address = \"000012345678\" "
               "(the 12 digits printed on the meter) instead of a unit")
    raw = f.peek("address")
    if raw is None:
        f.fail("address", "a meter on a DL/T 645 bus needs address = \"000012345678\": the 12 "
               "digits printed on the meter (`drgw scan --protocol dlt645` reads it)")
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 10**12:
        f.fail("address", f"write the address as text with its leading zeros: "
               f"address = \"{raw:012d}\"")
    try:
        return dlt645.check_address(str(raw))
    except dlt645.LocalProtocolError as exc:
        f.fail("address", str(exc))


def _profile(f: Fields, protocol: str, bus: str, load_profile: ProfileSource) -> Profile:
    """The device's profile, which must speak its bus's protocol."""
    try:
        profile = load_profile(f.require_str("profile"))
    except ConfigError as exc:
        raise ConfigError(f"{f.where}: profile: {exc}") from exc
    if profile.transport.protocol != protocol:
        f.fail("profile", f"{profile.name} is a {profile.transport.protocol} profile but bus "
               f"{bus!r} speaks {protocol}; pick a {protocol} profile or put the device "
               f"on a bus with protocol = \"{profile.transport.protocol}\"")
    return profile


def _check_unique(f: Fields, device: DeviceConfig, before: Sequence[DeviceConfig]) -> None:
    if any(d.name == device.name for d in before):
        f.fail("name", f"device {device.name!r} is defined twice; names must be unique")
    clash = [d for d in before
             if d.bus == device.bus and d.unit == device.unit and d.address == device.address]
    if clash:
        address, unit = device.address, device.unit
        key, what = ("address", f"address {address}") if address else ("unit", f"unit {unit}")
        f.fail(key, f"{what} on bus {device.bus!r} is already device {clash[0].name!r}")
