"""DL/T 645 in the data files: profiles, the gateway config and scenarios, read strictly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware_shims.scenario import load_scenario
from gateway.commands.profiles import run_show
from gateway.config.gateway import parse_config
from gateway.config.profiles import load_profile
from gateway.errors import ConfigError, ProfileError
from gateway.perception.dlt645_values import STANDARD_ITEMS
from gateway.perception.profile_schema import profile_from_mapping

HEAD = '[gateway]\nkey = "gw.key"\n\n'
BUS = '[[bus]]\nname = "line"\nprotocol = "dlt645"\nserial = "/dev/ttyUSB0"\n\n'
METER = '[[device]]\nname = "m"\nprofile = "dlt645_single_phase"\nbus = "line"\n'


def profile(**point: Any) -> dict[str, Any]:
    return {"schema": 1, "kind": "meter", "vendor": "x", "model": "y", "source": "s", "phases": 1,
            "transport": {"protocol": "dlt645"},
            "registers": [{"name": "voltage_l1_v", "unit": "V", **point}]}


@pytest.mark.parametrize("name", ["dlt645_single_phase", "dlt645_three_phase"])
def test_generic_profiles_use_the_standard_formats(name: str) -> None:
    loaded = load_profile(name)
    assert loaded.transport.protocol == "dlt645"
    assert (loaded.transport.baud, loaded.transport.parity) == (2400, "E")
    for point in loaded.points:
        item = STANDARD_ITEMS[point.address]
        assert point.table == "dlt645" and point.type == item.format.type_name
        assert point.count == item.format.size
        # kW, kvar, kWh -> W, var, Wh; V, A, Hz and the power factor as they are.
        assert point.scale == (1000.0 if item.unit.startswith("k") else 1.0), point.name


def test_profiles_show_lists_a_dlt645_profile(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    assert run_show(argparse.Namespace(name="dlt645_three_phase", json=False)) == 0
    out = capsys.readouterr().out
    assert "DL/T 645-2007 three-phase" in out and "voltage_l3_v" in out and "XXX.X" in out


def test_a_point_reads_a_data_identifier_in_either_notation(tmp_path: Path) -> None:
    by_text = profile_from_mapping(profile(di="02 01 01 00"), path=tmp_path / "a.yaml")
    by_int = profile_from_mapping(profile(di=0x02010100), path=tmp_path / "b.yaml")
    assert by_text.points == by_int.points
    custom = profile_from_mapping(profile(di="04 80 00 01", format="XXXX.XX"), path=tmp_path / "c.yaml")
    assert (custom.points[0].type, custom.points[0].count) == ("XXXX.XX", 3)
    signed = profile_from_mapping(profile(di="02 01 01 00", signed=True), path=tmp_path / "d.yaml")
    assert signed.points[0].type == "-XXX.X"


@pytest.mark.parametrize(("point", "message"), [
    ({}, r"registers\[0\]: di: a DL/T 645 point needs its data identifier"),
    ({"di": "02 01 0G 00"}, r"di: '02 01 0G 00' is not a data identifier"),
    ({"di": "02 01 FF 00"}, r"di: 02 01 FF 00 is a data block"),
    ({"di": "04 80 00 01"}, r"format: 04 80 00 01 is not in the gateway's table"),
    ({"di": "02 01 01 00", "format": "XX.X"}, r"format: format 'XX.X': write an even number"),
    ({"di": "02 01 01 00", "table": "input"}, r"option 'table' is not valid"),
    ({"di": "02 01 01 00", "scale": 0}, r"scale: must not be 0"),
])
def test_bad_dlt645_points_name_the_fix(tmp_path: Path, point: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        profile_from_mapping(profile(**point), path=tmp_path / "bad.yaml")


def test_a_dlt645_profile_has_no_writable_points(tmp_path: Path) -> None:
    data = profile(di="02 01 01 00")
    data["writable"] = [{"name": "relay_1_on", "unit": "", "di": "02 01 01 00"}]
    with pytest.raises(ProfileError, match="no writable points"):
        profile_from_mapping(data, path=tmp_path / "w.yaml")


# ------------------------------------------------------------------------------ gateway config


def test_a_dlt645_bus_and_meter_parse_with_line_defaults(tmp_path: Path) -> None:
    config = parse_config(HEAD + BUS + METER + 'address = "000012345678"\n', path=tmp_path / "c.toml")
    (bus,) = config.devices.buses
    assert (bus.protocol, bus.baud, bus.parity, bus.stopbits) == ("dlt645", 2400, "E", 1)
    (device,) = config.devices.devices
    assert (device.address, device.unit, device.profile.name) == ("000012345678", 0,
                                                                  "dlt645_single_phase")
    modbus = parse_config(HEAD + '[[bus]]\nname = "b"\nserial = "/dev/ttyUSB1"\n',
                          path=tmp_path / "m.toml")
    assert (modbus.devices.buses[0].protocol, modbus.devices.buses[0].baud) == ("modbus", 9600)


@pytest.mark.parametrize(("text", "message"), [
    (BUS + METER, r"device\[0\]: address: a meter on a DL/T 645 bus needs address = "
                  r"\"000012345678\""),
    (BUS + METER + "address = 12345678\n", r"address: write the address as text with its leading "
                                           r"zeros: address = \"000012345678\""),
    (BUS + METER + 'address = "1234"\n', r"address: '1234' is not a DL/T 645 meter address"),
    (BUS + METER + 'address = "000012345678"\nunit = 1\n', r"unit: bus 'line' speaks DL/T 645"),
    (BUS + METER.replace("dlt645_single_phase", "eastron_sdm120") + 'address = "000000000001"\n',
     r"profile: eastron_sdm120 is a modbus profile but bus 'line' speaks dlt645"),
    ('[[bus]]\nname = "line"\nserial = "/dev/ttyUSB0"\n\n' + METER + "unit = 1\n",
     r"profile: dlt645_single_phase is a dlt645 profile but bus 'line' speaks modbus"),
    ('[[bus]]\nname = "line"\nserial = "/dev/ttyUSB0"\n\n' + METER.replace(
        "dlt645_single_phase", "eastron_sdm120") + 'unit = 1\naddress = "000000000001"\n',
     r"address: only devices on a protocol = \"dlt645\" bus have an address"),
    ('[[bus]]\nname = "line"\nprotocol = "dlt645"\ntcp = "127.0.0.1:502"\n',
     r"bus\[0\]: tcp: a DL/T 645 bus is an RS-485 line"),
    ('[[bus]]\nname = "line"\nprotocol = "dl645"\nserial = "/dev/ttyUSB0"\n',
     r"protocol: 'dl645' is not valid; use one of modbus, dlt645; did you mean 'dlt645'\?"),
    (BUS + METER + 'address = "000000000001"\n\n' + METER.replace('"m"', '"n"')
     + 'address = "000000000001"\n',
     r"device\[1\]: address: address 000000000001 on bus 'line' is already device 'm'"),
])
def test_bad_dlt645_config_names_the_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(HEAD + text, path=tmp_path / "c.toml")


# ------------------------------------------------------------------------------ scenarios

SCENARIO = """
[[bus]]
name = "line"
baud = 2400
parity = "E"

