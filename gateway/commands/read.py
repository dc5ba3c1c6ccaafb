"""`drgw read`: read every point of one device (Modbus or DL/T 645-2007) once and print the values."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time

from gateway.config.profiles import load_profile
from gateway.device.bus import BusOwner
from gateway.device.connect import make_link
from gateway.device.device import DeviceError, DeviceSpec, WrongModel
from gateway.device.dlt645 import MeterSpec, find_meter, serial_owner
from gateway.device.model_check import check_model, wrong_model_message
from gateway.errors import ConfigError
from gateway.perception.profiles import Profile
from gateway.perception.readings import Quality, Reading
from gateway.protocol import dlt645


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP endpoint")
    where.add_argument("--serial", metavar="PORT",
                       help="serial port (RS-485 adapter): Modbus RTU or DL/T 645, as the profile says")
    parser.add_argument("--baud", type=int, default=None, help="serial baud rate (default: the profile's)")
    parser.add_argument("--parity", choices=["N", "E", "O"], default=None,
                        help="default: the profile's (DL/T 645: E)")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=None)
    parser.add_argument("--framing", choices=["tcp", "rtu"], default=None,
                        help="with --tcp: tcp = Modbus TCP (default), rtu = RTU over TCP (a "
                             "serial-to-Ethernet converter in transparent mode)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("read", help="read one device once")
    parser.add_argument("--profile", required=True,
                        help="device profile name, e.g. eastron_sdm630 or dlt645_three_phase")
    add_link_arguments(parser)
    parser.add_argument("--unit", type=int, default=None,
                        help="Modbus unit (slave) id; required for Modbus profiles")
    parser.add_argument("--address", default=None, metavar="DIGITS",
                        help="DL/T 645 meter address, the 12 digits on the meter (default: ask the "
                             "one meter on the line, as `drgw scan --protocol dlt645` does)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait per request")
    parser.add_argument("--no-model-check", action="store_true",
                        help="read even when the device's probe registers say it is another model")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def check_arguments(profile: Profile, args: argparse.Namespace) -> None:
    """Refuse options that do not fit the profile's protocol, saying what to give instead."""
    name = profile.name
    if args.framing is not None and args.tcp is None:
        raise ConfigError("--framing applies to --tcp: a serial line always frames RTU")
    if profile.transport.protocol == "dlt645":
        if args.tcp is not None:
            raise ConfigError(f"--tcp: {name} is a DL/T 645 profile, and drgw reads DL/T 645 meters "
                              "on a serial line only: give --serial PORT (the RS-485 adapter)")
        if args.unit is not None:
            raise ConfigError(f"--unit: {name} is a DL/T 645 profile; its meters have a 12-digit "
                              "address, not a unit id: give --address DIGITS, or leave both out to "
                              "ask the one meter on the line")
        if args.address is not None:
            try:
                dlt645.check_address(args.address)
            except dlt645.LocalProtocolError as exc:
                raise ConfigError(f"--address: {exc}") from exc
        return
    if args.address is not None:
        raise ConfigError(f"--address is the 12-digit address of a DL/T 645 meter; {name} is a "
                          "Modbus profile: give --unit N (the device's Modbus unit id)")
    if args.unit is None:
        raise ConfigError(f"{name} is a Modbus profile: give --unit N (the device's Modbus unit id, "
                          "1..247; `drgw scan` finds it)")


def line_settings(profile: Profile, args: argparse.Namespace) -> tuple[int, str, int]:
    """Baud rate, parity and stop bits: the profile's transport defaults unless overridden."""
    t = profile.transport
    return args.baud or t.baud, args.parity or t.parity, args.stopbits or t.stopbits


