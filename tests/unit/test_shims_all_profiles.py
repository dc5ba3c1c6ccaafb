"""Every device profile is served by the simulated firmware: each point decodes to what it shows."""

from __future__ import annotations

import pytest
from pymodbus.constants import ExcCodes

from firmware_shims.clock import ManualClock
from firmware_shims.device import SimulatedDevice
from firmware_shims.loads import ConstantLoad
from firmware_shims.registers import FUNCTION_TABLES
from gateway.config.profiles import load_all
from gateway.perception.codec import decode_point
from gateway.perception.profiles import Profile

READ_CODE = {table: code for code, table in FUNCTION_TABLES.items() if code in (1, 2, 3, 4)}
PROFILES = load_all()
# Register profiles; DL/T 645 meters are served by data identifier (tests/unit/test_dlt645_shim.py).
MODBUS = [p for p in PROFILES if p.transport.protocol == "modbus"]


@pytest.mark.parametrize("profile", MODBUS, ids=[p.name for p in MODBUS])
def test_every_point_round_trips(profile: Profile) -> None:
    clock = ManualClock()
    device = SimulatedDevice(name=profile.name, profile=profile, unit=profile.transport.units[0],
                             clock=clock, load=ConstantLoad(1840.0))
    clock.advance(3600.0)
    shown = device.values()
    for point in profile.points:
        words = device.read(READ_CODE[point.table], point.address, point.count)
        assert not isinstance(words, ExcCodes), f"{point.name}: {words!r}"
        sf = int(float(shown.get(point.scale_factor, 0))) if point.scale_factor else 0
        value = decode_point(point, [int(w) for w in words], sf=sf)
        expected = shown.get(point.name, "" if point.type == "string" else 0)
        if isinstance(value, str) or isinstance(expected, str):
            assert str(value) == str(expected).strip(), point.name
            continue
        # Integer registers round to their resolution (scale x 10^sf).
        resolution = abs(point.scale * 10.0**sf) if point.type not in ("f32", "f64") else 0.0
        assert value == pytest.approx(expected, rel=1e-5, abs=resolution / 2 + 1e-9), point.name
    if profile.kind == "meter":
        power = profile.point("power_active_total_w")
        words = device.read(READ_CODE[power.table], power.address, power.count)
        assert isinstance(words, list)
        decoded = decode_point(power, [int(w) for w in words])
        assert decoded == pytest.approx(1840.0, abs=power.scale)
    if profile.probe is not None:
        probe = profile.probe
        words = device.read(READ_CODE[probe.table], probe.address, probe.count)
        assert isinstance(words, list)


def test_every_meter_quantity_has_a_model() -> None:
    """A meter name the shim does not model would read 0: give it a model or a simulation value."""
    clock = ManualClock()
    for profile in PROFILES:
        if profile.kind != "meter":
            continue
        shown = SimulatedDevice(name=profile.name, profile=profile, unit=1, clock=clock).values()
        assert [p.name for p in profile.points if p.name not in shown] == [], profile.name
