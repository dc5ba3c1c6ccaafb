"""What the local page learns as it happens: each device's newest readings, the newest `dr_live` of
each DR event, and a change counter that the page's event streams wait on.

It sits beside the DR loop as a sample observer and beside MQTT as a reader of the DR loop's and the
bidder's messages (gateway/agent/wiring.py hands it both). Each call is a dict update and a counter
bump; a stream is woken only while one is open, so a page nobody looks at costs no task and no timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.perception.readings import Quality, Sample

LIVE_EVENTS_KEPT = 8  # newest dr_live bodies kept (one per event)


@dataclass(frozen=True, slots=True)
class Latest:
    """A point's newest good value and when it was read (wall seconds)."""

    value: float
    time: float


@dataclass(frozen=True, slots=True)
class SampleQuality:
    """How the readings of a device's newest sample came out."""

    ok: int
    stale: int
    error: int
    time: float
    errors: tuple[str, ...]  # the reasons of the failed readings, first few


class LiveState:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, Latest]] = {}  # device -> point -> newest good value
        self.quality: dict[str, SampleQuality] = {}
        self.dr_live: dict[str, dict[str, Any]] = {}  # event id -> its newest dr_live body
        self.version = 0  # bumped by anything new
        self.dr_version = 0  # bumped by DR and market messages other than dr_live
        self._waiting = 0
        self._changed: asyncio.Event | None = None

    # ---- fed by the agent (sync, on the event loop) ----

    def on_sample(self, sample: Sample) -> None:
        points = self.values.setdefault(sample.device, {})
        ok = stale = error = 0
        errors: list[str] = []
        for r in sample.readings:
            if r.quality is Quality.OK:
                ok += 1
                if isinstance(r.value, int | float) and not isinstance(r.value, bool):
                    points[r.name] = Latest(float(r.value), r.time)
            elif r.quality is Quality.STALE:
                stale += 1
            else:
                error += 1
                if r.error and len(errors) < 3 and r.error not in errors:
                    errors.append(r.error)
        self.quality[sample.device] = SampleQuality(ok, stale, error, sample.time, tuple(errors))
        self._bump()

    def on_event(self, body: Mapping[str, Any]) -> None:
        """A DR loop or bidder message (the bodies published on the gateway's event topic)."""
        if body.get("type") == "dr_live":
            event_id = str(body.get("event_id"))
            self.dr_live.pop(event_id, None)
            self.dr_live[event_id] = dict(body)
            while len(self.dr_live) > LIVE_EVENTS_KEPT:
                self.dr_live.pop(next(iter(self.dr_live)))
        else:
            self.dr_version += 1
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        if self._waiting and self._changed is not None:
            changed, self._changed = self._changed, None
            changed.set()

    # ---- read by the streams ----

    async def changed_since(self, seen: int) -> int:
        """Wait until something changed after version `seen`; the version now."""
        while self.version == seen:
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            self._waiting += 1
            try:
                await changed.wait()
            finally:
                self._waiting -= 1
        return self.version

    @property
    def waiting(self) -> int:
        """Streams parked until the next change (they send nothing meanwhile)."""
        return self._waiting

    def latest(self, device: str, point: str) -> Latest | None:
        return self.values.get(device, {}).get(point)
