"""The gateway config file (TOML, docs/config.md): every section read strictly into a typed value.

Every key is checked; errors name the file, the table and the fix. The device sections (`[poll]`,
`[[bus]]`, `[[device]]`) are the device layer's own (gateway.device.config); this module reads the file,
hands them their profiles and composes the whole.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.chain.settings import ChainConfig, parse_chain
from gateway.config.profiles import load_profile
from gateway.device import config as device_config
from gateway.device.config import BusConfig, DeviceConfig, DevicesConfig
from gateway.errors import ConfigError
from gateway.loop.settings import DrConfig, parse_dr
from gateway.schema import Fields

__all__ = ["BusConfig", "DeviceConfig", "DevicesConfig", "GatewayConfig", "MetricsConfig", "MqttConfig",
           "StoreConfig", "load_config", "load_toml", "parse_config", "parse_devices"]


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def parse_devices(top: Fields) -> DevicesConfig:
    """The device sections of a config (gateway.device.config), their profiles found by name or path
    on the profile search path (gateway.config.profiles)."""
    return device_config.parse_devices(top, load_profile=load_profile)


# ---------------------------------------------------------------------------------------------
# The whole agent config: [gateway], [mqtt], [store], [operators] plus the device sections.


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
                                            for d in devices.devices}, zones=ZoneInfo)
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
