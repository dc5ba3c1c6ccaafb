"""Probing: find the devices that answer on a Modbus bus and identify each model by the profiles' probes.

Used by `drgw scan` and `drgw init` (a bus of their own) and by the agent's fleet `scan` command (a bus
it is polling, between poll cycles). The profiles come from the caller: this layer reads no files.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.device.bus import BusOwner
from gateway.device.config import BusConfig
from gateway.device.connect import make_link
from gateway.device.device import DeviceError, DeviceSpec, DeviceState
from gateway.errors import ConfigError
from gateway.perception.codec import decode_raw
from gateway.perception.profiles import Probe, Profile
from gateway.protocol import modbus


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


async def scan_running_bus(owner: BusOwner, bus: BusConfig, args: Mapping[str, Any], *,
                           profiles: Sequence[Profile]) -> dict[str, Any]:
    """A fleet `scan` on a bus the agent is polling with `profiles` (those with a probe are used):
    probes between poll cycles (BusOwner.scan),
    stops at the deadline, and returns what answered and a config draft. Raises ConfigError for
    bad args and BusBusy when this bus is being scanned already."""
    units = remote_units(args)
    limit = float(args.get("timeout_s", REMOTE_DEADLINE_S))
    if limit > MAX_REMOTE_DEADLINE_S:
        raise ConfigError(f"scan: timeout_s {limit:g} is over the {MAX_REMOTE_DEADLINE_S:g} s a "
                          "running agent allows; scan fewer units per command")
    profiles = [p for p in profiles if p.probe is not None]
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


