"""DR market scenario files (`drgw market simulate SCENARIO.toml`), read strictly into integer units.

An unknown key, a missing key or an out-of-range value fails with the file, the key and the fix.
Times are clock times on `window.date`, converted to unix seconds as if they were UTC: only their
differences matter to the market. Conversions (docs/market.md): kW -> W, tokens -> mtok, currency ->
micro-currency, omega -> mtok/kWh per kW, tolerance -> basis points, each rounded to nearest.
"""

from __future__ import annotations

import datetime as dt
import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.market.model import MAX_POWER_W, Mode, Pricing

MARKET_KEYS = {
    "token_per_currency": "tokens per currency unit, e.g. 1000",
    "contract_price": "retail price in currency/kWh, e.g. 0.60",
    "realtime_price": "real-time price in currency/kWh, e.g. 0.68",
    "omega": "discomfort sensitivity, e.g. 1.2",
    "mode": '"shift" or "curtail"',
    "deposit_per_kw": "tokens of deposit per kW of rated power, e.g. 100",
    "tolerance": "allowed shortfall as a fraction, e.g. 0.05",
    "lockout_minutes": "minutes from announcement to window start, e.g. 10",
}
MARKET_OPTIONAL = {"report_grace_minutes": "minutes after the window for Reports (default 0)",
                   "pricing": '"uniform" (seed 003, the default) or "pay_as_bid" (seed 002)',
                   "reveal_minutes": "minutes after the announcement for sealed bids to reveal, "
                                     "e.g. 5 (default 0: no sealed bids)"}
PRICING = {"uniform": Pricing.UNIFORM, "pay_as_bid": Pricing.PAY_AS_BID}
WINDOW_KEYS = {"date": '"2024-07-01"', "start": '"18:30"', "end": '"18:40"',
               "announced_at": '"18:20"'}
BID_KEYS = {"id": '"h1-ac"', "household": '"h1"', "rated_kw": "3.0", "from": '"18:00"',
            "to": '"19:00"', "price": "tokens/kWh, e.g. 31.5", "kw": "-2.0 (negative = reduce)",
            "submitted_at": '"09:12"'}
