"""The levers' measured load, folded into slots for the bidder's flexibility forecast.

Part of the loop's shell: the agent hands it every committed sample (beside the DR loop); the samples
of lever devices become each lever's load in W (`lever_load_w`, pure) and, for a battery, its state
of charge, accumulated into LEVER_SLOT_S slots (gateway/loop/history.py) and journalled
(gateway/loop/bid_journal.py). `history` turns the journal back into the forecast's LeverHistory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.forecast.series import LeverHistory, SlotSeries
from gateway.loop.bid_journal import BidJournal
from gateway.loop.history import SlotAccumulator
from gateway.loop.market_settings import adds_load
from gateway.loop.policy import Lever
from gateway.perception.readings import Quality, Sample

LEVER_SLOT_S = 300  # 5 min: a 10-minute window spans whole slots; 288 rows a day per lever
POWER = "power_active_total_w"
SOC = "battery_soc_pct"
# Victron ESS (device_profiles/appliances/victron_ess.yaml, CCGX Modbus-TCP register list):
# /Dc/0/Current is positive while charging, /Ac/ActiveIn/Lx/P positive while drawing from AC-in.
DC_VOLTAGE, DC_CURRENT = "battery_voltage_v", "battery_current_a"
AC_PHASES = ("power_active_l1_w", "power_active_l2_w", "power_active_l3_w")


def lever_key(lever: Lever) -> str:
    return f"{lever.device}.{lever.point}"


def lever_load_w(lever: Lever, values: Mapping[str, float]) -> float | None:
    """The load the lever acts on, from one sample's readings of its device (None: not measured).

    setpoint (an EV charger): the device's own power; switch: the device's power when it measures
    one, else `expected_w` while the point is not `off`; battery: its discharge power (negative =
    charging) from DC voltage x current, else from the AC-in phases."""
    if lever.kind == "battery":
        if DC_VOLTAGE in values and DC_CURRENT in values:
            return -values[DC_VOLTAGE] * values[DC_CURRENT]
        if all(p in values for p in AC_PHASES):
            return -sum(values[p] for p in AC_PHASES)
        return -values[POWER] if POWER in values else None
    if POWER in values:
        return values[POWER]
    if lever.kind == "switch" and lever.point in values:
        return 0.0 if values[lever.point] == lever.off else lever.expected_w
    return None


def numbers(sample: Sample) -> dict[str, float]:
    """The sample's good numeric readings by name."""
    return {r.name: float(r.value) for r in sample.readings
            if r.quality is Quality.OK and isinstance(r.value, int | float)}


class LeverRecorder:
    """Sees every committed sample (the agent's SampleObserver); keeps each lever's slots."""

    def __init__(self, *, levers: Sequence[Lever], journal: BidJournal,
                 slot_s: int = LEVER_SLOT_S) -> None:
        self.levers, self.journal, self.slot_s = tuple(levers), journal, slot_s
        self.devices = {lever.device for lever in self.levers}
        gap = max(3.0 * slot_s, 30.0)
        self.loads = {lever_key(lv): SlotAccumulator(slot_s=slot_s, max_gap_s=gap) for lv in self.levers}
        self.socs = {lever_key(lv): SlotAccumulator(slot_s=slot_s, max_gap_s=gap)
                     for lv in self.levers if lv.kind == "battery"}
        self.soc_now: dict[str, float] = {}

    def on_sample(self, sample: Sample) -> None:
        if sample.device not in self.devices:
            return
        values = numbers(sample)
        for lever in self.levers:
            if lever.device != sample.device:
                continue
            key = lever_key(lever)
            load = lever_load_w(lever, values)
            if load is not None:
                self.journal.add_lever_slots(key, self.loads[key].add(sample.time, load))
            if key in self.socs and SOC in values:
                self.soc_now[key] = values[SOC]
                self.journal.add_lever_slots(f"{key}:soc", self.socs[key].add(sample.time, values[SOC]))

    def flush(self) -> None:
        """The slots still open (at shutdown), partial, so a restart merges into them."""
        for key, acc in self.loads.items():
            self.journal.add_lever_slots(key, acc.flush())
        for key, acc in self.socs.items():
            self.journal.add_lever_slots(f"{key}:soc", acc.flush())

    def soc(self, key: str, *, now_s: int) -> float | None:
        """A battery's state of charge now: the last sample's, else the newest journalled slot's."""
        if key in self.soc_now:
            return self.soc_now[key]
        slots = self.journal.lever_slots(f"{key}:soc", slot_s=self.slot_s, start_s=now_s - 86400,
                                         end_s=now_s + 1)
        return slots[-1].avg_w if slots and slots[-1].covered_s > 0 else None


def history(recorder: LeverRecorder, *, now_s: int, days: int,
            capacity_wh: Mapping[str, float], reserve_pct: float) -> list[LeverHistory]:
    """Each lever's LeverHistory over the last `days`, from the journal (None for unseen slots)."""
    slot_s = recorder.slot_s
    end = now_s // slot_s * slot_s
    start = end - days * 86400
    out = []
    for lever in recorder.levers:
        key = lever_key(lever)
        seen = {s.start_s: s.avg_w for s in recorder.journal.lever_slots(
            key, slot_s=slot_s, start_s=start, end_s=end) if s.covered_s > 0}
        values = tuple(seen.get(t) for t in range(start, end, slot_s))
        battery = lever.kind == "battery"
        out.append(LeverHistory(
            key=key, kind=lever.kind, full_w=lever.expected_w,
            load=SlotSeries(slot_s=slot_s, start_s=start, values=values),
            floor_w=floor_w(lever), add_w=lever.expected_w if adds_load(lever) else 0.0,
            soc_pct=recorder.soc(key, now_s=now_s) if battery else None,
            capacity_wh=capacity_wh.get(lever.device) if battery else None,
            reserve_pct=reserve_pct))
    return out


def floor_w(lever: Lever) -> float:
    """A setpoint's load at its comfort floor: `min` x the W per unit when the lever states it;
    else 0 (the shed is then bounded by expected_w alone)."""
    if lever.kind == "setpoint" and lever.min is not None and lever.power_w_per_unit is not None:
        return lever.min * lever.power_w_per_unit
    return 0.0
