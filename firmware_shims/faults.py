"""Faults a simulated device can show: silence, exception replies, bad CRC, slowness, reboot.

Faults are values (frozen dataclasses); `FaultState` is what one device currently suffers.
Durations are in real (monotonic) seconds, not simulated time: they describe the wire, which the
clock speed of a scenario does not change.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymodbus.constants import ExcCodes

from gateway.errors import ConfigError


@dataclass(frozen=True, slots=True)
class NoReply:
    """The device hears requests but never answers (a dead or disconnected meter)."""


@dataclass(frozen=True, slots=True)
class ExceptionReply:
    """Every request is answered with this Modbus exception code (e.g. 4, server device failure)."""

    code: int

    def __post_init__(self) -> None:
        valid = sorted(int(c) for c in ExcCodes)
        if self.code not in valid:
            raise ConfigError(f"exception code {self.code} is not a Modbus exception code; "
                              f"use one of {', '.join(map(str, valid))}")


@dataclass(frozen=True, slots=True)
class BadCrc:
    """Replies go out with a corrupted CRC (RTU only: Modbus TCP frames carry no CRC)."""


@dataclass(frozen=True, slots=True)
class SlowTurnaround:
    """Every reply is held back by this many extra seconds."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Reboot:
    """The device goes silent for `duration_s`, then comes back with its volatile values reset."""

    duration_s: float


Fault = NoReply | ExceptionReply | BadCrc | SlowTurnaround | Reboot


@dataclass(slots=True)
class FaultState:
    """The faults one device shows right now. `reboot_until` is a monotonic time or None."""

    no_reply: bool = False
    exception: int | None = None
    bad_crc: bool = False
    delay_s: float = 0.0
    reboot_until: float | None = None

    def apply(self, fault: Fault, *, now_monotonic: float) -> None:
        if isinstance(fault, NoReply):
            self.no_reply = True
        elif isinstance(fault, ExceptionReply):
            self.exception = fault.code
        elif isinstance(fault, BadCrc):
            self.bad_crc = True
        elif isinstance(fault, SlowTurnaround):
            self.delay_s = max(0.0, fault.delay_s)
        else:
            self.reboot_until = now_monotonic + max(0.0, fault.duration_s)

    def clear(self) -> None:
        self.no_reply = False
        self.exception = None
        self.bad_crc = False
        self.delay_s = 0.0
        self.reboot_until = None
