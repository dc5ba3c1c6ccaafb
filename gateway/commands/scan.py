"""`drgw scan`: find the devices that answer on a bus and identify each model by the profiles' probes."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.core import modbus
from gateway.core.codec import decode_raw
from gateway.core.profiles import Probe, Profile, load_all
from gateway.devices.bus import BusOwner
from gateway.devices.connect import make_link
from gateway.devices.device import DeviceError, DeviceSpec
from gateway.devices.transport import LinkError
from gateway.errors import ConfigError


@dataclass(slots=True)
class Found:
    unit: int
    baud: int | None
    parity: str | None
    profiles: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)

    def as_json(self, transport: str, address: str) -> dict[str, object]:
        return {"unit": self.unit, "profile": self.profiles[0] if self.profiles else None,
                "candidates": self.profiles, "transport": transport, "address": address,
                "baud": self.baud, "parity": self.parity}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("scan", help="find and identify the devices on a bus")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", metavar="PORT")
    where.add_argument("--tcp", metavar="HOST:PORT")
    parser.add_argument("--units", default="1-247", help="unit ids, e.g. 1-10,20 (default 1-247)")
    parser.add_argument("--bauds", default="9600", help="serial baud rates to try, e.g. 2400,9600")
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    parser.add_argument("--timeout", type=float, default=0.15,
                        help="seconds to wait for each unit beyond the frame's wire time")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def parse_units(text: str) -> list[int]:
    units: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError as exc:
            raise ConfigError(f"--units {text!r}: write ids and ranges like 1-10,20") from exc
        if not 0 <= first <= last <= 247:
            raise ConfigError(f"--units {text!r}: unit ids are 0..247")
        units.update(range(first, last + 1))
    return sorted(units)


def _probe_key(probe: Probe) -> tuple[str, int, int]:
    return (probe.table, probe.address, probe.count)


def _matches(probe: Probe, words: Sequence[int]) -> bool:
    value = decode_raw(probe, words)
    return any(value == e or (isinstance(e, str) and isinstance(value, str) and value.startswith(e))
               for e in probe.expect)


async def scan_link(*, link_args: dict[str, object], units: Sequence[int], profiles: Sequence[Profile],
                    timeout: float, baud: int | None, parity: str | None,
                    progress: Callable[[int, int, int], None]) -> list[Found]:
    link, settings = make_link(**link_args)  # type: ignore[arg-type]
    probes: dict[tuple[str, int, int], list[tuple[Probe, Profile]]] = {}
    for profile in profiles:
        if profile.probe is not None:
            probes.setdefault(_probe_key(profile.probe), []).append((profile.probe, profile))
    # Any profile serves as the carrier of the unit id and timeouts; probing reads only probe points.
    carrier = profiles[0]
    found: list[Found] = []
    specs = [DeviceSpec(name=f"unit{unit}", profile=carrier, unit=unit, timeout=timeout)
             for unit in units]
    owner = BusOwner(link=link, settings=settings, devices=specs, sink=lambda s: None)
    try:
        await link.open()
        for i, unit in enumerate(units):
            progress(i, len(units), len(found))
            state = owner.devices[f"unit{unit}"]
            hit: Found | None = None
            for (table, address, count), candidates in probes.items():
                request = modbus.ReadRequest(unit=unit, function=modbus.READ_FUNCTION[table],
                                             address=address, count=count)
                try:
                    answer = await owner.transact(state, request)
                except DeviceError:
                    if hit is None:
                        break  # silence on the first probe: nobody at this unit
                    continue
                hit = hit or Found(unit=unit, baud=baud, parity=parity)
                hit.answered.append(f"{table}:{address}")
                if isinstance(answer, modbus.Response):
                    hit.profiles.extend(p.name for probe, p in candidates
                                        if _matches(probe, answer.values))
            if hit is not None:
                found.append(hit)
        progress(len(units), len(units), len(found))
    finally:
        await link.close()
    return found


def draft_config(found: Sequence[Found], *, tcp: str | None, serial: str | None) -> str:
    lines = ["# Draft for the gateway config (docs/config.md): check names, then paste it in.",
             "[[bus]]", 'name = "bus1"']
    if tcp:
        lines.append(f'tcp = "{tcp}"')
    else:
        baud = next((f.baud for f in found if f.baud), 9600)
        parity = next((f.parity for f in found if f.parity), "N")
        lines += [f'serial = "{serial}"', f"baud = {baud}", f'parity = "{parity}"']
    for f in found:
        profile = f.profiles[0] if f.profiles else "UNKNOWN  # no profile's probe matched"
        lines += ["", "[[device]]", f'name = "{(f.profiles or ["device"])[0]}_{f.unit}"',
                  f'profile = "{profile}"' if f.profiles else f"profile = {profile}",
                  'bus = "bus1"', f"unit = {f.unit}"]
        if len(f.profiles) > 1:
            lines.append(f"# also matches: {', '.join(f.profiles[1:])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    units = parse_units(args.units)
    profiles = [p for p in load_all() if p.probe is not None]
    if not profiles:
        raise ConfigError("no device profile has a probe; scanning needs at least one")
    tty = sys.stderr.isatty() and not args.json
    found: list[Found] = []
    bauds: list[int | None] = [None]
    if args.serial:
        try:
            bauds = [int(b) for b in args.bauds.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--bauds {args.bauds!r}: write rates like 2400,9600,19200") from exc
    for baud in bauds:
        def progress(done: int, total: int, hits: int, baud: int | None = baud) -> None:
            if tty:
                where = f"{baud} baud, " if baud else ""
                end = "\n" if done == total else ""
                print(f"\rscanning {where}unit {done}/{total}: {hits} found", end=end,
                      file=sys.stderr, flush=True)

        link_args: dict[str, object] = ({"tcp": args.tcp} if args.tcp else
                                        {"serial": args.serial, "baud": baud, "parity": args.parity})
        try:
            found += asyncio.run(scan_link(link_args=link_args, units=units, profiles=profiles,
                                           timeout=args.timeout, baud=baud,
                                           parity=args.parity if baud else None,
                                           progress=progress))
        except LinkError as exc:
            raise ConfigError(str(exc)) from exc
    transport = "tcp" if args.tcp else "rtu"
    address = args.tcp or args.serial
    if args.json:
        print(json.dumps({"devices": [f.as_json(transport, address) for f in found],
                          "config": draft_config(found, tcp=args.tcp, serial=args.serial)}))
        return 0
    for f in found:
        names = ", ".join(f.profiles) if f.profiles else "unknown model (answers, no probe matched)"
        speed = f" at {f.baud} baud" if f.baud else ""
        print(f"unit {f.unit:>3}{speed}: {names}")
    print(f"{len(found)} device(s) found\n")
    print(draft_config(found, tcp=args.tcp, serial=args.serial))
    return 0