async def read_device(args: argparse.Namespace, profile: Profile) -> list[Reading]:
    """A Modbus device, through BusOwner.read_points after its model check; a silent one, or one of
    another model, gives error readings (exit 1)."""
    baud, parity, stopbits = line_settings(profile, args)
    link, settings = make_link(tcp=args.tcp, serial=args.serial, baud=baud, parity=parity,
                               stopbits=stopbits, framing=args.framing or "tcp")
    spec = DeviceSpec(name=profile.name, profile=profile, unit=args.unit, timeout=args.timeout)
    owner = BusOwner(link=link, settings=settings, devices=[spec], sink=lambda sample: None)
    state = owner.devices[spec.name]
    try:
        await link.open()
        try:
            if not args.no_model_check:
                check = await check_model(functools.partial(owner.transact, state), spec)
                if check.ruled_out:
                    return unanswered(profile, WrongModel(wrong_model_message(spec, check)),
                                      "`drgw scan` proposes the profiles that fit; "
                                      "--no-model-check reads it anyway")
            return await owner.read_points(state, state.with_scale_factors(list(profile.points)))
        except DeviceError as exc:
            return unanswered(profile, exc, "check the unit id (`drgw scan` finds it), the rate "
                                            "(--baud) and the wiring")
    finally:
        await link.close()


def unanswered(profile: Profile, exc: DeviceError, fix: str) -> list[Reading]:
    """A device that stayed silent (or kept answering garbage): the reason and the fix on stderr, and
    every point an error reading with the reason, as a failed cycle of `drgw run` gives."""
    print(f"drgw: {exc}: {fix}", file=sys.stderr)
    now = time.time()
    return [Reading(name=p.name, value=None, unit=p.unit, quality=Quality.ERROR, time=now,
                    error=str(exc)) for p in profile.points]


async def discover_address(profile: Profile, *, port: str, baud: int, parity: str, stopbits: int,
                           timeout: float) -> str:
    """The address of the one meter on the line (read address, 13H to AA..AA; docs/dlt645.md)."""
    try:
        found = await find_meter(port=port, baud=baud, parity=parity, stopbits=stopbits,
                                 timeout=timeout)
    except DeviceError as exc:  # garbled: two or more meters answered at once
        raise DeviceError(f"{exc}; or give the meter's address with --address") from exc
    if found is None:
        raise DeviceError(f"{port}: no DL/T 645 meter answered read address at {baud} baud, parity "
                          f"{parity}: check the wiring (A/B) and the rate (--baud), or give the "
                          "address printed on the meter with --address")
    address, fits = found
    print(f"drgw: no --address given: the meter on {port} says it is {address}", file=sys.stderr)
    if fits != profile.name and profile.name in ("dlt645_single_phase", "dlt645_three_phase"):
        has = "has" if fits == "dlt645_three_phase" else "does not have"
        print(f"drgw: note: meter {address} {has} phase B voltage (02 01 02 00): --profile {fits} "
              "fits it better", file=sys.stderr)
    return address


async def read_meter(args: argparse.Namespace, profile: Profile) -> list[Reading]:
    """A DL/T 645 meter, through Dlt645BusOwner.read_points; a silent one gives error readings."""
    baud, parity, stopbits = line_settings(profile, args)
    address = args.address or await discover_address(
        profile, port=args.serial, baud=baud, parity=parity, stopbits=stopbits, timeout=args.timeout)
    spec = MeterSpec(name=profile.name, profile=profile, address=address, timeout=args.timeout)
    owner = serial_owner(port=args.serial, baud=baud, parity=parity, stopbits=stopbits, meters=[spec],
                         sink=lambda sample: None)
    state = owner.devices[spec.name]
    try:
        await owner.link.open()
        try:
            return await owner.read_points(state, list(profile.points))
        except DeviceError as exc:
            return unanswered(profile, exc, "check the address (leave --address out to ask the "
                                            "line), the rate (--baud) and the wiring")
    finally:
        await owner.link.close()


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    check_arguments(profile, args)
    if profile.transport.protocol == "dlt645":
        readings = asyncio.run(read_meter(args, profile))
    else:
        readings = asyncio.run(read_device(args, profile))
    if args.json:
        print(json.dumps({r.name: r.as_json() for r in readings}))
    else:
        for r in readings:
            value = "-" if r.value is None else (f"{r.value:.6g}" if isinstance(r.value, float)
                                                 else str(r.value))
            note = f"  ({r.error})" if r.error else ""
            print(f"{r.name:<34} {value:>14} {r.unit:<4} {r.quality}{note}")
    return 0 if all(r.quality is Quality.OK for r in readings) else 1
