"""Every numeric setting has a range (issue 12, fault 5): out of range or not a number fails at load.

The ranges are the spec in docs/config.md ("Ranges"): the table there drives the test, so code and
document cannot drift apart. Each key gets a value below its range, one above (where there is a
top), and a text where a number belongs; the error must name the file, the key and the range. A
second test reads a config with every key set and checks that no number is read without a range
(the lever's point values and the baseline parameters take theirs from elsewhere, as documented).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config.gateway import parse_config
from gateway.errors import ConfigError, ProfileError
from gateway.perception.profile_schema import profile_from_mapping
from gateway.schema import Fields

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"
# A config with every table; each test sets one key in one table (replacing it when present).
FULL = {
    "gateway": 'key = "gw.key"\nchain_id = 1',
    "mqtt": "keepalive = 30\nbatch_max = 50\nrate_messages = 200\nrate_bytes = 2000000\ninflight = 8\n"
            "health_interval = 30",
    "store": "outbox_max_rows = 200000\noutbox_max_bytes = 536870912\noutbox_max_age_days = 30\n"
             "measurements_max_rows = 5000000\nmerkle_interval_s = 900",
    "poll": "fast = 1.0\nnormal = 5.0\nslow = 60.0",
    "bus": 'name = "rs485"\nserial = "/dev/ttyUSB0"\nbaud = 9600\nframe_gap_ms = 5',
    "device": 'name = "ev"\nprofile = "heidelberg_energycontrol"\nbus = "rs485"\nunit = 1\n'
              'role = "appliance"\ntimeout = 1.0',
    "device.poll": "fast = 0.5\nnormal = 5.0\nslow = 60.0",
    "chain": 'rpc = "http://127.0.0.1:8545"\nmarket = "0x' + "11" * 20 + '"\nhousehold = "0x'
             + "22" * 20 + '"\npoll_interval = 15',
    "dr": 'baseline = "pre_event"\npre_event_minutes = 30\nlead_minutes = 10\ntolerance = 0.05\n'
          "max_window_minutes = 240\nhold_off_s = 30\nslot_s = 60",
    "dr.baseline_params": "min_coverage = 0.5",
    "web": "port = 9570",
    "dr.lever": 'device = "ev"\npoint = "ev_current_limit_a"\nkind = "setpoint"\nmin = 6\nstep = 2\n'
                "priority = 1\nexpected_w = 2300\npower_w_per_unit = 690\nmax_off_minutes = 30\n"
                "min_on_minutes = 5",
}
ARRAYS = {"bus", "device", "dr.lever"}  # [[...]] tables
# How an error names the place of a key in each table (the rest: "table: ")
WHERE = {"bus": "bus[0]: ", "device": "device[0]: ", "device.poll": "device[0]: poll: ",
         "dr.lever": "dr: lever[0]: "}


def config_text(table: str | None = None, key: str = "", value: str = "") -> str:
    """The FULL config, with `key = value` set in `table` (replaced when the table has the key)."""
    parts = []
    for name, body in FULL.items():
        lines = body.split("\n")
        if name == table:
            lines = [line for line in lines if not line.startswith(f"{key} =")] + [f"{key} = {value}"]
        header = f"[[{name}]]" if name in ARRAYS else f"[{name}]"
        parts.append(header + "\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def documented_ranges() -> list[tuple[str, str, bool, str, str, str]]:
    """(table, key, whole, from, to, unit) for every key in docs/config.md's "Ranges" table."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("\n## Ranges\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[0] in ("table", "---") or set(cells[0]) <= {"-"}:
            continue
        table, keys, kind, low, high, unit, _default = cells
        for key in re.findall(r"`([a-z_]+)`", keys):
            rows.append((table, key, kind == "whole number", low, high, unit))
    return rows


RANGES = documented_ranges()


def test_the_documented_table_covers_every_table_of_the_config() -> None:
    assert {table for table, *_ in RANGES} == set(FULL) - {"dr.baseline_params"}
    assert len(RANGES) >= 30
    parse_config(config_text(), path=Path("/etc/drgw/drgw.toml"))  # the base itself is valid


def bad_values(whole: bool, low: str, high: str) -> list[tuple[str, str]]:
    lo = float(low)
    below = lo - 1 if whole or lo == 0 else lo / 2
    values = [("below", str(int(below)) if whole else repr(below)), ("text", '"12x"')]
    if high:
        hi = float(high)
        values.append(("above", str(int(hi) + 1) if whole else repr(hi * 2)))
    if whole:
        values.append(("fraction", repr(lo + 0.5)))
    return values


CASES = [pytest.param(table, key, value, low, high, unit, id=f"{table}.{key}={what}")
         for table, key, whole, low, high, unit in RANGES
         for what, value in bad_values(whole, low, high)]


@pytest.mark.parametrize(("table", "key", "value", "low", "high", "unit"), CASES)
def test_a_number_out_of_its_range_fails_naming_the_file_the_key_and_the_range(
        tmp_path: Path, table: str, key: str, value: str, low: str, high: str, unit: str) -> None:
    path = tmp_path / "drgw.toml"
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(table, key, value), path=path)
    message = str(info.value)
    assert message.startswith(f"{path}: {WHERE.get(table, table + ': ')}{key}: "), message
    span = f"from {low} to {high}" if high else f"of at least {low}"
    assert span in message, message
    assert unit in message, message


