"""`drgw read`: read every point of one device once and print the values."""

from __future__ import annotations

import argparse
import asyncio
import json

from gateway.core.profiles import load_profile
from gateway.core.readings import Quality, Reading
from gateway.devices.bus import BusOwner
from gateway.devices.connect import make_link
from gateway.devices.device import DeviceSpec


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP endpoint")
    where.add_argument("--serial", metavar="PORT", help="serial port (RS-485 adapter), Modbus RTU")
    parser.add_argument("--baud", type=int, default=None, help="serial baud rate")
    parser.add_argument("--parity", choices=["N", "E", "O"], default=None)
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=None)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("read", help="read one device once")
    parser.add_argument("--profile", required=True, help="device profile name, e.g. eastron_sdm630")
    add_link_arguments(parser)
    parser.add_argument("--unit", type=int, required=True, help="Modbus unit (slave) id")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait per request")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


async def read_device(args: argparse.Namespace) -> list[Reading]:
    profile = load_profile(args.profile)
    t = profile.transport
    link, settings = make_link(tcp=args.tcp, serial=args.serial, baud=args.baud or t.baud,
                               parity=args.parity or t.parity, stopbits=args.stopbits or t.stopbits)
    spec = DeviceSpec(name=profile.name, profile=profile, unit=args.unit, timeout=args.timeout)
    owner = BusOwner(link=link, settings=settings, devices=[spec], sink=lambda sample: None)
    state = owner.devices[spec.name]
    try:
        await link.open()
        return await owner.read_points(state, state.with_scale_factors(list(profile.points)))
    finally:
        await link.close()


def run(args: argparse.Namespace) -> int:
    readings = asyncio.run(read_device(args))
    if args.json:
        print(json.dumps({r.name: r.as_json() for r in readings}))
    else:
        for r in readings:
            value = "-" if r.value is None else (f"{r.value:.6g}" if isinstance(r.value, float)
                                                 else str(r.value))
            note = f"  ({r.error})" if r.error else ""
            print(f"{r.name:<34} {value:>14} {r.unit:<4} {r.quality}{note}")
    return 0 if all(r.quality is Quality.OK for r in readings) else 1
