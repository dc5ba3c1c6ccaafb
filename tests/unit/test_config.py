"""The gateway config: strict validation, and a `drgw scan` draft pastes into it as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.gateway import parse_config
from gateway.device.probe import Found, draft_config
from gateway.errors import ConfigError

HEAD = '[gateway]\nkey = "gw.key"\n\n[operators]\nallow = ["0x' + "ab" * 20 + '"]\n\n'


def test_scan_draft_pastes_into_a_config(tmp_path: Path) -> None:
    found = [Found(unit=1, baud=9600, parity="N", profiles=["eastron_sdm630"]),
             Found(unit=7, baud=9600, parity="N", profiles=["carlogavazzi_em24", "x"])]
    text = HEAD + draft_config(found, tcp=None, serial="/dev/ttyUSB0")
    config = parse_config(text, path=tmp_path / "drgw.toml")
    # Unit 7 fits two profiles: a candidate list in comments, never a pick (issue 12, fault 9).
    assert [d.unit for d in config.devices.devices] == [1]
    assert "# unit 7 answers like 2 profiles" in text and "#   carlogavazzi_em24" in text
    assert config.devices.devices[0].profile.name == "eastron_sdm630"
    assert config.devices.buses[0].serial == "/dev/ttyUSB0"
    assert config.key == tmp_path / "gw.key"
    assert config.store.path == tmp_path / "drgw.db"
    assert config.mqtt.broker == "mqtt://127.0.0.1:1883"
    assert len(config.config_hash) == 16


DEVICES = """
[[bus]]
name = "rs485"
serial = "/dev/ttyUSB0"

[[device]]
name = "main"
profile = "eastron_sdm630"
bus = "rs485"
unit = 1
"""


@pytest.mark.parametrize(("extra", "message"), [
    ('[mqtt]\nbrokr = "mqtt://x:1"\n', r"mqtt: option 'brokr' is not valid; did you mean 'broker'\?"),
    ('[mqtt]\nbroker = "tcp://x:1"\n', r"mqtt: broker: .*write mqtt://host:port"),
    ('[[device]]\nname = "b"\nprofile = "eastron_sdm120"\nbus = "rs458"\nunit = 2\n',
     r"device\[1\]: bus: no \[\[bus\]\] is named 'rs458'"),
    ('[[device]]\nname = "b"\nprofile = "eastron_sdm120"\nbus = "rs485"\nunit = 1\n',
     r"device\[1\]: unit: unit 1 on bus 'rs485' is already device 'main'"),
    ('[[device]]\nname = "b"\nprofile = "eastron_sdm12"\nbus = "rs485"\nunit = 2\n',
     r"device\[1\]: profile: .*did you mean 'eastron_sdm120'\?"),
    ('[poll]\nfast = 0\n', r"poll: fast: a poll interval is"),
])
def test_bad_configs_name_the_key_and_the_fix(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(HEAD + DEVICES + extra, path=tmp_path / "drgw.toml")
    assert "drgw.toml" in str(info.value)


def test_operator_addresses_are_checked(tmp_path: Path) -> None:
    text = '[gateway]\nkey = "k"\n[operators]\nallow = ["0x1234"]\n'
    with pytest.raises(ConfigError, match=r"operators: allow\[0\]: .*not an Ethereum address"):
        parse_config(text, path=tmp_path / "drgw.toml")


# [[dr.lever]] INCREASE limits: `max` (setpoint) and `min_w` (battery), range-checked against the
# profiles' writable points (heidelberg_energycontrol 6..16 A, victron_ess int16 W)
LEVER_DEVICES = DEVICES + """
[[device]]
name = "ev"
profile = "heidelberg_energycontrol"
bus = "rs485"
unit = 2

[[device]]
name = "bat"
profile = "victron_ess"
bus = "rs485"
unit = 3
"""
LEVERS = """
[dr]
[[dr.lever]]
device = "ev"
point = "ev_current_limit_a"
kind = "setpoint"
min = 6
max = 16
expected_w = 2300

[[dr.lever]]
device = "bat"
point = "battery_power_setpoint_w"
kind = "battery"
max_w = 3000
min_w = -2000
expected_w = 3000
"""


def test_dr_levers_take_their_increase_limits(tmp_path: Path) -> None:
    config = parse_config(HEAD + LEVER_DEVICES + LEVERS, path=tmp_path / "drgw.toml")
    assert config.dr is not None
    ev, bat = config.dr.levers
    assert (ev.min, ev.max, ev.min_w) == (6, 16, None)
    assert (bat.max_w, bat.min_w, bat.max) == (3000, -2000, None)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("max = 16", "max = 20", r"dr: lever\[0\]: max: 20 cannot be written to ev\.ev_current_limit_a: "
                             r".*use 6\.\.16 A"),
    ("min_w = -2000", "min_w = -40000", r"dr: lever\[1\]: min_w: -40000 cannot be written to "
                                        r"bat\.battery_power_setpoint_w: .*use -32768\.\.32767 W"),
    ("max = 16", 'max = "16"', r"dr: lever\[0\]: max: must be a number, found '16'"),
    ("max = 16", "max = 6", r"dr: lever\[0\]: lever ev\.ev_current_limit_a: max 6 must be above min 6"),
    ("min_w = -2000", "max = 16", r"dr: lever\[1\]: lever bat\.battery_power_setpoint_w: 'max' is for "
                                  r"setpoint levers; a battery lever's INCREASE limit is 'min_w'"),
    ("min_w = -2000", "min_w = 3000", r"dr: lever\[1\]: .*min_w 3000 must be below max_w 3000"),
    ("max = 16", "maxx = 16", r"dr: lever\[0\]: option 'maxx' is not valid; did you mean 'max'\?"),
])
def test_bad_increase_limits_name_the_file_the_lever_and_the_fix(tmp_path: Path, old: str, new: str,
                                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(HEAD + LEVER_DEVICES + LEVERS.replace(old, new), path=tmp_path / "drgw.toml")
    assert str(info.value).startswith(f"{tmp_path / 'drgw.toml'}: dr: lever[")
