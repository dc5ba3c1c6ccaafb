"""The latest-values map (gateway.network.latest) and the gateway's DR and market figures
(gateway.network.ha_gateway) that Home Assistant's state topics carry."""

from __future__ import annotations

import pytest

from gateway.measurement.record import Measurement, ScaledReading
from gateway.network import ha_gateway
from gateway.network.latest import LatestValues


def test_a_device_state_carries_every_point_read_so_far() -> None:
    latest = LatestValues()
    # a fast cycle (power), then a slow one (energy): the second message still has the power
    latest.update("main", {"power_active_total_w": 1830.0}, time_ms=1000)
    latest.update("main", {"energy_import_total_wh": 98765.0}, time_ms=2000)
    assert latest.payload("main") == {"power_active_total_w": 1830.0, "energy_import_total_wh": 98765.0,
                                      "ts": 2000}
    latest.update("main", {"power_active_total_w": 1700.0}, time_ms=3000)
    assert latest.payload("main")["power_active_total_w"] == 1700.0
    assert latest.take_changed() == ("main",) and latest.take_changed() == ()


def test_an_older_sample_does_not_turn_a_value_back() -> None:
    latest = LatestValues()
    latest.update("main", {"power_active_total_w": 1700.0}, time_ms=3000)
    latest.update("main", {"power_active_total_w": 1.0, "frequency_hz": 50.0}, time_ms=1000)
    assert latest.payload("main") == {"power_active_total_w": 1700.0, "frequency_hz": 50.0, "ts": 3000}


def test_committed_records_at_their_value_and_time() -> None:
    latest = LatestValues()
    record = Measurement(gateway="0x" + "11" * 20, device="pv", seq=1, time_ms=1_700_000_000_123,
                         clock_synced=True, prev_hash=b"\0" * 32, readings=(
                             ScaledReading("power_active_total_w", -2_400_500, "W", 0),  # -2400.5 W
                             ScaledReading("voltage_l1_v", 230_100, "V", 0),  # 230.1 V
                             ScaledReading("frequency_hz", 0, "Hz", 2)))  # quality 2 (error): left out
    latest.committed([record])
    snap = latest.get("pv")
    assert snap is not None and snap.time_ms == 1_700_000_000_123
    assert dict(snap.values) == {"power_active_total_w": -2400.5, "voltage_l1_v": 230.1}
    assert latest.get("main") is None


def test_ts_is_no_point_name() -> None:
    with pytest.raises(ValueError, match="time key"):
        LatestValues().update("main", {"ts": 1.0}, time_ms=1)


def test_dr_figures_from_event_bodies() -> None:
    # the bodies as docs/mqtt.md's `event` table lists them
    added = {"type": "dr_event", "change": "added", "event_id": "e1", "state": "pending", "award_w": 1400}
    assert ha_gateway.dr_values(added) == {
        "dr_event": "e1", "dr_award_w": 1400.0, "dr_state": "pending", "dr_delivered_wh": None,
        "dr_required_wh": None, "dr_projected_wh": None, "dr_verdict": None}
    assert ha_gateway.dr_values({"type": "dr_state", "event_id": "e1", "from": "near", "to": "active"}) == {
        "dr_state": "active", "dr_event": "e1"}
    live = {"type": "dr_live", "delivered_wh": 6.21, "projected_wh": 9.04, "required_wh": 11.08}
    assert ha_gateway.dr_values(live) == {"dr_delivered_wh": 6.21, "dr_required_wh": 11.08,
                                          "dr_projected_wh": 9.04}
    verdict = {"type": "dr_verdict", "delivered_wh": 20, "required_wh": 12, "performed": True}
    assert ha_gateway.dr_values(verdict)["dr_verdict"] == "performed"
    assert ha_gateway.dr_values({**verdict, "performed": False})["dr_verdict"] == "short"
    assert ha_gateway.dr_values({"type": "dr_action", "device": "ev"}) == {}


def test_market_figures_in_tokens() -> None:
    # Bidder.status: milli-tokens; 396 mtok paid = 0.396 tokens, 140000 mtok held = 140 tokens
    status = {"paid_mtok": 396, "net_mtok": 396, "held_deposit_mtok": 140_000, "enabled": True}
    assert ha_gateway.market_values(status) == {"earned_tokens": 0.396, "net_earned_tokens": 0.396,
                                                "deposit_held_tokens": 140.0}
