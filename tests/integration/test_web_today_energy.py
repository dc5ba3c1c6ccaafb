"""Today's energy on the local page: the meter's counter now minus its first good value stored since
local midnight, read from a real store of signed records (gateway/measurement/store)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.agent.web.household import TodayEnergy, devices
from gateway.agent.web.live import LiveState
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain
from gateway.measurement.store import Store
from gateway.perception.readings import Quality, Reading, Sample

KEY = GatewayKey.generate()
BERLIN = ZoneInfo("Europe/Berlin")
# 2026-03-10 00:00 in Berlin is 2026-03-09 23:00 UTC (CET, UTC+1)
MIDNIGHT_S = int(dt.datetime(2026, 3, 9, 23, 0, tzinfo=dt.UTC).timestamp())
ENERGY = "energy_import_total_wh"


def store_with(path: Path, rows: list[tuple[str, int, list[ScaledReading]]]) -> None:
    """(device, seconds from local midnight, readings) as signed, committed records."""
    chain = MeasurementChain(gateway=KEY.address, last_seq=0, last_hash=b"\0" * 32)
    signed = [chain.next_signed(KEY, measurement_domain(), device=dev,
                                time_ms=(MIDNIGHT_S + t) * 1000, clock_synced=True, readings=r)
              for dev, t, r in rows]
    with Store(path) as store:
        store.commit(signed, "drgw/v1/gw/meas")


def test_today_is_the_counter_now_minus_its_first_good_value_since_local_midnight(
        tmp_path: Path) -> None:
    db = tmp_path / "drgw.db"
    # values x 10^3 on the wire (docs/measurements.md); quality 2 = error
    store_with(db, [
        ("main", -60, [ScaledReading(ENERGY, 1_000_000, "Wh", 0)]),   # yesterday: 1000 Wh
        ("main", 5, [ScaledReading("power_active_total_w", 500_000, "W", 0)]),  # no counter
        ("main", 10, [ScaledReading(ENERGY, 0, "Wh", 2)]),             # a failed read
        ("main", 15, [ScaledReading(ENERGY, 1_250_500, "Wh", 0)]),     # first of today: 1250.5
        ("ev", 20, [ScaledReading(ENERGY, 7_000, "Wh", 0)]),
    ])
    live = LiveState()
    now_s = MIDNIGHT_S + 3600.0
    live.on_sample(Sample(device="main", time=now_s, poll=("slow",), readings=(
        Reading(ENERGY, 1_300.0, "Wh", Quality.OK, now_s),
        Reading("power_active_total_w", 2_000.0, "W", Quality.OK, now_s))))
    energy = TodayEnergy(db, zone=BERLIN)
    try:
        assert energy.midnight_ms(now_s) == MIDNIGHT_S * 1000
        rows = devices([("main", "main", "eastron_sdm630"), ("ev", "appliance", "x"),
                        ("boiler", "appliance", "y")], live, energy, now_s=now_s)
    finally:
        energy.close()
    main, ev, boiler = rows
    assert main["import_today_wh"] == 1_300.0 - 1_250.5  # 49.5 Wh since midnight
    assert main["power_w"] == 2_000.0 and main["export_today_wh"] is None  # no export counter read
    assert ev["import_today_wh"] is None  # stored, but no value of it has been seen live yet
    assert boiler == {"name": "boiler", "role": "appliance", "profile": "y", "power_w": None,
                      "power_time_ms": None, "import_today_wh": None, "export_today_wh": None}
