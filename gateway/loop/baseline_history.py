"""The load history a baseline is computed from, on the household's local calendar.

Pure: the caller passes the main meter's slots and the calendar, either one fixed UTC offset or a
time zone (a `zoneinfo.ZoneInfo` the shell has loaded; it holds its transitions in memory, so nothing
here reads the tz database or the clock). With a zone every instant is read with its own offset: a
day before a DST change keeps its local dates, weekdays and "same slot k days ago" (docs/baselines.md).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

SLOT_S = 300
DAY_S = 86_400
EPOCH = dt.date(1970, 1, 1)
UTC_NAME = "UTC"  # the zone that is the fixed offset 0: hashed as that offset (docs/baselines.md)


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One interval of main-meter load: mean active power (W, import positive), share of good readings."""

    start_s: int
    avg_w: float
    coverage: float


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """The load history a baseline is computed from. Missing slots are missing data (coverage 0).

    Local dates and times follow `time_zone` when it is given (each day with its own UTC offset),
    else the one fixed `utc_offset_s`."""

    slot_s: int
    slots: tuple[Slot, ...]
    utc_offset_s: int = 0
    time_zone: ZoneInfo | None = None
    event_days: frozenset[dt.date] = frozenset()
    holidays: frozenset[dt.date] = frozenset()

    def __post_init__(self) -> None:
        if not 0 < self.slot_s <= DAY_S or DAY_S % self.slot_s:
            # Whole days must be whole slots: a day-matched baseline reads "the same slot, k days ago".
            raise ValueError(f"History.slot_s must divide 86400 (60, 300, 900, 3600...), got {self.slot_s}")
        if abs(self.utc_offset_s) > 14 * 3600:
            raise ValueError(f"History.utc_offset_s must be within +/-14 h, got {self.utc_offset_s} s")
        self._check_zone()
        self._check_slots()

    def _check_zone(self) -> None:
        zone = self.time_zone
        if zone is None:
            return
        if not isinstance(zone, ZoneInfo) or zone.key is None:
            raise ValueError("History.time_zone must be a ZoneInfo made from its IANA name, e.g. "
                             "ZoneInfo('Europe/Berlin'): the input hash carries that name")
        if self.utc_offset_s:
            raise ValueError(f"History takes time_zone ({zone.key}, each day's own offset) or utc_offset_s "
                             f"(one fixed offset), not both; got utc_offset_s={self.utc_offset_s}")
        if not zone.key.isascii() or len(zone.key) > 255:
            raise ValueError(f"History.time_zone {zone.key!r}: the input hash takes an ASCII name "
                             "of at most 255 bytes")

    def _check_slots(self) -> None:
        previous: int | None = None
        for i, slot in enumerate(self.slots):
            where = f"History.slots[{i}] (start_s={slot.start_s})"
            if slot.start_s % self.slot_s:
                raise ValueError(f"{where} is not on the {self.slot_s} s grid (start_s % slot_s must be 0)")
            if previous is not None and slot.start_s <= previous:
                raise ValueError(f"{where} is not after the slot before it: sort by start_s, no duplicates")
            if not math.isfinite(slot.avg_w) or not 0.0 <= slot.coverage <= 1.0:
                raise ValueError(f"{where}: avg_w must be finite and coverage in 0..1, "
                                 f"got {slot.avg_w!r}, {slot.coverage!r}")
            previous = slot.start_s

    @property
    def zone_name(self) -> str | None:
        """The zone's IANA name as the input hash carries it; None for a fixed offset. UTC is the fixed
        offset 0 (the same calendar), so it hashes as `utc_offset_s=0` did before zones were known."""
        zone = self.time_zone
        return None if zone is None or zone.key == UTC_NAME else zone.key

    def utc_offset(self, t_s: int) -> int:
        """The UTC offset (s) in force at unix time `t_s`."""
        if self.time_zone is None:
            return self.utc_offset_s
        return _seconds(dt.datetime.fromtimestamp(t_s, self.time_zone).utcoffset())

    def local_date(self, t_s: int) -> dt.date:
        """The local calendar date of unix time `t_s`."""
        return EPOCH + dt.timedelta(days=(t_s + self.utc_offset(t_s)) // DAY_S)

    def is_working_day(self, day: dt.date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def local_text(self, t_s: int) -> str:
        return dt.datetime.fromtimestamp(t_s + self.utc_offset(t_s), dt.UTC).strftime("%Y-%m-%d %H:%M")

    def days_back(self, t_s: int, days: int) -> int:
        """Seconds from `t_s` back to the same local time of day `days` local days earlier.

        `days` x 86 400 s, moved by any change of the UTC offset in between (17:00 CEST back to a CET
        day is one hour less), in whole slots so that a slot maps onto a slot. A local time the earlier
        day skips or has twice (the hour of its DST change) takes the offset from before the change."""
        if self.time_zone is None:
            return days * DAY_S
        here = dt.datetime.fromtimestamp(t_s, self.time_zone)
        wall = here.replace(tzinfo=None) - dt.timedelta(days=days)
        there = wall.replace(tzinfo=self.time_zone, fold=0)
        change = _seconds(there.utcoffset()) - _seconds(here.utcoffset())
        return days * DAY_S + self.slot_s * round(change / self.slot_s)


def _seconds(offset: dt.timedelta | None) -> int:
    return int(offset.total_seconds()) if offset is not None else 0
