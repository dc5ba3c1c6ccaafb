"""Scenario TOML files: the documented form loads; mistakes name the file, table, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_shims.faults import BadCrc, ExceptionReply, NoReply, Reboot, SlowTurnaround
from firmware_shims.loads import ConstantLoad, DailyCurve, NoisyLoad
from firmware_shims.scenario import load_scenario
from gateway.config.profiles import profile_paths
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
METER = ROOT / "tests" / "data" / "profiles" / "meters" / "test_meter.yaml"
EV = ROOT / "tests" / "data" / "profiles" / "appliances" / "test_ev_charger.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "home.toml"
    path.write_text(text)
    return path


def device(name: str = "main", *, profile: Path = METER, transport: str = "tcp",
           address: str = "127.0.0.1:0", unit: int = 1, extra: str = "") -> str:
    return (f'[[device]]\nname = "{name}"\nprofile = "{profile}"\ntransport = "{transport}"\n'
            f'address = "{address}"\nunit = {unit}\n{extra}\n')


def test_the_minimal_documented_form_loads(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, device(extra='[device.load]\nkind = "constant"\n'
                                                        'power_w = 2300\n')))
    (spec,) = scenario.devices
    assert (spec.name, spec.transport, spec.address, spec.unit) == ("main", "tcp", "127.0.0.1:0", 1)
    assert spec.profile.name == "test_meter"
    assert spec.load == ConstantLoad(2300.0)
    assert scenario.speed == 1.0


def test_full_form_with_bus_faults_feeds_and_nested_noise(tmp_path: Path) -> None:
    text = (
        '[simulation]\nspeed = 60\nstart = "2024-06-01T07:00:00+00:00"\n'
        '[[bus]]\nname = "b"\nbaud = 19200\nparity = "E"\nwire_timing = true\n'
        + device("m", transport="rtu", address="b", unit=2, extra=(
            'noise = true\nphase_split = [0.5, 0.25, 0.25]\nstrict_addresses = false\n'
            '[device.load]\nkind = "noise"\npct = 2\nseed = 3\n'
            '[device.load.base]\nkind = "daily"\npoints = [["06:00", 100], ["18:00", 900]]\n'
            '[device.fault]\nno_reply = true\nexception = 4\nbad_crc = true\ndelay_s = 0.1\n'
            'reboot_s = 2\n'))
        + device("ev", profile=EV, transport="rtu", address="b", unit=3,
                 extra='feeds = "m"\n[device.values]\nev_current_limit_a = 10\n')
    )
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.speed == 60.0 and scenario.start == 1717225200.0
    (bus,) = scenario.buses
    assert (bus.line.baud, bus.line.parity, bus.wire_timing) == (19200, "E", True)
    meter, ev = scenario.devices
    assert isinstance(meter.load, NoisyLoad) and isinstance(meter.load.base, DailyCurve)
    assert meter.settings.phase_split == (0.5, 0.25, 0.25) and not meter.settings.strict_addresses
    assert meter.faults == (NoReply(), ExceptionReply(4), BadCrc(), SlowTurnaround(0.1),
                            Reboot(2.0))
    assert ev.feeds == "m" and ev.values == {"ev_current_limit_a": 10}


@pytest.mark.parametrize(("extra", "message"), [
    ("unti = 2\n", r"device\[0\] \(main\): option 'unti' is not valid; did you mean 'unit'\?"),
    ('[device.load]\nkind = "constant"\npower = 1\n',
     r"device\[0\] \(main\): load: option 'power' is not valid; did you mean 'power_w'\?"),
    ('[device.load]\nkind = "constnt"\n',
     r"load: kind: 'constnt' is not valid.*did you mean 'constant'"),
    ('[device.fault]\nexception = 9\n', r"fault: exception: .*not a Modbus exception code"),
    ('[device.fault]\nbad_crc = true\n', r"fault: bad_crc: applies to rtu devices only"),
    ("power_factor = 1.5\n", r"power_factor: 1.5 is not a power factor"),
    ('feeds = "mian"\n', r"feeds: no device named 'mian'"),
    ('[device.values]\nvoltage_l1 = 3\n', r"values: 'voltage_l1' is not a point of test_meter; "
                                          r"did you mean 'voltage_l1_v'"),
])
def test_mistakes_name_the_file_the_table_and_the_fix(tmp_path: Path, extra: str,
                                                       message: str) -> None:
    path = write(tmp_path, device(extra=extra))
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert str(info.value).startswith(str(path))


def test_reference_mistakes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"address 'localhost' is not host:port"):
        load_scenario(write(tmp_path, device(address="localhost")))
    with pytest.raises(ConfigError, match="unit: 1 is already used by a"):
        load_scenario(write(tmp_path, device("a", transport="rtu", address="x")
                            + device("b", transport="rtu", address="x")))
    with pytest.raises(ConfigError, match=r"no \[\[bus\]\] named 'rs458'; did you mean 'rs485'"):
        load_scenario(write(tmp_path, '[[bus]]\nname = "rs485"\n'
                            + device("a", transport="rtu", address="rs485")
                            + device("b", transport="rtu", address="rs458", unit=2)))
    with pytest.raises(ConfigError, match=r"option 'devices' is not valid; did you mean 'device'"):
        load_scenario(write(tmp_path, device().replace("[[device]]", "[[devices]]")))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(write(tmp_path, "[[device]\n"))
    with pytest.raises(ConfigError, match="no device profile named 'eastron_sdm63'"):
        load_scenario(write(tmp_path, device(profile=Path("eastron_sdm63"))))


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "homes").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_homes_load(path: Path) -> None:
    if not profile_paths():
        pytest.skip("device_profiles/ holds no profiles yet")
    scenario = load_scenario(path)
    assert scenario.devices
