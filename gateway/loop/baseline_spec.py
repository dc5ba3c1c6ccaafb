"""What a DR event asks of its baseline: the method id and its parameters, validated with their ranges.

Pure: the rules are data (`_RULES`, one table per method), so the checks, the defaults and the
parameters the input hash covers (`BaselineSpec.resolved`) all read the same table. The methods and
their sources are in docs/baselines.md.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType


class Method(IntEnum):
    """Baseline method ids, as they go on chain in the Report (uint16). 0 is the simulator's rated load."""

    CONTRACTED = 1
    PRE_EVENT = 2
    TEN_IN_TEN = 3
    HIGH_X_OF_Y = 4
    RECENT_DAYS = 5


@dataclass(frozen=True, slots=True)
class _Rule:
    default: int | float
    lo: int | float
    hi: int | float
    integer: bool = True


_COVERAGE = _Rule(0.9, 0.0, 1.0, integer=False)
_LOOKBACK = _Rule(45, 1, 366)
_ADJUSTMENT = MappingProxyType({
    "cap": _Rule(0.2, 0.0, 1.0, integer=False), "adjust_from_min": _Rule(240, 1, 1440),
    "adjust_to_min": _Rule(60, 0, 1439), "min_coverage": _COVERAGE, "lookback_days": _LOOKBACK})
_RULES: Mapping[Method, Mapping[str, _Rule]] = MappingProxyType({
    Method.CONTRACTED: MappingProxyType({}),
    Method.PRE_EVENT: MappingProxyType({"minutes": _Rule(30, 1, 1440), "min_coverage": _COVERAGE}),
    Method.TEN_IN_TEN: MappingProxyType({"days": _Rule(10, 1, 60), "min_days": _Rule(5, 1, 60),
                                         "adjust": _Rule(1, 0, 1), **_ADJUSTMENT}),
    Method.HIGH_X_OF_Y: MappingProxyType({"x": _Rule(5, 1, 60), "y": _Rule(10, 1, 60),
                                          "min_days": _Rule(5, 1, 60), "adjust": _Rule(0, 0, 1),
                                          **_ADJUSTMENT}),
    Method.RECENT_DAYS: MappingProxyType({"days": _Rule(5, 1, 60), "min_days": _Rule(5, 1, 60),
                                          "min_coverage": _COVERAGE, "lookback_days": _LOOKBACK}),
})


def _method(value: Method | int) -> Method:
    try:
        return Method(value)
    except ValueError:
        raise ValueError(f"unknown baseline method id {value!r}; "
                         f"known: {', '.join(f'{m.value}={m.name}' for m in Method)}") from None


def _checked(method: Method, name: str, value: object) -> int | float:
    rules = _RULES[method]
    if name not in rules:
        close = difflib.get_close_matches(name, list(rules), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown baseline parameter '{name}' for {method.name}; {hint}"
                         f"allowed: {', '.join(sorted(rules)) or 'none'}")
    rule = rules[name]
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or (rule.integer and not float(value).is_integer()) or not rule.lo <= value <= rule.hi):
        kind = "an integer" if rule.integer else "a number"
        raise ValueError(f"baseline parameter '{name}' of {method.name} must be {kind} in "
                         f"{rule.lo}..{rule.hi}, got {value!r}")
    return int(value) if rule.integer else float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineSpec:
    """What an event asks for. `params` is normalised to sorted (name, value) pairs; unset ones default."""

    method: Method
    params: tuple[tuple[str, int | float], ...] = ()
    curve_w: tuple[float, ...] = ()

    @classmethod
    def make(
        cls, method: Method | int, *, curve_w: Iterable[float] = (), **params: int | float
    ) -> BaselineSpec:
        """`BaselineSpec.make(Method.HIGH_X_OF_Y, x=4, y=5)`: parameters as keywords, validated."""
        return cls(method=_method(method), params=tuple(params.items()), curve_w=tuple(curve_w))

    def __post_init__(self) -> None:
        method = _method(self.method)
        given = list(self.params.items() if isinstance(self.params, Mapping) else self.params)  # JSON form
        names = [name for name, _ in given]
        if len(set(names)) != len(names):
            raise ValueError(f"baseline parameters repeat a name: {names}")
        params = tuple(sorted((name, _checked(method, name, value)) for name, value in given))
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "curve_w", tuple(float(v) for v in self.curve_w))
        if (method is Method.CONTRACTED) != bool(self.curve_w):
            raise ValueError("curve_w is required for CONTRACTED (one W value per window slot) "
                             "and not allowed for any other method")
        if not all(math.isfinite(v) for v in self.curve_w):
            raise ValueError("curve_w values must be finite numbers of W")
        self._check_together()

    def _check_together(self) -> None:
        p, name = self.param, self.method.name
        for low, high in (("min_days", "days"), ("x", "y"), ("min_days", "y")):
            if self.takes(low) and self.takes(high) and p(low) > p(high):
                raise ValueError(f"baseline parameter '{low}' ({p(low)}) of {name} must not exceed "
                                 f"'{high}' ({p(high)})")
        if self.takes("adjust_to_min") and p("adjust_to_min") >= p("adjust_from_min"):
            raise ValueError(f"baseline parameter 'adjust_to_min' ({p('adjust_to_min')}) of {name} must be "
                             f"less than 'adjust_from_min' ({p('adjust_from_min')}): both count minutes "
                             "back from the window start")

    def takes(self, name: str) -> bool:
        """Whether the method has the parameter `name` at all (given or not)."""
        return name in _RULES[self.method]

    def param(self, name: str) -> int | float:
        """The value of a parameter: as given, else the method's default."""
        given = dict(self.params)
        return given[name] if name in given else _RULES[self.method][name].default

    def resolved(self) -> tuple[tuple[str, int | float], ...]:
        """Every parameter of the method, given or default, sorted by name (what the input hash covers)."""
        return tuple((name, self.param(name)) for name in sorted(_RULES[self.method]))
