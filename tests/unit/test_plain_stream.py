"""The plain stream's messages and settings: committed fixed-point values as plain decimals, the
JSON shape (mbmd's device/timestamp/readings plus units), strict [mqtt.plain] / [mqtt.sparkplug]."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.measurement.record import Measurement, ScaledReading
from gateway.network.plain import iso_utc, messages
from gateway.network.views import decimal_text, json_number, parse_plain, parse_sparkplug
from gateway.schema import Fields


@given(st.integers(min_value=-(10 ** 18), max_value=10 ** 18))
def test_decimal_text_is_the_scaled_value_over_a_thousand(scaled: int) -> None:
    # Independent: Python's Decimal, normalised, in plain (not exponent) notation.
    expected = format((Decimal(scaled) / 1000).normalize(), "f")
    assert decimal_text(scaled) == expected
    if abs(scaled) < 10 ** 15:  # <= 15 significant digits: the double's repr is the decimal
        assert repr(float(json_number(scaled))).removesuffix(".0") == expected


def test_iso_utc_by_hand() -> None:
    # 1700000000 s = 2023-11-14 22:13:20 UTC (date -u -d @1700000000)
    assert iso_utc(1_700_000_000_250) == "2023-11-14T22:13:20.250Z"
    assert iso_utc(5) == "1970-01-01T00:00:00.005Z"


RECORD = Measurement(
    gateway="0x" + "11" * 20, device="main", seq=42, time_ms=1_700_000_000_250, clock_synced=True,
    readings=(ScaledReading("voltage_l1_v", 230100, "V", 0),
              ScaledReading("power_active_total_w", -1500, "W", 0),
              ScaledReading("current_l1_a", 0, "A", 2)),  # quality error: left out
    prev_hash=b"\0" * 32)


def test_values_and_json_messages_of_one_record() -> None:
    out = {m.topic: m.payload for m in messages(RECORD, prefix="p/q", values=True, json=True)}
    assert out["p/q/main/voltage_l1_v"] == b"230.1"
    assert out["p/q/main/power_active_total_w"] == b"-1.5"
    assert "p/q/main/current_l1_a" not in out
    assert json.loads(out["p/q/main"]) == {
        "device": "main", "timestamp": "2023-11-14T22:13:20.250Z", "unix_ms": 1_700_000_000_250,
        "seq": 42, "voltage_l1_v": 230.1, "power_active_total_w": -1.5,
        "units": {"voltage_l1_v": "V", "power_active_total_w": "W"}}


def test_the_modes_chosen_are_the_ones_sent() -> None:
    only_json = list(messages(RECORD, prefix="p", values=False, json=True))
    assert [m.topic for m in only_json] == ["p/main"]


@pytest.mark.parametrize(("table", "fragment"), [
    ({"enabled": True, "modes": ["value"]}, "'value' is not a mode"),
    ({"enabled": True, "prefix": "a/+/b"}, "is not a topic prefix"),
    ({"enabled": True, "prefix": "a//b"}, "is not a topic prefix"),
    ({"enabled": True, "qos": 2}, "qos"),
    ({"enabled": True, "retained": True}, "did you mean 'retain'"),
])
def test_bad_plain_settings_name_the_key_and_the_fix(table: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match="mqtt: plain") as err:
        parse_plain(Fields(table, where="drgw.toml: mqtt: plain"))
    assert fragment in str(err.value)


def test_plain_defaults_and_off() -> None:
    assert parse_plain(Fields({}, where="x")) is None
    on = parse_plain(Fields({"enabled": True}, where="x"))
    assert on is not None and on.values and on.json and not on.retain and on.qos == 0
    assert on.prefix == "drgw/v1/{gw}/plain"


def test_sparkplug_ids_refuse_topic_characters() -> None:
    with pytest.raises(ConfigError, match=r"edge_node.*cannot be a Sparkplug ID"):
        parse_sparkplug(Fields({"enabled": True, "edge_node": "a/b"}, where="x"))
    spb = parse_sparkplug(Fields({"enabled": True}, where="x"))
    assert spb is not None and spb.group == "drgw" and spb.edge_node is None
