"""Which device profiles a unit's answers fit: identification registers and plausibility probes (pure).

A scan (gateway.device.probe) and the model check before polling (gateway.device.model_check) read
registers and hand the answers in; this module decides. Two kinds of evidence (docs/profiles.md, probe):

- An identification register holding one of the profile's `expect` values identifies the model, and
  any other value there rules the profile out. An exception or silence at it proves nothing: older
  firmware of some meters lacks the register, so the plausibility probe (if any) decides instead.
- A plausibility probe: the profile's own registers read values in range, a phase voltage of 80..300 V
  confirmed by a frequency of 45..65 Hz, say. mbmd's scan accepts an RS-485 meter by a plausible L1
  voltage the same way (volkszaehler/mbmd, meters/rs485: `validator{110, 230}` +-10 %); the
  confirmation keeps one lucky register from naming a model. An exception at one of these registers,
  or a value out of range, rules the profile out: a meter of that model always holds them.

Identified beats plausible: a unit that a register identifies is not also offered the profiles that
only look plausible. Several matches of the same strength are candidates for a person to choose from,
never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gateway.perception.codec import decode_point, decode_raw
from gateway.perception.profiles import PlausibleRange, Probe, Profile
from gateway.protocol.modbus import (
    EXCEPTION_NAMES,
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
)

# What one read gave: the register words, a Modbus exception code, or None when nothing answered.
Answer = tuple[int, ...] | int | None
# Exceptions by which a device says it has no such register or function (Application Protocol 7:
# 01 illegal function, 02 illegal data address, 03 illegal data value): a meter of the model holds
# its plausibility registers, so these rule the profile out. Any other (04 device failure, 06 busy)
# says nothing about the model.
DENIALS = (ILLEGAL_FUNCTION, ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE)


@dataclass(frozen=True, slots=True, order=True)
class ProbeRead:
    """One register read a probe needs; profiles probing the same registers share it."""

    table: str
    address: int
    count: int

    @property
    def label(self) -> str:
        return f"{self.table} 0x{self.address:04X}"


Seen = Mapping[ProbeRead, Answer]


class Fit(StrEnum):
    IDENTIFIED = "identified"  # the identification register holds an expected value
    PLAUSIBLE = "plausible"  # every plausibility check in range
    CONTRADICTED = "contradicted"  # a register says it is not this model
    UNPROVEN = "unproven"  # nothing to judge by: no probe, or its registers did not answer


@dataclass(frozen=True, slots=True)
class ModelCheck:
    """How a unit's answers fit one profile, and the evidence in words."""

    profile: str
    fit: Fit
    evidence: str

    @property
    def ruled_out(self) -> bool:
        return self.fit is Fit.CONTRADICTED


def identity_read(probe: Probe) -> ProbeRead:
    return ProbeRead(probe.table, probe.address, probe.count)


def check_read(check: PlausibleRange) -> ProbeRead:
    return ProbeRead(check.point.table, check.point.address, check.point.count)


def _answer_text(answer: Answer) -> str:
    if answer is None:
        return "no answer"
    if isinstance(answer, int):
        return f"exception {answer:02X} ({EXCEPTION_NAMES.get(answer, 'unknown code')})"
    return " ".join(f"{w:04X}" for w in answer)


def _shown(value: object) -> str:
    if isinstance(value, int):
        return f"{value} (0x{value:04X})"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def _identity(profile: Profile, probe: Probe, seen: Seen) -> ModelCheck | None:
    """IDENTIFIED or CONTRADICTED by the identification register; None when it did not answer."""
    read = identity_read(probe)
    answer = seen.get(read)
    if not isinstance(answer, tuple):
        return None
    value = decode_raw(probe, answer)
    expected = ", ".join(_shown(e) for e in probe.expect)
    if any(value == e or (isinstance(e, str) and isinstance(value, str) and value.startswith(e))
           for e in probe.expect):
        return ModelCheck(profile.name, Fit.IDENTIFIED, f"{read.label} reads {_shown(value)}")
    return ModelCheck(profile.name, Fit.CONTRADICTED,
                      f"{read.label} reads {_shown(value)}; {profile.name} expects {expected}")