[[device]]
name = "m"
profile = "dlt645_three_phase"
transport = "dlt645"
address = "line"
meter_address = "000000000042"
"""


def test_a_scenario_meter_on_a_dlt645_line(scenario_file: Callable[[str], Path]) -> None:
    scenario = load_scenario(scenario_file(SCENARIO))
    (device,) = scenario.devices
    assert (device.transport, device.meter_address, device.unit) == ("dlt645", "000000000042", 0)
    assert scenario.bus("line").line.parity == "E"


@pytest.mark.parametrize(("extra", "message"), [
    ("unit = 1\n", r"unit: a dlt645 meter has meter_address"),
    ('[device.fault]\nbad_crc = true\n', None),
    ('\n[[device]]\nname = "n"\nprofile = "dlt645_three_phase"\ntransport = "dlt645"\n'
     'address = "line"\nmeter_address = "000000000042"\n',
     r"meter_address: 000000000042 is already used by m"),
    ('\n[[device]]\nname = "n"\nprofile = "eastron_sdm120"\ntransport = "rtu"\naddress = "line"\n'
     'unit = 1\n', r"bus 'line' already carries dlt645 devices"),
    ('\n[[device]]\nname = "n"\nprofile = "eastron_sdm120"\ntransport = "dlt645"\n'
     'address = "line"\nmeter_address = "000000000043"\n',
     r"eastron_sdm120 is a modbus profile; transport 'dlt645' needs a dlt645 profile"),
])
def test_scenario_checks_for_dlt645(scenario_file: Callable[[str], Path], extra: str,
                                    message: str | None) -> None:
    path = scenario_file(SCENARIO + extra)
    if message is None:
        assert load_scenario(path).devices[0].faults
        return
    with pytest.raises(ConfigError, match=message):
        load_scenario(path)
