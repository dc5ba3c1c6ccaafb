"""The gateway config: strict validation, and a `drgw scan` draft pastes into it as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.commands.scan import Found, draft_config
from gateway.config import parse_config
from gateway.errors import ConfigError

HEAD = '[gateway]\nkey = "gw.key"\n\n[operators]\nallow = ["0x' + "ab" * 20 + '"]\n\n'


def test_scan_draft_pastes_into_a_config(tmp_path: Path) -> None:
    found = [Found(unit=1, baud=9600, parity="N", profiles=["eastron_sdm630"]),
             Found(unit=7, baud=9600, parity="N", profiles=["carlogavazzi_em24", "x"])]
    text = HEAD + draft_config(found, tcp=None, serial="/dev/ttyUSB0")
    config = parse_config(text, path=tmp_path / "drgw.toml")
    assert [d.unit for d in config.devices.devices] == [1, 7]
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