def test_baseline_parameters_are_checked_against_the_method_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"drgw\.toml: dr: baseline_params: .*'min_coverage' of "
                                          r"PRE_EVENT must be a number in 0\.0\.\.1\.0, got -1"):
        parse_config(config_text("dr.baseline_params", "min_coverage", "-1"), path=tmp_path / "drgw.toml")
    with pytest.raises(ConfigError, match=r"unknown baseline parameter 'days' for PRE_EVENT"):
        parse_config(config_text("dr.baseline_params", "days", "10"), path=tmp_path / "drgw.toml")


@pytest.mark.parametrize(("table", "key", "value"), [
    ("gateway", "chain_id", "0"), ("store", "outbox_max_rows", "0"), ("mqtt", "keepalive", "0"),
    ("dr", "slot_s", "0"),
])
def test_zero_is_checked_like_any_value_never_read_as_the_default(tmp_path: Path, table: str,
                                                                  key: str, value: str) -> None:
    """`chain_id = 0` used to become 1 (`x or default`)."""
    with pytest.raises(ConfigError, match=rf"{key}: 0 is out of range"):
        parse_config(config_text(table, key, value), path=tmp_path / "drgw.toml")


def test_zero_is_kept_where_the_range_allows_it(tmp_path: Path) -> None:
    """A hold-off of 0 and a lead of 0 minutes were silently replaced by 30 s and 10 min."""
    text = config_text("dr", "hold_off_s", "0").replace("lead_minutes = 10", "lead_minutes = 0")
    config = parse_config(text, path=tmp_path / "drgw.toml")
    assert config.dr is not None and (config.dr.hold_off_s, config.dr.lead_minutes) == (0.0, 0.0)


def test_nan_and_infinity_are_not_numbers_of_any_setting(tmp_path: Path) -> None:
    for value in ("nan", "inf", "-inf"):
        with pytest.raises(ConfigError, match=r"health_interval: must be a number from 1 to 86400"):
            parse_config(config_text("mqtt", "health_interval", value), path=tmp_path / "drgw.toml")


# Numbers read without a range of their own, on purpose (docs/config.md, "Ranges"): a lever's point
# values are checked against the point's profile, `step` by Lever (> 0), baseline parameters by the
# method's table.
RANGED_ELSEWHERE = {"min", "max", "off", "on", "max_w", "min_w", "step", "min_coverage"}


def test_no_number_of_the_config_is_read_without_a_range(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[tuple[str, str, Any]] = []
    numeric = {"_int": Fields._int, "_number": Fields._number}
    for name, original in numeric.items():
        def spy(self: Fields, key: str, *args: Any, _original: Any = original) -> Any:
            read.append((self.where, key, args))
            return _original(self, key, *args)
        monkeypatch.setattr(Fields, name, spy)
    path = tmp_path / "drgw.toml"
    parse_config(config_text(), path=path)
    ours = [(where, key, args) for where, key, args in read if where.startswith(str(path))]
    assert {key for _, key, _ in ours} >= {"chain_id", "keepalive", "outbox_max_rows", "timeout",
                                           "poll_interval", "expected_w"}
    unranged = [(where, key) for where, key, args in ours
                if key not in RANGED_ELSEWHERE and not _ranged(args)]
    assert unranged == []


def _ranged(args: tuple[Any, ...]) -> bool:
    """Whether a numeric accessor was given a range (bounds) or a list of choices."""
    return any(getattr(a, "minimum", None) is not None or getattr(a, "maximum", None) is not None
               or (isinstance(a, tuple | list) and a) for a in args)


# ------------------------------------------------------------------ device profiles (docs/profiles.md)

def profile(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": 1, "kind": "appliance", "vendor": "V", "model": "M", "source": "test",
        "transport": {"baud": 9600},
        "writable": [{"name": "current_limit_a", "table": "holding", "address": 1, "type": "u16",
                      "scale": 0.1, "unit": "A", "min": 6, "max": 16, "default": 16}],
        "simulation": {"rated_power_w": 11000},
    }
    for where, value in changes.items():
        section, key = where.split("__")
        target = data["writable"][0] if section == "writable" else data[section]
        target[key] = value
    return data


@pytest.mark.parametrize(("change", "message"), [
    ({"transport__min_interval_ms": -5}, r"transport: min_interval_ms: -5 is out of range; use a number "
                                         r"from 0 to 10000 ms"),
    ({"transport__min_interval_ms": "5"}, r"min_interval_ms: must be a number from 0 to 10000 ms"),
    ({"transport__address_base": -1}, r"transport: address_base: -1 is out of range"),
    ({"simulation__rated_power_w": 0}, r"simulation: rated_power_w: 0 is out of range; use a number "
                                       r"from 1 to 1000000 W"),
    ({"writable__default": 40}, r"writable\[0\]: default: current_limit_a: 40 is not allowed; "
                                r"use 6\.\.16 A"),
    ({"writable__scale": float("nan")}, r"writable\[0\]: scale: must be a number, found nan"),
])
def test_profile_numbers_out_of_range_fail_with_the_file_and_the_field(change: dict[str, Any],
                                                                       message: str) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        profile_from_mapping(profile(**change), path=Path("device_profiles/appliances/x.yaml"))
    assert str(info.value).startswith("device_profiles/appliances/x.yaml: ")


def test_the_profile_base_is_valid() -> None:
    assert profile_from_mapping(profile(), path=Path("x.yaml")).point("current_limit_a").default == 16
