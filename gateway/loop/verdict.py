"""Judgement of a DR event at its window's end, in the contract's integers (docs/market.md).

The gateway judges itself exactly as DRMarket.check() will: the delivered Wh of the Report against
the award, by `gateway.market.model.verdict`. Energies become whole Wh here, once:

- baselineWh = the baseline's energy over the whole window (recomputable by anyone from the
  baseline's inputs, which the Report commits to by hash);
- actualWh = the measured energy over the covered time + the baseline's energy over the missing
  time: a gap in the data delivers nothing, neither credit nor penalty beyond its lost response;
- both signed (int64: a household exporting during the window reports a negative energy and is
  credited fully) and rounded down to whole Wh, i.e. toward minus infinity for negative energies too:
  floor(x + n) = floor(x) + n, so delivered = floor(B) - floor(A) does not depend on where zero lies
  (toward-zero would make the bucket around 0 two Wh wide); docs/closed-loop.md, "Verdict";
- deliveredWh = baselineWh - actualWh (REDUCE) or actualWh - baselineWh (INCREASE), which is the
  contract's consistency rule (ReportInconsistent otherwise).

`report()` puts a market event's verdict into the Report the gateway signs, with the window's
measurements as a seq range and their Merkle root.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.chain.report import Report
from gateway.errors import DrgwError
from gateway.loop.checker import BaselineLike, CheckState
from gateway.loop.events import Direction, DrEvent
from gateway.market.model import Outcome, delivered_wh, verdict
from gateway.measurement import merkle

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the Report's baselineWh / actualWh (DRMarket.sol)
# Float sums of Wh carry noise of ~1e-12 Wh; without this 1000 Wh computed as 999.9999999999 would
# round down to 999. A µWh is far below any meter's resolution.
_NOISE_WH = 1e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """An event's result in Report units. `required_wh` is the least whole deliveredWh that performs;
    `shortfall_wh` = max(0, required - delivered)."""

    event_id: str
    window: int | None
    baseline_wh: int
    actual_wh: int
    delivered_wh: int
    award_w: int
    seconds: int
    tolerance_bps: int
    required_wh: int
    performed: bool
    shortfall_wh: int
    coverage: float


def whole_wh(energy_wh: float) -> int:
    """An energy (signed: negative is net export) in whole Wh for an int64 Report field: floor, for
    either sign. Outside int64 it is an error, never clamped (a meter cannot get there: 2^63 Wh)."""
    if not math.isfinite(energy_wh):
        raise ValueError(f"energy {energy_wh} Wh is not finite")
    whole = math.floor(energy_wh + _NOISE_WH)
    if not INT64_MIN <= whole <= INT64_MAX:
        raise ValueError(f"energy {energy_wh:g} Wh does not fit the Report's int64 field")
    return whole


def required_wh(award_w: int, seconds: int, tolerance_bps: int) -> int:
    """Least whole Wh that performs: ceil(award x seconds x (10000 - tolerance) / (3600 x 10000))."""
    need = award_w * seconds * (10_000 - tolerance_bps)
    return -(-need // 36_000_000)


def judge(event: DrEvent, final_state: CheckState, baseline: BaselineLike) -> Verdict:
    """The verdict of `event` from the checker's `final()` state and the event's baseline."""
    full_baseline_wh = baseline.energy_wh(event.start_s, event.end_s)
    missing_baseline_wh = full_baseline_wh - final_state.baseline_wh
    actual_filled_wh = final_state.actual_wh + missing_baseline_wh
    base, actual = whole_wh(full_baseline_wh), whole_wh(actual_filled_wh)
    delivered = delivered_wh(reduce=event.direction is Direction.REDUCE, baseline_wh=base,
                             actual_wh=actual)
    performed = verdict(delivered, event.award_w, event.seconds, event.tolerance_bps) is Outcome.PERFORMED
    required = required_wh(event.award_w, event.seconds, event.tolerance_bps)
    return Verdict(
        event_id=event.event_id, window=event.window, baseline_wh=base, actual_wh=actual,
        delivered_wh=delivered, award_w=event.award_w, seconds=event.seconds,
        tolerance_bps=event.tolerance_bps, required_wh=required, performed=performed,
        shortfall_wh=max(0, required - delivered), coverage=final_state.coverage,
    )


def report(event: DrEvent, result: Verdict, *, household: str, baseline_method: int, input_hash: bytes,
           leaves: Sequence[tuple[int, bytes]]) -> Report:
    """The Report of a market event. `leaves` are the window's measurements as (seq, struct hash),
    in seq order: the Report names their range and commits to them by Merkle root."""
    if event.window is None:
        raise ValueError(f"event {event.event_id} is not a market window: it has no Report")
    if not leaves:
        raise DrgwError(f"event {event.event_id}: no measurements in the window to report")
    return Report(
        household=household, window=event.window, seq_from=leaves[0][0], seq_to=leaves[-1][0],
        window_start=event.start_s, window_end=event.end_s, baseline_method=baseline_method,
        baseline_input_hash=input_hash, baseline_wh=result.baseline_wh, actual_wh=result.actual_wh,
        delivered_wh=result.delivered_wh, merkle_root=merkle.root([leaf for _, leaf in leaves]))
