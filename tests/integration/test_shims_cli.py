"""`drgw simulate` as a separate process: the first stdout line names the devices; they answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from gateway.config.profiles import load_profile
from gateway.perception.codec import decode_point

ROOT = Path(__file__).resolve().parents[2]
METER_PATH = ROOT / "tests" / "data" / "profiles" / "meters" / "test_meter.yaml"
METER = load_profile(METER_PATH)

SCENARIO = f"""
[[bus]]
name = "rs485"
baud = 19200
wire_timing = true

[[device]]
name = "main"
profile = "{METER_PATH}"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.load]
kind = "constant"
power_w = 2300

[[device]]
name = "sub"
profile = "{METER_PATH}"
transport = "rtu"
address = "rs485"
unit = 4
[device.load]
kind = "constant"
power_w = 700
"""


def start(scenario: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "simulate", str(scenario), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


async def read_power(info: dict[str, object]) -> float:
    point = METER.point("power_active_total_w")
    client: AsyncModbusTcpClient | AsyncModbusSerialClient
    if info["transport"] == "tcp":
        host, port = str(info["address"]).rsplit(":", 1)
        client = AsyncModbusTcpClient(host, port=int(port), timeout=1, retries=0)
    else:
        client = AsyncModbusSerialClient(str(info["address"]), baudrate=19200, timeout=1, retries=0)
    assert await client.connect()
    try:
        response = await client.read_input_registers(point.address, count=2,
                                                     device_id=int(str(info["unit"])))
    finally:
        client.close()
    return float(decode_point(point, response.registers))


def test_simulate_json_first_line_then_devices_answer(tmp_path: Path) -> None:
    scenario = tmp_path / "home.toml"
    scenario.write_text(SCENARIO)
    process = start(scenario, "--json")
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        assert set(first) == {"devices"}
        by_name = {d["name"]: d for d in first["devices"]}
        assert set(by_name) == {"main", "sub"}
        for device in first["devices"]:
            assert set(device) == {"name", "profile", "transport", "address", "unit"}
        assert by_name["main"]["profile"] == "test_meter" and by_name["main"]["unit"] == 1
        assert by_name["main"]["address"].startswith("127.0.0.1:")
        assert by_name["sub"]["transport"] == "rtu"
        assert by_name["sub"]["address"].startswith("/dev/")
        assert asyncio.run(read_power(by_name["main"])) == pytest.approx(2300.0)
        assert asyncio.run(read_power(by_name["sub"])) == pytest.approx(700.0)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["event"] == "stopped" and last["counters"]["main"]["requests"] == 1


def test_simulate_table_and_duration(tmp_path: Path) -> None:
    scenario = tmp_path / "home.toml"
    scenario.write_text(SCENARIO)
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", str(scenario), "--duration", "0.2",
         "--speed", "60"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    header, main, sub = result.stdout.splitlines()[:3]
    assert header.split() == ["NAME", "PROFILE", "TRANSPORT", "ADDRESS", "UNIT", "LINE"]
    assert main.split()[:3] == ["main", "test_meter", "tcp"]
    assert "19200 N1 (bus rs485, wire-timed)" in sub
    assert "60x speed" in result.stdout


def test_simulate_reports_a_bad_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "home.toml"
    scenario.write_text(SCENARIO.replace("power_w = 700", "power_w = 700\npowr = 1"))
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", str(scenario), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{scenario}: device[1] (sub): load: option 'powr' is not valid; did you mean " \
           "'power_w'?" in result.stderr
