"""The `[market]` table (gateway/loop/market_settings.py): read strictly, errors name the key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.gateway import GatewayConfig, parse_config
from gateway.errors import ConfigError
from tests.unit.test_config import HEAD, LEVER_DEVICES, LEVERS

CHAIN = """
[chain]
rpc = "http://127.0.0.1:8545"
market = "0x""" + "12" * 20 + """"
household = "0x""" + "34" * 20 + """"
"""
MARKET = """
[market]
min_price = 25.5
max_deposit = 40
hours = ["17:00-21:00", "06:30-08:00"]
"""


def parse(text: str, tmp_path: Path) -> GatewayConfig:
    return parse_config(HEAD + LEVER_DEVICES + LEVERS + CHAIN + text, path=tmp_path / "drgw.toml")


def test_a_market_table_reads_into_contract_units(tmp_path: Path) -> None:
    m = parse(MARKET + 'direction = "both"\n[market.battery_capacity_kwh]\nbat = 9.6\n',
              tmp_path).market
    assert m is not None and m.enabled
    # 25.5 tokens/kWh = 25500 mtok/kWh; 40 tokens = 40000 mtok (the token's base unit is 0.001)
    assert (m.min_price_mtok, m.max_deposit_mtok) == (25_500, 40_000)
    assert [str(h) for h in m.hours] == ["17:00-21:00", "06:30-08:00"]
    assert m.directions == ("reduce", "increase")
    # defaults: 0.9 confidence, 0.5 kW, 15 minutes, 24 hours, 20 % hysteresis, 5 minutes margin
    assert (m.confidence, m.min_bid_w, m.renew_s, m.horizon_s, m.hysteresis, m.margin_s) == (
        0.9, 500, 900.0, 86_400, 0.2, 300)
    assert m.battery_capacity_wh == (("bat", 9600.0),)


HOURS = 'hours = ["17:00-21:00", "06:30-08:00"]'


@pytest.mark.parametrize(("old", "new", "message"), [
    ("min_price = 25.5", "min_price = 25.5001",
     r"market: min_price: 25\.5001 has more than three decimals: the token's smallest unit is 0\.001"),
    (HOURS, 'hours = ["5pm-9pm"]',
     r"market: hours\[0\]: '5pm-9pm' is not a block of local time: write \"HH:MM-HH:MM\""),
    (HOURS, 'hours = ["17:00-21:00", "20:00-22:00"]',
     r"market: hours\[1\]: 20:00-22:00 overlaps an earlier block"),
    (HOURS, "hours = []", r"market: hours: give at least one block of local time"),
    ("max_deposit = 40", "", r"market: option 'max_deposit' is required"),
    ("[market]", "[market]\nconfidense = 0.8",
     r"market: option 'confidense' is not valid; did you mean 'confidence'\?"),
    ("[market]", "[market]\nconfidence = 0.3",
     r"market: confidence: 0\.3 is out of range; use a number from 0\.5 to 0\.999"),
    ("[market]", '[market]\ndirection = "down"',
     r"market: direction: 'down' is not valid; use one of reduce, increase, both"),
])
def test_bad_market_tables_name_the_key_and_the_fix(tmp_path: Path, old: str, new: str,
                                                    message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse(MARKET.replace(old, new), tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'drgw.toml'}: market: ")


def test_bidding_needs_a_chain_and_levers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"market: enabled: bids go to the market of \[chain\]"):
        parse_config(HEAD + LEVER_DEVICES + LEVERS + MARKET, path=tmp_path / "drgw.toml")
    with pytest.raises(ConfigError, match=r"market: enabled: .* add \[dr\] with at least one"):
        parse_config(HEAD + LEVER_DEVICES + CHAIN + MARKET, path=tmp_path / "drgw.toml")
    # switched off, neither is needed
    off = parse_config(HEAD + LEVER_DEVICES + MARKET + "enabled = false\n", path=tmp_path / "drgw.toml")
    assert off.market is not None and not off.market.enabled


def test_increase_bids_need_a_lever_that_adds_load(tmp_path: Path) -> None:
    reduce_only = LEVERS.replace("max = 16\n", "").replace("min_w = -2000\n", "")
    with pytest.raises(ConfigError, match=r"market: direction: INCREASE bids need a lever that can "
                                          r"add load"):
        parse_config(HEAD + LEVER_DEVICES + reduce_only + CHAIN + MARKET + 'direction = "increase"\n',
                     path=tmp_path / "drgw.toml")


def test_a_battery_capacity_must_name_a_battery_lever(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"market: battery_capacity_kwh: ev: no battery lever is on "
                                          r"a device named 'ev'; battery levers: bat"):
        parse(MARKET + "[market.battery_capacity_kwh]\nev = 10\n", tmp_path)


def test_a_whole_day_block_and_one_past_midnight(tmp_path: Path) -> None:
    m = parse(MARKET.replace('["17:00-21:00", "06:30-08:00"]', '["00:00-24:00"]'), tmp_path).market
    assert m is not None and m.hours[0].length_min == 1440
    m = parse(MARKET.replace('["17:00-21:00", "06:30-08:00"]', '["22:00-02:00"]'), tmp_path).market
    assert m is not None and m.hours[0].length_min == 240
