"""The demo home's gateway config file, as `drgw init` would write it, with the demo's compressed timing.

Besides the devices and the DR loop's `[dr]` table, the home bids by itself: `[chain]` names the
embedded market and the household's wallet (rpc = "embedded": the demo hands the agent its market
port, nothing else can reach that chain), and `[market]` is the household's bidding policy
(docs/bidding.md) with one block of hours that covers the demo's window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCKOUT_S = 600  # the market's nominal lockout, before `speed`
EV_LEVER = ("ev", "ev_current_limit_a")
BOILER_LEVER = ("boiler", "relay_1_on")


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketTable:
    """What `[market]` and `[chain]` say: the household's wallet, the block, its policy."""

    market: str
    household: str
    block: tuple[int, int]  # [from_s, to_s) of the one block of hours, on minute boundaries
    zone: dt.tzinfo  # the home's time zone (`[dr] time_zone`)
    min_price: float  # tokens/kWh
    max_deposit: float  # tokens
    confidence: float
    history_days: int


def config_text(*, home: Any, key: Path, broker: str, speed: float, levers: tuple[str, ...],
                market: MarketTable, web_port: int | None = None) -> str:
    lines = [
        "# Written by drgw demo: the gateway config of the simulated home.",
        "[gateway]", f'key = "{key}"', "chain_id = 1", 'log_level = "WARNING"',
        "[mqtt]", f'broker = "{broker}"', "health_interval = 10",
        "[store]", 'path = "drgw.db"', "merkle_interval_s = 60",
        "[poll]", "fast = 1.0", "normal = 5.0", "slow = 30.0",
    ]
    lines += _devices(home)
    lines += _dr(speed, levers, market.zone)
    if web_port is not None:  # the home's own page, on loopback (docs/operations.md)
        lines += ["[web]", f"port = {web_port}"]
    return "\n".join(lines + _market(market)) + "\n"


def _devices(home: Any) -> list[str]:
    lines: list[str] = []
    buses: dict[str, str] = {}
    for info in home.devices:
        ident = f"{info.transport}:{info.address}"
        if ident not in buses:
            buses[ident] = f"bus{len(buses) + 1}"
            where = f'tcp = "{info.address}"' if info.transport == "tcp" else f'serial = "{info.address}"'
            lines += ["[[bus]]", f'name = "{buses[ident]}"', where]
    for info in home.devices:
        role = "main" if info.name == "main" else None
        lines += ["[[device]]", f'name = "{info.name}"', f'profile = "{info.profile}"',
                  f'bus = "{buses[f"{info.transport}:{info.address}"]}"', f"unit = {info.unit}",
                  "timeout = 0.5"] + ([f'role = "{role}"'] if role else [])
    return lines


def _dr(speed: float, levers: tuple[str, ...], zone: dt.tzinfo) -> list[str]:
    # The gateway starts shortly before the window, so it measures only just before it. Its baseline
    # is committed at NEAR, lead_minutes before the start, from the pre-event minute that ends there
    # (docs/baselines.md, "Committed baselines"): halfway through the lockout it has seen half of it
    # (less up to one 5 s slot, the period ends on the grid); ask for half of that, 25 % at most.
    lead_min = LOCKOUT_S / speed / 60 / 2
    coverage = min(0.25, lead_min / 2)
    lines = [
        "[dr]", 'baseline = "pre_event"', "pre_event_minutes = 1", f"lead_minutes = {lead_min:.3f}",
        "tolerance = 0.05", f"hold_off_s = {max(1.0, 30.0 / speed):.2f}", "slot_s = 5",
        f'time_zone = "{zone}"',
        "[dr.baseline_params]", f"min_coverage = {coverage:.3f}",
    ]
    if "ev" in levers:  # 6 A is the lowest current a car must accept (IEC 61851-1 Annex A)
        lines += ["[[dr.lever]]", 'device = "ev"', 'point = "ev_current_limit_a"', 'kind = "setpoint"',
                  "min = 6", "priority = 1", "expected_w = 2760", "power_w_per_unit = 690"]
    if "boiler" in levers:
        lines += ["[[dr.lever]]", 'device = "boiler"', 'point = "relay_1_on"', 'kind = "switch"',
                  "off = 0", "on = 1", "priority = 2", "expected_w = 2000", "max_off_minutes = 120"]
    return lines


def _market(m: MarketTable) -> list[str]:
    # renew_minutes: the bidder cycles once when the agent starts (that cycle places the bid) and
    # then every renew_minutes; the demo is over long before an hour, so it never renews. Margin 0:
    # the demo's lockout is already compressed to seconds.
    return [
        "[chain]", 'rpc = "embedded"', f'market = "{m.market}"', f'household = "{m.household}"',
        "[market]", f"min_price = {m.min_price:g}", f"max_deposit = {m.max_deposit:g}",
        f'hours = ["{hours(m.block, m.zone)}"]', f"confidence = {m.confidence:g}",
        "renew_minutes = 60", "horizon_hours = 1", "lockout_margin_minutes = 0",
        f"history_days = {m.history_days}",
    ]


def hours(block: tuple[int, int], zone: dt.tzinfo) -> str:
    """The block as `[market] hours` writes it: "HH:MM-HH:MM" in the home's local time."""
    start, end = (dt.datetime.fromtimestamp(t, zone).strftime("%H:%M") for t in block)
    return f"{start}-{end}"
