"""Whether the household takes part in an event it is offered rather than awarded (pure).

An OpenADR VTN offers events and the VEN opts in or out. The household's policy (`[openadr] opt`)
and the levers' capacity decide, by the rule in docs/openadr.md: "never" opts out of everything
(a report-only VEN), "always" opts in and does what the levers can, "capacity" opts in when the
levers that act in the event's direction can together deliver the target (their `expected_w`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.loop.events import Direction
from gateway.loop.policy import Lever


@dataclass(frozen=True, slots=True)
class Opt:
    opt_in: bool
    reason: str


def acts(lever: Lever, direction: Direction) -> bool:
    """Whether the action policy moves this lever in an event of `direction` (policy.py `_limit`)."""
    if direction is Direction.REDUCE:
        return True  # every kind has its REDUCE limit (min, off, max_w), checked at config load
    return {"setpoint": lever.max, "switch": lever.on, "battery": lever.min_w}[lever.kind] is not None


def capacity_w(levers: Iterable[Lever], direction: Direction) -> float:
    """The load the levers shed (REDUCE) or add (INCREASE) when all are fully used."""
    return sum(lever.expected_w for lever in levers if acts(lever, direction))


def decide(*, mode: str, target_w: int, direction: Direction, levers: Iterable[Lever]) -> Opt:
    """Opt in or out of an offered event of `target_w` W in `direction`, by `mode`."""
    if mode == "never":
        return Opt(False, "the policy ([openadr] opt = \"never\") takes part in no event")
    if target_w <= 0:
        return Opt(False, "the event asks for 0 W (normal operation): nothing to do")
    capacity = capacity_w(levers, direction)
    if capacity <= 0:
        return Opt(False, f"no lever can {direction.value} load")
    if mode == "always" or capacity >= target_w:
        return Opt(True, f"target {target_w} W {direction.value}, levers' capacity {capacity:.0f} W")
    return Opt(False, f"target {target_w} W {direction.value} is more than the levers' capacity "
                      f"{capacity:.0f} W")
