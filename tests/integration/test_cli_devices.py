"""`drgw read`, `drgw scan` and `drgw profiles` as a user runs them, against `drgw simulate`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HOME = """
[[bus]]
name = "rs485"
baud = 19200

[[device]]
name = "grid"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.load]
kind = "constant"
power_w = 2300

[[device]]
name = "heat"
profile = "carlogavazzi_em24"
transport = "rtu"
address = "rs485"
unit = 2
[device.load]
kind = "constant"
power_w = 1500

[[device]]
name = "ev"
profile = "eastron_sdm630"
transport = "rtu"
address = "rs485"
unit = 5
[device.load]
kind = "constant"
power_w = 7000
"""


def drgw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def simulated(scenario_file: Callable[[str], Path]) -> Iterator[dict[str, dict[str, object]]]:
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate",
                             str(scenario_file(HOME)), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        yield {d["name"]: d for d in first["devices"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_simulate_first_line_lists_devices(simulated: dict[str, dict[str, object]]) -> None:
    assert set(simulated) == {"grid", "heat", "ev"}
    assert simulated["grid"]["transport"] == "tcp"
    assert str(simulated["grid"]["address"]).startswith("127.0.0.1:")
    assert simulated["heat"]["address"] == simulated["ev"]["address"]  # one shared RTU bus
    assert str(simulated["heat"]["address"]).startswith("/dev/pts/")


def test_read_over_tcp_and_rtu(simulated: dict[str, dict[str, object]]) -> None:
    out = drgw("read", "--profile", "eastron_sdm630", "--tcp", str(simulated["grid"]["address"]),
               "--unit", "1", "--json")
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout)
    assert values["power_active_total_w"] == {"value": 2300.0, "unit": "W", "quality": "ok"}
    out = drgw("read", "--profile", "carlogavazzi_em24", "--serial",
               str(simulated["heat"]["address"]), "--baud", "19200", "--unit", "2", "--json")
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout)
    assert values["power_active_total_w"]["value"] == pytest.approx(1500, abs=0.5)
    assert values["power_active_total_w"]["quality"] == "ok"
    # The table form names every point.
    out = drgw("read", "--profile", "eastron_sdm630", "--tcp", str(simulated["grid"]["address"]),
               "--unit", "1")
    assert out.returncode == 0 and "power_active_total_w" in out.stdout


def test_read_from_a_unit_that_is_not_there(simulated: dict[str, dict[str, object]]) -> None:
    out = drgw("read", "--profile", "eastron_sdm630", "--serial", str(simulated["ev"]["address"]),
               "--baud", "19200", "--unit", "9", "--timeout", "0.2", "--json")
    assert out.returncode == 1, out.stderr  # error readings, not a crash (as for DL/T 645)
    assert "no answer" in out.stderr and "check the unit id" in out.stderr
    readings = json.loads(out.stdout)
    assert readings and all(r["quality"] == "error" and "no answer" in r["error"]
                            for r in readings.values())


def test_scan_finds_and_identifies_rtu_units(simulated: dict[str, dict[str, object]]) -> None:
    out = drgw("scan", "--serial", str(simulated["ev"]["address"]), "--units", "1-6",
               "--bauds", "19200", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    found = {d["unit"]: d for d in result["devices"]}
    assert sorted(found) == [2, 5]
    assert found[2]["profile"] == "carlogavazzi_em24"
    assert "eastron_sdm630" in found[5]["candidates"]
    assert "[[device]]" in result["config"] and "unit = 5" in result["config"]


def test_scan_over_tcp(simulated: dict[str, dict[str, object]]) -> None:
    out = drgw("scan", "--tcp", str(simulated["grid"]["address"]), "--units", "1-2", "--json")
    assert out.returncode == 0, out.stderr
    devices = json.loads(out.stdout)["devices"]
    assert [d["unit"] for d in devices] == [1]
    assert "eastron_sdm630" in devices[0]["candidates"]


def test_profiles_list_validates_everything() -> None:
    out = drgw("profiles", "list", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["errors"] == []
    names = {p["name"]: p for p in result["profiles"]}
    assert names["eastron_sdm630"]["kind"] == "meter"
    assert all(p["source"] for p in result["profiles"])


def test_profiles_list_reports_a_broken_profile(tmp_path: Path) -> None:
    (tmp_path / "meters").mkdir()
    (tmp_path / "meters" / "bad_meter.yaml").write_text(
        "schema: 1\nkind: meter\nvendor: X\nmodel: Y\nsource: s\nphases: 1\ntransport: {}\n"
        "registers:\n  - {name: power_active_total_w, table: input, address: 0, type: f32,"
        " unit: W, pol: fast}\n")
    import os

    env = dict(os.environ, DRGW_PROFILES=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "profiles", "list"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert "bad_meter.yaml: registers[0]: option 'pol' is not valid; did you mean 'poll'?" in out.stderr
