"""Profile validation is strict and its errors name the file, the place and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config.profiles import load_profile
from gateway.errors import ProfileError

GOOD = {
    "schema": 1, "kind": "meter", "vendor": "Test", "model": "T1", "source": "unit test",
    "phases": 1,
    "transport": {"baud": 9600, "address_base": {"input": 30001, "holding": 40001}},
    "probe": {"table": "holding", "address": 0xFC02, "address_base": 0, "type": "u16",
              "expect": [0x0070]},
    "registers": [
        {"name": "voltage_l1_v", "table": "input", "address": 30001, "type": "f32", "unit": "V"},
        {"name": "energy_import_total_wh", "table": "input", "address": 30073, "type": "f32",
         "scale": 1000, "unit": "Wh", "poll": "slow"},
    ],
}


def write(tmp_path: Path, data: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "meters" / "test_t1.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_good_profile_loads_with_pdu_addresses(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, GOOD))
    assert profile.name == "test_t1"
    energy = profile.point("energy_import_total_wh")
    assert (energy.address, energy.printed_address, energy.count) == (72, 30073, 2)
    assert profile.probe is not None and profile.probe.address == 0xFC02


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["registers"][1].update(scal=1000),
     r"registers\[1\]: option 'scal' is not valid; did you mean 'scale'\?"),
    (lambda d: d["registers"][0].update(unit="kV"), r"registers\[0\]: name: .*set unit: V"),
    (lambda d: d["registers"][0].update(type="float"), r"registers\[0\]: type: 'float' is not valid"),
    (lambda d: d["registers"][0].update(address=20000), r"registers\[0\]: address: .*outside 0..65535"),
    (lambda d: d.pop("source"), r"option 'source' is required"),
    (lambda d: d["transport"].update(baud=9601), r"transport: baud: 9601 is not valid"),
    (lambda d: d["registers"].append(dict(d["registers"][0])), r"defined twice"),
    (lambda d: d["registers"][0].update(poll="fastest"), r"did you mean 'fast'"),
    (lambda d: d["registers"][0].update(min=3), r"belong under 'writable'"),
])
def test_bad_profiles_name_file_key_and_fix(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    import copy

    data = copy.deepcopy(GOOD)
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_writable_points_check_their_range(tmp_path: Path) -> None:
    import copy

    data = copy.deepcopy(GOOD)
    data.update(kind="appliance")
    data["writable"] = [{"name": "ev_current_limit_a", "table": "holding", "address": 40101,
                         "type": "u16", "unit": "A", "min": 6, "max": 16}]
    profile = load_profile(write(tmp_path, data))
    point = profile.point("ev_current_limit_a")
    point.check_write(10)
    with pytest.raises(ProfileError, match=r"5 is not allowed; use 6..16 A"):
        point.check_write(5)
    data["writable"][0]["values"] = [0]  # 0 pauses charging: a value plus a range
    point = load_profile(write(tmp_path, data)).point("ev_current_limit_a")
    point.check_write(0)
    point.check_write(16)
    with pytest.raises(ProfileError, match=r"use 0 or 6..16 A"):
        point.check_write(3)


def test_unknown_profile_name_suggests() -> None:
    with pytest.raises(ProfileError, match="no device profile named"):
        load_profile("no_such_meter_anywhere")
