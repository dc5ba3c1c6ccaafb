"""The gateway config file (TOML, docs/config.md): buses and devices, read strictly.

Every key is checked; errors name the file, the table and the fix. The `[[bus]]` and `[[device]]`
sections are exactly what `drgw scan` prints as a draft, so a scan result pastes in.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.chain.settings import ChainConfig, parse_chain
from gateway.device.device import DEFAULT_INTERVALS
from gateway.errors import ConfigError
from gateway.loop.settings import DrConfig, parse_dr
from gateway.perception.profiles import POLL_CLASSES, Profile, load_profile
from gateway.protocol import dlt645
from gateway.schema import Fields


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

    @property
    def framing(self) -> str:
        return "tcp" if self.tcp else "rtu"


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


@dataclass(frozen=True, slots=True)
class DevicesConfig:
    buses: tuple[BusConfig, ...]
    devices: tuple[DeviceConfig, ...]

    def bus(self, name: str) -> BusConfig:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(name)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _intervals(f: Fields, defaults: Mapping[str, float]) -> dict[str, float]:
    out = dict(defaults)
    for cls in POLL_CLASSES:
        value = f.optional_number(cls)
        if value is not None:
            if not 0.05 <= value <= 86400:
                f.fail(cls, "a poll interval is 0.05 .. 86400 seconds")
            out[cls] = value
    f.reject_unknown()
    return out


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


def parse_devices(top: Fields) -> DevicesConfig:
    """Read the `[poll]`, `[[bus]]` and `[[device]]` parts of a config (marks their keys known)."""
    where = top.where
    defaults = _intervals(top.sub("poll"), DEFAULT_INTERVALS)
    buses: list[BusConfig] = []
    for i, raw in enumerate(top.list("bus")):
        f = Fields(raw, where=f"{where}: bus[{i}]", error=ConfigError)
        tcp, serial = f.optional_str("tcp"), f.optional_str("serial")
        if (tcp is None) == (serial is None):
            f.fail("tcp", "a bus has exactly one of tcp = \"host:port\" or serial = \"/dev/ttyUSB0\"")
        gap_ms = f.optional_number("frame_gap_ms")
        protocol = f.optional_str("protocol", choices=("modbus", "dlt645")) or "modbus"
        dlt = protocol == "dlt645"  # DL/T 645 meters: 8E1, usually at 2400 baud
        if dlt and tcp is not None:
            f.fail("tcp", "a DL/T 645 bus is an RS-485 line: write serial = \"/dev/ttyUSB0\"")
        bus = BusConfig(
            name=f.require_str("name"), tcp=tcp, serial=serial,
            baud=f.optional_int("baud") or (2400 if dlt else 9600),
            parity=f.optional_str("parity", choices=("N", "E", "O")) or ("E" if dlt else "N"),
            stopbits=f.optional_int("stopbits", choices=(1, 2)) or 1,
            frame_gap=None if gap_ms is None else gap_ms / 1000.0, protocol=protocol,
        )
        f.reject_unknown()
        if any(b.name == bus.name for b in buses):
            f.fail("name", f"bus {bus.name!r} is defined twice")
        buses.append(bus)
    devices: list[DeviceConfig] = []
    bus_names = [b.name for b in buses]
    for i, raw in enumerate(top.list("device")):
        f = Fields(raw, where=f"{where}: device[{i}]", error=ConfigError)
        name = f.require_str("name")
        bus_name = f.require_str("bus")
        if bus_name not in bus_names:
            f.fail("bus", f"no [[bus]] is named {bus_name!r}; define it or use one of "
                   f"{', '.join(bus_names) or '(none defined)'}")
        protocol = buses[bus_names.index(bus_name)].protocol
        address = _meter_address(f, bus_name) if protocol == "dlt645" else None
        unit = 0 if address is not None else f.require_int("unit")
        if not 0 <= unit <= 247:
            f.fail("unit", "a Modbus unit id is 0..247")
        if address is None and "address" in f:
            f.fail("address", "only devices on a protocol = \"dlt645\" bus have an address; "
                   "a Modbus device has unit = 1..247")
        try:
            profile = load_profile(f.require_str("profile"))
        except ConfigError as exc:
            raise ConfigError(f"{where}: device[{i}]: profile: {exc}") from exc
        if profile.transport.protocol != protocol:
            f.fail("profile", f"{profile.name} is a {profile.transport.protocol} profile but bus "
                   f"{bus_name!r} speaks {protocol}; pick a {protocol} profile or put the device "
                   f"on a bus with protocol = \"{profile.transport.protocol}\"")
        timeout = f.optional_number("timeout") or 1.0
        role = f.optional_str("role", choices=("main", "meter", "appliance"))
        device = DeviceConfig(
            name=name, profile=profile, bus=bus_name, unit=unit, timeout=timeout,
            intervals=_intervals(f.sub("poll"), defaults),
            role=role or ("appliance" if profile.kind == "appliance" else "meter"),
            address=address,
        )
        f.reject_unknown()
        if any(d.name == name for d in devices):
            f.fail("name", f"device {name!r} is defined twice; names must be unique")
        clash = [d for d in devices if d.bus == bus_name and d.unit == unit and d.address == address]
        if clash:
            key, what = ("address", f"address {address}") if address else ("unit", f"unit {unit}")
            f.fail(key, f"{what} on bus {bus_name!r} is already device {clash[0].name!r}")
        devices.append(device)
    if sum(d.role == "main" for d in devices) > 1:
        raise ConfigError(f"{where}: more than one device has role = \"main\"; keep one")
    return DevicesConfig(buses=tuple(buses), devices=tuple(devices))


# ---------------------------------------------------------------------------------------------
# The whole agent config: [gateway], [mqtt], [store], [operators] plus the device sections above.


@dataclass(frozen=True, slots=True)
class MqttConfig:
    broker: str  # mqtt://host:port or mqtts://host:port
    ca: Path | None
    cert: Path | None
    key: Path | None
    client_id: str | None
    keepalive: int
    batch_max: int  # measurements per published batch
    rate_messages: float  # replay cap, messages per second
    rate_bytes: float  # replay cap, bytes per second
    inflight: int
    ha_discovery: bool
    health_interval: float


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path
    outbox_max_rows: int
    outbox_max_bytes: int
    outbox_max_age_s: float
    measurements_max_rows: int
    merkle_interval_s: float


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """[metrics]: the optional Prometheus endpoint (gateway/ops/metrics.py)."""

    host: str  # an IP address or "localhost"; IPv6 without brackets
    port: int
    allow_remote: bool  # listening beyond loopback was asked for explicitly


def parse_metrics(f: Fields) -> MetricsConfig | None:
    """`prometheus = "127.0.0.1:9560"` turns the endpoint on. It has no authentication, so a
    non-loopback address is refused unless `allow_remote = true` says it is meant."""
    import ipaddress

    listen = f.optional_str("prometheus")
    allow_remote = bool(f.optional_bool("allow_remote"))
    f.reject_unknown()
    if listen is None:
        return None
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs brackets: [::1]:9560
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        f.fail("prometheus", f"{listen!r}: write host:port, e.g. \"127.0.0.1:9560\" "
               "(\"[::1]:9560\" for IPv6)")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        f.fail("prometheus", f"{listen!r} is not a loopback address. The endpoint has no "
               "authentication: use \"127.0.0.1:9560\" and scrape through a tunnel or a local "
               "agent, or set allow_remote = true in [metrics] to expose it on purpose (and "
               "firewall the port)")
    return MetricsConfig(host=host, port=int(port), allow_remote=allow_remote)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    key: Path
    key_password_file: Path | None
    chain_id: int
    log_level: str
    mqtt: MqttConfig
    store: StoreConfig
    operators: tuple[str, ...]
    devices: DevicesConfig
    text: str  # the file as read: its hash is the config hash in the status topic
    chain: ChainConfig | None = None  # [chain]: where this household's Reports go
    dr: DrConfig | None = None  # [dr]: baselines and levers of the closed loop
    metrics: MetricsConfig | None = None  # [metrics]: the Prometheus endpoint, off when None

    @property
    def config_hash(self) -> str:
        import hashlib

        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def _path(f: Fields, key: str, base: Path, *, required: bool = False) -> Path | None:
    value = f.require_str(key) if required else f.optional_str(key)
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else (base / path)


def _mqtt(f: Fields, base: Path) -> MqttConfig:
    broker = f.optional_str("broker") or "mqtt://127.0.0.1:1883"
    if not broker.startswith(("mqtt://", "mqtts://")):
        f.fail("broker", f"{broker!r}: write mqtt://host:port or mqtts://host:port")
    cfg = MqttConfig(
        broker=broker, ca=_path(f, "ca", base), cert=_path(f, "cert", base),
        key=_path(f, "key", base), client_id=f.optional_str("client_id"),
        keepalive=f.optional_int("keepalive") or 30,
        batch_max=f.optional_int("batch_max") or 50,
        rate_messages=f.optional_number("rate_messages") or 200.0,
        rate_bytes=f.optional_number("rate_bytes") or 2_000_000.0,
        inflight=f.optional_int("inflight") or 8,
        ha_discovery=bool(f.optional_bool("ha_discovery")),
        health_interval=f.optional_number("health_interval") or 30.0,
    )
    if (cfg.cert is None) != (cfg.key is None):
        f.fail("cert", "mutual TLS needs both 'cert' and 'key'")
    if not 1 <= cfg.batch_max <= 1000:
        f.fail("batch_max", "a batch holds 1..1000 measurements")
    f.reject_unknown()
    return cfg


def _store(f: Fields, base: Path) -> StoreConfig:
    cfg = StoreConfig(
        path=_path(f, "path", base) or (base / "drgw.db"),
        outbox_max_rows=f.optional_int("outbox_max_rows") or 200_000,
        outbox_max_bytes=f.optional_int("outbox_max_bytes") or 512 * 1024 * 1024,
        outbox_max_age_s=(f.optional_number("outbox_max_age_days") or 30.0) * 86400,
        measurements_max_rows=f.optional_int("measurements_max_rows") or 5_000_000,
        merkle_interval_s=f.optional_number("merkle_interval_s") or 900.0,
    )
    f.reject_unknown()
    return cfg


def parse_config(text: str, *, path: Path) -> GatewayConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    top = Fields(data, where=str(path), error=ConfigError)
    base = path.parent
    gw = top.sub("gateway", required=True)
    key = _path(gw, "key", base, required=True)
    assert key is not None
    operators = top.sub("operators")
    allow = operators.optional_list("allow") or []
    for i, address in enumerate(allow):
        if not (isinstance(address, str) and address.startswith("0x") and len(address) == 42):
            operators.fail(f"allow[{i}]", f"{address!r} is not an Ethereum address (0x + 40 hex)")
    operators.reject_unknown()
    store = _store(top.sub("store"), base)
    devices = parse_devices(top)
    chain = (parse_chain(top.sub("chain"), base=base, store_path=store.path)
             if "chain" in top else None)
    dr = (parse_dr(top.sub("dr"), writable={d.name: {p.name: p for p in d.profile.writable}
                                            for d in devices.devices})
          if "dr" in top else None)
    config = GatewayConfig(
        path=path, key=key, key_password_file=_path(gw, "key_password_file", base),
        chain_id=gw.optional_int("chain_id") or 1,
        log_level=gw.optional_str("log_level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
        or "INFO",
        mqtt=_mqtt(top.sub("mqtt"), base), store=store,
        operators=tuple(a.lower() for a in allow), devices=devices, text=text, chain=chain, dr=dr,
        metrics=parse_metrics(top.sub("metrics")),
    )
    gw.reject_unknown()
    top.reject_unknown()
    return config


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}; "
                          "`drgw init` writes one") from exc
    return parse_config(text, path=path)
