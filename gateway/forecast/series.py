"""The forecast package's inputs and outputs (shared by the forecasters and the loop's bidder)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotSeries:
    """Average W of consecutive slots: slot i covers [start_s + i x slot_s, start_s + (i+1) x slot_s).
    None = no data for that slot (the gateway was off, the meter silent)."""

    slot_s: int
    start_s: int
    values: tuple[float | None, ...]

    @property
    def end_s(self) -> int:
        return self.start_s + self.slot_s * len(self.values)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeverHistory:
    """One lever ([[dr.lever]]) and what was measured of it.

    `kind`: "setpoint" (e.g. an EV charger's current limit), "switch" (a relay-switched load) or
    "battery" (a discharge setpoint). `full_w`: the load it sheds (REDUCE) or adds (INCREASE) when
    fully used (the lever's expected_w). `floor_w`: a setpoint's load at its comfort floor (it cannot
    shed below that). `load`: the lever device's own measured load in W (an EV charger's power, a
    switched load's on-state x its rating); for a battery its measured discharge power (negative =
    charging). `soc_pct`, `capacity_wh`, `reserve_pct`: a battery's state of charge now, its usable
    capacity and the floor it must keep."""

    key: str
    kind: str
    full_w: float
    load: SlotSeries
    floor_w: float = 0.0
    add_w: float = 0.0  # INCREASE: the load it can add when fully used (0 = cannot)
    soc_pct: float | None = None
    capacity_wh: float | None = None
    reserve_pct: float = 20.0
