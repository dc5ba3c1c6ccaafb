"""`drgw simulate SCENARIO`: run a simulated home of Modbus meters and appliances until stopped.

With --json the first line on stdout is one JSON object naming every device and where to reach it
({"devices": [{"name", "profile", "transport", "address", "unit"}]}), flushed at once so that
another process (a test, a bench, `drgw read`) can start talking to the devices; a last line reports
the per-device counters when the home stops. Without --json a table is printed for people.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError

if TYPE_CHECKING:  # firmware_shims pulls in pymodbus' server and aiohttp: ~14 MB in every `drgw`
    from firmware_shims.home import DeviceInfo
    from firmware_shims.scenario import Scenario


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate", help="run a simulated home (meters and appliances) from a scenario file",
        description="Serve the devices of a scenario TOML file (see docs/simulation.md) over "
                    "Modbus TCP and Modbus RTU on pseudo-terminals until Ctrl-C or SIGTERM.")
    parser.add_argument("scenario", metavar="SCENARIO", type=Path,
                        help="scenario file, e.g. examples/homes/single_meter_tcp.toml")
    parser.add_argument("--json", action="store_true",
                        help="print the device list as one JSON line first, then JSON lines")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this many (real) seconds")
    parser.add_argument("--speed", type=float, metavar="X",
                        help="simulated seconds per real second (overrides the scenario)")
    parser.set_defaults(func=run)


def require_simulator(command: str) -> None:
    """The simulated firmware needs pymodbus, an optional extra: say how to install it."""
    try:
        import pymodbus  # noqa: F401  (about to be imported by the simulator anyway)
    except ImportError:
        raise ConfigError(f"{command} runs simulated meters, which need pymodbus: install the "
                          "simulator with `pip install 'drgw[sim]'` (./scripts/setup does)") from None


def run(args: argparse.Namespace) -> int:
    require_simulator("drgw simulate")
    from firmware_shims.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    if args.speed is not None:
        if args.speed <= 0:
            raise ConfigError(f"--speed {args.speed:g}: must be above 0 (1 = real time)")
        scenario = dataclasses.replace(scenario, speed=args.speed)
    if args.duration is not None and args.duration < 0:
        raise ConfigError(f"--duration {args.duration:g}: must be 0 or more seconds")
    return asyncio.run(serve(scenario, as_json=args.json, duration=args.duration))


async def serve(scenario: Scenario, *, as_json: bool, duration: float | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        from firmware_shims.home import SimulatedHome

        async with SimulatedHome(scenario) as home:
            if as_json:
                print(json.dumps({"devices": [d.as_json() for d in home.devices]}), flush=True)
            else:
                print(device_table(home.devices, scenario), flush=True)
            with contextlib.suppress(TimeoutError):  # --duration ran out
                await asyncio.wait_for(stop.wait(), timeout=duration)
            counters = {info.name: dataclasses.asdict(home.device(info.name).counters)
                        for info in home.devices}
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if as_json:
        print(json.dumps({"event": "stopped", "counters": counters}), flush=True)
    else:
        print("stopped; requests served: " + ", ".join(
            f"{name} {c['requests']}" for name, c in counters.items()), file=sys.stderr)
    return 0


def device_table(devices: list[DeviceInfo], scenario: Scenario) -> str:
    rows = [("NAME", "PROFILE", "TRANSPORT", "ADDRESS", "UNIT", "LINE")]
    for info in devices:
        line = ""
        if info.transport == "rtu":
            spec = next(d for d in scenario.devices if d.name == info.name)
            bus = scenario.bus(spec.address)
            line = (f"{bus.line.baud} {bus.line.parity}{bus.line.stopbits} (bus {bus.name}"
                    f"{', wire-timed' if bus.wire_timing else ''})")
        rows.append((info.name, info.profile, info.transport, info.address, str(info.unit), line))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    speed = f" at {scenario.speed:g}x speed" if scenario.speed != 1 else ""
    return "\n".join([*lines, f"simulating {len(devices)} devices{speed}; Ctrl-C stops"])
