"""Simulated devices on a simulated RS-485 bus (ptys + relay) behind a real pymodbus RTU server.

Wire timing is checked by its floor only (a round trip never beats the wire), which load cannot
break; how close to the wire a round trip comes, timed and untimed, is a figure of bench/timing.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from firmware_shims.device import DeviceSettings
from firmware_shims.faults import BadCrc, NoReply
from firmware_shims.home import SimulatedHome
from firmware_shims.loads import ConstantLoad
from firmware_shims.scenario import BusSpec, DeviceSpec, Scenario
from firmware_shims.wire import LineSettings
from gateway.config.profiles import load_profile
from gateway.perception.codec import decode_point
from gateway.perception.profiles import Profile

DATA = Path(__file__).resolve().parents[1] / "data" / "profiles"
METER = load_profile(DATA / "meters" / "test_meter.yaml")
EV = load_profile(DATA / "appliances" / "test_ev_charger.yaml")
LINE = LineSettings(baud=9600, parity="N", stopbits=1)


def meter_on_bus(name: str, unit: int, power_w: float, *, profile: Profile = METER,
                 feeds: str | None = None) -> DeviceSpec:
    return DeviceSpec(name=name, profile=profile, transport="rtu", address="bus", unit=unit,
                      load=ConstantLoad(power_w), feeds=feeds, settings=DeviceSettings())


Body = Callable[[SimulatedHome, AsyncModbusSerialClient], Awaitable[None]]


def run(devices: list[DeviceSpec], body: Body, *, wire_timing: bool = False,
        extra: tuple[DeviceSpec, ...] = ()) -> None:
    scenario = Scenario(devices=(*devices, *extra),
                        buses=(BusSpec(name="bus", line=LINE, wire_timing=wire_timing),))

    async def main() -> None:
        async with SimulatedHome(scenario) as home:
            port = next(d.address for d in home.devices if d.transport == "rtu")
            assert port.startswith("/dev/")
            client = AsyncModbusSerialClient(port, baudrate=LINE.baud, parity=LINE.parity,
                                             stopbits=LINE.stopbits, timeout=0.5, retries=0)
            assert await client.connect()
            try:
                await body(home, client)
            finally:
                client.close()
    asyncio.run(main())


async def read(client: AsyncModbusSerialClient, name: str, unit: int,
               profile: Profile = METER) -> float | int | str:
    point = profile.point(name)
    call = client.read_input_registers if point.table == "input" else client.read_holding_registers
    response = await call(point.address, count=point.count, device_id=unit)
    assert not response.isError(), f"{name}: {response}"
    return decode_point(point, response.registers)


def test_three_meters_share_one_bus() -> None:
    async def body(home: SimulatedHome, client: AsyncModbusSerialClient) -> None:
        assert len({d.address for d in home.devices}) == 1  # one pty for the whole bus
        for unit, power in ((1, 2300.0), (2, 1400.0), (3, -3200.0)):
            assert await read(client, "power_active_total_w", unit) == pytest.approx(power)
        home.device("b").set_value("voltage_l3_v", 244.4)
        assert await read(client, "voltage_l3_v", 2) == pytest.approx(244.4, abs=1e-4)
        assert await read(client, "voltage_l3_v", 1) == pytest.approx(230.0)
        # A unit nobody has stays silent, as on a real bus.
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(52, count=2, device_id=9)
        # One silent meter does not disturb the others.
        home.device("a").inject(NoReply())
        with pytest.raises(ModbusIOException):
            await read(client, "power_active_total_w", 1)
        assert await read(client, "power_active_total_w", 3) == pytest.approx(-3200.0)

    run([meter_on_bus("a", 1, 2300.0), meter_on_bus("b", 2, 1400.0),
         meter_on_bus("c", 3, -3200.0)], body)


def test_bad_crc_reply_is_rejected_by_the_client() -> None:
    async def body(home: SimulatedHome, client: AsyncModbusSerialClient) -> None:
        home.device("a").inject(BadCrc())
        with pytest.raises(ModbusIOException):
            await read(client, "power_active_total_w", 1)
        assert home.device("a").counters.bytes_sent == 9  # the reply did go out, corrupted
        # The good reply of unit 2 shows the client has dropped what was left of the bad frame.
        assert await read(client, "power_active_total_w", 2) == pytest.approx(100.0)
        home.device("a").clear_faults()
        assert await read(client, "power_active_total_w", 1) == pytest.approx(2300.0)

    run([meter_on_bus("a", 1, 2300.0), meter_on_bus("b", 2, 100.0)], body)


async def round_trips(client: AsyncModbusSerialClient, count: int, n: int = 8) -> list[float]:
    times = []
    for _ in range(n):
        started = time.monotonic()
        response = await client.read_input_registers(0, count=count, device_id=1)
        times.append(time.monotonic() - started)
        assert not response.isError()
    return times


def wire_time(registers: int) -> float:
    """Request (8 bytes) + t3.5 + reply (5 + 2 x registers bytes) on the wire."""
    return (8 + 3.5 + 5 + 2 * registers) * LINE.char_s


@pytest.mark.parametrize("registers", [2, 18])
def test_wire_timing_makes_a_round_trip_as_slow_as_the_wire(registers: int) -> None:
    measured: list[float] = []

    async def body(home: SimulatedHome, client: AsyncModbusSerialClient) -> None:
        await round_trips(client, registers, n=1)  # first request warms the path
        measured.extend(await round_trips(client, registers))

    run([meter_on_bus("a", 1, 2300.0)], body, wire_timing=True)
    # A floor, not a ceiling: the relay holds each frame until its last byte would have crossed
    # the wire, so no round trip is shorter, however idle or busy the machine.
    assert len(measured) == 8 and min(measured) >= wire_time(registers)


def test_ev_charger_on_the_bus_feeds_the_main_meter() -> None:
    async def body(home: SimulatedHome, client: AsyncModbusSerialClient) -> None:
        assert await read(client, "power_active_total_w", 1) == pytest.approx(800 + 11000)
        limit = EV.point("ev_current_limit_a")
        assert not (await client.write_register(limit.address, 10, device_id=7)).isError()
        assert await read(client, "ev_current_limit_a", 7, EV) == 10
        assert await read(client, "power_active_total_w", 1) == pytest.approx(800 + 10 * 230 * 3)
        assert not (await client.write_coil(0, False, device_id=7)).isError()
        assert await read(client, "power_active_total_w", 1) == pytest.approx(800)
        assert home.device("ev").counters.writes == 2

    ev = DeviceSpec(name="ev", profile=EV, transport="rtu", address="bus", unit=7, feeds="main")
    run([meter_on_bus("main", 1, 800.0)], body, extra=(ev,))
