"""The gateway config file (TOML, docs/config.md): every section read strictly into a typed value.

Every key is checked; errors name the file, the table and the fix. The device sections (`[poll]`,
`[[bus]]`, `[[device]]`) are the device layer's own (gateway.device.config); this module reads the file,
hands them their profiles and composes the whole.
"""

from __future__ import annotations

import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.chain.settings import ChainConfig, parse_chain
from gateway.config.profiles import load_profile
from gateway.config.web import WebConfig, parse_web
from gateway.device import config as device_config
from gateway.device.config import BusConfig, DeviceConfig, DevicesConfig
from gateway.errors import ConfigError
from gateway.loop.market_settings import MarketConfig, parse_market
from gateway.loop.settings import DrConfig, parse_dr
from gateway.measurement.keyfile import KeyFileError, read_password_file
from gateway.network.errors import LinkConfigError
from gateway.network.openadr.settings import OpenAdrConfig, parse_openadr
from gateway.network.settings import parse_broker_url, redact, split_login
from gateway.network.views import PlainSettings, SparkplugSettings, parse_plain, parse_sparkplug
from gateway.schema import Fields

__all__ = ["BusConfig", "DeviceConfig", "DevicesConfig", "GatewayConfig", "MetricsConfig", "MqttConfig",
           "StoreConfig", "WebConfig", "load_config", "load_toml", "parse_config", "parse_devices"]


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
    broker: str  # mqtt://host:port or mqtts://host:port, without a login (that is username/password)
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
    username: str | None = None  # the MQTT login: [mqtt] username, or the user in the broker URL
    password: str | None = field(default=None, repr=False)  # as read from password_file if set
    password_file: Path | None = None  # None with a password: it is in the config file itself
    plain: PlainSettings | None = None  # [mqtt.plain]: the plain reading stream (docs/mqtt.md)
    sparkplug: SparkplugSettings | None = None  # [mqtt.sparkplug]: Sparkplug B (docs/mqtt.md)


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
    text: str = field(repr=False)  # the file as read (its hash is the config hash in the status topic)
    chain: ChainConfig | None = None  # [chain]: where this household's Reports go
    dr: DrConfig | None = None  # [dr]: baselines and levers of the closed loop
    metrics: MetricsConfig | None = None  # [metrics]: the Prometheus endpoint, off when None
    market: MarketConfig | None = None  # [market]: the household's bidding policy (docs/bidding.md)
    openadr: OpenAdrConfig | None = None  # [openadr]: the VTN the VEN registers with (docs/openadr.md)
    web: WebConfig | None = None  # [web]: the local page (gateway/agent/web), off when None

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
    broker, username, password, password_file = _login(f, base)
    cfg = MqttConfig(
        broker=broker, ca=_path(f, "ca", base), cert=_path(f, "cert", base),
        key=_path(f, "key", base), client_id=f.optional_str("client_id"),
        # MQTT 3.1.1, 3.1.2.10: Keep Alive is 16 bits; 0 would turn it off, and a dead connection
        # is found by keep-alive alone (network/link.py, Connection.publish).
        keepalive=f.optional_int("keepalive", minimum=1, maximum=65535, unit="seconds", default=30),
        batch_max=f.optional_int("batch_max", minimum=1, maximum=1000, unit="measurements",
                                 default=50),
        rate_messages=f.optional_number("rate_messages", minimum=1, maximum=1_000_000,
                                        unit="messages per second", default=200.0),
        rate_bytes=f.optional_number("rate_bytes", minimum=1000, maximum=1_000_000_000,
                                     unit="bytes per second", default=2_000_000.0),
        # MQTT 3.1.1, 2.3.1: packet identifiers are 16 bits and non-zero
        inflight=f.optional_int("inflight", minimum=1, maximum=65535, unit="messages", default=8),
        ha_discovery=bool(f.optional_bool("ha_discovery")),
        health_interval=f.optional_number("health_interval", minimum=1, maximum=86400,
                                          unit="seconds", default=30.0),
        username=username, password=password, password_file=password_file,
        plain=parse_plain(f.sub("plain")), sparkplug=parse_sparkplug(f.sub("sparkplug")),
    )
    if (cfg.cert is None) != (cfg.key is None):
        f.fail("cert", "mutual TLS needs both 'cert' and 'key'")
    f.reject_unknown()
    return cfg