def _check_value(check: PlausibleRange, answer: Answer) -> tuple[bool | None, str]:
    """Whether one plausibility check holds (None: the answer cannot tell), and what was read."""
    point = check.point
    where = f"{check_read(check).label} ({point.name})"
    if not isinstance(answer, tuple):
        denied = isinstance(answer, int) and answer in DENIALS
        return (False if denied else None), f"{where}: {_answer_text(answer)}"
    raw = decode_raw(point, answer)
    if isinstance(raw, int) and raw in point.invalid:
        return False, f"{where} reads {raw:#x}, the 'not available' value"
    value = decode_point(point, answer)
    unit = f" {point.unit}" if point.unit else ""
    shown = f"{value:.6g}{unit}" if isinstance(value, int | float) else repr(value)
    ok = isinstance(value, int | float) and check.holds(float(value))
    return ok, f"{where} reads {shown}" + ("" if ok else f", outside {check.min:g}..{check.max:g}{unit}")


def next_read(profile: Profile, seen: Seen) -> ProbeRead | None:
    """The next register to read to judge `profile`, or None when `seen` decides it already."""
    if profile.probe is not None:
        read = identity_read(profile.probe)
        if read not in seen:
            return read
        if isinstance(seen[read], tuple):
            return None  # the identification register answered: it decides
    for check in profile.plausible:
        read = check_read(check)
        if read not in seen:
            return read
        if not _check_value(check, seen[read])[0]:
            return None  # ruled out, or cannot tell: its confirmations need not be read
    return None


def judge(profile: Profile, seen: Seen) -> ModelCheck:
    """How the answers in `seen` fit `profile` (read what `next_read` asks for first)."""
    if profile.probe is not None:
        by_identity = _identity(profile, profile.probe, seen)
        if by_identity is not None:
            return by_identity
    if not profile.plausible:
        why = ("its identification register did not answer" if profile.probe is not None
               else "the profile has no probe")
        return ModelCheck(profile.name, Fit.UNPROVEN, why)
    said: list[str] = []
    for check in profile.plausible:
        read = check_read(check)
        if read not in seen:
            return ModelCheck(profile.name, Fit.UNPROVEN, f"{read.label} was not read")
        ok, text = _check_value(check, seen[read])
        if ok is None:
            return ModelCheck(profile.name, Fit.UNPROVEN, text)
        if not ok:
            return ModelCheck(profile.name, Fit.CONTRADICTED, text)
        said.append(text)
    return ModelCheck(profile.name, Fit.PLAUSIBLE, "; ".join(said))


def wanted_reads(profiles: Iterable[Profile], seen: Seen) -> list[ProbeRead]:
    """The distinct reads the profiles still need, in a stable order (identity registers first)."""
    wanted = {read for p in profiles if (read := next_read(p, seen)) is not None}
    identity = {identity_read(p.probe) for p in profiles if p.probe is not None}
    return sorted(wanted, key=lambda r: (r not in identity, r))


@dataclass(frozen=True, slots=True)
class Match:
    """The profiles a unit fits: identified ones if any, else plausible ones; never a pick among
    several (`proposal` is set only when exactly one fits)."""

    identified: tuple[ModelCheck, ...]
    plausible: tuple[ModelCheck, ...]

    @property
    def candidates(self) -> tuple[ModelCheck, ...]:
        return self.identified or self.plausible

    @property
    def proposal(self) -> str | None:
        return self.candidates[0].profile if len(self.candidates) == 1 else None


def match(profiles: Sequence[Profile], seen: Seen) -> Match:
    checks = [judge(p, seen) for p in profiles]
    return Match(identified=tuple(c for c in checks if c.fit is Fit.IDENTIFIED),
                 plausible=tuple(c for c in checks if c.fit is Fit.PLAUSIBLE))


def describe(seen: Seen) -> list[str]:
    """What each read gave, for a person: "holding 0xFC02: 0070", "input 0x0000: exception 02 (...)"."""
    return [f"{read.label}: {_answer_text(answer)}" for read, answer in sorted(seen.items())]
