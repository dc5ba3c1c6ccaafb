"""`drgw scan`: find the devices that answer on a bus and identify each model by the profiles' probes.

With `--protocol dlt645` it asks the one DL/T 645 meter on a serial line for its address instead.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config import BusConfig
from gateway.core import modbus
from gateway.core.codec import decode_raw
from gateway.core.profiles import Probe, Profile, load_all
from gateway.devices.bus import BusOwner
from gateway.devices.connect import make_link
from gateway.devices.device import DeviceError, DeviceSpec, DeviceState
from gateway.devices.dlt645 import find_meter
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
    parser.add_argument("--protocol", choices=["modbus", "dlt645"], default="modbus",
                        help="dlt645: ask the DL/T 645 meter on --serial for its address "
                             "(one meter per line; docs/dlt645.md)")
    parser.add_argument("--units", default="1-247", help="unit ids, e.g. 1-10,20 (default 1-247)")
    parser.add_argument("--bauds", default=None,
                        help="serial baud rates to try, e.g. 2400,9600 (default 9600; dlt645 2400)")
    parser.add_argument("--parity", choices=["N", "E", "O"], default=None,
                        help="default N (dlt645: E)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for each unit beyond the frame's wire time "
                             "(default 0.15; dlt645 0.5)")
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


Probes = dict[tuple[str, int, int], list[tuple[Probe, Profile]]]
Transact = Callable[[modbus.ReadRequest], Awaitable[modbus.Response | modbus.ExceptionResponse]]


def probe_table(profiles: Sequence[Profile]) -> Probes:
    """The profiles' probes, grouped by the read they need (one request serves every profile that
    probes the same registers)."""
    probes: Probes = {}
    for profile in profiles:
        if profile.probe is not None:
            probes.setdefault(_probe_key(profile.probe), []).append((profile.probe, profile))
    return probes


async def probe_unit(transact: Transact, unit: int, probes: Probes, *, baud: int | None,
                     parity: str | None) -> Found | None:
    """Send each probe read to `unit`; None when it does not answer the first one."""
    hit: Found | None = None
    for (table, address, count), candidates in probes.items():
        request = modbus.ReadRequest(unit=unit, function=modbus.READ_FUNCTION[table],
                                     address=address, count=count)
        try:
            answer = await transact(request)
        except DeviceError:
            if hit is None:
                break  # silence on the first probe: nobody at this unit
            continue
        hit = hit or Found(unit=unit, baud=baud, parity=parity)
        hit.answered.append(f"{table}:{address}")
        if isinstance(answer, modbus.Response):
            hit.profiles.extend(p.name for probe, p in candidates if _matches(probe, answer.values))
    return hit


def _probe_state(carrier: Profile, unit: int, timeout: float) -> DeviceState:
    # Any profile serves as the carrier of the unit id and timeouts; probing reads only probe points.
    return DeviceState(DeviceSpec(name=f"unit{unit}", profile=carrier, unit=unit, timeout=timeout))


async def scan_link(*, link_args: dict[str, object], units: Sequence[int], profiles: Sequence[Profile],
                    timeout: float, baud: int | None, parity: str | None,
                    progress: Callable[[int, int, int], None]) -> list[Found]:
    link, settings = make_link(**link_args)  # type: ignore[arg-type]
    probes = probe_table(profiles)
    found: list[Found] = []
    owner = BusOwner(link=link, settings=settings, devices=[], sink=lambda s: None)
    try:
        await link.open()
        for i, unit in enumerate(units):
            progress(i, len(units), len(found))
            state = _probe_state(profiles[0], unit, timeout)
            hit = await probe_unit(functools.partial(owner.transact, state), unit, probes,
                                   baud=baud, parity=parity)
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


# ------------------------------------------------------------------------- remote, on a running bus

MAX_REMOTE_UNITS = 64  # per request: ~10 s of silent units on RTU at 9600 baud
REMOTE_DEADLINE_S = 30.0  # default overall time limit; at most MAX_REMOTE_DEADLINE_S
MAX_REMOTE_DEADLINE_S = 120.0  # commands run one at a time: a scan holds up every other command
REMOTE_TIMEOUT_S = 0.15  # per probe beyond the frame's wire time, as `drgw scan`


def remote_units(args: Mapping[str, Any]) -> list[int]:
    """The unit range of a fleet `scan` command (args already shape-checked): unit_from defaults to
    1, unit_to to unit_from + 63. Raises ConfigError past MAX_REMOTE_UNITS."""
    first = int(args.get("unit_from", 1))
    last = int(args.get("unit_to", min(247, first + MAX_REMOTE_UNITS - 1)))
    if last - first + 1 > MAX_REMOTE_UNITS:
        raise ConfigError(f"scan: units {first}-{last} are {last - first + 1}; at most "
                          f"{MAX_REMOTE_UNITS} per command: split the range")
    return list(range(first, last + 1))


async def scan_running_bus(owner: BusOwner, bus: BusConfig, args: Mapping[str, Any]) -> dict[str, Any]:
    """A fleet `scan` on a bus the agent is polling: probes between poll cycles (BusOwner.scan),
    stops at the deadline, and returns what answered and a config draft. Raises ConfigError for
    bad args and BusBusy when this bus is being scanned already."""
    units = remote_units(args)
    limit = float(args.get("timeout_s", REMOTE_DEADLINE_S))
    if limit > MAX_REMOTE_DEADLINE_S:
        raise ConfigError(f"scan: timeout_s {limit:g} is over the {MAX_REMOTE_DEADLINE_S:g} s a "
                          "running agent allows; scan fewer units per command")
    profiles = [p for p in load_all() if p.probe is not None]
    if not profiles:
        raise ConfigError("scan: no device profile has a probe")
    probes = probe_table(profiles)
    baud, parity = (None, None) if bus.tcp else (bus.baud, bus.parity)

    async def probe(unit: int) -> Found | None:
        state = _probe_state(profiles[0], unit, REMOTE_TIMEOUT_S)
        return await probe_unit(functools.partial(owner.transact, state), unit, probes,
                                baud=baud, parity=parity)

    loop = asyncio.get_running_loop()
    started = loop.time()
    results, probed = await owner.scan(units, probe, deadline=started + limit)
    found = [f for f in results if f is not None]
    configured = {state.spec.unit: name for name, state in owner.devices.items()}
    transport, address = ("tcp", bus.tcp) if bus.tcp else ("rtu", str(bus.serial))
    return {
        "bus": bus.name, "unit_from": units[0], "unit_to": units[-1], "probed": probed,
        "complete": probed == len(units),
        "next_unit": None if probed == len(units) else units[probed],
        "elapsed_s": round(loop.time() - started, 2),
        "devices": [{**f.as_json(transport, address), "answered": f.answered,
                     "configured_as": configured.get(f.unit)} for f in found],
        "config": draft_config(found, tcp=bus.tcp, serial=bus.serial),
    }


def run(args: argparse.Namespace) -> int:
    if args.protocol == "dlt645":
        return run_dlt645(args)
    args.bauds, args.parity = args.bauds or "9600", args.parity or "N"
    args.timeout = 0.15 if args.timeout is None else args.timeout
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


# ---------------------------------------------------------------------------------------- DL/T 645


def run_dlt645(args: argparse.Namespace) -> int:
    """Read-address (13H to AA..AA) at each baud rate: every meter on a line answers it, so this
    finds one meter per line; a second one garbles the answer (docs/dlt645.md)."""
    if args.serial is None:
        raise ConfigError("--protocol dlt645 needs --serial PORT: DL/T 645 meters sit on RS-485")
    parity, timeout = args.parity or "E", 0.5 if args.timeout is None else args.timeout
    try:
        bauds = [int(b) for b in (args.bauds or "2400").split(",")]
    except ValueError as exc:
        raise ConfigError(f"--bauds {args.bauds!r}: write rates like 1200,2400,9600") from exc
    found: list[tuple[int, str, str]] = []  # baud, address, profile
    for baud in bauds:
        try:
            hit = asyncio.run(find_meter(port=args.serial, baud=baud, parity=parity,
                                         timeout=timeout))
        except LinkError as exc:
            raise ConfigError(str(exc)) from exc
        except DeviceError as exc:  # garbled: keep trying the other rates, say why
            print(f"drgw: {exc}", file=sys.stderr)
            continue
        if hit is not None:
            found.append((baud, *hit))
            break  # one meter per line: no need to try the other rates
    lines = ["# Draft for the gateway config (docs/config.md): check names, then paste it in.",
             "[[bus]]", 'name = "bus1"', 'protocol = "dlt645"', f'serial = "{args.serial}"',
             f"baud = {found[0][0] if found else bauds[0]}", f'parity = "{parity}"']
    for _, address, profile in found:
        lines += ["", "[[device]]", f'name = "meter_{address}"', f'profile = "{profile}"',
                  'bus = "bus1"', f'address = "{address}"']
    draft = "\n".join(lines)
    if args.json:
        print(json.dumps({"devices": [{"address": a, "profile": p, "transport": "dlt645",
                                       "port": args.serial, "baud": b, "parity": parity}
                                      for b, a, p in found], "config": draft}))
        return 0
    for baud, address, profile in found:
        print(f"meter {address} at {baud} baud: {profile}")
    print(f"{len(found)} meter(s) found\n")
    print(draft)
    return 0