def _login(f: Fields, base: Path) -> tuple[str, str | None, str | None, Path | None]:
    """The broker URL without its login, and the login: from the URL (`mqtt://user:pass@host`) or
    from `username` with `password` or `password_file` (a file only its owner may read, as key files);
    (broker, username, password, password_file)."""
    raw = f.optional_str("broker") or "mqtt://127.0.0.1:1883"
    try:
        broker, url_user, url_password = split_login(raw)
        parse_broker_url(broker)
    except LinkConfigError as exc:
        f.fail("broker", str(exc))
    username, inline, password_file = (f.optional_str("username"), f.optional_str("password"),
                                       _path(f, "password_file", base))
    if inline is not None and password_file is not None:
        f.fail("password", "give the password once: 'password' or 'password_file', not both")
    if url_user is not None:
        if username is not None or inline is not None or password_file is not None:
            f.fail("broker", f"{redact(raw)!r} carries a login and 'username'/'password'/"
                   "'password_file' give one too: keep one of them")
        return broker, url_user, url_password, None
    password = inline if password_file is None else _password_file(f, password_file)
    if password is not None and username is None:
        # MQTT 3.1.1, 3.1.2.9: a password is only sent with a user name.
        f.fail("password_file" if password_file else "password", "a password needs 'username' too")
    return broker, username, password, password_file


def _password_file(f: Fields, path: Path) -> str:
    try:
        password = read_password_file(path)
    except KeyFileError as exc:
        f.fail("password_file", str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        f.fail("password_file", f"cannot read {path}: {exc}")
    if not password:
        f.fail("password_file", f"{path} is empty: write the broker password in it (one line)")
    return password


def _store(f: Fields, base: Path) -> StoreConfig:
    cfg = StoreConfig(
        path=_path(f, "path", base) or (base / "drgw.db"),
        # A cap below 1 would evict every batch before it is sent (docs/config.md, "Ranges").
        outbox_max_rows=f.optional_int("outbox_max_rows", minimum=1, maximum=100_000_000,
                                       unit="batches", default=200_000),
        # At least 16 MiB: the cap must hold batches, and the largest is about 1.5 MB (batch_max =
        # 1000 measurements of all 31 points of an Eastron SDM630, measured with wire.encode_batch).
        outbox_max_bytes=f.optional_int("outbox_max_bytes", minimum=16 << 20, maximum=1 << 40,
                                        unit="bytes", default=512 << 20),
        outbox_max_age_s=f.optional_number("outbox_max_age_days", minimum=0.01, maximum=3650,
                                           unit="days", default=30.0) * 86400,
        measurements_max_rows=f.optional_int("measurements_max_rows", minimum=1,
                                             maximum=10**12, unit="measurements",
                                             default=5_000_000),
        merkle_interval_s=f.optional_number("merkle_interval_s", minimum=1, maximum=86400,
                                            unit="seconds", default=900.0),
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
    market = (parse_market(top.sub("market"), levers=None if dr is None else dr.levers,
                           chain=chain is not None) if "market" in top else None)
    config = GatewayConfig(
        path=path, key=key, key_password_file=_path(gw, "key_password_file", base),
        # EIP-712's chainId is a uint256 and EIP-155 ids start at 1; TOML integers end at 2**63 - 1.
        chain_id=gw.optional_int("chain_id", minimum=1, default=1),
        log_level=gw.optional_str("log_level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
        or "INFO",
        mqtt=_mqtt(top.sub("mqtt"), base), store=store,
        operators=tuple(a.lower() for a in allow), devices=devices, text=text, chain=chain, dr=dr,
        metrics=parse_metrics(top.sub("metrics")), market=market, openadr=_openadr(top, base, dr),
        web=parse_web(top.sub("web"), base=base) if "web" in top else None,
    )
    gw.reject_unknown()
    top.reject_unknown()
    return config


def _openadr(top: Fields, base: Path, dr: DrConfig | None) -> OpenAdrConfig | None:
    if "openadr" not in top:
        return None
    if dr is None:
        top.fail("openadr", "the VEN turns the VTN's events into closed-loop events: add a [dr] "
                 "section with its levers (docs/config.md), or remove [openadr]")
    return parse_openadr(top.sub("openadr"), base=base)


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}; "
                          "`drgw init` writes one") from exc
    config = parse_config(text, path=path)
    _check_password_kept(config)
    return config


def _check_password_kept(config: GatewayConfig) -> None:
    """Refuse a broker password written in a config file that any user can read. The group may:
    the installed config is 0640 root:drgw so the service's group reads it (docs/config.md)."""
    m = config.mqtt
    if m.password is None or m.password_file is not None:
        return
    try:
        mode = config.path.stat().st_mode
    except OSError:
        return  # read a moment ago; gone now, nothing left to protect
    if mode & stat.S_IRWXO:
        raise ConfigError(
            f"{config.path}: mqtt: the broker password is in this file and every user can read "
            f"it (mode {stat.S_IMODE(mode):04o}): chmod o-rwx {config.path} (0640 root:drgw, as "
            "drgw init writes it), or move the password to password_file (mode 0600)")
