"""How simulated appliances turn writes on their writable points into the power they draw.

A profile's `simulation.behaviour` picks the rule:

- `ev_charger`: power = current limit (A) x voltage x phases, capped at the rated power. Below 6 A
  the car pauses (IEC 61851-1 pilot duty cycles below 6 A mean "no charging"). An on/off point, if
  the profile has one (a writable name ending in `_on`), gates it.
- `relay`: the rated power while the first relay (`relay_1_on`, or the first writable name ending in
  `_on`) is on, else 0.
- `battery`: power follows the setpoint (positive charges from the home, negative discharges into
  it; the sum of every `battery_power_setpoint*_w` point, as inverters with one setpoint per phase
  have), clipped to the rated power. It stops when the state of charge reaches 0 % or 100 %, and
  `battery_charge_disabled` / `battery_feedin_disabled` (when set to 1) block either direction.

Pure code; the state lives in `SimulatedDevice`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.perception.profiles import Point, Profile

EV_MIN_CURRENT_A = 6.0
BEHAVIOURS = ("ev_charger", "relay", "battery")


def _first(profile: Profile, *, names: tuple[str, ...], suffix: str) -> Point | None:
    writable = profile.writable
    for name in names:
        for point in writable:
            if point.name == name:
                return point
    candidates = sorted((p for p in writable if p.name.endswith(suffix)), key=lambda p: p.name)
    return candidates[0] if candidates else None


def switch_point(profile: Profile) -> Point | None:
    return _first(profile, names=("relay_1_on",), suffix="_on")


def current_limit_point(profile: Profile) -> Point | None:
    return _first(profile, names=("ev_current_limit_a",), suffix="_a")


def setpoint_points(profile: Profile) -> list[Point]:
    named = [p for p in profile.writable
             if p.name.startswith("battery_power_setpoint") and p.name.endswith("_w")]
    if named:
        return named
    first = _first(profile, names=(), suffix="_w")
    return [first] if first is not None else []


def phases_of(profile: Profile) -> int:
    """The profile's phases, or for an appliance that does not say: how many phases its points
    name (current_l3_a means three)."""
    if profile.phases:
        return profile.phases
    named = {n for p in profile.points for n in (1, 2, 3) if f"_l{n}_" in f"{p.name}_"}
    return max(named, default=1)


def initial_state(profile: Profile) -> dict[str, float]:
    """Power-on values of the writable points: the profile's default, else its simulation value,
    else what lets the appliance run (EV current at its maximum, relay on, battery idle)."""
    state: dict[str, float] = {}
    behaviour = profile.simulation.behaviour
    limit, switch = current_limit_point(profile), switch_point(profile)
    for point in profile.writable:
        hint = profile.simulation.values.get(point.name)
        if point.default is not None:
            value = point.default
        elif isinstance(hint, int | float):
            value = float(hint)
        elif behaviour == "ev_charger" and point is limit and point.max is not None:
            value = point.max
        elif point is switch:
            value = 1.0
        elif point.values:
            value = 0.0 if 0.0 in point.values else point.values[0]
        else:
            value = 0.0 if (point.min or 0.0) <= 0.0 <= (point.max or 0.0) else (point.min or 0.0)
        state[point.name] = value
    return state


@dataclass(frozen=True, slots=True)
class ApplianceInputs:
    """What an appliance's power depends on at one instant."""

    state: Mapping[str, float]
    rated_power_w: float | None
    phases: int
    voltage_v: float
    soc_pct: float


def appliance_power(profile: Profile, inputs: ApplianceInputs) -> float:
    """The active power (W, import positive) the appliance draws given its writable state."""
    behaviour = profile.simulation.behaviour
    rated = inputs.rated_power_w
    switch = switch_point(profile)
    switched_on = switch is None or bool(inputs.state.get(switch.name, 1.0))
    if behaviour == "ev_charger":
        limit = current_limit_point(profile)
        amps = inputs.state.get(limit.name, 0.0) if limit is not None else 0.0
        if not switched_on or amps < EV_MIN_CURRENT_A:
            return 0.0
        power = amps * inputs.voltage_v * inputs.phases
        return min(power, rated) if rated is not None else power
    if behaviour == "relay":
        return (rated or 0.0) if switched_on else 0.0
    if behaviour == "battery":
        power = sum(inputs.state.get(p.name, 0.0) for p in setpoint_points(profile))
        if (power > 0 and inputs.state.get("battery_charge_disabled", 0.0)) or (
                power < 0 and inputs.state.get("battery_feedin_disabled", 0.0)):
            return 0.0
        if rated is not None:
            power = max(-rated, min(rated, power))
        if (power > 0 and inputs.soc_pct >= 100.0) or (power < 0 and inputs.soc_pct <= 0.0):
            return 0.0
        return power
    return 0.0
