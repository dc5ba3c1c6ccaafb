"""The master's config file (TOML), read strictly: an unknown key or a value out of range fails at
start-up naming the file, the key and the fix (docs/master.md has every key).

    [broker]    url, share_group, username, password_file, ca, cert, key
    [database]  sqlite = PATH  or  url = "postgresql://…"  (exactly one)
    [operator]  key = FILE (signs the resend commands; the gateways' [operators] allow it)
    [fleet]     gateways = [addresses] (empty: any gateway), chain_id
    [repair]    grace_s, first_retry_s, max_retry_s, lease_s, scan_s
    [service]   worker (this process's name in the database; default host-pid), verify_threads
    [metrics]   prometheus = "127.0.0.1:9561"
    [chain]     rpc, market, key, poa, outbox, relay_s, batch_max (Report relay; chain_settings.py)
    [market]    price_feed, retail, threshold, omega, mode, pricing, slot_s, lead_s, horizon_s, …
    [dashboard] listen = "127.0.0.1:9580", token_file (required off loopback), push_s
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.master.chain_settings import ChainSettings, MarketOps, parse_chain, parse_market
from gateway.master.dashboard import DashboardSettings, parse_dashboard
from gateway.network import topics
from gateway.schema import Fields

_SECTIONS = ("broker", "database", "operator", "fleet", "repair", "service", "metrics",
             "dashboard", "chain", "market")


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairPolicy:
    """When a gap gets a resend: after `grace_ms` (batches in flight on another worker), then
    with exponential backoff from `first_retry_ms` doubling up to `max_retry_ms`."""

    grace_ms: int = 5_000
    first_retry_ms: int = 10_000
    max_retry_ms: int = 600_000
    lease_ms: int = 60_000
    scan_ms: int = 2_000

    def backoff_ms(self, attempts: int) -> int:
        """The wait after the `attempts`-th resend (1, 2, …): first, 2 x first, … capped."""
        return min(self.max_retry_ms, self.first_retry_ms << min(max(attempts - 1, 0), 30))


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerSettings:
    url: str
    share_group: str
    username: str | None = None
    password_file: Path | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterSettings:
    path: Path
    broker: BrokerSettings
    sqlite: Path | None
    database_url: str | None
    operator_key: Path | None
    gateways: frozenset[str]
    chain_id: int | None
    repair: RepairPolicy
    worker: str | None
    prometheus: str | None
    # Report relay and market operation (gateway/master/chain_settings.py): None = not run
    chain: ChainSettings | None = None
    market: MarketOps | None = None
    dashboard: DashboardSettings | None = None  # [dashboard]: the operator page, off when None
    verify_threads: int | None = None  # [service]: signature recovery threads (None: one a core)


def load(path: str | Path) -> MasterSettings:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file; write the master's config (docs/master.md)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse(data, path=p)


def parse(data: dict[str, object], *, path: Path) -> MasterSettings:
    top = Fields(data, where=str(path))
    for name in _SECTIONS:
        top.peek(name)
    top.reject_unknown()
    database = top.sub("database", required=True)
    sqlite, url = database.optional_str("sqlite"), database.optional_str("url")
    database.reject_unknown()
    if (sqlite is None) == (url is None):
        raise ConfigError(f"{path}: [database]: give exactly one of sqlite = \"PATH\" (one "
                          "machine) or url = \"postgresql://user@host/db\" (workers on many)")
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{path}: [database] url: {url.split('@')[-1]!r} is not a PostgreSQL "
                          "URL; write postgresql://user@host:5432/dbname")
    operator = top.sub("operator")
    key = operator.optional_str("key")
    operator.reject_unknown()
    metrics = top.sub("metrics")
    prometheus = metrics.optional_str("prometheus")
    metrics.reject_unknown()
    service = top.sub("service")
    worker = service.optional_str("worker")
    verify_threads = service.optional_int("verify_threads", minimum=1, maximum=64,
                                          unit="threads")
    service.reject_unknown()
    gateways, chain_id = _fleet(top.sub("fleet"))
    chain = parse_chain(top.sub("chain"), base=path.parent)
    market = parse_market(top.sub("market"), base=path.parent)
    if market is not None and chain is None:
        raise ConfigError(f"{path}: [market] price_feed needs a [chain] section (rpc, market, key) "
                          "to operate the market on")
    return MasterSettings(
        chain=chain, market=market,
        path=path, broker=_broker(top.sub("broker", required=True)),
        sqlite=None if sqlite is None else _relative(path, sqlite), database_url=url,
        operator_key=None if key is None else _relative(path, key), gateways=gateways,
        chain_id=chain_id, repair=_repair(top.sub("repair")), worker=worker, prometheus=prometheus,
        dashboard=parse_dashboard(top.sub("dashboard"), config=path),
        verify_threads=verify_threads)


def _relative(config: Path, value: str) -> Path:
    """A path in the file is relative to the file's folder, as the agent's config reads them."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else config.parent / p


def _broker(f: Fields) -> BrokerSettings:
    files = {k: f.optional_str(k) for k in ("password_file", "ca", "cert", "key")}
    out = BrokerSettings(
        url=f.require_str("url"), share_group=f.optional_str("share_group") or "drgw-master",
        username=f.optional_str("username"),
        **{k: None if v is None else Path(v) for k, v in files.items()})
    if "/" in out.share_group or "+" in out.share_group or "#" in out.share_group:
        f.fail("share_group", f"{out.share_group!r} cannot be a topic level: no / + or #")
    f.reject_unknown()
    return out


def _fleet(f: Fields) -> tuple[frozenset[str], int | None]:
    gateways = set()
    for i, item in enumerate(f.list("gateways")):
        try:
            gateways.add(topics.gw_id(str(item)))
        except ValueError as exc:
            f.fail(f"gateways[{i}]", str(exc))
    chain_id = f.optional_int("chain_id", minimum=1)
    f.reject_unknown()
    return frozenset(gateways), chain_id


def _repair(f: Fields) -> RepairPolicy:
    def ms(key: str, default: int, low: float, high: float) -> int:
        value = f.optional_number(key, minimum=low, maximum=high, unit="seconds")
        return default if value is None else int(value * 1000)

    d = RepairPolicy()
    policy = RepairPolicy(grace_ms=ms("grace_s", d.grace_ms, 0, 3600),
                          first_retry_ms=ms("first_retry_s", d.first_retry_ms, 0.1, 3600),
                          max_retry_ms=ms("max_retry_s", d.max_retry_ms, 0.1, 86_400),
                          lease_ms=ms("lease_s", d.lease_ms, 1, 3600),
                          scan_ms=ms("scan_s", d.scan_ms, 0.05, 600))
    f.reject_unknown()
    return policy
