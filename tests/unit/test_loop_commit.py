"""A market window's baseline is fixed and committed before the window (issue 13 §4, §6): the loop's
shell with a clock we set, a PointIO whose load follows its levers, a real SQLite journal and the
FakeMarketPort, which (like DRMarket) rejects a Report that does not match its window's commitment.

Rig: one main-meter sample a second; `[dr] lead_minutes = 1`, so the commitment is made at NEAR, 60 s
before the start; PRE_EVENT over 5 minutes of 10 s slots."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.chain.port import Award
from gateway.loop.journal import Journal
from gateway.loop.policy import Lever
from gateway.loop.runner import DrLoop
from gateway.loop.settings import DrConfig
from gateway.perception.readings import Quality, Reading, Sample
from gateway.testing.fake_market import FakeMarketPort

MARKET = "0x" + "ab" * 20
T0 = 1_800_000_000  # 2027-01-15 08:00:00 UTC
START, END = T0 + 400, T0 + 700  # a 300 s window; NEAR (the commitment) at T0 + 340
EVENT = f"chain:{MARKET}:3"


class Points:
    """Base load + EV (A x 690 W) + a 2 kW boiler; `extra_w` is anything else switched on."""

    def __init__(self, base_w: float = 1000.0) -> None:
        self.values = {("ev", "limit"): 10.0, ("boiler", "on"): 1.0}
        self.base_w, self.extra_w = base_w, 0.0

    async def write(self, device: str, name: str, value: float) -> None:
        self.values[(device, name)] = value

    async def read(self, device: str, name: str) -> float | None:
        return self.values[(device, name)]

    def load_w(self) -> float:
        return (self.base_w + self.extra_w + 690 * self.values[("ev", "limit")]
                + 2000 * self.values[("boiler", "on")])


def config(**changes: Any) -> DrConfig:
    base = DrConfig(
        baseline="pre_event", pre_event_minutes=5, lead_minutes=1, tolerance=0.05,
        max_window_minutes=60, hold_off_s=5, slot_s=10,
        levers=(Lever(device="ev", point="limit", kind="setpoint", min=6, priority=1, expected_w=2760),
                Lever(device="boiler", point="on", kind="switch", off=0, on=1, priority=2,
                      expected_w=2000)))
    return replace(base, **changes)


class Rig:
    def __init__(self, tmp_path: Path, *, cfg: DrConfig | None = None, points: Points | None = None,
                 market: FakeMarketPort | None = None, t: float = T0) -> None:
        self.t = float(t)
        self.points = points or Points()
        self.market = market or FakeMarketPort()
        self.journal = Journal(tmp_path / "drgw.db")
        self.published: list[Mapping[str, Any]] = []
        self.loop = DrLoop(config=cfg or config(), journal=self.journal, main_device="main",
                           io=self.points, publish=self.published.append, leaves=self._leaves,
                           market=self.market, market_address=MARKET, clock=lambda: self.t)

    @staticmethod
    def _leaves(start_ms: int, end_ms: int) -> list[tuple[int, bytes]]:
        # one measurement a second since T0: seq n was taken at T0 + n
        return [(s, s.to_bytes(32, "big")) for s in range(1, 2000) if start_ms <= (T0 + s) * 1000 < end_ms]

    async def run_until(self, until: float) -> None:
        while self.t < until:
            self.t += 1
            watts = self.points.load_w()
            self.loop.on_sample(Sample(device="main", time=self.t, poll=("fast",), readings=(
                Reading(name="power_active_total_w", value=watts, unit="W", quality=Quality.OK,
                        time=self.t),)))
            await self.loop._poll_market()
            for tr in self.loop.book.advance(self.t):
                await self.loop._transition(tr)
            await asyncio.sleep(0)
            while self.loop.tasks:
                await asyncio.gather(*self.loop.tasks)

    def kinds(self) -> list[str]:
        return [str(b.get("type")) + ("" if b.get("type") != "dr_state" else f":{b['to']}")
                for b in self.published]


def award(**changes: Any) -> Award:
    return replace(Award(window=3, start_s=START, end_s=END, award_w=4000, reduce=True,
                         tolerance_bps=500), **changes)


def test_the_baseline_is_committed_before_the_start_and_the_report_matches_it(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.market.awards.append(award())
    asyncio.run(rig.run_until(START - 1))
    # committed at NEAR, before the window: 1000 + 6900 + 2000 = 9900 W before it, flat;
    # 9900 W x 300 s / 3600 = 825 Wh
    (commit,) = rig.market.commit_calls
    assert (commit.window, commit.method, commit.baseline_wh) == (3, 2, 825)
    kinds = rig.kinds()
    assert kinds.index("dr_state:near") < kinds.index("dr_baseline") and "dr_state:active" not in kinds
    body = next(b for b in rig.published if b["type"] == "dr_baseline")
    assert (body["method"], body["baseline_wh"], body["chain_state"]) == ("pre_event", 825, "accepted")
    assert body["input_hash"] == "0x" + commit.input_hash.hex()
    row = rig.journal.event(EVENT)
    assert row is not None and row.state == "near" and row.body["commitment"]["baseline_wh"] == 825
    asyncio.run(rig.run_until(END + 5))
    (report,) = rig.market.reports  # the fake accepts only a Report that matches the commitment
    assert not rig.market.rejected
    assert (report.baseline_method, report.baseline_input_hash, report.baseline_wh) == (
        commit.method, commit.input_hash, commit.baseline_wh)
    assert rig.market.commit_calls == [commit]  # committed once


def test_pre_event_reads_only_measurements_made_before_the_commitment(tmp_path: Path) -> None:
    """A 5 kW load switched on between the commitment (T0 + 340) and the start (T0 + 400) would
    raise a pre-event average ending at the start to 9900 + 5000 x 60 / 300 = 10 900 W (908 Wh);
    ending at the commitment it stays 9900 W: 825 Wh."""
    rig = Rig(tmp_path)
    rig.market.awards.append(award())
    asyncio.run(rig.run_until(START - 60))
    rig.points.extra_w = 5000.0
    asyncio.run(rig.run_until(START))
    rig.points.extra_w = 0.0
    asyncio.run(rig.run_until(END + 5))
    (report,) = rig.market.reports
    assert report.baseline_wh == 825 and rig.market.commits[3].baseline_wh == 825


def test_a_restart_between_commitment_and_start_keeps_the_committed_baseline(tmp_path: Path) -> None:
    """The first process commits (825 Wh, as above) and stops at T0 + 370. The second one sees a
    4 kW higher load from then on: recomputed, any baseline would differ; read back, it does not,
    and it is not committed again."""
    market = FakeMarketPort()
    first = Rig(tmp_path, market=market)
    market.awards.append(award())
    asyncio.run(first.run_until(START - 30))
    committed = market.commits[3]
    first.journal.close()
    points = Points(base_w=5000.0)
    second = Rig(tmp_path, market=market, points=points, t=first.t)
    second.loop._restore()
    asyncio.run(second.run_until(END + 5))
    assert market.commit_calls == [committed]
    assert "dr_baseline" not in second.kinds()
    (report,) = market.reports
    assert report.baseline_wh == committed.baseline_wh == 825
    assert report.baseline_input_hash == committed.input_hash


def test_a_contracted_curve_for_a_market_award(tmp_path: Path) -> None:
    """[dr.contracted] "00:00" = 3000 W, "08:10" = 6000 W (UTC). The window 08:06:40..08:11:40 has
    200 s at 3000 W and 100 s at 6000 W: 3000 x 200 / 3600 + 6000 x 100 / 3600 = 333.3 -> 333 Wh."""
    cfg = config(baseline="contracted", contracted=((0, 3000.0), (8 * 3600 + 600, 6000.0)))
    rig = Rig(tmp_path, cfg=cfg)
    rig.market.awards.append(award())
    asyncio.run(rig.run_until(END + 5))
    assert "dr_error" not in rig.kinds()
    commit = rig.market.commits[3]
    assert (commit.method, commit.baseline_wh) == (1, 333)
    (report,) = rig.market.reports
    assert (report.baseline_method, report.baseline_wh, report.baseline_input_hash) == (
        1, 333, commit.input_hash)
    slots = rig.journal.event(EVENT).body["baseline"]["slots_w"]  # type: ignore[union-attr]
    assert slots == [3000.0] * 20 + [6000.0] * 10  # 10 s slots: 20 before 08:10, 10 after


def test_a_contracted_award_without_a_curve_is_refused_with_the_fix(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cfg=config(baseline="contracted"))
    rig.market.awards.append(award())
    asyncio.run(rig.run_until(T0 + 2))
    assert EVENT not in [e.event_id for e in rig.loop.book.events()]
    assert not rig.market.commit_calls


def test_an_exporting_household_reports_negative_energies(tmp_path: Path) -> None:
    """PV: base load -12 kW, so the home exports 12000 - 6900 - 2000 = 3100 W before the window.
    Baseline -3100 W x 300 s / 3600 = -258.3 -> floor -259 Wh. In the window the EV goes to 6 A and
    the boiler off, so the export grows: actual is more negative, delivered = baseline - actual > 0."""
    rig = Rig(tmp_path, points=Points(base_w=-12_000.0))
    rig.market.awards.append(award())
    asyncio.run(rig.run_until(END + 5))
    (report,) = rig.market.reports
    assert report.baseline_wh == -259 == rig.market.commits[3].baseline_wh
    assert report.actual_wh < report.baseline_wh < 0
    assert report.delivered_wh == report.baseline_wh - report.actual_wh > 0


def test_a_rejected_commitment_is_a_dr_error_and_the_loop_still_acts(tmp_path: Path) -> None:
    rig = Rig(tmp_path, market=FakeMarketPort(commit_error="BaselineTooLate(3, 1800000400)"))
    rig.market.awards.append(award())
    asyncio.run(rig.run_until(END + 5))
    errors = [b for b in rig.published if b["type"] == "dr_error"]
    assert len(errors) == 1 and errors[0]["event_id"] == EVENT
    assert "baseline commitment rejected: BaselineTooLate(3, 1800000400)" in errors[0]["reason"]
    body = next(b for b in rig.published if b["type"] == "dr_baseline")
    assert body["chain_state"] == "rejected"
    assert any(b["type"] == "dr_action" for b in rig.published)  # it acted in the window
    assert not rig.market.reports and "BaselineNotCommitted" in rig.market.rejected[0][1]


def test_a_queued_commitment_is_sent_again_until_it_lands(tmp_path: Path) -> None:
    """The node is down for the first two tries (polls at T0 + 340, 341); the third lands."""
    rig = Rig(tmp_path, market=FakeMarketPort(queue_commits=2))
    rig.market.awards.append(award())
    asyncio.run(rig.run_until(START - 30))
    assert len(rig.market.commit_calls) == 3 and 3 in rig.market.commits
    states = [b["chain_state"] for b in rig.published if b["type"] == "dr_baseline"]
    assert states == ["queued", "accepted"]  # the second "queued" is no news
    asyncio.run(rig.run_until(END + 5))
    assert len(rig.market.reports) == 1


def test_a_commitment_still_queued_at_the_start_is_a_dr_error(tmp_path: Path) -> None:
    rig = Rig(tmp_path, market=FakeMarketPort(queue_commits=10_000))
    rig.market.awards.append(award())
    asyncio.run(rig.run_until(START + 5))
    errors = [b["reason"] for b in rig.published if b["type"] == "dr_error"]
    assert len(errors) == 1 and "not committed before the window started" in errors[0]
    assert EVENT in rig.loop.active  # acting all the same


def test_compute_with_inputs_end_reads_only_slots_ended_by_then() -> None:
    """Pure: 100 W in the slots before 300 s, 1000 W from 300 s on (60 s slots). A PRE_EVENT of 5
    minutes for the window [600, 900) averages [300, 600): 1000 W. Committed at 330 s, the cut is on
    the grid at 300 s: it averages [0, 300): 100 W; a commit at 300 s reads the same slots."""
    from gateway.loop.baselines import BaselineSpec, History, Method, Slot, compute

    history = History(slot_s=60, slots=tuple(
        Slot(start_s=s, avg_w=100.0 if s < 300 else 1000.0, coverage=1.0) for s in range(0, 600, 60)))
    spec = BaselineSpec.make(Method.PRE_EVENT, minutes=5)
    at_start = compute(spec, history, window_start_s=600, window_end_s=900)
    committed = compute(spec, history, window_start_s=600, window_end_s=900, inputs_end_s=330)
    on_grid = compute(spec, history, window_start_s=600, window_end_s=900, inputs_end_s=300)
    assert at_start.slots_w == (1000.0,) * 5 and at_start.inputs_end_s is None
    assert committed.slots_w == (100.0,) * 5 and committed.inputs_end_s == 300
    assert committed.input_hash == on_grid.input_hash != at_start.input_hash
