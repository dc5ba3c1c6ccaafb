"""The device layer against real pymodbus servers (firmware_shims) over TCP and RTU on pty pairs.

The tests poll until what they check has happened (a number of cycles, of failures), never for a
fixed time; how many cycles a meter gets per second beside a dead neighbour is a figure of
bench/timing.py, not a test claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from firmware_shims.faults import NoReply
from firmware_shims.home import SimulatedHome
from gateway.config.profiles import load_profile
from gateway.device.config import BusConfig, DeviceConfig, DevicesConfig
from gateway.device.layer import DeviceLayer
from gateway.perception.readings import LatestValues, Quality, Sample
from tests.waits import until

RTU_BUS = """
[[bus]]
name = "rs485"
baud = 19200
wire_timing = true
"""


def rtu_meter(name: str, unit: int, power: float) -> str:
    return f"""
[[device]]
name = "{name}"
profile = "eastron_sdm630"
transport = "rtu"
address = "rs485"
unit = {unit}
[device.load]
kind = "constant"
power_w = {power}
"""


def layer_for(home: SimulatedHome, sink: Callable[[Sample], None], *, fast: float = 0.5,
              timeout: float = 0.3) -> DeviceLayer:
    buses: dict[str, BusConfig] = {}
    devices = []
    for info in home.devices:
        bus_name = f"{info.transport}:{info.address}"
        if info.transport == "tcp":
            buses[bus_name] = BusConfig(name=bus_name, tcp=info.address, serial=None, baud=9600,
                                        parity="N", stopbits=1, frame_gap=None)
        else:
            buses[bus_name] = BusConfig(name=bus_name, tcp=None, serial=info.address, baud=19200,
                                        parity="N", stopbits=1, frame_gap=None)
        devices.append(DeviceConfig(name=info.name, profile=load_profile(info.profile),
                                    bus=bus_name, unit=info.unit, timeout=timeout,
                                    intervals={"fast": fast, "normal": 2.0, "slow": 5.0},
                                    role="meter"))
    return DeviceLayer(DevicesConfig(buses=tuple(buses.values()), devices=tuple(devices)),
                       sink=sink)


async def run_until(layer: DeviceLayer, done: Callable[[], bool], what: str) -> None:
    """Poll until `done()`, then stop the layer."""
    task = asyncio.create_task(layer.run())
    try:
        await until(done, what=what)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_tcp_meter_is_polled_with_typed_values(scenario_file: Callable[[str], Path]) -> None:
    path = scenario_file(rtu_meter("main", 1, 2300).replace('"rtu"', '"tcp"')
                         .replace('address = "rs485"', 'address = "127.0.0.1:0"'))
    samples: list[Sample] = []

    async def main() -> None:
        async with SimulatedHome(path) as home:
            await run_until(layer_for(home, samples.append), lambda: len(samples) >= 3,
                            "three poll cycles")

    asyncio.run(main())
    assert len(samples) >= 3
    first = samples[0]
    assert first.ok
    assert set(first.poll) == {"fast", "normal", "slow"}  # all due at start: read together
    assert first.value("power_active_total_w") == 2300.0
    assert abs(float(first.value("voltage_l1_v") or 0) - 230.0) < 1.0
    assert isinstance(first.value("energy_import_total_wh"), float)
    # Later cycles carry only the fast class.
    assert any(s.poll == ("fast",) for s in samples[1:])


def test_dead_meter_on_shared_rtu_bus_does_not_starve_the_others(
        scenario_file: Callable[[str], Path]) -> None:
    path = scenario_file(RTU_BUS + rtu_meter("a", 1, 1000) + rtu_meter("b", 2, 2000)
                         + rtu_meter("c", 3, 3000))
    samples: list[Sample] = []
    latest = LatestValues(max_age=1.5)

    def sink(sample: Sample) -> None:
        samples.append(sample)
        latest.update(sample)

    def cycles(name: str, since: int = 0, *, ok: bool = True) -> int:
        return sum(s.device == name and s.ok == ok for s in samples[since:])

    async def main() -> tuple[int, int]:
        async with SimulatedHome(path) as home:
            layer = layer_for(home, sink, fast=0.5, timeout=0.3)
            task = asyncio.create_task(layer.run())
            try:
                await until(lambda: all(cycles(n) >= 2 for n in "abc"), what="two good cycles each")
                home.device("b").inject(NoReply())
                cut = len(samples)
                # Ten cycles of each healthy meter: 5 s of a 0.5 s interval on an idle machine.
                await until(lambda: cycles("a", cut) >= 10 and cycles("c", cut) >= 10,
                            what="ten cycles of a and c beside the dead b",
                            detail=lambda: f"a {cycles('a', cut)}, c {cycles('c', cut)}, "
                                           f"b failed {cycles('b', cut, ok=False)}")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            owner = next(iter(layer.owners.values()))
            return cut, owner.devices["b"].requests

    cut, requests_to_b = asyncio.run(main())
    after = samples[cut:]
    for name, power in (("a", 1000.0), ("c", 3000.0)):
        mine = [s for s in after if s.device == name]
        # Every cycle of a healthy meter came through whole: the dead neighbour cost them no data.
        assert len(mine) >= 10
        assert all(s.ok for s in mine), "a healthy meter lost data because of its neighbour"
        assert all(s.value("power_active_total_w") == power for s in mine)
    dead = [s for s in after if s.device == "b"]
    assert dead and all(r.quality is Quality.ERROR for s in dead for r in s.readings)
    assert all(r.value is None for s in dead for r in s.readings)
    # Backing off: far fewer attempts than the 10 cycles each neighbour had meanwhile.
    assert len(dead) <= 6
    # The last good value of b is still there, stale, with its original time.
    stale = latest.get("b", "power_active_total_w", now=samples[-1].time)
    assert stale is not None and stale.quality is Quality.STALE and stale.value == 2000.0
    assert stale.time < samples[cut].time
    assert requests_to_b > 0


GAPPY_PROFILE = """
schema: 1
kind: meter
vendor: Test
model: Gappy
source: "test profile: a meter whose unmapped registers answer illegal data address"
phases: 1
transport: {address_base: 0}
registers:
  - {name: voltage_l1_v, table: input, address: 0, type: f32, unit: V}
  - {name: current_l1_a, table: input, address: 6, type: f32, unit: A, poll: normal}
  - {name: power_active_total_w, table: input, address: 12, type: f32, unit: W, poll: normal}
