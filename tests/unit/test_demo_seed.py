"""The demo's seeded history (gateway/demo/seed.py): where its evening lands, and that the gateway's
own lever history reads it back on its slot grid."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from gateway.demo.seed import evening_zone, seed_history
from gateway.loop.bid_journal import BidJournal
from gateway.loop.lever_record import LeverRecorder, history
from gateway.loop.policy import Lever

# 2026-03-04 (a Wednesday) 14:23:00 UTC: 1772634180 = 20516 days x 86400 + 14 h 23 min
AT = 1772634180


def test_evening_falls_on_the_demo_hour_to_the_slot() -> None:
    zone = evening_zone(AT, home=dt.UTC, evening_h=19.0)
    # 19:00 - 14:23 = +4 h 37 min, to the 5-minute slot: +4 h 35 min
    assert zone.utcoffset(None) == dt.timedelta(hours=4, minutes=35)
    assert dt.datetime.fromtimestamp(AT, zone).strftime("%H:%M") == "18:58"


def test_seeded_levers_are_read_back_by_the_bidders_history(tmp_path: Path) -> None:
    store = tmp_path / "drgw.db"
    seeded = seed_history(store, weeks=1, now_s=AT, evening_at_s=AT + 60, home=dt.UTC,
                          levers={"ev": "ev.ev_current_limit_a"}, main="main")
    assert seeded.start_s % 300 == 0 and seeded.end_s - seeded.start_s == 7 * 86400
    lever = Lever(device="ev", point="ev_current_limit_a", kind="setpoint", min=6.0, priority=1,
                  expected_w=2760.0, power_w_per_unit=690.0)
    journal = BidJournal(store)
    try:
        got = history(LeverRecorder(levers=[lever], journal=journal), now_s=AT, days=8,
                      capacity_wh={}, reserve_pct=20.0)
    finally:
        journal.close()
    seen = [v for v in got[0].load.values if v is not None]
    # one week of 5-minute slots: 7 x 288 = 2016, every one read back (none off the grid)
    assert len(seen) == 2016 and max(seen) > 6000  # the car charged at ~6.9 kW on some evening
