"""The latest value of every point, per device, with the time it was measured: the source of the
plain `state/<device>` topics (Home Assistant reads them) and of any other view that wants "the
meter now" rather than "what this cycle read".

A cycle of a meter reads only the points whose poll class is due (power every second, energy
counters every minute), so one sample carries 8, 21 or 31 of a meter's points. A state message
built from one sample would lack the others, and every template that reads a missing key warns in
Home Assistant. `LatestValues` merges the samples instead: once a point was read, every later
snapshot of its device carries its newest value.

Pure (no I/O, no clock): times are arguments. Update it only from committed measurements (the
pipeline calls after `Store.commit` returned), so a value here is one the signed stream holds.

    latest = LatestValues()
    latest.update("main", {"power_active_total_w": 1830.0}, time_ms=1_700_000_000_000)
    latest.payload("main")  # {"power_active_total_w": 1830.0, "ts": 1700000000000}
    latest.take_changed()   # ("main",): devices updated since the last call
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.measurement.record import QUALITY_CODES, VALUE_DECIMALS, Measurement
from gateway.perception.readings import Quality

Value = float | str | None  # a number, a state word (a DR event's state), or null: not known yet
TIME_KEY = "ts"  # the payload key of the newest update's time (unix ms); no point is named so

_OK = QUALITY_CODES[Quality.OK]
_SCALE = 10 ** VALUE_DECIMALS


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One device's latest values (read-only) and the time of its newest update (unix ms)."""

    values: Mapping[str, Value]
    time_ms: int


class LatestValues:
    """Device -> point -> newest value. A point keeps its value until a newer one replaces it; a
    value of None (JSON null) says "not known" and replaces an older one too."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Value]] = {}
        self._times: dict[str, int] = {}
        self._changed: dict[str, None] = {}  # an ordered set: devices updated since take_changed

    def update(self, device: str, values: Mapping[str, Value], *, time_ms: int) -> None:
        """Merge `values` into the device's map. A sample older than the newest one seen (a backlog
        replayed out of order) updates no point it already knows, so a value never goes back."""
        if TIME_KEY in values:
            raise ValueError(f"{device}: a point cannot be named {TIME_KEY!r}: it is the time key")
        known = self._values.setdefault(device, {})
        newest = self._times.get(device)
        if newest is None or time_ms >= newest:
            known.update(values)
            self._times[device] = time_ms
        else:
            for name, value in values.items():
                known.setdefault(name, value)
        self._changed[device] = None

    def committed(self, records: Sequence[Measurement]) -> None:
        """Records just committed to the store (a `CommittedView`, gateway.network.views): their
        OK readings, at the record's value (fixed point / 10^3, docs/measurements.md) and time."""
        for record in records:
            values = {r.name: r.value / _SCALE for r in record.readings if r.quality == _OK}
            if values:
                self.update(record.device, values, time_ms=record.time_ms)

    def get(self, device: str) -> Snapshot | None:
        values = self._values.get(device)
        if values is None:
            return None
        return Snapshot(MappingProxyType(dict(values)), self._times[device])

    def devices(self) -> tuple[str, ...]:
        return tuple(self._values)

    def payload(self, device: str) -> dict[str, Any]:
        """The device's plain JSON body: every point known, and `ts`. KeyError for an unknown device."""
        return {**self._values[device], TIME_KEY: self._times[device]}

    def take_changed(self) -> tuple[str, ...]:
        """The devices updated since the last call, oldest change first; the set is emptied."""
        changed = tuple(self._changed)
        self._changed.clear()
        return changed

    def mark_changed(self, devices: Sequence[str]) -> None:
        """Have `devices` reported again by the next `take_changed` (e.g. a send that failed)."""
        for device in devices:
            if device in self._values:
                self._changed[device] = None


__all__ = ["TIME_KEY", "LatestValues", "Snapshot", "Value"]
