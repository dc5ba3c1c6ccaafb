"""Baselines on the household's time zone: each day read with its own UTC offset across real DST
changes, and an input hash that names the zone and does not depend on the host's TZ."""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.errors import ConfigError
from gateway.loop.baselines import HASH_TAG, ZONE_TAG, BaselineSpec, History, Method, Slot, compute
from gateway.loop.history import LoadSlot
from gateway.loop.journal import Journal
from gateway.loop.runner import DrLoop
from gateway.loop.settings import DrConfig, parse_dr
from gateway.measurement.eip712 import keccak256
from gateway.schema import Fields

DAY = 86_400
BERLIN, NEW_YORK, UTC = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("UTC")
TEN_IN_TEN = BaselineSpec.make(Method.TEN_IN_TEN, adjust=0)


def local(zone: ZoneInfo, day: dt.date, hh: int, mm: int = 0) -> int:
    """Unix seconds of the wall-clock time `day hh:mm` in `zone`."""
    return int(dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=zone).timestamp())


def offset(zone: ZoneInfo, t_s: int) -> int:
    delta = dt.datetime.fromtimestamp(t_s, zone).utcoffset()
    assert delta is not None
    return int(delta.total_seconds())


def slots(zone: ZoneInfo, *, until: int, days: int,
          level: Callable[[dt.datetime], float]) -> tuple[Slot, ...]:
    """300 s slots for `days` days before `until`, each as `level` says of its local start time."""
    return tuple(Slot(start_s=s, avg_w=level(dt.datetime.fromtimestamp(s, zone)), coverage=1.0)
                 for s in range(until - days * DAY, until, 300))


