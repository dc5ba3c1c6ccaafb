"""`drgw demo`'s home history: simulated weeks written into the gateway's journals before it starts.

The demo's gateway is new, so it has measured nothing its bidder could learn from; a real gateway
learns for weeks before its forecast finds anything. The demo writes that history instead: weeks of a
synthetic household (gateway/demo/history.py) shaped like the simulated home (an EV wallbox at
10 A x 3 x 230 V = 6.9 kW whose comfort floor is 6 A, a 2 kW relay-switched boiler), as the gateway
itself would have journalled them: the levers' loads in the bid journal's `lever_slots` (what the
flexibility forecast reads, gateway/loop/lever_record.py) and the main meter's load in the DR
journal's `load_slots`, both in 5-minute slots.

The demo runs whenever it is started, but the household's flexibility is in its evening. So the
synthetic household lives on a clock shifted so that its EVENING_H falls on the demo's window: the
seeded days are real past days of the home's time zone with the synthetic evening at the demo's
hour. The demo says so in its output; nothing else is bent. The main meter's slots are 5-minute slots
(the forecasts' granularity); the demo's DR loop keeps 5-second slots for its pre-event baseline,
which it measures live in the lockout, so these are history to look at, not the baseline's inputs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.demo.history import Household, SyntheticHistory, generate
from gateway.forecast.series import SlotSeries
from gateway.loop.bid_journal import BidJournal
from gateway.loop.history import LoadSlot
from gateway.loop.journal import Journal
from gateway.loop.lever_record import LEVER_SLOT_S

# The demo home's household: an EV that charges on 9 evenings in 10 (weekends too) at the wallbox's
# 6.9 kW, a boiler on a higher duty than the preset (0.4: a bigger family's hot water), no battery
# (the simulated home has none), and no trips away in the seeded weeks.
DEMO_HOUSEHOLD = Household(ev=True, boiler=True, battery=False, ev_power_w=6900.0,
                           ev_weekday_p=0.9, ev_weekend_p=0.9, boiler_w=2000.0, boiler_duty=0.4,
                           trips_per_4_weeks=0.0)
EVENING_H = 19.0  # the synthetic household's hour placed on the demo's window (its EVs arrive ~18:30)
SEED = 13  # fixed: the same history for the same start time


@dataclass(frozen=True, slots=True, kw_only=True)
class Seeded:
    weeks: int
    start_s: int  # first seeded slot
    end_s: int  # end of the last seeded slot
    shift_min: int  # the synthetic clock minus the home's, minutes
    rows: int  # slots written (main meter and levers)


def evening_zone(at_s: int, *, home: dt.tzinfo, evening_h: float = EVENING_H) -> dt.timezone:
    """The fixed-offset clock on which `at_s` reads `evening_h` (to the 5-minute slot), as a shift of
    the home's own offset at that time. Whole slots: the synthetic midnights, where the history's
    slots start, stay on the slot grid the gateway's lever history is read on."""
    local = dt.datetime.fromtimestamp(at_s, home)
    offset = local.utcoffset() or dt.timedelta()
    step = LEVER_SLOT_S // 60
    shift = (round(evening_h * 60) - (local.hour * 60 + local.minute)) % 1440
    shift = round(shift / step) * step
    shift = shift - 1440 if shift > 720 else shift
    return dt.timezone(offset + dt.timedelta(minutes=shift))


def shift_minutes(zone: dt.timezone, *, home: dt.tzinfo, at_s: int) -> int:
    home_offset = dt.datetime.fromtimestamp(at_s, home).utcoffset() or dt.timedelta()
    return round(((zone.utcoffset(None) - home_offset).total_seconds()) / 60)


def synthetic(*, weeks: int, now_s: int, evening_at_s: int, home: dt.tzinfo,
              household: Household = DEMO_HOUSEHOLD, seed: int = SEED) -> SyntheticHistory:
    """`weeks` of the household up to the synthetic midnight before now, its evening at the demo's
    window time of day."""
    zone = evening_zone(evening_at_s, home=home)
    today = dt.datetime.fromtimestamp(now_s, zone).date()
    start = int(dt.datetime.combine(today - dt.timedelta(weeks=weeks), dt.time(), tzinfo=zone).timestamp())
    return generate(household, weeks=weeks, seed=seed, start_s=start, zone=zone, slot_s=LEVER_SLOT_S)


def seed_history(store: Path, *, weeks: int, now_s: int, evening_at_s: int, home: dt.tzinfo,
                 levers: Mapping[str, str], main: str) -> Seeded:
    """Write the history into the store file's journals. `levers`: the synthetic lever ("ev",
    "boiler") -> the gateway's lever key ("device.point"); levers not named are not written."""
    history = synthetic(weeks=weeks, now_s=now_s, evening_at_s=evening_at_s, home=home)
    rows = 0
    journal = Journal(store)
    try:
        with _transaction(journal.conn):
            journal.add_slots(main, _slots(history.meter))
        rows += len(history.meter.values)
    finally:
        journal.close()
    bids = BidJournal(store)
    try:
        with _transaction(bids.conn):
            for lever in history.levers:
                if lever.key in levers:
                    bids.add_lever_slots(levers[lever.key], _slots(lever.load))
                    rows += len(lever.load.values)
    finally:
        bids.close()
    zone = evening_zone(evening_at_s, home=home)
    return Seeded(weeks=weeks, start_s=history.meter.start_s, end_s=history.meter.end_s,
                  shift_min=shift_minutes(zone, home=home, at_s=evening_at_s), rows=rows)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction for weeks of rows: the journals autocommit each row (a sync per slot)."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _slots(series: SlotSeries) -> list[LoadSlot]:
    """Whole slots, fully covered, as the gateway's accumulator closes them."""
    s = series.slot_s
    return [LoadSlot(start_s=series.start_s + i * s, slot_s=s, energy_ws=w * s, covered_s=float(s))
            for i, w in enumerate(series.values) if w is not None]
