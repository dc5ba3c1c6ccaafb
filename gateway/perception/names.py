"""Standard measurement names: the unit suffix of a name fixes its unit (docs/profiles.md)."""

from __future__ import annotations

import re

# Suffix -> unit. Longer suffixes first so that "_varh" is not read as "_h" or "_var".
UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_varh", "varh"),
    ("_var", "var"),
    ("_vah", "VAh"),
    ("_va", "VA"),
    ("_wh", "Wh"),
    ("_w", "W"),
    ("_v", "V"),
    ("_a", "A"),
    ("_hz", "Hz"),
    ("_pct", "%"),
    ("_c", "°C"),
    ("_s", "s"),
)
_NAME = re.compile(r"^[a-z][a-z0-9_]*[a-z0-9]$")
# Units people write for the same thing; accepted in profiles and normalised.
UNIT_ALIASES = {"C": "°C", "degC": "°C", "VAr": "var"}


def unit_for(name: str) -> str:
    """The unit a standard name carries: '' for dimensionless names (power factor, states, text)."""
    for suffix, unit in UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ""


def check_name_unit(name: str, unit: str) -> str | None:
    """Return a message saying what is wrong with this name/unit pair, or None when it is right."""
    if not _NAME.match(name):
        return (f"{name!r} is not a standard name: use lower case letters, digits and '_', "
                "e.g. power_active_total_w")
    expected = unit_for(name)
    normalised = UNIT_ALIASES.get(unit, unit)
    if normalised != expected:
        if expected:
            return (f"{name!r} ends in a suffix meaning {expected!r} but the unit is {unit!r}; "
                    f"set unit: {expected} and scale the value (kWh -> Wh is scale: 1000)")
        return (f"{name!r} has no unit suffix but the unit is {unit!r}; add the suffix "
                "(_w, _wh, _v, _a, _hz, ...) or set unit: ''")
    return None


def normalise_unit(unit: str) -> str:
    return UNIT_ALIASES.get(unit, unit)
