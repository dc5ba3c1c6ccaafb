"""Simulated device model: physics, energy, register image, writes, appliances, reboot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pymodbus.constants import ExcCodes

from firmware_shims.clock import ManualClock
from firmware_shims.device import DeviceSettings, SimulatedDevice
from firmware_shims.loads import ConstantLoad
from firmware_shims.physics import Grid
from gateway.config.profiles import load_profile
from gateway.errors import ConfigError
from gateway.perception.codec import decode_point, encode_point
from gateway.perception.profiles import Profile

DATA = Path(__file__).resolve().parents[1] / "data" / "profiles"
FC_HOLDING, FC_INPUT, FC_COIL, FC_WRITE_COIL, FC_WRITE_REG, FC_WRITE_REGS = 3, 4, 1, 5, 6, 16


def profile(name: str) -> Profile:
    kind = "meters" if "meter" in name else "appliances"
    return load_profile(DATA / kind / f"{name}.yaml")


def meter(power_w: float = 2300.0, *, clock: ManualClock | None = None,
          settings: DeviceSettings | None = None, name: str = "test_meter") -> SimulatedDevice:
    return SimulatedDevice(name="main", profile=profile(name), unit=1, clock=clock or ManualClock(),
                           load=ConstantLoad(power_w), settings=settings)


def read_point(device: SimulatedDevice, name: str) -> float | int | str:
    """Read one point through the register image, as a client would, and decode it."""
    point = device.profile.point(name)
    fc = {"input": FC_INPUT, "holding": FC_HOLDING, "coil": FC_COIL}[point.table]
    words = device.read(fc, point.address, point.count)
    assert not isinstance(words, ExcCodes), f"{name}: exception {words!r}"
    sf = 0
    if point.scale_factor:
        sf = int(read_point(device, point.scale_factor))
    return decode_point(point, [int(w) for w in words], sf=sf)


def test_three_phase_values_are_consistent() -> None:
    device = meter(2300.0, settings=DeviceSettings(power_factor=0.9))
    v = device.values()
    assert v["power_active_total_w"] == pytest.approx(2300.0)
    assert sum(v[f"power_active_l{i}_w"] for i in (1, 2, 3)) == pytest.approx(2300.0)  # type: ignore[misc]
    for i in (1, 2, 3):
        assert v[f"voltage_l{i}_v"] == pytest.approx(230.0)
        assert v[f"current_l{i}_a"] == pytest.approx(2300.0 / 3 / (230.0 * 0.9))
    s, p, q = v["power_apparent_total_va"], v["power_active_total_w"], v["power_reactive_total_var"]
    assert s == pytest.approx(math.hypot(p, q))  # type: ignore[arg-type]
    assert v["frequency_hz"] == 50.0
    assert v["voltage_l1_l2_v"] == pytest.approx(230.0 * math.sqrt(3))
    assert v["current_n_a"] == pytest.approx(0.0, abs=1e-9)  # balanced load: no neutral current


def test_unbalanced_split_makes_neutral_current() -> None:
    device = meter(3000.0, settings=DeviceSettings(phase_split=(1.0, 0.0, 0.0), power_factor=1.0))
    v = device.values()
    assert v["power_active_l1_w"] == pytest.approx(3000.0)
    assert v["current_n_a"] == pytest.approx(3000.0 / 230.0)


def test_energy_integrates_over_simulated_time() -> None:
    clock = ManualClock()
    device = meter(2300.0, clock=clock)
    clock.advance(3600.0)
    assert read_point(device, "energy_import_total_wh") == pytest.approx(2300.0, rel=1e-6)
    assert read_point(device, "energy_export_total_wh") == 0.0
    device.set_load(ConstantLoad(-1000.0))
    clock.advance(1800.0)
    assert read_point(device, "energy_import_total_wh") == pytest.approx(2300.0, rel=1e-6)
    assert read_point(device, "energy_export_total_wh") == pytest.approx(500.0, rel=1e-6)
    assert read_point(device, "power_active_total_w") == pytest.approx(-1000.0)


def test_identity_probe_and_simulation_values() -> None:
    device = meter()
    assert device.read(FC_HOLDING, 0xFC02, 1) == [0x0070]
    assert read_point(device, "serial_number") == 12345678


def test_strict_addresses_answer_illegal_address_for_gaps() -> None:
    device = meter()
    assert device.read(FC_INPUT, 0, 18) != ExcCodes.ILLEGAL_ADDRESS
    assert device.read(FC_INPUT, 0, 20) == ExcCodes.ILLEGAL_ADDRESS  # 18, 19 are not mapped
    lax = meter(settings=DeviceSettings(strict_addresses=False))
    words = lax.read(FC_INPUT, 0, 20)
    assert isinstance(words, list) and words[18:] == [0, 0]


def test_reads_across_a_barrier_or_above_the_limit_are_refused() -> None:
    device = meter(settings=DeviceSettings(strict_addresses=False))
    assert device.read(FC_INPUT, 198, 4) == ExcCodes.ILLEGAL_ADDRESS  # barrier at PDU 200
    assert isinstance(device.read(FC_INPUT, 200, 2), list)
    assert device.read(FC_INPUT, 0, 126) == ExcCodes.ILLEGAL_VALUE


def test_scale_factor_and_integer_types() -> None:
    device = meter(-1234.0, name="test_sunspec_meter")
    assert read_point(device, "current_sf") == -2
    current = read_point(device, "current_l1_a")
    assert current == pytest.approx(1234.0 / (230.0 * 0.95), abs=0.01)
    assert read_point(device, "power_active_total_w") == -1234
    assert read_point(device, "voltage_l1_v") == pytest.approx(230.0)
    assert read_point(device, "model_name") == "SF1P"


def test_set_value_pins_points_and_sets_counters() -> None:
    clock = ManualClock()
    device = meter(1000.0, clock=clock)
    device.set_value("voltage_l2_v", 241.5)
    device.set_value("energy_import_total_wh", 5_000_000.0)
    clock.advance(3600.0)
    assert read_point(device, "voltage_l2_v") == pytest.approx(241.5)
    assert read_point(device, "energy_import_total_wh") == pytest.approx(5_001_000.0)
    with pytest.raises(ConfigError, match="did you mean 'voltage_l1_v'"):
        device.set_value("voltage_l1_vv", 1)


def ev(clock: ManualClock) -> SimulatedDevice:
    return SimulatedDevice(name="ev", profile=profile("test_ev_charger"), unit=2, clock=clock)


def test_ev_charger_power_follows_current_limit_and_feeds_the_meter() -> None:
    clock = ManualClock()
    main, charger = meter(500.0, clock=clock), ev(clock)
    main.attach(charger)
    assert read_point(charger, "power_active_total_w") == 11000  # 16 A x 230 V x 3 = 11040, capped
    assert read_point(main, "power_active_total_w") == pytest.approx(11500.0)
    limit = charger.profile.point("ev_current_limit_a")
    assert charger.write(FC_WRITE_REG, limit.address, encode_point(limit, 8)) is None
    assert read_point(charger, "power_active_total_w") == 8 * 230 * 3
    assert read_point(main, "power_active_total_w") == pytest.approx(500.0 + 8 * 230 * 3)
    # Out of range and unmapped writes are refused like a device would.
    assert charger.write(FC_WRITE_REG, limit.address, [17]) == ExcCodes.ILLEGAL_VALUE
    assert charger.write(FC_WRITE_REG, limit.address + 1, [1]) == ExcCodes.ILLEGAL_ADDRESS
    # Below 6 A the car pauses; the on/off coil gates it too.
    charger.write(FC_WRITE_REG, limit.address, [5])
    assert read_point(main, "power_active_total_w") == pytest.approx(500.0)
    charger.write(FC_WRITE_REG, limit.address, [10])
    charger.write(FC_WRITE_COIL, 0, [False])
    assert read_point(charger, "power_active_total_w") == 0


def test_meter_energy_includes_appliance_history() -> None:
    clock = ManualClock()
    main, charger = meter(0.0, clock=clock), ev(clock)
    main.attach(charger)
    clock.advance(1800.0)  # 11 kW for half an hour
    charger.set_value("ev_current_limit_a", 0)
    clock.advance(1800.0)
    assert read_point(main, "energy_import_total_wh") == pytest.approx(5500.0, rel=1e-6)
    assert read_point(charger, "energy_import_total_wh") == pytest.approx(5500.0, rel=1e-3)


def test_relay_gates_rated_power() -> None:
    clock = ManualClock()
    relay = SimulatedDevice(name="boiler", profile=profile("test_relay"), unit=3, clock=clock,
                            settings=DeviceSettings(rated_power_w=3000.0))
    assert read_point(relay, "power_active_total_w") == 3000
    assert relay.write(FC_WRITE_COIL, 0, [False]) is None
    assert read_point(relay, "power_active_total_w") == 0
    assert relay.read(FC_COIL, 0, 1) == [False]


def test_battery_follows_setpoint_and_stops_when_full() -> None:
    clock = ManualClock()
    battery = SimulatedDevice(name="bat", profile=profile("test_battery"), unit=4, clock=clock,
                              settings=DeviceSettings(capacity_wh=1000.0, soc_pct=50.0))
    setpoint = battery.profile.point("battery_power_setpoint_w")
    assert battery.write(FC_WRITE_REGS, setpoint.address, encode_point(setpoint, -2000)) is None
    assert read_point(battery, "power_active_total_w") == -2000
    clock.advance(900.0)  # 500 Wh out of 1000 Wh: 50 % -> 0 %
    assert read_point(battery, "battery_soc_pct") == pytest.approx(0.0, abs=0.2)
    clock.advance(60.0)
    assert read_point(battery, "power_active_total_w") == 0  # empty: discharging stops
    battery.set_value("battery_power_setpoint_w", 9000)  # clipped to the rated 5000 W
    assert read_point(battery, "power_active_total_w") == 5000


def test_reboot_keeps_energy_and_resets_volatile_values() -> None:
    clock = ManualClock()
    charger = ev(clock)
    charger.set_value("ev_current_limit_a", 6)
    clock.advance(3600.0)
    before = read_point(charger, "energy_import_total_wh")
    charger.reboot_done()
    assert read_point(charger, "energy_import_total_wh") == before
    assert read_point(charger, "ev_current_limit_a") == 16  # back to the profile default


def test_grid_noise_is_small_and_repeatable() -> None:
    grid = Grid(noise=True, seed="x")
    volts = [grid.voltages(t, 3)[0] for t in range(200)]
    assert all(220 < v < 240 for v in volts)
    assert len(set(volts)) > 100
    assert grid.voltages(17.2, 3) == grid.voltages(17.9, 3)  # same one-second slot


def test_a_lax_meter_serves_gaps_but_not_a_read_of_nothing_mapped() -> None:
    lax = meter(settings=DeviceSettings(strict_addresses=False))
    assert isinstance(lax.read(FC_INPUT, 16, 4), list)  # 16-17 mapped, 18-19 a gap
    assert lax.read(FC_INPUT, 18, 2) == ExcCodes.ILLEGAL_ADDRESS  # only the gap
