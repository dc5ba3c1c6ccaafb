"""The load history a baseline is computed from in the shell: the journalled slots of the main meter,
the still-open ones, and the local dates of the household's other DR events (never baseline days).

Part of the loop's shell (it reads the journal); the baseline itself is pure (baselines.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from gateway.loop import baselines as bl
from gateway.loop.events import DrEvent
from gateway.loop.history import SlotAccumulator
from gateway.loop.journal import Journal


def compute_for(event: DrEvent, *, journal: Journal, open_slots: SlotAccumulator, device: str,
                slot_s: int, zone: ZoneInfo, others: Iterable[DrEvent],
                inputs_end_s: int | None = None) -> bl.Baseline:
    """`event`'s baseline from the history before its start (before `inputs_end_s` when given)."""
    spec = event.baseline
    if not isinstance(spec, bl.BaselineSpec):
        raise ValueError(f"event {event.event_id} carries no baseline spec")
    lookback = 0
    for name in ("lookback_days", "y", "days"):
        with contextlib.suppress(KeyError):
            lookback = max(lookback, int(spec.param(name)) * 2 + 10)
    start = event.start_s - max(lookback, 2) * 86400
    slots = journal.slots(device, slot_s=slot_s, start_s=start, end_s=event.start_s)
    slots += open_slots.open_view(event.start_s)
    history = bl.History(slot_s=slot_s, slots=tuple(
        bl.Slot(start_s=s.start_s, avg_w=s.avg_w, coverage=s.coverage) for s in slots),
        time_zone=zone, event_days=frozenset(event_days(event, others, zone)))
    return bl.compute(spec, history, window_start_s=event.start_s, window_end_s=event.end_s,
                      inputs_end_s=inputs_end_s)


def event_days(event: DrEvent, others: Iterable[DrEvent], zone: dt.tzinfo) -> list[dt.date]:
    """The local dates of the other events before this one: no baseline day is taken from them."""
    return [dt.datetime.fromtimestamp(e.start_s, zone).date() for e in others
            if e.event_id != event.event_id and not e.cancelled and e.start_s < event.start_s]
