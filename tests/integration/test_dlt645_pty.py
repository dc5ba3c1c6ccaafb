"""DL/T 645 end to end: simulated meters on a pty line, the gateway's owner polling them through
pyserial, faults, learning what a meter lacks, and `drgw simulate` + `drgw scan --protocol dlt645`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from firmware_shims.faults import BadCrc, ExceptionReply, NoReply
from firmware_shims.home import SimulatedHome
from gateway.config.gateway import parse_config
from gateway.device.device import DeviceError
from gateway.device.dlt645 import Dlt645BusOwner, MeterSpec, serial_owner
from gateway.device.layer import DeviceLayer
from gateway.perception.readings import Quality, Reading, Sample

ROOT = Path(__file__).resolve().parents[2]
LINE = """
[[bus]]
name = "line"
baud = 2400
parity = "E"
"""


def meter(name: str, profile: str, address: str, power_w: float, extra: str = "") -> str:
    return (f'\n[[device]]\nname = "{name}"\nprofile = "{profile}"\ntransport = "dlt645"\n'
            f'address = "line"\nmeter_address = "{address}"\n{extra}'
            f'[device.load]\nkind = "constant"\npower_w = {power_w}\n')


HOME = (LINE + meter("grid", "dlt645_three_phase", "000000000001", 4600.0)
        + meter("flat", "dlt645_single_phase", "210987654321", -1200.0))

Body = Callable[[SimulatedHome, str], Awaitable[None]]


def run(scenario: str, body: Body, scenario_file: Callable[[str], Path]) -> None:
    async def main() -> None:
        async with SimulatedHome(scenario_file(scenario)) as home:
            port = home.devices[0].address
            assert port.startswith("/dev/") and home.devices[0].meter_address
            await body(home, port)

    asyncio.run(main())


def owner_for(port: str, *specs: tuple[str, str, str], timeout: float = 0.5) -> Dlt645BusOwner:
    from gateway.config.profiles import load_profile

    meters = [MeterSpec(name=n, profile=load_profile(p), address=a, timeout=timeout)
              for n, p, a in specs]
    return serial_owner(port=port, baud=2400, parity="E", stopbits=1, meters=meters,
                        sink=lambda sample: None)


def resolution(reading: Reading, profile: str) -> float:
    from gateway.config.profiles import load_profile
    from gateway.perception.dlt645_values import BcdFormat

    point = load_profile(profile).point(reading.name)
    return 10.0 ** -BcdFormat.from_type_name(point.type).decimals * point.scale


def test_the_layer_polls_meters_through_pyserial_and_values_match_the_shim(
        scenario_file: Callable[[str], Path], tmp_path: Path) -> None:
    async def body(home: SimulatedHome, port: str) -> None:
        config = parse_config(
            '[gateway]\nkey = "k"\n\n[[bus]]\nname = "line"\nprotocol = "dlt645"\n'
            f'serial = "{port}"\n\n[[device]]\nname = "grid"\nprofile = "dlt645_three_phase"\n'
            'bus = "line"\naddress = "000000000001"\n\n[[device]]\nname = "flat"\n'
            'profile = "dlt645_single_phase"\nbus = "line"\naddress = "210987654321"\n',
            path=tmp_path / "drgw.toml")
        samples: list[Sample] = []
        layer = DeviceLayer(config.devices, sink=samples.append)
        assert isinstance(layer.owners["line"], Dlt645BusOwner)
        task = asyncio.create_task(layer.run())
        try:
            while {s.device for s in samples if len(s.poll) == 3} != {"grid", "flat"}:
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for sample in samples:
            shown = home.device(sample.device).values()
            profile = "dlt645_three_phase" if sample.device == "grid" else "dlt645_single_phase"
            assert sample.ok, sample
            for reading in sample.readings:
                expected = float(shown[reading.name])
                # Energy keeps counting between the read and now: 1 s at 4.6 kW is 1.3 Wh.
                slack = 5.0 if reading.name.startswith("energy") else 0.0
                assert reading.value == pytest.approx(
                    expected, abs=resolution(reading, profile) / 2 + slack + 1e-9), reading.name
        grid = next(s for s in samples if s.device == "grid")
        assert grid.value("power_active_total_w") == pytest.approx(4600.0)
        flat = next(s for s in samples if s.device == "flat")
        assert flat.value("power_active_total_w") == pytest.approx(-1200.0)  # exporting
        # The three-phase meter's phase items came as blocks: 19 points in 9 requests per cycle.
        grid_state = layer.owners["line"].devices["grid"]
        assert grid_state.requests == 9 * grid_state.cycles

    run(HOME, body, scenario_file)


def test_silence_errors_and_bad_checksums_fail_cleanly_and_recover(
        scenario_file: Callable[[str], Path]) -> None:
    async def body(home: SimulatedHome, port: str) -> None:
        owner = owner_for(port, ("grid", "dlt645_three_phase", "000000000001"))
        state = owner.devices["grid"]
        points = list(state.spec.profile.points)
        await owner.link.open()
        try:
            home.device("grid").inject(NoReply())
            with pytest.raises(DeviceError, match=r"meter 000000000001: no answer within \d+ ms"):
                await owner.read_points(state, points)
            home.device("grid").clear_faults()
            home.device("grid").inject(ExceptionReply(4))
            readings = await owner.read_points(state, points[:1])
            assert readings[0].quality is Quality.ERROR
            assert "refused reading" in readings[0].error
            assert "wrong password or not authorised (error word 0x04)" in readings[0].error
            home.device("grid").clear_faults()
            home.device("grid").inject(BadCrc())
            with pytest.raises(DeviceError, match="checksum mismatch"):
                await owner.read_points(state, points[:1])
            assert state.protocol_errors == 2  # the answer and its one retry
            home.device("grid").clear_faults()
            readings = await owner.read_points(state, points)
            assert all(r.quality is Quality.OK for r in readings)
            assert home.device("grid").counters.silent == 1
        finally:
            await owner.link.close()

    run(LINE + meter("grid", "dlt645_three_phase", "000000000001", 2300.0), body, scenario_file)


def test_a_meter_without_phases_teaches_the_owner_what_to_skip(
        scenario_file: Callable[[str], Path]) -> None:
    # A three-phase profile on a single-phase meter: the voltage block is refused, the owner reads
    # the items one by one, and never asks again for the ones the meter does not have.
    async def body(home: SimulatedHome, port: str) -> None:
        owner = owner_for(port, ("m", "dlt645_three_phase", "000000000009"))
        state = owner.devices["m"]
        volts = [state.spec.profile.point(f"voltage_l{n}_v") for n in (1, 2, 3)]
        await owner.link.open()
        try:
            first = await owner.read_points(state, volts)
            assert [r.quality for r in first] == [Quality.OK, Quality.ERROR, Quality.ERROR]
            assert "no requested data" in first[1].error
            assert state.refused_blocks == {0x0201FF00}
            assert state.requests == 4  # the block, then each item
            again = await owner.read_points(state, volts)
            assert state.requests == 5  # only voltage_l1_v went on the wire
            assert again[0].value == pytest.approx(230.0)
            assert {r.error for r in again[1:]} == {"the meter does not have this data item"}
        finally:
            await owner.link.close()

    run(LINE + meter("m", "dlt645_single_phase", "000000000009", 500.0), body, scenario_file)


def test_read_address_finds_one_meter_and_two_collide(scenario_file: Callable[[str], Path]) -> None:
    async def body(home: SimulatedHome, port: str) -> None:
        owner = owner_for(port)
        await owner.link.open()
        try:
            with pytest.raises(DeviceError, match="no valid answer"):
                await owner.read_address(timeout=0.3)
            home.device("flat").inject(NoReply())
            assert await owner.read_address(timeout=0.3) == "000000000001"
            assert await owner.has_item("000000000001", 0x02010200)
            home.device("flat").clear_faults()
            home.device("grid").inject(NoReply())
            assert await owner.read_address(timeout=0.3) == "210987654321"
            assert not await owner.has_item("210987654321", 0x02010200)  # single phase
        finally:
            await owner.link.close()

    run(HOME, body, scenario_file)


# ------------------------------------------------------------------------------ the CLI


def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


@contextlib.contextmanager
def simulate(path: Path) -> Iterator[list[dict[str, object]]]:
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", "--json", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        yield first["devices"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def simulated(scenario_file: Callable[[str], Path]) -> Iterator[list[dict[str, object]]]:
    with simulate(scenario_file(LINE + meter("flat", "dlt645_single_phase", "000012345678",
                                             800.0))) as devices:
        yield devices


def test_drgw_scan_reads_the_address_and_drafts_a_config(
        simulated: list[dict[str, object]], tmp_path: Path) -> None:
    (info,) = simulated
    assert info["transport"] == "dlt645" and info["meter_address"] == "000012345678"
    result = drgw("scan", "--protocol", "dlt645", "--serial", str(info["address"]), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [(d["address"], d["profile"], d["baud"]) for d in found["devices"]] == [
        ("000012345678", "dlt645_single_phase", 2400)]
    config = parse_config('[gateway]\nkey = "k"\n' + found["config"], path=tmp_path / "d.toml")
    (device,) = config.devices.devices
    assert (device.address, device.profile.name) == ("000012345678", "dlt645_single_phase")
    assert config.devices.buses[0].protocol == "dlt645"
    text = drgw("scan", "--protocol", "dlt645", "--serial", str(info["address"]))
    assert "meter 000012345678 at 2400 baud: dlt645_single_phase" in text.stdout
    refused = drgw("scan", "--protocol", "dlt645", "--tcp", "127.0.0.1:502")
    assert refused.returncode == 2 and "needs --serial PORT" in refused.stderr


def test_drgw_scan_says_when_two_meters_collide(scenario_file: Callable[[str], Path]) -> None:
    with simulate(scenario_file(HOME)) as devices:
        result = drgw("scan", "--protocol", "dlt645", "--serial", str(devices[0]["address"]))
    assert result.returncode == 0, result.stderr
    assert "0 meter(s) found" in result.stdout
    assert "their answers collide: connect one at a time" in result.stderr
