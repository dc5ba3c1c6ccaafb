"""The `[market]` table of the gateway config: the household's bidding policy (docs/bidding.md).

Read strictly like `[dr]` and `[chain]` (gateway/config/gateway.py): every key has a range, and a
value that the chain cannot carry (a price finer than the token's base unit) or that the levers cannot
serve (INCREASE bids without a lever that can add load) fails at start-up with the key and the fix.
The wallet is `[chain] household` and the comfort limits are the `[dr]` levers', so neither is
repeated here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.loop.policy import Lever
from gateway.schema import Fields

DIRECTIONS = ("reduce", "increase", "both")
# The token's base unit is the milli-token (DRMarket.sol: "money in milli-tokens (mtok, the token's
# base unit)"), so a price or a deposit in tokens carries at most three decimals.
MTOK_PER_TOKEN = 1000
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class DailyHours:
    """A block of local time it may bid for, in minutes after midnight; `end_min <= start_min`
    means the block ends the next day ("22:00-02:00")."""

    start_min: int
    end_min: int

    @property
    def length_min(self) -> int:
        return (self.end_min - self.start_min) % 1440 or 1440

    def __str__(self) -> str:
        return (f"{self.start_min // 60:02d}:{self.start_min % 60:02d}-"
                f"{self.end_min // 60:02d}:{self.end_min % 60:02d}")


@dataclass(frozen=True, slots=True)
class MarketConfig:
    enabled: bool
    min_price_mtok: int  # the household's reservation price, mtok/kWh (the bid's price)
    max_deposit_mtok: int  # deposits held at risk at most, across the household's open bids
    hours: tuple[DailyHours, ...]
    confidence: float  # bid what the levers deliver with this probability
    directions: tuple[str, ...]  # "reduce", "increase" or both
    min_bid_w: int
    renew_s: float
    horizon_s: int
    hysteresis: float  # renew a held bid only when the quantity moves by more than this fraction
    margin_s: int  # beyond the contract's lockout: blocks starting sooner are left alone
    history_days: int  # lever history kept and learned from
    battery_capacity_wh: tuple[tuple[str, float], ...] = ()  # battery lever device -> usable Wh
    battery_reserve_pct: float = 20.0


def parse_market(f: Fields, *, levers: Sequence[Lever] | None, chain: bool) -> MarketConfig:
    """`levers`: the [dr] levers (None without a [dr] table); `chain`: whether [chain] is set."""
    direction = f.optional_str("direction", choices=DIRECTIONS) or "reduce"
    cfg = MarketConfig(
        enabled=f.optional_bool("enabled") is not False,
        min_price_mtok=_tokens(f, "min_price", maximum=1_000_000, unit="tokens per kWh",
                               required=True),
        max_deposit_mtok=_tokens(f, "max_deposit", maximum=10**12, unit="tokens", required=True),
        hours=_hours(f),
        confidence=f.optional_number("confidence", minimum=0.5, maximum=0.999, default=0.9),
        directions=("reduce", "increase") if direction == "both" else (direction,),
        min_bid_w=round(f.optional_number("min_bid_kw", minimum=0.1, maximum=1000, unit="kW",
                                          default=0.5) * 1000),
        renew_s=f.optional_number("renew_minutes", minimum=1, maximum=1440, unit="minutes",
                                  default=15.0) * 60,
        horizon_s=f.optional_int("horizon_hours", minimum=1, maximum=48, unit="hours",
                                 default=24) * 3600,
        hysteresis=f.optional_number("hysteresis", minimum=0, maximum=1, default=0.2),
        margin_s=round(f.optional_number("lockout_margin_minutes", minimum=0, maximum=240,
                                         unit="minutes", default=5.0) * 60),
        history_days=f.optional_int("history_days", minimum=1, maximum=365, unit="days",
                                    default=28),
        battery_capacity_wh=_capacities(f.sub("battery_capacity_kwh"), levers or ()),
        battery_reserve_pct=f.optional_number("battery_reserve_pct", minimum=0, maximum=100,
                                              unit="%", default=20.0),
    )
    f.reject_unknown()
    if cfg.enabled:
        _check_parts(f, cfg, levers=levers, chain=chain)
    return cfg


def _check_parts(f: Fields, cfg: MarketConfig, *, levers: Sequence[Lever] | None,
                 chain: bool) -> None:
    """The parts bidding needs: the chain bids go to, and levers that can deliver them."""
    if not chain:
        f.fail("enabled", "bids go to the market of [chain]: add a [chain] table (rpc, market, "
               "household) or set enabled = false")
    if not levers:
        f.fail("enabled", "bids are sized from the [dr] levers' flexibility: add [dr] with at least "
               "one [[dr.lever]], or set enabled = false")
    if "increase" in cfg.directions and not any(adds_load(lever) for lever in levers):
        f.fail("direction", "INCREASE bids need a lever that can add load: set 'max' on a setpoint "
               "lever, 'on' on a switch or 'min_w' on a battery in [[dr.lever]], or use "
               "direction = \"reduce\"")


def adds_load(lever: Lever) -> bool:
    """Whether the lever has an INCREASE limit (gateway/loop/policy.py skips it otherwise)."""
    return {"setpoint": lever.max, "switch": lever.on, "battery": lever.min_w}[lever.kind] is not None


def _tokens(f: Fields, key: str, *, maximum: float, unit: str, required: bool) -> int:
    value = (f.require_number(key, minimum=0, maximum=maximum, unit=unit) if required
             else f.optional_number(key, minimum=0, maximum=maximum, unit=unit, default=0.0))
    mtok = round(value * MTOK_PER_TOKEN)
    if abs(mtok - value * MTOK_PER_TOKEN) > 1e-6:
        f.fail(key, f"{value!r} has more than three decimals: the token's smallest unit is 0.001 "
               f"(a milli-token); write e.g. {mtok / MTOK_PER_TOKEN:g}")
    return mtok


def _hours(f: Fields) -> tuple[DailyHours, ...]:
    raw = f.require_list("hours")
    if not raw:
        f.fail("hours", "give at least one block of local time, e.g. [\"17:00-21:00\"]")
    blocks = tuple(_block(f, i, text) for i, text in enumerate(raw))
    minutes: set[int] = set()
    for i, block in enumerate(blocks):
        covered = {(block.start_min + m) % 1440 for m in range(block.length_min)}
        if covered & minutes:
            f.fail(f"hours[{i}]", f"{block} overlaps an earlier block: a time of day may be in one "
                   "block only (each block is one bid with its own deposit)")
        minutes |= covered
    return blocks


def _block(f: Fields, i: int, text: object) -> DailyHours:
    m = _HOURS.match(text) if isinstance(text, str) else None
    numbers = [int(g) for g in m.groups()] if m else []
    if not numbers or numbers[0] > 23 or numbers[2] > 24 or numbers[1] > 59 or numbers[3] > 59 \
            or (numbers[2] == 24 and numbers[3] != 0):
        f.fail(f"hours[{i}]", f"{text!r} is not a block of local time: write \"HH:MM-HH:MM\", "
               "e.g. \"17:00-21:00\" (\"22:00-02:00\" runs past midnight)")
    start, end = numbers[0] * 60 + numbers[1], (numbers[2] * 60 + numbers[3]) % 1440
    if start == end and numbers[2] != 24:
        f.fail(f"hours[{i}]", f"{text!r} starts and ends at the same time; for the whole day "
               "write \"00:00-24:00\"")
    return DailyHours(start_min=start, end_min=end)


def _capacities(f: Fields, levers: Sequence[Lever]) -> tuple[tuple[str, float], ...]:
    batteries = {lever.device for lever in levers if lever.kind == "battery"}
    out = []
    for device in list(f._data):
        if device not in batteries:
            f.fail(device, f"no battery lever is on a device named {device!r}; battery levers: "
                   f"{', '.join(sorted(batteries)) or '(none)'}")
        out.append((device, f.require_number(device, minimum=0.1, maximum=10_000, unit="kWh") * 1000))
    f.reject_unknown()
    return tuple(sorted(out))
