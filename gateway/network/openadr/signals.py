"""OpenADR 2.0b events (`oadrDistributeEvent`, as openleadr parses them) into reduce targets (pure).

`read_event` turns one parsed `oadrEvent` into an `OadrRequest`: its id, modification number, window,
status and the one signal the gateway acts on; `target` turns the request into the watts and the
direction of a closed-loop event by the rule written in docs/openadr.md:

- SIMPLE / level (OpenADR 2.0b signal table: levels 0 normal, 1 moderate, 2 high, 3 special): each
  interval's level is looked up in the level table (W to shed at levels 1..3; level 0 sheds 0 W).
- LOAD_DISPATCH / delta (powerReal: the change of load the VTN asks for): each interval's payload in
  W (its itemBase's siScaleCode: none, k or M; kW without an itemBase); negative asks for a
  reduction, positive for an increase. Every interval must ask for the same direction.
- The event's award is the time-weighted mean of its intervals, so the energy the loop must deliver
  over the window is the sum of what each interval asks for. A LOAD_DISPATCH signal wins over a
  SIMPLE one in the same event (it is the more precise); other signals are ignored.

Errors are `OadrEventError`: the VTN sent something this VEN does not act on (a remote error); the
VEN opts out and logs the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import RemoteError

LEVEL, DISPATCH = "level", "delta"
# siScaleCode multipliers (OpenADR 2.0b schema, SiScaleCodeType); "none" is 10^0
SCALES = {"none": 1.0, "k": 1e3, "M": 1e6, None: 1e3}  # no itemBase: the payload is kW
CANCELLED = "cancelled"


class OadrEventError(RemoteError):
    """An event the VEN cannot act on; `reason` goes into the log and the opt-out."""

    def __init__(self, reason: str, *, event_id: str = "") -> None:
        super().__init__(f"OpenADR event {event_id!r}: {reason}" if event_id else reason)
        self.reason = reason
        self.event_id = event_id


@dataclass(frozen=True, slots=True, kw_only=True)
class OadrRequest:
    """One version of a VTN's event, reduced to what the closed loop needs. Times are unix seconds;
    `intervals` are (seconds, payload) in order; `kind` is LEVEL or DISPATCH; `scale` the W per unit
    of a DISPATCH payload."""

    event_id: str
    modification: int
    start_s: int
    end_s: int
    cancelled: bool
    kind: str
    intervals: tuple[tuple[float, float], ...]
    scale: float = 1.0
    market_context: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    watts: int  # magnitude
    reduce: bool  # False: the VTN asks for more load


def read_event(event: Mapping[str, Any]) -> OadrRequest:
    """One parsed oadrEvent (openleadr's dict) as a request; raises OadrEventError."""
    desc = _mapping(event, "event_descriptor", "")
    event_id = str(desc.get("event_id") or "")
    if not event_id:
        raise OadrEventError("the event has no eventID")
    period = _mapping(event, "active_period", event_id)
    start, length = period.get("dtstart"), period.get("duration")
    if not isinstance(start, dt.datetime) or not isinstance(length, dt.timedelta):
        raise OadrEventError("the active period needs a dtstart and a duration", event_id=event_id)
    cancelled = desc.get("event_status") == CANCELLED
    if length.total_seconds() <= 0 and not cancelled:
        raise OadrEventError("an open-ended event (duration 0) is not supported: the closed loop "
                             "needs the window's end", event_id=event_id)
    try:
        kind, intervals, scale = _signal(event, event_id, length)
    except OadrEventError:
        if not cancelled:
            raise
        kind, intervals, scale = LEVEL, ((1.0, 0.0),), 1.0  # a cancellation only has to name the event
    start_s = _unix(start)
    return OadrRequest(event_id=event_id, modification=int(desc.get("modification_number") or 0),
                       start_s=start_s, end_s=start_s + round(length.total_seconds()),
                       cancelled=cancelled, kind=kind, intervals=intervals, scale=scale,
                       market_context=str(desc.get("market_context") or ""))


def target(request: OadrRequest, level_w: Sequence[float]) -> Target:
    """The closed-loop award for `request` (the rule in the module docstring). `level_w` is the W to
    shed at SIMPLE levels 1, 2, 3."""
    if request.kind == LEVEL:
        watts = []
        for _, level in request.intervals:
            if level != int(level) or not 0 <= level <= len(level_w):
                raise OadrEventError(f"SIMPLE level {level:g} is not one of 0..{len(level_w)}",
                                     event_id=request.event_id)
            watts.append(0.0 if level == 0 else -level_w[int(level) - 1])
    else:
        watts = [payload * request.scale for _, payload in request.intervals]
    if any(w > 0 for w in watts) and any(w < 0 for w in watts):
        raise OadrEventError("its intervals ask for a reduction and an increase; the closed loop "
                             "takes one direction per event", event_id=request.event_id)
    seconds = sum(s for s, _ in request.intervals)
    mean = sum(w * s for w, (s, _) in zip(watts, request.intervals, strict=True)) / seconds
    return Target(watts=round(abs(mean)), reduce=mean <= 0)


def _signal(event: Mapping[str, Any], event_id: str,
            length: dt.timedelta) -> tuple[str, tuple[tuple[float, float], ...], float]:
    signals = event.get("event_signals") or []
    if isinstance(signals, Mapping):  # openleadr nests them once more in some messages
        signals = signals.get("event_signals") or []
    by_name = {str(s.get("signal_name", "")).upper(): s for s in signals if isinstance(s, Mapping)}
    chosen = by_name.get("LOAD_DISPATCH") or by_name.get("SIMPLE")
    if chosen is None:
        raise OadrEventError(f"no SIMPLE or LOAD_DISPATCH signal (got {', '.join(by_name) or 'none'})",
                             event_id=event_id)
    kind = str(chosen.get("signal_type", ""))
    want = DISPATCH if "LOAD_DISPATCH" in by_name else LEVEL
    if kind != want:
        raise OadrEventError(f"signal type {kind!r} of {'SIMPLE' if want == LEVEL else 'LOAD_DISPATCH'}"
                             f" is not supported; send {want!r}", event_id=event_id)
    measurement = chosen.get("measurement")
    scale_code = measurement.get("scale") if isinstance(measurement, Mapping) else None
    if scale_code not in SCALES:
        raise OadrEventError(f"siScaleCode {scale_code!r} is not one of none, k, M", event_id=event_id)
    intervals = []
    for i in chosen.get("intervals") or []:
        seconds = i.get("duration")
        seconds = seconds.total_seconds() if isinstance(seconds, dt.timedelta) else 0.0
        payload = i.get("signal_payload")
        if not isinstance(payload, int | float) or isinstance(payload, bool):
            raise OadrEventError(f"interval payload {payload!r} is not a number", event_id=event_id)
        intervals.append((seconds, float(payload)))
    if len(intervals) == 1 and intervals[0][0] <= 0:
        intervals = [(length.total_seconds(), intervals[0][1])]  # one interval spans the period
    if not intervals or any(s <= 0 for s, _ in intervals):
        raise OadrEventError("every interval needs a duration", event_id=event_id)
    return want, tuple(intervals), SCALES[scale_code] if want == DISPATCH else 1.0


def _mapping(event: Mapping[str, Any], key: str, event_id: str) -> Mapping[str, Any]:
    value = event.get(key)
    if not isinstance(value, Mapping):
        raise OadrEventError(f"the event has no {key}", event_id=event_id)
    return value


def _unix(t: dt.datetime) -> int:
    if t.tzinfo is None:  # the schema's dateTime is UTC ("Z"); openleadr keeps it aware
        t = t.replace(tzinfo=dt.UTC)
    return round(t.timestamp())
