"""Reading probe registers: what a scan asks each unit, and the model check before a device is polled.

The decisions are gateway.perception.identify's; this module only sends the reads it asks for, through
a bus owner's `transact`, and collects the answers. Used by the bus owner (before polling: a meter of
another model must not have its registers decoded by the wrong table and signed as good data), by
`drgw read` and `drgw doctor` (through the bus owner) and by the scan (gateway.device.probe).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from gateway.device.device import DeviceError, DeviceSpec
from gateway.perception.identify import (
    Answer,
    Fit,
    ModelCheck,
    ProbeRead,
    judge,
    wanted_reads,
)
from gateway.perception.profiles import Profile
from gateway.protocol import modbus

Transact = Callable[[modbus.ReadRequest], Awaitable[modbus.Response | modbus.ExceptionResponse]]


def request(unit: int, read: ProbeRead) -> modbus.ReadRequest:
    return modbus.ReadRequest(unit=unit, function=modbus.READ_FUNCTION[read.table],
                              address=read.address, count=read.count)


async def gather(transact: Transact, unit: int, profiles: Sequence[Profile],
                 seen: dict[ProbeRead, Answer], *, tolerate_silence: bool) -> None:
    """Read what the profiles' probes need until the answers decide every profile, or one is
    identified (identified beats plausible: the rest need not be read).

    A read nobody answers raises DeviceError when it is the unit's first (no one is there, or a
    gateway said so: BusOwner.transact turns exceptions 0A/0B into DeviceError) or when
    `tolerate_silence` is False; otherwise it is recorded as None and counts against the profiles
    that needed it.
    """
    while reads := wanted_reads(profiles, seen):
        for read in reads:
            try:
                answer = await transact(request(unit, read))
            except DeviceError:
                if not seen or not tolerate_silence:
                    raise
                seen[read] = None
                continue
            seen[read] = (answer.code if isinstance(answer, modbus.ExceptionResponse)
                          else tuple(answer.values))
            if any(judge(p, seen).fit is Fit.IDENTIFIED for p in profiles):
                return


async def check_model(transact: Transact, spec: DeviceSpec) -> ModelCheck:
    """How the device at `spec.unit` fits its profile. Raises DeviceError when it does not answer
    (a model check never blames silence on the model)."""
    seen: dict[ProbeRead, Answer] = {}
    await gather(transact, spec.unit, [spec.profile], seen, tolerate_silence=False)
    return judge(spec.profile, seen)


def wrong_model_message(spec: DeviceSpec, check: ModelCheck) -> str:
    """What a wrong-model device's error says: the device, the model expected, what was seen."""
    profile = spec.profile
    return (f"{spec.name}: wrong model: unit {spec.unit} does not answer like a {profile.vendor} "
            f"{profile.model} (profile {profile.name}): {check.evidence}")
