"""Modbus TCP plans for round trips, a line for bytes; a profile's `gap_reads` reaches the simulator.

Expected reads are worked out by hand from the Eastron SDM630-Modbus V2 manual's input register
table (section 1.2.1, printed addresses 30001-30381): the profile's 31 points sit in 30001-30018,
30031-30036, 30053-30080, 30201-30206, 30225-30226 and 30347-30358, and one request may carry at most
80 registers (section 1.1)."""

from __future__ import annotations

from pathlib import Path

from firmware_shims.scenario import scenario_from_mapping
from gateway.config.profiles import load_profile
from gateway.device.bus import BusSettings
from gateway.device.device import DeviceSpec, DeviceState
from gateway.perception.profiles import POLL_CLASSES

ROOT = Path(__file__).resolve().parents[2]
SDM630 = ROOT / "device_profiles" / "meters" / "eastron_sdm630.yaml"
SDM120 = ROOT / "device_profiles" / "meters" / "eastron_sdm120.yaml"


def reads(framing: str) -> list[tuple[int, int]]:
    state = DeviceState(DeviceSpec(name="m", profile=load_profile(SDM630), unit=1),
                        request_overhead=BusSettings(framing=framing).request_overhead)
    plan = state.planner.plan(state.points_for(POLL_CLASSES))
    return [(r.address, r.count) for r in plan.reads]


def test_modbus_tcp_reads_an_sdm630_in_three_requests() -> None:
    # 30001-30080 is exactly 80 registers (gaps 30019-30030 and 30037-30052 read along);
    # 30201-30226 across the 30207-30224 gap; 30347-30358.
    assert reads("tcp") == [(0, 80), (200, 26), (346, 12)]


def test_a_line_reads_the_same_points_in_six() -> None:
    # On RTU a gap of 12 registers (24 bytes) costs more than a new request (~20 bytes with the
    # silent intervals), so every block of points is its own request.
    assert reads("rtu") == [(0, 18), (30, 6), (52, 28), (200, 6), (224, 2), (346, 12)]


def test_gap_reads_in_a_profile_make_its_simulated_meter_answer_them() -> None:
    assert load_profile(SDM630).transport.gap_reads
    assert not load_profile(SDM120).transport.gap_reads
    scenario = scenario_from_mapping({"device": [
        {"name": "a", "profile": str(SDM630), "transport": "tcp", "address": "127.0.0.1:0",
         "unit": 1},
        {"name": "b", "profile": str(SDM120), "transport": "tcp", "address": "127.0.0.1:0",
         "unit": 1},
        {"name": "c", "profile": str(SDM630), "transport": "tcp", "address": "127.0.0.1:0",
         "unit": 1, "strict_addresses": True},
    ]}, path=ROOT / "home.toml")
    strict = {d.name: d.settings.strict_addresses for d in scenario.devices}
    assert strict == {"a": False, "b": True, "c": True}
