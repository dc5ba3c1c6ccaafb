"""`drgw demo`: the main job on embedded defaults — a simulated home polled live by the device layer.

At this stage the demo runs the simulated home (firmware_shims) and the gateway's device layer over
real Modbus TCP and a wire-timed Modbus RTU bus, and shows a live readout. It ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from importlib import resources
from pathlib import Path

from gateway.config import BusConfig, DeviceConfig, DevicesConfig
from gateway.core.profiles import load_profile
from gateway.core.readings import LatestValues, Quality, Sample
from gateway.devices.layer import DeviceLayer

SHOWN = ("power_active_total_w", "voltage_l1_v", "current_l1_a", "energy_import_total_wh")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("demo", help="run the whole loop on embedded defaults")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    parser.add_argument("--keep-running", action="store_true", help="run until Ctrl-C")
    parser.add_argument("--scenario", type=Path, help="a simulated home instead of the built-in one")
    parser.set_defaults(func=run)


def demo_scenario() -> Path:
    return Path(str(resources.files("gateway") / "data" / "demo_home.toml"))


def devices_for(home: object) -> DevicesConfig:
    buses: dict[str, BusConfig] = {}
    devices = []
    for info in home.devices:  # type: ignore[attr-defined]
        key = f"{info.transport}:{info.address}"
        if key not in buses:
            buses[key] = BusConfig(name=f"bus{len(buses) + 1}",
                                   tcp=info.address if info.transport == "tcp" else None,
                                   serial=info.address if info.transport == "rtu" else None,
                                   baud=9600, parity="N", stopbits=1, frame_gap=None)
        devices.append(DeviceConfig(name=info.name, profile=load_profile(info.profile),
                                    bus=buses[key].name, unit=info.unit, timeout=0.5,
                                    intervals={"fast": 1.0, "normal": 5.0, "slow": 15.0},
                                    role="main" if info.name == "main" else "meter"))
    return DevicesConfig(buses=tuple(buses.values()), devices=tuple(devices))


def _line(latest: LatestValues, names: list[str], now: float) -> str:
    cells = []
    for device in names:
        r = latest.get(device, "power_active_total_w", now=now)
        if r is None:
            cells.append(f"{device}: -")
        else:
            mark = "" if r.quality is Quality.OK else f" ({r.quality})"
            cells.append(f"{device}: {float(r.value or 0):7.0f} W{mark}")
    return "  ".join(cells)


async def _demo(args: argparse.Namespace) -> int:
    from firmware_shims.home import SimulatedHome

    latest = LatestValues(max_age=3.0)
    counts: dict[str, int] = {}

    def sink(sample: Sample) -> None:
        latest.update(sample)
        counts[sample.device] = counts.get(sample.device, 0) + 1

    scenario = args.scenario or demo_scenario()
    async with SimulatedHome(scenario) as home:
        print("simulated home:")
        for info in home.devices:
            print(f"  {info.name:<16} {info.profile:<20} {info.transport} {info.address} "
                  f"unit {info.unit}")
        layer = DeviceLayer(devices_for(home), sink=sink)
        names = [d.name for d in layer.config.devices]
        task = asyncio.create_task(layer.run(), name="device-layer")
        started = time.monotonic()
        tty = sys.stdout.isatty()
        try:
            while args.keep_running or time.monotonic() - started < args.duration:
                await asyncio.sleep(1.0)
                text = _line(latest, names, time.time())
                print(("\r" + text) if tty else text, end="" if tty else "\n", flush=True)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    print("\nsummary:")
    for name in names:
        r = latest.get(name, "energy_import_total_wh", now=time.time())
        energy = f"{float(r.value):.0f} Wh" if r and r.value is not None else "-"
        print(f"  {name:<16} {counts.get(name, 0):4d} poll cycles, energy counter {energy}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 130