BID_OPTIONAL = {"actual_kw": "measured response if the bid wins (default: kw)",
                "sealed": "true: commit a hash with the deposit, reveal after the announcement "
                          "(seed 002; default false)",
                "revealed": "false: a sealed bid whose reveal never comes (default true)"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioBid:
    """One `[[bid]]`, in contract units; `actual_w` is the response its meter measures."""

    key: str
    household: str
    rated_w: int
    from_s: int
    to_s: int
    price_mtok: int
    power_w: int
    submitted_s: int
    actual_w: int
    sealed: bool = False  # committed as a hash, revealed in the window's reveal phase
    revealed: bool = True  # False: a sealed bid whose household never reveals it


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole DR window: market parameters, the window and the bids, in contract units."""

    source: str
    mtok_per_currency: int
    retail_micro: int
    realtime_micro: int
    omega_milli: int
    mode: Mode
    deposit_per_kw_mtok: int
    tolerance_bps: int
    lockout_s: int
    report_grace_s: int
    start_s: int
    end_s: int
    announced_s: int
    bids: tuple[ScenarioBid, ...]
    pricing: Pricing = Pricing.UNIFORM
    reveal_s: int = 0  # the reveal phase after the announcement; clearing starts at its end

    @property
    def households(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b.household for b in self.bids))


def load_scenario(text: str, *, source: str) -> Scenario:
    """Parse TOML text; `source` (the file name) goes into every error message."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse_scenario(data, source=source)


def parse_scenario(data: Mapping[str, Any], *, source: str) -> Scenario:
    _keys(data, {"market": "", "window": "", "bid": ""}, {}, source, "")
    market = _table(data, "market", source)
    window = _table(data, "window", source)
    _keys(market, MARKET_KEYS, MARKET_OPTIONAL, source, "market.")
    _keys(window, WINDOW_KEYS, {}, source, "window.")
    p = _Reader(source)
    date = _date(window, source)
    mode = _mode(market, source)
    bids = _bids(data, date, p)
    scenario = Scenario(
        source=source,
        mtok_per_currency=p.scaled(market, "market.token_per_currency", 1000, low=1),
        retail_micro=p.scaled(market, "market.contract_price", 1_000_000, low=0),
        realtime_micro=p.scaled(market, "market.realtime_price", 1_000_000, low=0),
        omega_milli=p.scaled(market, "market.omega", 1000, low=1),
        mode=mode,
        deposit_per_kw_mtok=p.scaled(market, "market.deposit_per_kw", 1000, low=0),
        tolerance_bps=p.scaled(market, "market.tolerance", 10_000, low=0, high=10_000),
        lockout_s=p.scaled(market, "market.lockout_minutes", 60, low=0),
        report_grace_s=p.scaled(market, "market.report_grace_minutes", 60, low=0, default=0),
        start_s=p.clock(window, "window.start", date),
        end_s=p.clock(window, "window.end", date),
        announced_s=p.clock(window, "window.announced_at", date),
        bids=bids,
        pricing=_pricing(market, source),
        reveal_s=p.scaled(market, "market.reveal_minutes", 60, low=0, default=0),
    )
    _check_window(scenario)
    return scenario


def _date(window: Mapping[str, Any], source: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(window["date"]))
    except ValueError as exc:
        raise ConfigError(f'{source}: window.date must be "YYYY-MM-DD", e.g. "2024-07-01"') from exc


def _mode(market: Mapping[str, Any], source: str) -> Mode:
    mode_name = market["mode"]
    if mode_name not in ("shift", "curtail"):
        raise ConfigError(f'{source}: market.mode must be "shift" or "curtail", not {mode_name!r}')
    return Mode.SHIFT if mode_name == "shift" else Mode.CURTAIL


def _pricing(market: Mapping[str, Any], source: str) -> Pricing:
    name = market.get("pricing", "uniform")
    if name not in PRICING:
        raise ConfigError(f'{source}: market.pricing must be "uniform" or "pay_as_bid", '
                          f"not {name!r}")
    return PRICING[name]


def _bids(data: Mapping[str, Any], date: dt.date, p: _Reader) -> tuple[ScenarioBid, ...]:
    rows = data.get("bid", [])
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{p.source}: add at least one [[bid]] table (keys: {', '.join(BID_KEYS)})")
    bids = tuple(_bid(row, i, date, p) for i, row in enumerate(rows))
    keys = [b.key for b in bids]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ConfigError(f"{p.source}: bid id {dup!r} is used twice; give every [[bid]] its own id")
    return bids


def _check_window(scenario: Scenario) -> None:
    source = scenario.source
    if scenario.end_s <= scenario.start_s:
        raise ConfigError(f"{source}: window.end must be after window.start")
    if scenario.start_s - scenario.announced_s < scenario.lockout_s:
        raise ConfigError(
            f"{source}: window.announced_at must be at least market.lockout_minutes before "
            "window.start; announce earlier or shorten the lockout"
        )
    if scenario.announced_s + scenario.reveal_s >= scenario.start_s:
        raise ConfigError(f"{source}: market.reveal_minutes must end before window.start "
                          "(DRMarket reverts RevealTooLong); shorten it or announce earlier")
    sealed = next((b for b in scenario.bids if b.sealed), None)
    if sealed is not None and scenario.reveal_s == 0:
        raise ConfigError(f"{source}: bid {sealed.key!r} is sealed but market.reveal_minutes is 0, "
                          "so it could never be revealed; set e.g. reveal_minutes = 5")


def _bid(row: Any, index: int, date: dt.date, p: _Reader) -> ScenarioBid:
    where = f"bid[{index}]."
    if not isinstance(row, dict):
        raise ConfigError(f"{p.source}: [[bid]] number {index + 1} must be a table")
    _keys(row, BID_KEYS, BID_OPTIONAL, p.source, where)
    power = p.scaled(row, where + "kw", 1000, low=-MAX_POWER_W, high=MAX_POWER_W)
    if power == 0:
        raise ConfigError(f"{p.source}: {where}kw must not be 0 (negative reduces, positive adds)")
    rated = p.scaled(row, where + "rated_kw", 1000, low=abs(power), high=MAX_POWER_W)
    bid = ScenarioBid(
        key=str(row["id"]), household=str(row["household"]), rated_w=rated,
        from_s=p.clock(row, where + "from", date), to_s=p.clock(row, where + "to", date),
        price_mtok=p.scaled(row, where + "price", 1000, low=0),
        power_w=power, submitted_s=p.clock(row, where + "submitted_at", date),
        actual_w=p.scaled(row, where + "actual_kw", 1000, low=-10 * MAX_POWER_W,
                          high=10 * MAX_POWER_W, default=row["kw"]),
        sealed=_flag(row, "sealed", False, p.source, where),
        revealed=_flag(row, "revealed", True, p.source, where),
    )
    if not bid.revealed and not bid.sealed:
        raise ConfigError(f"{p.source}: {where}revealed = false needs {where}sealed = true "
                          "(only a sealed bid is revealed)")
    if bid.to_s <= bid.from_s:
        raise ConfigError(f"{p.source}: {where}to must be after {where}from")
    return bid


def _flag(row: Mapping[str, Any], key: str, default: bool, source: str, where: str) -> bool:
    value = row.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {where}{key} must be true or false, not {value!r}")
    return value


class _Reader:
    """Reads one typed value, naming the file and the dotted key when it is wrong."""

    def __init__(self, source: str) -> None:
        self.source = source

    def scaled(self, table: Mapping[str, Any], key: str, scale: int, *, low: int,
               high: int | None = None, default: Any = None) -> int:
        name = key.rsplit(".", 1)[-1]
        value = table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.source}: {key} must be a number, not {value!r}")
        units = round(value * scale)
        if units < low or (high is not None and units > high):
            bound = f"between {low / scale:g} and {high / scale:g}" if high is not None else (
                f"at least {low / scale:g}")
            raise ConfigError(f"{self.source}: {key} = {value!r} is out of range; use {bound}")
        return units

    def clock(self, table: Mapping[str, Any], key: str, date: dt.date) -> int:
        value = table[key.rsplit(".", 1)[-1]]
        try:
            t = dt.time.fromisoformat(str(value))
        except ValueError as exc:
            raise ConfigError(f'{self.source}: {key} must be a clock time "HH:MM", '
                              f"not {value!r}") from exc
        moment = dt.datetime.combine(date, t, tzinfo=dt.UTC)
        return int(moment.timestamp())