def marked(first: dt.date) -> Callable[[dt.datetime], float]:
    """1000 W + 1 W per day since `first` in the local 17:00-17:10 slots, 9000 W at every other time:
    a day read at the wrong offset (16:00 or 18:00 local) shows as 9000 W."""
    def level(t: dt.datetime) -> float:
        return 1000.0 + (t.date() - first).days if (t.hour, t.minute // 10) == (17, 0) else 9000.0
    return level


def weekdays_before(day: dt.date, n: int) -> list[dt.date]:
    out: list[dt.date] = []
    while len(out) < n:
        day -= dt.timedelta(days=1)
        if day.weekday() < 5:
            out.append(day)
    return sorted(out)


# --- the same local slot on both sides of a change ---------------------------------------------------------

@pytest.mark.parametrize(("zone", "event_day"), [
    (BERLIN, dt.date(2026, 3, 31)),    # Tuesday; CET -> CEST on Sunday 2026-03-29
    (BERLIN, dt.date(2026, 10, 27)),   # Tuesday; CEST -> CET on Sunday 2026-10-25
    (NEW_YORK, dt.date(2026, 3, 10)),  # Tuesday; EST -> EDT on Sunday 2026-03-08
    (NEW_YORK, dt.date(2026, 11, 3)),  # Tuesday; EDT -> EST on Sunday 2026-11-01
])
def test_day_matched_baseline_reads_the_same_local_slot_across_a_dst_change(
        zone: ZoneInfo, event_day: dt.date) -> None:
    first = event_day - dt.timedelta(days=30)
    start = local(zone, event_day, 17)
    history = History(slot_s=300, slots=slots(zone, until=start, days=30, level=marked(first)),
                      time_zone=zone)
    b = compute(TEN_IN_TEN, history, window_start_s=start, window_end_s=start + 600)
    days = weekdays_before(event_day, 10)
    # the ten days straddle the change: some have the event day's offset, some the other one
    assert {offset(zone, local(zone, d, 17)) for d in days} == {offset(zone, start),
                                                                 offset(zone, local(zone, first, 17))}
    assert len({offset(zone, local(zone, d, 17)) for d in days}) == 2
    expected = sum(1000.0 + (d - first).days for d in days) / 10
    assert b.days_used == tuple(days)
    assert b.slots_w == pytest.approx((expected, expected))


def test_one_fixed_offset_misreads_the_days_before_a_change() -> None:
    """What the loop did before: the event day's offset applied to the whole look-back."""
    event_day, first = dt.date(2026, 3, 31), dt.date(2026, 3, 1)
    start = local(BERLIN, event_day, 17)
    level = slots(BERLIN, until=start, days=30, level=marked(first))
    fixed = History(slot_s=300, slots=level, utc_offset_s=offset(BERLIN, start))
    b = compute(TEN_IN_TEN, fixed, window_start_s=start, window_end_s=start + 600)
    assert b.slots_w[0] > 8000  # nine of the ten days were read an hour off, at 9000 W


def test_offsets_and_local_dates_follow_the_zone() -> None:
    history = History(slot_s=300, slots=(), time_zone=BERLIN)
    winter, summer = local(BERLIN, dt.date(2026, 3, 27), 23, 30), local(BERLIN, dt.date(2026, 3, 30), 0, 30)
    assert (history.utc_offset(winter), history.utc_offset(summer)) == (3600, 7200)
    # 22:30 UTC on Sunday 2026-03-29 is already Monday in Berlin: a working day
    assert history.local_date(summer) == dt.date(2026, 3, 30)
    assert history.local_text(summer) == "2026-03-30 00:30"
    assert history.local_date(winter) == dt.date(2026, 3, 27)


@pytest.mark.parametrize(("day", "hh", "mm", "days", "back"), [
    (dt.date(2026, 3, 30), 17, 0, 1, DAY),  # 03-29 17:00 is CEST already (the change is at 02:00)
    (dt.date(2026, 3, 30), 17, 0, 2, 2 * DAY - 3600),  # 17:00 CEST -> 17:00 CET on 03-28: 47 h
    (dt.date(2026, 3, 30), 2, 30, 1, DAY - 3600),  # 02:30 is skipped on 03-29: the offset before the change
    (dt.date(2026, 10, 26), 2, 30, 1, DAY + 3600),  # 02:30 comes twice on 10-25: its first time (CEST)
    (dt.date(2026, 10, 26), 17, 0, 2, 2 * DAY + 3600),  # 17:00 CET -> 17:00 CEST on 10-24: 49 h
    (dt.date(2026, 7, 1), 17, 0, 30, 30 * DAY),
])
def test_days_back_moves_by_the_offset_change(day: dt.date, hh: int, mm: int, days: int, back: int) -> None:
    history = History(slot_s=300, slots=(), time_zone=BERLIN)
    assert history.days_back(local(BERLIN, day, hh, mm), days) == back
    assert History(slot_s=300, slots=(), utc_offset_s=7200).days_back(0, 3) == 3 * DAY


def test_an_offset_change_is_rounded_to_whole_slots() -> None:
    """Lord Howe Island moves its clock by 30 minutes (+10:30 <-> +11:00): with 1-hour slots that is
    half a slot, so the day is read at its nearest whole slot (round half to even: no move)."""
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    t = local(lord_howe, dt.date(2026, 4, 6), 17)  # the change back to +10:30 is on Sunday 2026-04-05
    assert History(slot_s=300, slots=(), time_zone=lord_howe).days_back(t, 2) == 2 * DAY + 1800
    assert History(slot_s=3600, slots=(), time_zone=lord_howe).days_back(t, 2) == 2 * DAY


@pytest.mark.parametrize(("fields", "message"), [
    ({"utc_offset_s": 3600, "time_zone": BERLIN}, "time_zone .* or utc_offset_s .* not both"),
    ({"time_zone": "Europe/Berlin"}, "must be a ZoneInfo made from its IANA name"),
])
def test_history_takes_one_calendar(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        History(slot_s=300, slots=(), **fields)  # type: ignore[arg-type]


# --- the input hash -----------------------------------------------------------------------------------------

START = int(dt.datetime(2026, 6, 2, 17, tzinfo=dt.UTC).timestamp())  # a Tuesday, 17:00 UTC
FLAT = tuple(Slot(start_s=s, avg_w=1000.0 + (s // DAY) % 7 * 10 + (s % DAY) / 3600, coverage=1.0)
             for s in range(START - 20 * DAY, START, 300))


@pytest.mark.parametrize(("spec", "pinned"), [
    # computed with the code before time zones (fixed offset 0): UTC keeps these hashes
    (BaselineSpec.make(Method.TEN_IN_TEN),
     "d3cca2a0be48107bd1833ea85fa4361c9e25560ebfa7138e6e070795faf13e78"),
    (BaselineSpec.make(Method.PRE_EVENT),
     "e7e63a53cfad30959054f2e84f9117508dc0fd671025556291ba564d216bcfe3"),
])
def test_utc_hashes_as_the_fixed_offset_zero_did(spec: BaselineSpec, pinned: str) -> None:
    for history in (History(slot_s=300, slots=FLAT), History(slot_s=300, slots=FLAT, time_zone=UTC)):
        b = compute(spec, history, window_start_s=START, window_end_s=START + 600)
        assert b.input_hash.hex() == pinned


def test_the_hash_names_the_zone() -> None:
    """In January Berlin is UTC+1 throughout: the same days and values as the fixed offset 3600,
    yet a different hash, because a verifier needs the zone to find the days again."""
    start = local(BERLIN, dt.date(2026, 1, 27), 17)
    level = slots(BERLIN, until=start, days=30, level=marked(dt.date(2025, 12, 28)))
    zoned = compute(TEN_IN_TEN, History(slot_s=300, slots=level, time_zone=BERLIN),
                    window_start_s=start, window_end_s=start + 600)
    fixed = compute(TEN_IN_TEN, History(slot_s=300, slots=level, utc_offset_s=3600),
                    window_start_s=start, window_end_s=start + 600)
    assert (zoned.slots_w, zoned.days_used) == (fixed.slots_w, fixed.days_used)
    assert zoned.input_hash != fixed.input_hash


def test_zone_encoding_is_as_documented() -> None:
    """docs/baselines.md, "Input hash": tag /2, then the zone's name where the offset was."""
    spec = BaselineSpec.make(Method.CONTRACTED, curve_w=[500.0, 600.0])
    b = compute(spec, History(slot_s=300, slots=(), time_zone=NEW_YORK),
                window_start_s=START, window_end_s=START + 600)
    name = b"America/New_York"
    encoding = (ZONE_TAG + struct.pack(">Hqqi", 1, START, START + 600, 300) + struct.pack(">B", len(name))
                + name + struct.pack(">H", 0) + struct.pack(">I", 2) + struct.pack(">dd", 500.0, 600.0)
                + struct.pack(">H", 0) + struct.pack(">I", 0))
    assert b.input_hash == keccak256(encoding)
    assert HASH_TAG == b"drgw-baseline/1" and ZONE_TAG == b"drgw-baseline/2"


# --- [dr] time_zone -----------------------------------------------------------------------------------------

def dr(table: dict[str, object]) -> Fields:
    return Fields(table, where="drgw.toml: dr", error=ConfigError)


def test_time_zone_defaults_to_utc_and_takes_an_iana_name() -> None:
    assert parse_dr(dr({}), writable={}, zones=ZoneInfo).time_zone == "UTC"
    berlin = parse_dr(dr({"time_zone": "Europe/Berlin"}), writable={}, zones=ZoneInfo)
    assert berlin.time_zone == "Europe/Berlin"


@pytest.mark.parametrize("name", ["Europe/Berln", "Europe", "CET+1", "/etc/localtime", "utc"])
def test_a_bad_time_zone_names_the_key_and_the_fix(name: str) -> None:
    with pytest.raises(ConfigError, match=r"drgw.toml: dr: time_zone: .* is not a time zone of the tz "
                                          r"database .* such as 'Europe/Berlin'"):
        parse_dr(dr({"time_zone": name}), writable={}, zones=ZoneInfo)


# --- the loop: the host's TZ does not matter ----------------------------------------------------------------

@pytest.fixture
def host_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets the process's TZ (the host's zone), as a gateway set up elsewhere would have it."""
    def set_tz(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
    yield set_tz
    monkeypatch.undo()
    time.tzset()


class NoPoints:
    async def write(self, device: str, name: str, value: float) -> None:
        raise AssertionError("no levers")

    async def read(self, device: str, name: str) -> float | None:
        raise AssertionError("no levers")


EVENT_DAY = dt.date(2026, 3, 31)
# 15:00-19:00 Berlin time of each day (the rest is missing data): an hour's misreading still shows
HISTORY = tuple(s for s in slots(BERLIN, until=local(BERLIN, EVENT_DAY, 17), days=30,
                                 level=marked(dt.date(2026, 3, 1)))
                if 15 <= dt.datetime.fromtimestamp(s.start_s, BERLIN).hour < 19)


def loop_baseline(db: Path, **zone: str) -> dict[str, Any]:
    """The baseline the loop journals when a ten-in-ten event starts at 17:00 Berlin time."""
    start = local(BERLIN, EVENT_DAY, 17)
    journal = Journal(db)
    journal.add_slots("main", [LoadSlot(start_s=s.start_s, slot_s=300, energy_ws=s.avg_w * 300, covered_s=300)
                               for s in HISTORY])
    config = DrConfig(baseline="ten_in_ten", pre_event_minutes=30, lead_minutes=1, tolerance=0.05,
                      max_window_minutes=60, hold_off_s=30, levers=(), slot_s=300,
                      baseline_params=(("adjust", 0),), **zone)
    now = [start - 30.0]
    loop = DrLoop(config=config, journal=journal, main_device="main", io=NoPoints(),
                  publish=lambda body: None, leaves=lambda a, b: [], clock=lambda: now[0])
    loop.accept(loop.from_command({"event_id": "e", "modification": 0, "start": start, "end": start + 600,
                                   "target_w": 500}))
    now[0] = float(start)

    async def begin() -> None:
        for tr in loop.book.advance(now[0]):
            await loop._transition(tr)

    asyncio.run(begin())
    row = journal.event("e")
    journal.close()
    assert row is not None and row.state == "active"
    return dict(row.body["baseline"])


@pytest.mark.parametrize("host", ["UTC", "America/New_York", "Asia/Kolkata", "Europe/Berlin"])
@pytest.mark.parametrize("config_zone", [None, "Europe/Berlin"])
def test_the_loops_baseline_does_not_depend_on_the_hosts_zone(
        tmp_path: Path, host_tz: Callable[[str], None], host: str, config_zone: str | None) -> None:
    host_tz(host)
    got = loop_baseline(tmp_path / "drgw.db", **({} if config_zone is None else {"time_zone": config_zone}))
    # the same as computed directly with the configured zone (UTC when [dr] names none)
    start = local(BERLIN, EVENT_DAY, 17)
    zone = ZoneInfo(config_zone or "UTC")
    want = compute(TEN_IN_TEN, History(slot_s=300, slots=HISTORY, time_zone=zone),
                   window_start_s=start, window_end_s=start + 600)
    assert got["input_hash"] == "0x" + want.input_hash.hex()
    assert got["days_used"] == [d.isoformat() for d in want.days_used]
    assert got["slots_w"] == pytest.approx(list(want.slots_w))
    if config_zone == "Europe/Berlin":  # the local 17:00 slot of every day, before and after 03-29
        assert max(got["slots_w"]) < 2000
