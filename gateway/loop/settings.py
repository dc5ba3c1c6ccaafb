"""The `[dr]` table of the gateway config: how the closed loop acts (the `[chain]` table: chain/settings.py).

Read strictly like the rest of the config (gateway/config/gateway.py); a lever must name a configured device
and one of its profile's writable points, with comfort limits inside the point's range, and `time_zone`
must name a zone of the tz database, so a typo fails at start-up instead of mid-event. The facts that
live in files (the profiles' points, the tz database) come in from the caller.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError, ProfileError
from gateway.loop.baseline_spec import BaselineSpec, Method
from gateway.loop.contracted import MAX_W, parse_time_of_day
from gateway.loop.policy import Lever
from gateway.perception.profiles import Point
from gateway.schema import Fields

BASELINE_METHODS = ("contracted", "pre_event", "ten_in_ten", "high_x_of_y", "recent_days")
LEVER_KINDS = ("setpoint", "switch", "battery")
# The household's calendar for baselines when [dr] names none: UTC, not the host's zone, so that a
# baseline and its input hash do not depend on how the box was set up (docs/config.md).
DEFAULT_TIME_ZONE = "UTC"


@dataclass(frozen=True, slots=True)
class DrConfig:
    baseline: str  # default method for events that do not name one
    pre_event_minutes: int
    lead_minutes: float  # an event is "near" this long before its start
    tolerance: float  # default tolerance of MQTT events that do not carry one
    max_window_minutes: float
    hold_off_s: float  # between two escalations, so the last action can show in the meter
    levers: tuple[Lever, ...]
    slot_s: int = 60  # load history granularity (baselines are computed from these slots)
    baseline_params: tuple[tuple[str, float], ...] = ()  # passed to the method, e.g. min_coverage
    time_zone: str = DEFAULT_TIME_ZONE  # IANA name: the local days and weekdays of day-matched baselines
    # [dr.contracted]: (second of the local day, W) by time, the contracted curve of market awards
    contracted: tuple[tuple[int, float], ...] = ()


def parse_dr(f: Fields, *, writable: Mapping[str, Mapping[str, Point]],
             zones: Callable[[str], dt.tzinfo]) -> DrConfig:
    """`writable` maps each configured device to its profile's writable points by name; `zones` loads a
    time zone by name from the tz database (`zoneinfo.ZoneInfo`)."""
    levers = tuple(_lever(Fields(raw, where=f"{f.where}: lever[{i}]"), writable)
                   for i, raw in enumerate(f.list("lever")))
    baseline = f.optional_str("baseline", choices=BASELINE_METHODS) or "pre_event"
    cfg = DrConfig(
        baseline=baseline,
        pre_event_minutes=f.optional_int("pre_event_minutes", minimum=1, maximum=1440,
                                         unit="minutes", default=30),
        lead_minutes=f.optional_number("lead_minutes", minimum=0, maximum=1440, unit="minutes",
                                       default=10.0),
        # a fraction of the award, 0.05 for 5 %; the Report carries it in basis points
        tolerance=f.optional_number("tolerance", minimum=0, maximum=0.99, default=0.05),
        max_window_minutes=f.optional_number("max_window_minutes", minimum=1, maximum=1440,
                                             unit="minutes", default=240.0),
        hold_off_s=f.optional_number("hold_off_s", minimum=0, maximum=3600, unit="seconds",
                                     default=30.0),
        levers=levers,
        slot_s=f.optional_int("slot_s", minimum=1, maximum=3600, unit="seconds", default=60),
        baseline_params=_params(f.sub("baseline_params"), baseline), time_zone=_time_zone(f, zones),
        contracted=_contracted(f.sub("contracted")),
    )
    f.reject_unknown()
    return cfg


def _time_zone(f: Fields, zones: Callable[[str], dt.tzinfo]) -> str:
    name = f.optional_str("time_zone") or DEFAULT_TIME_ZONE
    try:
        zones(name)
    except (KeyError, ValueError, OSError) as exc:  # not found is a KeyError; a folder an OSError
        f.fail("time_zone", f"{name!r} is not a time zone of the tz database ({exc}); use an IANA name "
               "such as 'Europe/Berlin' or 'America/New_York' (`timedatectl list-timezones` lists them) "
               "or 'UTC'; if the name is right, install the tz database (apt-get install tzdata)")
    return name


def _contracted(f: Fields) -> tuple[tuple[int, float], ...]:
    """`"HH:MM" = W` pairs: the curve from each local time of day on (docs/baselines.md)."""
    points = []
    for key in list(f._data):
        try:
            at = parse_time_of_day(key)
        except ValueError as exc:
            f.fail(key, f"{exc}; each key of [dr.contracted] is a local time of day")
        points.append((at, f.require_number(key, minimum=-MAX_W, maximum=MAX_W, unit="W")))
    f.reject_unknown()
    return tuple(sorted(points))


def _params(f: Fields, baseline: str) -> tuple[tuple[str, float], ...]:
    """The default method's parameters, checked now against the method's own names and ranges
    (gateway/loop/baseline_spec.py) rather than when the first event arrives."""
    out = []
    for key in list(f._data):
        out.append((key, f.require_number(key)))
    f.reject_unknown()
    method = Method[baseline.upper()]
    try:
        BaselineSpec(method=method, params=tuple(out),
                     curve_w=(0.0,) if method is Method.CONTRACTED else ())
    except ValueError as exc:
        raise ConfigError(f"{f.where}: {exc} (docs/baselines.md)") from None
    return tuple(sorted(out))


def _lever(f: Fields, writable: Mapping[str, Mapping[str, Point]]) -> Lever:
    device = f.require_str("device")
    if device not in writable:
        f.fail("device", f"no [[device]] is named {device!r}; use one of {', '.join(writable) or '(none)'}")
    point = f.require_str("point")
    points = writable[device]
    if point not in points:
        f.fail("point", f"{point!r} is not a writable point of {device!r}; use one of "
               f"{', '.join(points) or '(it has none)'}")
    kind = f.require_str("kind", choices=LEVER_KINDS)
    max_off = f.optional_number("max_off_minutes", minimum=1, maximum=1440, unit="minutes")
    needs = {"setpoint": ("min",), "switch": ("off", "on"), "battery": ("max_w",)}[kind]
    for key in needs:
        if f.optional_number(key) is None:
            f.fail(key, f"a {kind} lever needs {' and '.join(repr(k) for k in needs)}")
    numbers = _lever_numbers(f)
    try:  # Lever checks the fields' relations (max above min, ...); the error gains the file
        lever = Lever(device=device, point=point, kind=kind,
                      max_off_s=None if max_off is None else max_off * 60.0, **numbers)
    except ConfigError as exc:
        raise ConfigError(f"{f.where}: {exc}") from None
    for key in ("min", "off", "on", "max_w", "max", "min_w"):
        value = getattr(lever, key)
        if value is None:
            continue
        try:
            points[point].check_write(value)
        except ProfileError as exc:
            f.fail(key, f"{value:g} cannot be written to {device}.{point}: {exc}")
    f.reject_unknown()
    return lever


def _lever_numbers(f: Fields) -> dict[str, Any]:
    """A lever's numbers with their ranges (docs/config.md, "Ranges"). The point values (min, max,
    off, on, max_w, min_w) take theirs from the point's profile (checked by `_lever`); step only
    needs to be above 0 (Lever)."""
    numbers: dict[str, Any] = {key: f.optional_number(key)
                               for key in ("min", "step", "off", "on", "max_w", "max", "min_w")}
    return numbers | {
        "expected_w": f.require_number("expected_w", minimum=1, maximum=1_000_000, unit="W"),
        "power_w_per_unit": f.optional_number("power_w_per_unit", minimum=0.001,
                                              maximum=1_000_000, unit="W"),
        "priority": f.optional_int("priority", minimum=0, maximum=1000, default=1),
        "min_on_s": f.optional_number("min_on_minutes", minimum=0, maximum=1440, unit="minutes",
                                      default=0.0) * 60.0,
    }
