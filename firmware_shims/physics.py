"""The electrical model behind a simulated meter: one active power in, every standard quantity out.

Given the active power of the circuit (import positive), the grid voltage and frequency and a power
factor, `instantaneous()` derives per-phase power, current, reactive and apparent power and the
neutral current, named with the standard measurement names of docs/profiles.md. `EnergyCounters`
integrates them over simulated time into the Wh / varh / VAh registers a meter keeps. Pure code:
time is always an argument.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from firmware_shims.loads import gaussian

PHASE_ANGLES = (0.0, -2.0 * math.pi / 3.0, 2.0 * math.pi / 3.0)  # L1, L2, L3 voltage phasors
PAIRS = ((1, 2), (2, 3), (3, 1))


@dataclass(frozen=True, slots=True)
class Grid:
    """Nominal grid conditions at a simulated meter, with optional small repeatable noise."""

    voltage_v: float = 230.0
    frequency_hz: float = 50.0
    noise: bool = False
    seed: str = ""

    def voltages(self, t: float, phases: int) -> list[float]:
        """Phase-to-neutral voltages: nominal, or nominal ±0.5 % (1 sigma) per phase with noise."""
        if not self.noise:
            return [self.voltage_v] * phases
        return [self.voltage_v * (1.0 + 0.005 * gaussian(f"{self.seed}:v{i}", t))
                for i in range(1, phases + 1)]

    def frequency(self, t: float) -> float:
        if not self.noise:
            return self.frequency_hz
        return self.frequency_hz + 0.02 * gaussian(f"{self.seed}:f", t)


def split_power(power_w: float, split: Sequence[float]) -> list[float]:
    """Share the total active power between the phases in the given proportions."""
    total = sum(split)
    return [power_w * share / total for share in split]


def instantaneous(*, power_w: float, split: Sequence[float], voltages: Sequence[float],
                  frequency_hz: float, power_factor: float) -> dict[str, float]:
    """Every instantaneous quantity of a 1- or 3-phase circuit drawing `power_w` in total.

    The load is inductive with the same power factor on every phase: Q = |P| tan(acos pf) >= 0,
    S = |P| / pf, I = S / V.
    """
    phases = len(split)
    pf = min(1.0, max(0.01, abs(power_factor)))
    tan_phi = math.tan(math.acos(pf))
    out: dict[str, float] = {}
    currents: list[complex] = []
    for i, (p, v) in enumerate(zip(split_power(power_w, split), voltages, strict=True), start=1):
        s = abs(p) / pf
        q = abs(p) * tan_phi
        current = s / v if v > 0 else 0.0
        out[f"voltage_l{i}_v"] = v
        out[f"power_active_l{i}_w"] = p
        out[f"power_reactive_l{i}_var"] = q
        out[f"power_apparent_l{i}_va"] = s
        out[f"current_l{i}_a"] = current
        out[f"power_factor_l{i}"] = pf
        # Current phasor: lags its voltage by phi; reverses when the phase exports.
        angle = PHASE_ANGLES[i - 1] - math.acos(pf) + (math.pi if p < 0 else 0.0)
        currents.append(cmath.rect(current, angle))
    out["power_active_total_w"] = power_w
    out["power_import_total_w"] = max(power_w, 0.0)
    out["power_export_total_w"] = max(-power_w, 0.0)
    each = range(1, phases + 1)
    out["power_reactive_total_var"] = sum(out[f"power_reactive_l{i}_var"] for i in each)
    out["power_apparent_total_va"] = sum(out[f"power_apparent_l{i}_va"] for i in each)
    out["power_factor_total"] = pf
    out["power_factor"] = pf
    out["frequency_hz"] = frequency_hz
    out["current_total_a"] = sum(abs(c) for c in currents)
    out["current_avg_a"] = out["current_total_a"] / phases
    out["current_n_a"] = abs(sum(currents)) if phases > 1 else abs(currents[0])
    out["voltage_avg_v"] = out["voltage_ln_avg_v"] = sum(voltages) / phases
    if phases == 1:
        out["voltage_v"] = voltages[0]
        out["current_a"] = out["current_l1_a"]
    else:
        line_to_line = []
        for a, b in PAIRS:
            va = cmath.rect(voltages[a - 1], PHASE_ANGLES[a - 1])
            vb = cmath.rect(voltages[b - 1], PHASE_ANGLES[b - 1])
            out[f"voltage_l{a}_l{b}_v"] = abs(va - vb)
            line_to_line.append(abs(va - vb))
        out["voltage_ll_avg_v"] = sum(line_to_line) / 3.0
    return out


# Energy registers: name -> (instantaneous quantity, the sign it counts: +1 import, -1 export).
def _energy_sources(phases: int) -> dict[str, tuple[str, int]]:
    sources: dict[str, tuple[str, int]] = {
        "energy_import_total_wh": ("power_active_total_w", 1),
        "energy_export_total_wh": ("power_active_total_w", -1),
        "energy_reactive_import_total_varh": ("power_reactive_total_var", 1),
        "energy_reactive_export_total_varh": ("power_reactive_total_var", -1),
        "energy_apparent_total_vah": ("power_apparent_total_va", 1),
    }
    for i in range(1, phases + 1):
        sources[f"energy_import_l{i}_wh"] = (f"power_active_l{i}_w", 1)
        sources[f"energy_export_l{i}_wh"] = (f"power_active_l{i}_w", -1)
        sources[f"energy_reactive_import_l{i}_varh"] = (f"power_reactive_l{i}_var", 1)
    return sources


class EnergyCounters:
    """Non-volatile energy registers of one meter, advanced by integrating power over time.

    Import counters grow while the quantity is positive, export counters while it is negative;
    `energy_total_wh` is import + export and `energy_net_wh` import - export, as meters print them.
    """

    __slots__ = ("_sources", "values")

    def __init__(self, phases: int) -> None:
        self._sources = _energy_sources(phases)
        self.values: dict[str, float] = dict.fromkeys(self._sources, 0.0)

    def tracks(self, name: str) -> bool:
        return name in self._sources

    def add(self, power: Mapping[str, float], seconds: float) -> None:
        """Add `seconds` worth of the given instantaneous quantities (W, var, VA)."""
        hours = seconds / 3600.0
        for name, (quantity, sign) in self._sources.items():
            value = power.get(quantity, 0.0) * sign
            if value > 0:
                self.values[name] += value * hours

    def snapshot(self) -> dict[str, float]:
        out = dict(self.values)
        out["energy_total_wh"] = out["energy_import_total_wh"] + out["energy_export_total_wh"]
        out["energy_net_wh"] = out["energy_import_total_wh"] - out["energy_export_total_wh"]
        return out
