"""The master's `[chain]` (the market it relays to and operates, with the key that pays the gas) and
`[market]` (when to set DR windows from a price feed) sections, read strictly like the rest of
the master's config (gateway/master/settings.py; docs/master.md has every key).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.schema import Fields

MODES = ("shift", "curtail")  # seed 003, Table 1: how a kWh of response is valued (market.Mode)
PRICINGS = ("uniform", "pay-as-bid")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSettings:
    rpc: str  # JSON-RPC URL of a node
    market: str  # DRMarket address
    key: Path  # the relayer's (and market operator's) key: pays the gas
    poa: bool
    outbox: Path  # SQLite file of the relayer's signed transactions (TxSender's nonce book)
    relay_ms: int  # how often the relay sends what arrived, as one batch
    batch_max: int  # Reports in one submitReports transaction at most


MQTT_FEED = "mqtt:"  # price_feed = "mqtt:TOPIC": the retained message there is the feed


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketOps:
    """When the service sets a window: a feed slot whose |real-time - retail| price reaches
    `threshold_micro`, starting at least the market's lockout + `lead_s` and at most `horizon_s`
    from the chain's clock. Prices in micro-currency/kWh, omega in mtok/kWh per kW (the contract's
    units, docs/market.md)."""

    feed: str  # a .csv or .json file, an http(s):// URL serving either, or mqtt:TOPIC
    retail_micro: int
    threshold_micro: int
    omega_milli: int
    mode: str  # "shift" | "curtail"
    pricing: str  # "uniform" | "pay-as-bid"
    slot_s: int  # a window's length (one feed slot)
    lead_s: int  # announce at least lockout + lead_s ahead (transactions take blocks)
    horizon_s: int
    poll_ms: int
    claims: bool  # send claim(household) for the window's households after the check

    @property
    def feed_topic(self) -> str | None:
        """The broker topic of an `mqtt:TOPIC` feed (its retained message is the feed), else None."""
        return self.feed[len(MQTT_FEED):] if self.feed.startswith(MQTT_FEED) else None


def parse_chain(f: Fields, *, base: Path) -> ChainSettings | None:
    if not f.peek("rpc") and not f.peek("market") and not f.peek("key"):
        f.reject_unknown()
        return None
    rpc = f.require_str("rpc")
    if not rpc.startswith(("http://", "https://")):
        f.fail("rpc", f"{rpc!r}: write the node's JSON-RPC URL, e.g. http://127.0.0.1:8545")
    market = f.require_str("market")
    if not (market.startswith("0x") and len(market) == 42):
        f.fail("market", f"{market!r} is not an address (0x + 40 hex digits): see the deployment "
               "file of drgw market deploy")
    outbox = f.optional_str("outbox")
    out = ChainSettings(
        rpc=rpc, market=market, key=_rel(base, f.require_str("key")),
        poa=bool(f.optional_bool("poa")),
        outbox=_rel(base, outbox or "master-chain-outbox.sqlite"),
        relay_ms=int(f.optional_number("relay_s", minimum=0.05, maximum=600, unit="seconds",
                                       default=2.0) * 1000),
        batch_max=f.optional_int("batch_max", minimum=1, maximum=500, default=50))
    f.reject_unknown()
    return out


def parse_market(f: Fields, *, base: Path) -> MarketOps | None:
    feed = f.optional_str("price_feed")
    if feed is None:
        f.reject_unknown()
        return None
    if feed.startswith(MQTT_FEED):
        topic = feed[len(MQTT_FEED):]
        if not topic or any(c in topic for c in "+#\0") or len(topic.encode()) > 1024:
            f.fail("price_feed", f"{feed!r}: an MQTT feed is mqtt:TOPIC, one topic without "
                   "wildcards (+ #), e.g. mqtt:drgw/v1/market/prices")
    elif not feed.startswith(("http://", "https://")):
        feed = str(_rel(base, feed))
    retail = f.require_number("retail", minimum=0, maximum=100, unit="currency/kWh")
    out = MarketOps(
        feed=feed, retail_micro=round(retail * 1e6),
        threshold_micro=round(f.require_number("threshold", minimum=0.000001, maximum=100,
                                               unit="currency/kWh") * 1e6),
        omega_milli=round(f.optional_number("omega", minimum=0.001, maximum=1e6,
                                            default=1.0) * 1000),
        mode=f.optional_str("mode", choices=MODES) or "shift",
        pricing=f.optional_str("pricing", choices=PRICINGS) or "uniform",
        slot_s=f.optional_int("slot_s", minimum=60, maximum=86_400, default=900),
        lead_s=f.optional_int("lead_s", minimum=0, maximum=86_400, default=30),
        horizon_s=f.optional_int("horizon_s", minimum=60, maximum=7 * 86_400, default=6 * 3600),
        poll_ms=int(f.optional_number("poll_s", minimum=0.05, maximum=600, unit="seconds",
                                      default=10.0) * 1000),
        claims=f.optional_bool("claims") is not False)
    f.reject_unknown()
    return out


def _rel(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p
