"""Simulated devices on a real pymodbus TCP server, read and written by a real pymodbus client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from firmware_shims.device import DeviceSettings
from firmware_shims.faults import BadCrc, ExceptionReply, NoReply, Reboot, SlowTurnaround
from firmware_shims.home import SimulatedHome
from firmware_shims.loads import ConstantLoad, LoadModel
from firmware_shims.scenario import DeviceSpec, Scenario
from gateway.config.profiles import load_profile
from gateway.errors import ConfigError
from gateway.perception.codec import decode_point, encode_point
from gateway.perception.profiles import Profile

DATA = Path(__file__).resolve().parents[1] / "data" / "profiles"
METER = load_profile(DATA / "meters" / "test_meter.yaml")
EV = load_profile(DATA / "appliances" / "test_ev_charger.yaml")


def spec(name: str, profile: Profile, *, unit: int = 1, load: LoadModel | None = None,
         feeds: str | None = None, strict: bool = True) -> DeviceSpec:
    return DeviceSpec(name=name, profile=profile, transport="tcp", address="127.0.0.1:0", unit=unit,
                      load=load, feeds=feeds, settings=DeviceSettings(strict_addresses=strict))


Body = Callable[[SimulatedHome, AsyncModbusTcpClient], Awaitable[None]]


def run(devices: list[DeviceSpec], body: Body, *, client_of: str = "main") -> None:
    async def main() -> None:
        async with SimulatedHome(Scenario(devices=tuple(devices))) as home:
            info = next(d for d in home.devices if d.name == client_of)
            host, port = info.address.rsplit(":", 1)
            client = AsyncModbusTcpClient(host, port=int(port), timeout=0.5, retries=0)
            assert await client.connect()
            try:
                await body(home, client)
            finally:
                client.close()
    asyncio.run(main())


async def read(client: AsyncModbusTcpClient, profile: Profile, name: str,
               unit: int = 1) -> float | int | str:
    point = profile.point(name)
    call = client.read_input_registers if point.table == "input" else client.read_holding_registers
    response = await call(point.address, count=point.count, device_id=unit)
    assert not response.isError(), f"{name}: {response}"
    return decode_point(point, response.registers)


def test_meter_over_tcp_serves_the_values_the_shim_set() -> None:
    async def body(home: SimulatedHome, client: AsyncModbusTcpClient) -> None:
        main = home.device("main")
        main.set_value("voltage_l1_v", 231.7)
        main.set_value("energy_import_total_wh", 123_456_000.0)
        assert await read(client, METER, "voltage_l1_v") == pytest.approx(231.7, abs=1e-4)
        assert await read(client, METER, "energy_import_total_wh") == pytest.approx(123_456_000.0,
                                                                                    rel=1e-6)
        assert await read(client, METER, "power_active_total_w") == pytest.approx(2300.0)
        assert await read(client, METER, "power_active_l2_w") == pytest.approx(2300.0 / 3, rel=1e-6)
        assert await read(client, METER, "frequency_hz") == pytest.approx(50.0)
        assert await read(client, METER, "serial_number") == 12345678
        probe = await client.read_holding_registers(0xFC02, count=1, device_id=1)
        assert probe.registers == [0x0070]
        # Every point of the profile decodes to what the shim itself says it shows.
        shown = main.values()
        for point in METER.points:
            value = await read(client, METER, point.name)
            if point.name not in ("uptime_s", "energy_import_total_wh"):
                assert value == pytest.approx(shown[point.name], rel=1e-5), point.name
        assert main.counters.requests >= len(METER.points) + 6
        assert main.counters.bytes_sent > 0

    run([spec("main", METER, load=ConstantLoad(2300.0))], body)


def test_merged_read_across_a_gap_answers_illegal_data_address() -> None:
    async def body(home: SimulatedHome, client: AsyncModbusTcpClient) -> None:
        merged = await client.read_input_registers(0, count=60, device_id=1)
        assert merged.isError() and merged.exception_code == 2
        assert home.device("main").counters.exceptions == 1
        info = next(d for d in home.devices if d.name == "lax")
        host, port = info.address.rsplit(":", 1)
        other = AsyncModbusTcpClient(host, port=int(port), timeout=0.5, retries=0)
        await other.connect()
        try:
            lax = await other.read_input_registers(0, count=60, device_id=2)
        finally:
            other.close()
        assert not lax.isError() and lax.registers[18:52] == [0] * 34

    run([spec("main", METER, load=ConstantLoad(100.0)),
         spec("lax", METER, unit=2, strict=False)], body)


def test_faults_no_reply_exception_slow_and_reboot() -> None:
    async def body(home: SimulatedHome, client: AsyncModbusTcpClient) -> None:
        main = home.device("main")
        main.inject(NoReply())
        with pytest.raises(ModbusIOException):
            await read(client, METER, "power_active_total_w")
        assert main.counters.silent == 1
        main.clear_faults()
        assert await read(client, METER, "power_active_total_w") == pytest.approx(500.0)

        main.inject(ExceptionReply(4))
        response = await client.read_input_registers(52, count=2, device_id=1)
        assert response.isError() and response.exception_code == 4
        main.clear_faults()

        main.inject(SlowTurnaround(0.3))
        started = time.monotonic()
        await read(client, METER, "power_active_total_w")
        assert time.monotonic() - started >= 0.3
        main.clear_faults()

        with pytest.raises(ConfigError, match="rtu devices only"):
            main.inject(BadCrc())

    run([spec("main", METER, load=ConstantLoad(500.0))], body)


def test_reboot_goes_silent_then_resets_volatile_values() -> None:
    async def body(home: SimulatedHome, client: AsyncModbusTcpClient) -> None:
        ev = home.device("ev")
        limit = EV.point("ev_current_limit_a")
        assert not (await client.write_register(limit.address, 8, device_id=1)).isError()
        ev.set_value("energy_import_total_wh", 4000.0)
        ev.inject(Reboot(0.4))
        with pytest.raises(ModbusIOException):
            await read(client, EV, "power_active_total_w")
        # The device answers again once its reboot is over (the failed read took its 0.5 s
        # timeout, so usually at once); each read that still finds it silent is the wait.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await read(client, EV, "power_active_total_w")
                break
            except ModbusIOException:
                assert asyncio.get_running_loop().time() < deadline, "the device never came back"
        assert await read(client, EV, "ev_current_limit_a") == 16  # volatile: back to default
        energy = await read(client, EV, "energy_import_total_wh")
        assert isinstance(energy, int) and energy >= 4000  # counters continue

    run([spec("ev", EV)], body, client_of="ev")


def test_writing_the_ev_current_limit_lowers_the_main_meter_power() -> None:
    async def body(home: SimulatedHome, client: AsyncModbusTcpClient) -> None:
        ev_info = next(d for d in home.devices if d.name == "ev")
        host, port = ev_info.address.rsplit(":", 1)
        ev_client = AsyncModbusTcpClient(host, port=int(port), timeout=0.5, retries=0)
        await ev_client.connect()
        try:
            assert await read(client, METER, "power_active_total_w") == pytest.approx(1000 + 11000)
            limit = EV.point("ev_current_limit_a")
            written = await ev_client.write_registers(limit.address, encode_point(limit, 6),
                                                      device_id=5)
            assert not written.isError()
            assert await read(ev_client, EV, "power_active_total_w", unit=5) == 6 * 230 * 3
            assert await read(client, METER, "power_active_total_w") == pytest.approx(1000 + 4140)
            refused = await ev_client.write_register(limit.address, 32, device_id=5)
            assert refused.isError() and refused.exception_code == 3
        finally:
            ev_client.close()

    run([spec("main", METER, load=ConstantLoad(1000.0)),
         spec("ev", EV, unit=5, feeds="main")], body)
