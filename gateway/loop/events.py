"""DR events the gateway takes part in, and their state machine (pure: time is an argument).

An event comes from the chain (an award in a cleared window) or from the aggregator over MQTT. Every
update of an event carries a modification number; the book keeps the highest one and rejects the rest,
so replays and out-of-order deliveries (a reconnect re-sends retained or queued messages) are harmless.
`advance(now_s)` moves events through PENDING -> NEAR -> ACTIVE -> COMPLETED and reports each
transition once; `next_wakeup(now_s)` says when the shell must call it next (no polling).
The rules are tabled in docs/closed-loop.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from gateway.errors import DrgwError

JSON_VERSION = 1
DEFAULT_LEAD_S = 600.0
DEFAULT_MAX_WINDOW_S = 4 * 3600
_CHAIN_ID = re.compile(r"^chain:0x[0-9a-fA-F]{40}:\d+$")


class Direction(Enum):
    """What the award asks of the household's load, relative to its baseline."""

    REDUCE = "reduce"
    INCREASE = "increase"


class EventSource(Enum):
    CHAIN = "chain"  # an award of a cleared DRMarket window (docs/market.md)
    MQTT = "mqtt"  # an event the aggregator sends on drgw/v1/<gw>/cmd
    OPENADR = "openadr"  # an event a utility's OpenADR VTN offered and the VEN opted in to


class EventState(Enum):
    PENDING = "pending"
    NEAR = "near"  # within lead_s of the start: the shell prepares (baseline, pre-window samples)
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({EventState.COMPLETED, EventState.CANCELLED})
LIVE = frozenset({EventState.PENDING, EventState.NEAR, EventState.ACTIVE})


class EventRejected(DrgwError):
    """An event or an update the book refuses; `reason` says why and what would be accepted.

    `duplicate` is True for a replay of the modification already held (the shell may log it quietly).
    """

    def __init__(self, reason: str, *, event_id: str = "", duplicate: bool = False) -> None:
        super().__init__(f"event {event_id!r}: {reason}" if event_id else reason)
        self.reason = reason
        self.event_id = event_id
        self.duplicate = duplicate