def _table(data: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    table = data.get(name)
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: add a [{name}] table")
    return table


def _keys(table: Mapping[str, Any], required: Mapping[str, str], optional: Mapping[str, str],
          source: str, where: str) -> None:
    known = {**required, **optional}
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{source}: key {where}{key!r} is not valid{hint}")
    for key, example in required.items():
        if key not in table and example:
            raise ConfigError(f"{source}: {where}{key} is missing; add e.g. {key} = {example}")


GENERATED_DATE = dt.date(2024, 7, 1)
SPREAD_MTOK = 80_000  # realtime 0.68 - retail 0.60 currency/kWh at 1000 tokens per currency


def generate_scenario(*, households: int, seed: int) -> Scenario:
    """A window with one bid per household, varied reproducibly from `seed` (`drgw market simulate
    --households N`): evening-peak's market (seed 003's prices), reduce bids of 0.5-5 kW at 20-60
    tokens/kWh submitted through the day, announced an hour ahead (room for thousands of one-second
    blocks on the embedded chain before the start), omega set so the optimum is about half the power offered.
    About 2 % of the bids add load (wrong direction), 2 % do not cover the window, 1 % come after
    the announcement; 10 % of the households deliver only half of their award."""
    import random

    if households < 1:
        raise ConfigError(f"--households {households}: use at least 1")
    rng = random.Random(seed)
    day = int(dt.datetime.combine(GENERATED_DATE, dt.time(), tzinfo=dt.UTC).timestamp())
    announced, start, end = day + 17 * 3600 + 30 * 60, day + 18 * 3600 + 30 * 60, day + 18 * 3600 + 40 * 60
    bids = []
    for i in range(households):
        power = -rng.randrange(500, 5001, 50)
        roll = rng.random()
        late = roll < 0.01
        bids.append(ScenarioBid(
            key=f"g{i + 1}", household=f"house{i + 1}", rated_w=-power + rng.choice((0, 0, 500)),
            from_s=day + 18 * 3600 + (35 * 60 if 0.01 <= roll < 0.03 else 0),
            to_s=day + 19 * 3600, price_mtok=rng.randrange(20_000, 60_001, 250),
            power_w=-power if 0.03 <= roll < 0.05 else power,
            submitted_s=announced + 300 if late else day + 8 * 3600 + rng.randrange(10 * 3600),
            actual_w=power // 2 if rng.random() < 0.1 else power))
    offered = sum(-b.power_w for b in bids if b.power_w < 0)
    return Scenario(
        source=f"generated:{households}/seed{seed}", mtok_per_currency=1_000_000,
        retail_micro=600_000, realtime_micro=680_000,
        omega_milli=max(1, SPREAD_MTOK * 1000 // max(1, offered)), mode=Mode.SHIFT,
        deposit_per_kw_mtok=100_000, tolerance_bps=500, lockout_s=600, report_grace_s=0,
        start_s=start, end_s=end, announced_s=announced, bids=tuple(bids))
