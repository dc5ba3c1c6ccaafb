"""`drgw scan`: find the devices that answer on a bus and identify each model by the profiles' probes.

With `--protocol dlt645` it asks the one DL/T 645 meter on a serial line for its address instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from gateway.config.profiles import load_all
from gateway.device.device import DeviceError
from gateway.device.dlt645 import find_meter
from gateway.device.probe import Found, draft_config, scan_link, scanned, transport_label
from gateway.device.transport import LinkError
from gateway.errors import ConfigError
from gateway.perception.profiles import Profile


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("scan", help="find and identify the devices on a bus")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", metavar="PORT")
    where.add_argument("--tcp", metavar="HOST:PORT")
    parser.add_argument("--framing", choices=["tcp", "rtu"], default=None,
                        help="with --tcp: tcp = Modbus TCP (default), rtu = RTU over TCP (a "
                             "serial-to-Ethernet converter in transparent mode)")
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


def parse_bauds(text: str, *, example: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",")]
    except ValueError as exc:
        raise ConfigError(f"--bauds {text!r}: write rates like {example}") from exc


def run(args: argparse.Namespace) -> int:
    if args.protocol == "dlt645":
        return run_dlt645(args)
    args.bauds, args.parity = args.bauds or "9600", args.parity or "N"
    args.timeout = 0.15 if args.timeout is None else args.timeout
    if args.framing is not None and args.tcp is None:
        raise ConfigError("--framing applies to --tcp: a serial line always frames RTU")
    args.framing = args.framing or "tcp"
    units = parse_units(args.units)
    profiles = scanned(load_all())
    bauds: list[int | None] = [None]
    if args.serial:
        bauds = list(parse_bauds(args.bauds, example="2400,9600,19200"))
    found: list[Found] = []
    for baud in bauds:
        found += _scan_at(args, baud, units, profiles)
    _print_found(args, found)
    return 0


def _scan_at(args: argparse.Namespace, baud: int | None, units: list[int],
             profiles: list[Profile]) -> list[Found]:
    """Probe every unit on the bus (at `baud` on a serial line), showing progress on a terminal."""
    tty = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int, hits: int) -> None:
        if tty:
            where = f"{baud} baud, " if baud else ""
            end = "\n" if done == total else ""
            print(f"\rscanning {where}unit {done}/{total}: {hits} found", end=end,
                  file=sys.stderr, flush=True)

    link_args: dict[str, object] = ({"tcp": args.tcp, "framing": args.framing} if args.tcp else
                                    {"serial": args.serial, "baud": baud, "parity": args.parity})
    try:
        return asyncio.run(scan_link(link_args=link_args, units=units, profiles=profiles,
                                     timeout=args.timeout, baud=baud,
                                     parity=args.parity if baud else None, progress=progress))
    except LinkError as exc:
        raise ConfigError(str(exc)) from exc


def _print_found(args: argparse.Namespace, found: list[Found]) -> None:
    draft = draft_config(found, tcp=args.tcp, serial=args.serial, framing=args.framing)
    if args.json:
        transport, address = transport_label(args.tcp, args.serial, args.framing)
        print(json.dumps({"devices": [f.as_json(transport, address) for f in found],
                          "config": draft}))
        return
    for f in found:
        if f.profile is not None:
            names = f"{f.profile} ({f.how})"
        elif f.profiles:
            names = f"one of {', '.join(f.profiles)} ({f.how}: choose)"
        else:
            names = "unknown model (answers, no probe matched)"
        speed = f" at {f.baud} baud" if f.baud else ""
        print(f"unit {f.unit:>3}{speed}: {names}")
    print(f"{len(found)} device(s) found\n")
    print(draft)


# ---------------------------------------------------------------------------------------- DL/T 645


def run_dlt645(args: argparse.Namespace) -> int:
    """Read-address (13H to AA..AA) at each baud rate: every meter on a line answers it, so this
    finds one meter per line; a second one garbles the answer (docs/dlt645.md)."""
    if args.serial is None:
        raise ConfigError("--protocol dlt645 needs --serial PORT: DL/T 645 meters sit on RS-485")
    parity, timeout = args.parity or "E", 0.5 if args.timeout is None else args.timeout
    bauds = parse_bauds(args.bauds or "2400", example="1200,2400,9600")
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
