"""Every device profile round-trips against its simulated firmware over a real Modbus TCP server.

For each point the simulator is set to a value chosen from the point's raw type and scale; the
gateway's device layer reads it back and must decode the same value in the same unit. Writable
points are written through the device layer and read back. The probe must identify the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_shims.home import SimulatedHome
from gateway.config.profiles import load_all
from gateway.device.bus import BusOwner
from gateway.device.connect import make_link
from gateway.device.device import DeviceSpec
from gateway.perception.codec import decode_raw
from gateway.perception.profiles import Point, Profile
from gateway.perception.readings import Quality
from gateway.protocol import modbus

PROFILES = load_all()
MODBUS = [p for p in PROFILES if p.transport.protocol == "modbus"]
DLT645 = [p for p in PROFILES if p.transport.protocol == "dlt645"]


def raw_for(point: Point, index: int) -> int | float | str:
    if point.type == "string":
        return f"S{index:03d}"
    if point.type == "bool":
        return index % 2
    if point.type.startswith("f"):
        return 100.5 + index  # exact in binary floating point
    raw = 100 + 7 * index
    return -raw if point.type.startswith("s") else raw


def expected_values(profile: Profile) -> dict[str, int | float | str]:
    out: dict[str, int | float | str] = {}
    for index, point in enumerate(profile.points):
        if point.writable:
            continue
        raw = raw_for(point, index)
        if isinstance(raw, str) or point.type == "bool":
            out[point.name] = raw
            continue
        if point.scale_factor:
            continue  # set from its scale-factor register below
        if raw in point.invalid:
            raw += 1
        out[point.name] = raw * point.scale + point.offset
    for point in profile.points:
        if point.scale_factor and not point.writable:
            out[point.scale_factor] = -1
            raw = raw_for(point, 0)
            assert not isinstance(raw, str)
            out[point.name] = raw * point.scale * 0.1 + point.offset
    return out


def test_there_are_enough_real_profiles() -> None:
    meters = [p for p in PROFILES if p.kind == "meter" and not p.name.startswith("test_")]
    appliances = [p for p in PROFILES if p.kind == "appliance"]
    assert len(meters) >= 15, [p.name for p in meters]
    assert len(appliances) >= 3, [p.name for p in appliances]
    for required in ("eastron_sdm120", "eastron_sdm230", "eastron_sdm630", "eastron_sdm72",
                     "chint_ddsu666", "chint_dtsu666", "carlogavazzi_em24", "carlogavazzi_em340",
                     "abb_b23", "abb_b24"):
        assert required in {p.name for p in PROFILES}
    for profile in PROFILES:
        assert profile.source.strip(), f"{profile.name} cites no source"


@pytest.mark.parametrize("profile", MODBUS, ids=[p.name for p in MODBUS])
def test_profile_round_trips_against_its_shim(profile: Profile,
                                              scenario_file: Callable[[str], Path]) -> None:
    unit = profile.transport.units[0] or 1
    path = scenario_file(f'[[device]]\nname = "dut"\nprofile = "{profile.name}"\n'
                         f'transport = "tcp"\naddress = "127.0.0.1:0"\nunit = {unit}\n')
    expected = expected_values(profile)

    async def main() -> tuple[dict[str, object], dict[str, object], object]:
        async with SimulatedHome(path) as home:
            handle = home.device("dut")
            for name, value in expected.items():
                handle.set_value(name, value)
            link, settings = make_link(tcp=home.devices[0].address)
            spec = DeviceSpec(name="dut", profile=profile, unit=unit, timeout=2.0)
            owner = BusOwner(link=link, settings=settings, devices=[spec], sink=lambda s: None)
            state = owner.devices["dut"]
            await link.open()
            try:
                readings = await owner.read_points(state, list(profile.points))
                got = {r.name: (r.value, r.quality, r.unit) for r in readings}
                written: dict[str, object] = {}
                for point in profile.writable:
                    target = point.values[-1] if point.values else point.max
                    assert target is not None
                    request = state.write_request(point.name, target)
                    answer = await owner.transact(state, request)
                    assert isinstance(answer, modbus.Response), answer
                    (back,) = await owner.read_points(state, [point])
                    written[point.name] = (target, back.value)
                probe_value = None
                if profile.probe is not None:
                    probe = profile.probe
                    answer = await owner.transact(state, modbus.ReadRequest(
                        unit=unit, function=modbus.READ_FUNCTION[probe.table], address=probe.address,
                        count=probe.count))
                    assert isinstance(answer, modbus.Response), answer
                    probe_value = decode_raw(probe, answer.values)
            finally:
                await link.close()
            return got, written, probe_value

    got, written, probe_value = asyncio.run(main())
    for name, value in expected.items():
        point = profile.point(name)
        got_value, quality, unit = got[name]  # type: ignore[misc]
        assert quality is Quality.OK, f"{name}: {quality}"
        assert unit == point.unit
        if isinstance(value, str):
            assert got_value == value
        else:
            assert got_value == pytest.approx(value, rel=1e-6, abs=1e-9), name
    for name, (target, back) in written.items():  # type: ignore[misc]
        assert back == pytest.approx(target), name
    if profile.probe is not None:
        assert probe_value in profile.probe.expect


# ------------------------------------------------------------------------------ DL/T 645


def test_there_are_dlt645_profiles() -> None:
    assert {"dlt645_single_phase", "dlt645_three_phase"} <= {p.name for p in DLT645}


@pytest.mark.parametrize("profile", DLT645, ids=[p.name for p in DLT645])
def test_dlt645_profile_agrees_with_the_meter_firmware(profile: Profile) -> None:
    """The shim's self-description: each identifier carries the quantity the profile names, and
    the profile's scale undoes the firmware's unit (kW x 1000 = W)."""
    from firmware_shims.dlt645 import FIRMWARE_ITEMS

    for point in profile.points:
        quantity, factor = FIRMWARE_ITEMS[point.address]
        assert quantity == point.name, f"{point.name}: the meter serves {quantity} there"
        assert point.scale * factor == pytest.approx(1.0), point.name


@pytest.mark.parametrize("profile", DLT645, ids=[p.name for p in DLT645])
def test_dlt645_profile_round_trips_against_its_shim(profile: Profile,
                                                     scenario_file: Callable[[str], Path]) -> None:
    """Every point set on the simulated meter reads back through the gateway's DL/T 645 owner on
    a pty line; the shim encodes in the standard's formats, the gateway decodes the profile's."""
    from gateway.device.dlt645 import MeterSpec, serial_owner
    from gateway.perception.dlt645_values import BcdFormat

    path = scenario_file('[[bus]]\nname = "line"\nbaud = 2400\nparity = "E"\n\n[[device]]\n'
                         f'name = "dut"\nprofile = "{profile.name}"\ntransport = "dlt645"\n'
                         'address = "line"\nmeter_address = "000000000001"\n')
    expected: dict[str, float] = {}
    for index, point in enumerate(profile.points):
        fmt = BcdFormat.from_type_name(point.type)
        raw = round(min(fmt.largest / 2, 1.0 + 0.25 * index), fmt.decimals)
        expected[point.name] = (-raw if fmt.signed and index % 2 else raw) * point.scale

    async def main() -> dict[str, tuple[object, Quality, str]]:
        async with SimulatedHome(path) as home:
            for name, value in expected.items():
                home.device("dut").set_value(name, value)
            owner = serial_owner(port=home.devices[0].address, baud=2400, parity="E", stopbits=1,
                                 meters=[MeterSpec(name="dut", profile=profile,
                                                   address="000000000001")], sink=lambda s: None)
            await owner.link.open()
            try:
                readings = await owner.read_points(owner.devices["dut"], list(profile.points))
            finally:
                await owner.link.close()
            return {r.name: (r.value, r.quality, r.unit) for r in readings}

    got = asyncio.run(main())
    for name, value in expected.items():
        got_value, quality, unit = got[name]
        assert quality is Quality.OK, f"{name}: {quality}"
        assert unit == profile.point(name).unit
        assert got_value == pytest.approx(value, rel=1e-9, abs=1e-9), name