def chain_event_id(market: str, window: int) -> str:
    """The id of a chain event: "chain:<market address>:<window id>" (lower-case address)."""
    return f"chain:{market.lower()}:{window}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DrEvent:
    """One version (modification) of a DR event. Times are unix seconds; the window is [start, end).

    `award_w` is the magnitude of the awarded response; `direction` gives its sign. `baseline` is
    opaque here (the shell passes a baselines.BaselineSpec). `window` is the chain's window id.
    """

    event_id: str
    source: EventSource
    modification: int
    start_s: int
    end_s: int
    award_w: int
    direction: Direction
    tolerance_bps: int
    baseline: object = None
    window: int | None = None
    cancelled: bool = False

    @property
    def seconds(self) -> int:
        return self.end_s - self.start_s

    def problem(self, *, max_window_s: float = DEFAULT_MAX_WINDOW_S) -> str | None:
        """Why this event is not valid on its own, or None."""
        if not self.event_id:
            return "event_id is empty"
        if self.modification < 0:
            return f"modification {self.modification} is negative"
        if self.source is EventSource.CHAIN:
            if self.window is None:
                return "a chain event needs its window id"
            if not _CHAIN_ID.match(self.event_id) or not self.event_id.endswith(f":{self.window}"):
                return "a chain event's id is chain:<market address>:<window>"
        if self.cancelled:
            return None  # a cancellation only has to name the event
        if self.end_s <= self.start_s:
            return f"end_s {self.end_s} is not after start_s {self.start_s}"
        if self.seconds > max_window_s:
            return f"window of {self.seconds} s is longer than the maximum {max_window_s:g} s"
        if self.award_w <= 0:
            return f"award_w {self.award_w} must be > 0 (the magnitude; direction gives the sign)"
        if not 0 <= self.tolerance_bps <= 10_000:
            return f"tolerance_bps {self.tolerance_bps} is outside 0..10000"
        return None

    def as_json(self, *, encode_baseline: Callable[[object], Any] | None = None) -> str:
        """Canonical JSON (sorted keys). `encode_baseline` turns the baseline into JSON values;
        without it the baseline must already be None or JSON (str, number, list, dict)."""
        baseline = self.baseline if encode_baseline is None else encode_baseline(self.baseline)
        data = {
            "v": JSON_VERSION, "event_id": self.event_id, "source": self.source.value,
            "modification": self.modification, "start_s": self.start_s, "end_s": self.end_s,
            "award_w": self.award_w, "direction": self.direction.value,
            "tolerance_bps": self.tolerance_bps, "baseline": baseline, "window": self.window,
            "cancelled": self.cancelled,
        }
        try:
            return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"event {self.event_id!r}: baseline {self.baseline!r} is not JSON; "
                            f"pass encode_baseline= ({exc})") from exc

    @classmethod
    def from_json(cls, text: str | bytes,
                  *, decode_baseline: Callable[[Any], object] | None = None) -> DrEvent:
        """Strict inverse of `as_json`: an unknown or missing key, or a wrong type, is rejected."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise EventRejected(f"event JSON does not parse: {exc}") from exc
        if not isinstance(data, dict):
            raise EventRejected("event JSON must be an object")
        return _from_mapping(data, decode_baseline)


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int, "event_id": str, "source": str, "modification": int, "start_s": int, "end_s": int,
    "award_w": int, "direction": str, "tolerance_bps": int, "baseline": object,
    "window": (int, type(None)), "cancelled": bool,
}


def _from_mapping(data: Mapping[str, Any], decode: Callable[[Any], object] | None) -> DrEvent:
    where = f"event JSON {data.get('event_id', '?')!r}"
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise EventRejected(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    for key, kind in _FIELDS.items():
        if key not in data:
            raise EventRejected(f"{where}: key {key!r} is missing")
        value = data[key]
        # bool is an int in Python; only "cancelled" may be one
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise EventRejected(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    if data["v"] != JSON_VERSION:
        raise EventRejected(f"{where}: version {data['v']} is not supported (this gateway reads "
                            f"v{JSON_VERSION})")
    try:
        source, direction = EventSource(data["source"]), Direction(data["direction"])
    except ValueError as exc:
        raise EventRejected(f"{where}: {exc}; use chain|mqtt|openadr and reduce|increase") from exc
    baseline = data["baseline"] if decode is None else decode(data["baseline"])
    return DrEvent(event_id=data["event_id"], source=source, modification=data["modification"],
                   start_s=data["start_s"], end_s=data["end_s"], award_w=data["award_w"],
                   direction=direction, tolerance_bps=data["tolerance_bps"], baseline=baseline,
                   window=data["window"], cancelled=data["cancelled"])


class ChangeKind(Enum):
    ADDED = "added"
    MODIFIED = "modified"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What `apply` did: the event as now held, the version it replaced, and its state."""

    kind: ChangeKind
    event: DrEvent
    previous: DrEvent | None
    state: EventState


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One state change. `at_s` is when it was due (the boundary time; for a cancel, the apply time)."""

    event_id: str
    previous: EventState
    state: EventState
    at_s: float
    event: DrEvent


class EventBook:
    """The household's DR events by id, with their states. One household: live events may not overlap."""

    def __init__(self, *, lead_s: float = DEFAULT_LEAD_S,
                 max_window_s: float = DEFAULT_MAX_WINDOW_S) -> None:
        if lead_s < 0 or max_window_s <= 0:
            raise ValueError("lead_s must be >= 0 and max_window_s > 0")
        self.lead_s = lead_s
        self.max_window_s = max_window_s
        self._events: dict[str, DrEvent] = {}
        self._states: dict[str, EventState] = {}
        self._unreported: list[Transition] = []

    def state(self, event_id: str) -> EventState:
        try:
            return self._states[event_id]
        except KeyError:
            raise KeyError(f"no event {event_id!r} in the book") from None

    def event(self, event_id: str) -> DrEvent:
        try:
            return self._events[event_id]
        except KeyError:
            raise KeyError(f"no event {event_id!r} in the book") from None

    def events(self) -> list[DrEvent]:
        """Every event held, by start time."""
        return sorted(self._events.values(), key=lambda e: (e.start_s, e.event_id))

    def apply(self, update: DrEvent, now_s: float) -> Change:
        """Add a new event or apply a newer modification of a held one; raise EventRejected otherwise.

        Transitions caused by time up to `now_s` and by a cancellation are reported by the next
        `advance` (call it right after: a new event that is already due goes through them at once).
        """
        self._step(now_s)
        current = self._events.get(update.event_id)
        if current is None:
            return self._add(update, now_s)
        self._check_update(current, update, now_s)
        if update.cancelled:
            # a cancellation only needs the id and a higher modification; keep the last real window
            held = replace(current, modification=update.modification, cancelled=True)
            self._set(held, self._states[current.event_id], EventState.CANCELLED, now_s)
            return Change(kind=ChangeKind.CANCELLED, event=held, previous=current,
                          state=EventState.CANCELLED)
        self._events[update.event_id] = update
        state = self._states[update.event_id]
        if state is EventState.NEAR and now_s < update.start_s - self.lead_s:
            self._set(update, state, EventState.PENDING, now_s)  # postponed beyond the lead
        self._step(now_s)
        return Change(kind=ChangeKind.MODIFIED, event=update, previous=current,
                      state=self._states[update.event_id])

    def restore(self, events: Iterable[DrEvent], now_s: float) -> None:
        """Reload events kept by the shell (their `as_json`) after a restart: each starts PENDING, or
        CANCELLED, and the next `advance(now_s)` replays its transitions, so an event in its window
        resumes ACTIVE and one whose window passed meanwhile reports ACTIVE -> COMPLETED.
        Overlap and arrival checks are not repeated: these events were accepted before."""
        for event in events:
            problem = event.problem(max_window_s=math.inf)
            if problem is not None:
                raise EventRejected(f"stored event is invalid: {problem}", event_id=event.event_id)
            self._events[event.event_id] = event
            self._states[event.event_id] = (EventState.CANCELLED if event.cancelled
                                            else EventState.PENDING)
        self._step(now_s)

    def advance(self, now_s: float) -> list[Transition]:
        """Move states by time; return every transition not reported before, in order."""
        self._step(now_s)
        out, self._unreported = self._unreported, []
        return out

    def next_wakeup(self, now_s: float) -> float | None:
        """When `advance` next has work: the earliest boundary of a live event (now_s if one is due
        or a transition is waiting to be reported), None when no event is live."""
        if self._unreported:
            return now_s
        times = [self._boundary(e) for e in self._events.values()
                 if self._states[e.event_id] in LIVE]
        return max(now_s, min(times)) if times else None

    def prune(self, before_s: float) -> list[str]:
        """Forget completed or cancelled events that ended before `before_s`; return their ids.
        A late replay of a forgotten event is then rejected as already over."""
        gone = [i for i, e in self._events.items()
                if self._states[i] in TERMINAL and e.end_s < before_s]
        for event_id in gone:
            del self._events[event_id], self._states[event_id]
        return gone

    # ---- internals

    def _boundary(self, event: DrEvent) -> float:
        state = self._states[event.event_id]
        if state is EventState.PENDING:
            return event.start_s - self.lead_s
        return event.start_s if state is EventState.NEAR else event.end_s

    def _step(self, now_s: float) -> None:
        first = len(self._unreported)
        for event_id in sorted(self._events, key=lambda i: (self._events[i].start_s, i)):
            event = self._events[event_id]
            while self._states[event_id] in LIVE and now_s >= self._boundary(event):
                state = self._states[event_id]
                after = {EventState.PENDING: EventState.NEAR, EventState.NEAR: EventState.ACTIVE,
                         EventState.ACTIVE: EventState.COMPLETED}[state]
                self._set(event, state, after, self._boundary(event))
        # one late step can cover several events: report in time order (stable: per event in order)
        self._unreported[first:] = sorted(self._unreported[first:], key=lambda t: t.at_s)

    def _set(self, event: DrEvent, before: EventState, after: EventState, at_s: float) -> None:
        self._events[event.event_id] = event
        self._states[event.event_id] = after
        self._unreported.append(Transition(event_id=event.event_id, previous=before, state=after,
                                           at_s=at_s, event=event))

    def _add(self, event: DrEvent, now_s: float) -> Change:
        problem = event.problem(max_window_s=self.max_window_s)
        if problem is not None:
            raise EventRejected(problem, event_id=event.event_id)
        if event.cancelled:
            # remember it, so an older modification delivered later cannot resurrect the event
            self._events[event.event_id] = event
            self._states[event.event_id] = EventState.CANCELLED
            return Change(kind=ChangeKind.CANCELLED, event=event, previous=None,
                          state=EventState.CANCELLED)
        if event.end_s <= now_s:
            raise EventRejected(f"the window ended at {event.end_s}, before the event arrived at "
                                f"{now_s:g}", event_id=event.event_id)
        self._check_overlap(event)
        self._events[event.event_id] = event
        self._states[event.event_id] = EventState.PENDING
        self._step(now_s)
        return Change(kind=ChangeKind.ADDED, event=event, previous=None,
                      state=self._states[event.event_id])

    def _check_update(self, current: DrEvent, update: DrEvent, now_s: float) -> None:
        event_id = current.event_id
        if update.modification <= current.modification:
            raise EventRejected(f"out-of-order update: modification {update.modification} <= current "
                                f"{current.modification}", event_id=event_id,
                                duplicate=update.modification == current.modification)
        state = self._states[event_id]
        if state in TERMINAL:
            raise EventRejected(f"the event is {state.value}; it takes no more updates",
                                event_id=event_id)
        if update.source is not current.source:
            raise EventRejected("source cannot change", event_id=event_id)
        problem = update.problem(max_window_s=self.max_window_s)
        if problem is not None:
            raise EventRejected(problem, event_id=event_id)
        if update.cancelled:
            return
        if update.direction is not current.direction:
            raise EventRejected("direction cannot change; cancel the event and send a new one",
                                event_id=event_id)
        if update.end_s <= now_s:
            raise EventRejected(f"the updated window would end at {update.end_s}, not after now "
                                f"{now_s:g}", event_id=event_id)
        if state is EventState.ACTIVE:
            self._check_active_update(current, update)
        self._check_overlap(update)

    @staticmethod
    def _check_active_update(current: DrEvent, update: DrEvent) -> None:
        # Once the window runs, its start and baseline are what the live checker measures against,
        # and what the Report commits to (windowStart, baselineInputHash): they cannot move.
        if update.start_s != current.start_s:
            raise EventRejected(f"the window is active since {current.start_s}; its start cannot move "
                                f"to {update.start_s}", event_id=current.event_id)
        if update.baseline != current.baseline:
            raise EventRejected("the window is active; its baseline cannot change",
                                event_id=current.event_id)

    def _check_overlap(self, event: DrEvent) -> None:
        for other in self._events.values():
            if other.event_id == event.event_id or self._states[other.event_id] not in LIVE:
                continue
            if event.start_s < other.end_s and other.start_s < event.end_s:
                raise EventRejected(
                    f"window {event.start_s}..{event.end_s} overlaps event {other.event_id!r} "
                    f"({other.start_s}..{other.end_s}); a household takes part in one event at a time",
                    event_id=event.event_id)
