"""Action policy: escalation by priority with hold-off, comfort floor and max-off, release, restore."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from gateway.errors import ConfigError
from gateway.loop.checker import CheckState
from gateway.loop.policy import Action, ActionPolicy, Lever

EV = Lever(device="ev", point="current_a", kind="setpoint", priority=1, expected_w=2300, min=6, step=4,
           power_w_per_unit=230)
BOILER = Lever(device="boiler", point="relay", kind="switch", priority=2, expected_w=2000, off=0, on=1,
               max_off_s=600, min_on_s=300)
BATTERY = Lever(device="bat", point="discharge_w", kind="battery", priority=3, expected_w=3000,
                max_w=3000)
NOW = {EV.key: 16.0, BOILER.key: 1.0, BATTERY.key: 0.0}


def state(projected: float, *, required: float = 300.0, remaining: float = 300.0) -> CheckState:
    return CheckState(t_s=0.0, baseline_w=3000.0, actual_w=1500.0, performance_w=1500.0,
                      deviation_w=-500.0, recent_w=1500.0, baseline_wh=0.0, actual_wh=0.0,
                      delivered_wh=0.0, projected_wh=projected, required_wh=required,
                      remaining_s=remaining, covered_s=0.0, coverage=1.0,
                      shortfall=projected < required)


SHORT = state(200.0)


def moves(actions: list[Action]) -> list[tuple[str, float, float]]:
    return [(a.device, a.previous, a.value) for a in actions]


def test_escalates_by_priority_one_step_per_decision_with_hold_off() -> None:
    # config order differs from priority order on purpose
    policy = ActionPolicy([BATTERY, BOILER, EV], hold_off_s=30)
    timeline = {t: moves(policy.decide(SHORT, now_s=t, current=NOW)) for t in range(0, 181, 10)}
    assert {t: m for t, m in timeline.items() if m} == {
        0: [("ev", 16, 12)], 30: [("ev", 12, 8)], 60: [("ev", 8, 6)],  # 6 A comfort floor, not 4
        90: [("boiler", 1, 0)], 120: [("bat", 0, 3000)],
    }
    first = policy.log[0]
    assert (first.t_s, first.point, first.priority) == (0, "current_a", 1)
    assert first.reason == "shortfall: projected 200 Wh < required 300 Wh"
    assert dict(policy.touched()) == {EV.key: 16.0, BOILER.key: 1.0, BATTERY.key: 0.0}


def test_no_escalation_without_shortfall_or_time_left() -> None:
    policy = ActionPolicy([EV])
    assert policy.decide(state(300.0), now_s=0, current=NOW) == []  # exactly enough: no shortfall
    assert policy.decide(state(0.0, remaining=0), now_s=0, current=NOW) == []
    assert policy.log == [] and policy.touched() == {}


def test_levers_at_their_limit_or_without_a_known_value_are_skipped() -> None:
    policy = ActionPolicy([EV, BOILER, BATTERY], hold_off_s=0)
    current = {EV.key: 6.0, BOILER.key: 0.0}  # EV at its floor, boiler already off, battery unknown
    assert policy.decide(SHORT, now_s=0, current=current) == []
    assert policy.touched() == {}


def test_a_setpoint_without_step_goes_straight_to_its_floor() -> None:
    lever = Lever(device="ev", point="current_a", kind="setpoint", expected_w=2300, min=6)
    assert moves(ActionPolicy([lever]).decide(SHORT, now_s=0, current=NOW)) == [("ev", 16, 6)]


def test_max_off_restores_the_switch_even_in_the_window_then_min_on_holds_it() -> None:
    policy = ActionPolicy([BOILER], hold_off_s=30)
    assert moves(policy.decide(SHORT, now_s=0, current=NOW)) == [("boiler", 1, 0)]
    assert policy.decide(SHORT, now_s=599, current=NOW) == []
    restore = policy.decide(SHORT, now_s=600, current=NOW)
    assert moves(restore) == [("boiler", 0, 1)]
    assert restore[0].reason == "comfort limit: off for 600 s, max_off_s 600"
    assert policy.decide(SHORT, now_s=899, current=NOW) == []  # min_on_s 300
    assert moves(policy.decide(SHORT, now_s=900, current=NOW)) == [("boiler", 1, 0)]


def test_a_comfort_restore_is_never_undone_in_the_same_decision() -> None:
    boiler = Lever(device="boiler", point="relay", kind="switch", expected_w=2000, off=0, on=1,
                   max_off_s=60)  # min_on_s 0
    policy = ActionPolicy([boiler], hold_off_s=0)
    policy.decide(SHORT, now_s=0, current=NOW)
    assert moves(policy.decide(SHORT, now_s=60, current=NOW)) == [("boiler", 0, 1)]
    assert moves(policy.decide(SHORT, now_s=61, current=NOW)) == [("boiler", 1, 0)]


def test_release_in_reverse_priority_only_while_the_surplus_covers_it() -> None:
    ev_floor = Lever(device="ev", point="current_a", kind="setpoint", priority=1, expected_w=2300, min=6)
    policy = ActionPolicy([ev_floor, BOILER], hold_off_s=30, margin=0.1)
    policy.decide(SHORT, now_s=0, current=NOW)
    policy.decide(SHORT, now_s=30, current=NOW)
    assert [a.device for a in policy.log] == ["ev", "boiler"]
    surplus = state(500.0)
    # boiler first: 2000 W x 300 s = 166.7 Wh, 500 - 166.7 >= 330 (300 + 10 %)
    assert policy.decide(surplus, now_s=59, current=NOW) == []  # hold-off
    released = policy.decide(surplus, now_s=60, current=NOW)
    assert moves(released) == [("boiler", 0, 1)]
    assert released[0].reason == "surplus: projected 500 Wh - 167 Wh released >= 330 Wh"
    # then the EV: 2300 W x 300 s = 191.7 Wh would leave 308 < 330: it stays down
    assert policy.decide(surplus, now_s=90, current=NOW) == []
    assert moves(policy.decide(state(530.0), now_s=90, current=NOW)) == [("ev", 6, 16)]


def test_stepped_release_uses_the_per_unit_estimate() -> None:
    policy = ActionPolicy([EV], hold_off_s=0)
    for t in range(3):
        policy.decide(SHORT, now_s=t, current=NOW)  # 16 -> 12 -> 8 -> 6
    # one step back is 6 -> 10 A = 4 A x 230 W = 920 W over 3600 s = 920 Wh
    assert policy.decide(state(1200.0, remaining=3600), now_s=3, current=NOW) == []
    assert moves(policy.decide(state(1250.0, remaining=3600), now_s=4, current=NOW)) == [("ev", 6, 10)]


def test_restore_all_puts_every_touched_point_back_in_reverse_priority() -> None:
    policy = ActionPolicy([EV, BOILER, BATTERY], hold_off_s=0)
    for t in range(5):
        policy.decide(SHORT, now_s=t, current=NOW)
    actions = policy.restore_all(now_s=700)
    assert moves(actions) == [("bat", 3000, 0), ("boiler", 0, 1), ("ev", 6, 16)]
    assert {a.reason for a in actions} == {"restore after the window"}
    assert [a.priority for a in actions] == [3, 2, 1] and {a.t_s for a in actions} == {700}
    assert policy.touched() == {} and policy.restore_all(now_s=701) == []
    assert policy.log[-3:] == actions


def test_restore_all_skips_points_already_back_at_their_original() -> None:
    policy = ActionPolicy([BOILER, BATTERY], hold_off_s=0)
    policy.decide(SHORT, now_s=0, current=NOW)  # boiler off
    policy.decide(SHORT, now_s=1, current=NOW)  # battery on
    policy.decide(SHORT, now_s=600, current=NOW)  # comfort: boiler on again
    assert moves(policy.restore_all(now_s=700)) == [("bat", 3000, 0)]


def test_snapshot_survives_a_restart_through_json() -> None:
    policy = ActionPolicy([EV, replace(BOILER, priority=0)], hold_off_s=30)
    policy.decide(SHORT, now_s=0, current=NOW)  # boiler off
    policy.decide(SHORT, now_s=30, current=NOW)  # EV 16 -> 12 A
    kept = json.dumps(policy.snapshot())
    # the boiler lever was removed from the config before the restart: it is restored all the same
    resumed = ActionPolicy.resume([EV], json.loads(kept), hold_off_s=30)
    assert resumed.decide(SHORT, now_s=59, current={}) == []  # hold-off carried over
    assert moves(resumed.decide(SHORT, now_s=60, current={})) == [("ev", 12, 8)]
    actions = resumed.restore_all(now_s=100)
    assert moves(actions) == [("ev", 8, 16), ("boiler", 0, 1)]
    assert actions[1].reason == "restore after the window (lever no longer configured)"


@pytest.mark.parametrize(("fields", "message"), [
    (dict(kind="valve"), "kind 'valve' is not one of setpoint, switch, battery"),
    (dict(kind="setpoint"), "a setpoint lever needs 'min'"),
    (dict(kind="switch"), "a switch lever needs 'off'"),
    (dict(kind="battery"), "a battery lever needs 'max_w'"),
    (dict(kind="setpoint", min=6, expected_w=0), "expected_w 0 must be > 0"),
    (dict(kind="setpoint", min=6, step=0), "step 0 must be > 0"),
])
def test_bad_levers_name_themselves(fields: dict[str, object], message: str) -> None:
    args: dict[str, object] = dict(device="ev", point="current_a", expected_w=100)
    args.update(fields)
    with pytest.raises(ConfigError, match=re.escape(f"lever ev.current_a: {message}")):
        Lever(**args)  # type: ignore[arg-type]


def test_two_levers_on_one_point_are_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("two levers act on ev.current_a")):
        ActionPolicy([EV, EV])
