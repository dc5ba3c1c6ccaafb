"""Probing: find the devices that answer on a Modbus bus and propose each one's profile by the probes.

A unit's candidates are the profiles an identification register names, else those whose plausibility
probe holds (gateway.perception.identify decides); the draft proposes a unit only when one profile
fits, and lists several as candidates in comments, never picking one.

Used by `drgw scan` and `drgw init` (a bus of their own) and by the agent's fleet `scan` command (a bus
it is polling, between poll cycles). The profiles come from the caller: this layer reads no files.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.device.bus import BusOwner
from gateway.device.config import BusConfig
from gateway.device.connect import make_link
from gateway.device.device import DeviceError, DeviceSpec, DeviceState
from gateway.device.model_check import Transact, gather
from gateway.errors import ConfigError
from gateway.perception.identify import Answer, ProbeRead, describe, match
from gateway.perception.profiles import Profile


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """A unit that answered, and the profiles it fits: `profiles` are the candidates (identified by
    a register if any was, else plausible), `profile` the proposal when there is exactly one."""

    unit: int
    baud: int | None
    parity: str | None
    profiles: list[str] = field(default_factory=list)
    how: str = "identified"  # or "plausible": which evidence the candidates have
    evidence: dict[str, str] = field(default_factory=dict)  # candidate -> what its probe read
    answered: list[str] = field(default_factory=list)  # every probe read and what it gave

    @property
    def profile(self) -> str | None:
        return self.profiles[0] if len(self.profiles) == 1 else None

    def as_json(self, transport: str, address: str) -> dict[str, object]:
        return {"unit": self.unit, "profile": self.profile, "candidates": self.profiles,
                "how": self.how if self.profiles else None, "evidence": self.evidence,
                "answered": self.answered, "transport": transport, "address": address,
                "baud": self.baud, "parity": self.parity}


async def probe_unit(transact: Transact, unit: int, profiles: Sequence[Profile], *,
                     baud: int | None, parity: str | None) -> Found | None:
    """Read what the profiles' probes need from `unit`; None when nobody answers the first read
    (silence, or a gateway's exception 0A/0B: BusOwner.transact raises DeviceError for both)."""
    seen: dict[ProbeRead, Answer] = {}
    try:
        await gather(transact, unit, profiles, seen, tolerate_silence=True)
    except DeviceError:
        return None
    result = match(profiles, seen)
    return Found(unit=unit, baud=baud, parity=parity,
                 profiles=[c.profile for c in result.candidates],
                 how="identified" if result.identified else "plausible",
                 evidence={c.profile: c.evidence for c in result.candidates},
                 answered=describe(seen))


def _probe_state(carrier: Profile, unit: int, timeout: float) -> DeviceState:
    # Any profile serves as the carrier of the unit id and timeouts; probing reads only probe points.
    return DeviceState(DeviceSpec(name=f"unit{unit}", profile=carrier, unit=unit, timeout=timeout))


def scanned(profiles: Sequence[Profile]) -> list[Profile]:
    """The Modbus profiles a scan can propose (an identity or a plausibility probe)."""
    usable = [p for p in profiles if p.probed and p.transport.protocol == "modbus"]
    if not usable:
        raise ConfigError("no Modbus device profile has a probe; scanning needs at least one")
    return usable


async def scan_link(*, link_args: dict[str, object], units: Sequence[int], profiles: Sequence[Profile],
                    timeout: float, baud: int | None, parity: str | None,
                    progress: Callable[[int, int, int], None]) -> list[Found]:
    link, settings = make_link(**link_args)  # type: ignore[arg-type]
    profiles = scanned(profiles)
    found: list[Found] = []
    owner = BusOwner(link=link, settings=settings, devices=[], sink=lambda s: None)
    try:
        await link.open()
        for i, unit in enumerate(units):
            progress(i, len(units), len(found))
            state = _probe_state(profiles[0], unit, timeout)
            hit = await probe_unit(functools.partial(owner.transact, state), unit, profiles,
                                   baud=baud, parity=parity)
            if hit is not None:
                found.append(hit)
        progress(len(units), len(units), len(found))
    finally:
        await link.close()
    return found


def transport_label(tcp: str | None, serial: str | None, framing: str) -> tuple[str, str]:
    """What a scan result calls the bus: ("tcp" | "rtu_over_tcp" | "rtu", its address)."""
    if tcp:
        return ("rtu_over_tcp" if framing == "rtu" else "tcp"), tcp
    return "rtu", str(serial)


def toml_string(text: str) -> str:
    """`text` as a TOML basic string (TOML 1.0, "String": escape quote, backslash and controls)."""
    escaped = "".join(f"\\{ch}" if ch in '"\\' else
                      f"\\u{ord(ch):04X}" if ch < " " or ch == "\x7f" else ch for ch in text)
    return f'"{escaped}"'


def _comment(text: str) -> str:
    """One comment line: a device's answers must not end the comment and inject TOML."""
    return "# " + "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in text)


def _device_lines(f: Found, profile: str | None) -> list[str]:
    """A [[device]] table; commented out, with profile "?", when no single profile fits."""
    name = f"{profile}_{f.unit}" if profile else f"device_{f.unit}"
    lines = ["[[device]]", f"name = {toml_string(name)}", f"profile = {toml_string(profile or '?')}",
             'bus = "bus1"', f"unit = {f.unit}"]
    return lines if profile else [_comment(line) for line in lines]


def _found_lines(f: Found) -> list[str]:
    """One unit in the draft: an active [[device]] for a single candidate; otherwise a commented
    one with the candidates (never a pick among them) or with what the unit answered."""
    if f.profile is not None:
        return [*_device_lines(f, f.profile),
                _comment(f"{f.how}: {f.evidence.get(f.profile, '')}")]
    if f.profiles:
        lines = [_comment(f"unit {f.unit} answers like {len(f.profiles)} profiles ({f.how}); "
                          "set the one it is and uncomment:")]
        lines += [_comment(f"  {name}: {f.evidence.get(name, '')}") for name in f.profiles]
    else:
        lines = [_comment(f"unit {f.unit} answers but matches no profile; it answered:")]
        lines += [_comment(f"  {text}") for text in f.answered]
    return lines + _device_lines(f, None)


def draft_config(found: Sequence[Found], *, tcp: str | None, serial: str | None,
                 framing: str = "tcp") -> str:
    """The `[[bus]]` and `[[device]]` tables for a config (docs/config.md); always valid TOML."""
    lines = ["# Draft for the gateway config (docs/config.md): check names, then paste it in.",
             "[[bus]]", 'name = "bus1"']
    if tcp:
        lines.append(f"tcp = {toml_string(tcp)}")
        if framing == "rtu":
            lines.append('framing = "rtu"')
    else:
        baud = next((f.baud for f in found if f.baud), 9600)
        parity = next((f.parity for f in found if f.parity), "N")
        lines += [f"serial = {toml_string(serial or '')}", f"baud = {baud}",
                  f"parity = {toml_string(parity)}"]
    for f in found:
        lines += ["", *_found_lines(f)]
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
    probes between poll cycles (BusOwner.scan), stops at the deadline, and returns what answered
    and a config draft. Raises ConfigError for bad args and BusBusy when this bus is being scanned
    already."""
    units = remote_units(args)
    limit = float(args.get("timeout_s", REMOTE_DEADLINE_S))
    if limit > MAX_REMOTE_DEADLINE_S:
        raise ConfigError(f"scan: timeout_s {limit:g} is over the {MAX_REMOTE_DEADLINE_S:g} s a "
                          "running agent allows; scan fewer units per command")
    profiles = scanned(profiles)
    baud, parity = (None, None) if bus.tcp else (bus.baud, bus.parity)

    async def probe(unit: int) -> Found | None:
        state = _probe_state(profiles[0], unit, REMOTE_TIMEOUT_S)
        return await probe_unit(functools.partial(owner.transact, state), unit, profiles,
                                baud=baud, parity=parity)

    loop = asyncio.get_running_loop()
    started = loop.time()
    results, probed = await owner.scan(units, probe, deadline=started + limit)
    found = [f for f in results if f is not None]
    configured = {state.spec.unit: name for name, state in owner.devices.items()}
    transport, address = transport_label(bus.tcp, bus.serial, bus.framing)
    return {
        "bus": bus.name, "unit_from": units[0], "unit_to": units[-1], "probed": probed,
        "complete": probed == len(units),
        "next_unit": None if probed == len(units) else units[probed],
        "elapsed_s": round(loop.time() - started, 2),
        "devices": [{**f.as_json(transport, address), "configured_as": configured.get(f.unit)}
                    for f in found],
        "config": draft_config(found, tcp=bus.tcp, serial=bus.serial, framing=bus.framing),
    }