"""


def test_merged_read_refused_with_illegal_address_is_split(
        tmp_path: Path, scenario_file: Callable[[str], Path], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "profiles" / "meters").mkdir(parents=True)
    (tmp_path / "profiles" / "meters" / "test_gappy.yaml").write_text(GAPPY_PROFILE)
    monkeypatch.setenv("DRGW_PROFILES", str(tmp_path / "profiles"))
    path = scenario_file(rtu_meter("g", 1, 500).replace("eastron_sdm630", "test_gappy")
                         .replace('"rtu"', '"tcp"').replace('address = "rs485"',
                                                            'address = "127.0.0.1:0"'))
    samples: list[Sample] = []

    async def main() -> int:
        async with SimulatedHome(path) as home:
            layer = layer_for(home, samples.append, fast=0.3)
            # two cycles (2 s apart: every point is in the normal class): one to learn, one to use it
            await run_until(layer, lambda: len(samples) >= 2, "two poll cycles")
            return next(iter(layer.owners.values())).devices["g"].splits

    splits = asyncio.run(main())
    assert samples and all(s.ok for s in samples)
    assert samples[0].value("power_active_total_w") == 500.0
    assert samples[0].value("current_l1_a") is not None
    # The planner learned: the first cycle split, later cycles did not need to.
    assert 1 <= splits <= 2
