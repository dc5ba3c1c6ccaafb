"""Action policy: escalation by priority with hold-off, comfort floor and max-off, release, restore."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from gateway.errors import ConfigError
from gateway.loop.checker import CheckState
from gateway.loop.events import Direction
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
    # the INCREASE limits: each on its own kind, on the far side of the REDUCE limit
    (dict(kind="battery", max_w=3000, max=16), "'max' is for setpoint levers; a battery lever's "
                                               "INCREASE limit is 'min_w'"),
    (dict(kind="setpoint", min=6, min_w=0), "'min_w' is for battery levers; a setpoint lever's "
                                            "INCREASE limit is 'max'"),
    (dict(kind="switch", off=0, on=1, max=1), "'max' is for setpoint levers; a switch lever's "
                                              "INCREASE target is 'on'"),
    (dict(kind="setpoint", min=6, max=6), "max 6 must be above min 6"),
    (dict(kind="battery", max_w=3000, min_w=3000), "min_w 3000 must be below max_w 3000"),
])
def test_bad_levers_name_themselves(fields: dict[str, object], message: str) -> None:
    args: dict[str, object] = dict(device="ev", point="current_a", expected_w=100)
    args.update(fields)
    with pytest.raises(ConfigError, match=re.escape(f"lever ev.current_a: {message}")):
        Lever(**args)  # type: ignore[arg-type]


def test_two_levers_on_one_point_are_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("two levers act on ev.current_a")):
        ActionPolicy([EV, EV])


# ----------------------------------------------------------------------------- INCREASE (load-up)

UP = Direction.INCREASE
EV_UP = replace(EV, max=16)  # 6..16 A, steps of 4 A, 230 W per A
BATTERY_UP = replace(BATTERY, min_w=-1000, step=1500)  # discharge setpoint, below 0 charges
NOW_UP = {EV.key: 8.0, BOILER.key: 0.0, BATTERY.key: 2000.0}


def test_increase_raises_each_kind_by_priority_one_step_per_decision_with_hold_off() -> None:
    policy = ActionPolicy([BATTERY_UP, BOILER, EV_UP], direction=UP, hold_off_s=30)
    timeline = {t: policy.decide(SHORT, now_s=t, current=NOW_UP) for t in range(0, 241, 10)}
    assert {t: moves(a) for t, a in timeline.items() if a} == {
        0: [("ev", 8, 12)], 30: [("ev", 12, 16)],  # 16 A is `max`: no further
        60: [("boiler", 0, 1)], 90: [("bat", 2000, 500)], 120: [("bat", 500, -1000)],  # min_w
    }
    assert [timeline[t][0].reason for t in (0, 60, 90)] == [
        "shortfall: projected 200 Wh < required 300 Wh; raise",
        "shortfall: projected 200 Wh < required 300 Wh; switch on",
        "shortfall: projected 200 Wh < required 300 Wh; raise load",
    ]
    assert dict(policy.touched()) == {EV.key: 8.0, BOILER.key: 0.0, BATTERY.key: 2000.0}


def test_increase_skips_levers_without_an_increase_limit_or_at_it() -> None:
    ev_no_max = EV  # a setpoint lever without `max` only sheds
    boiler_no_on = Lever(device="boiler", point="relay", kind="switch", expected_w=2000, off=0)
    bat_no_min = BATTERY  # a battery lever without `min_w` only sheds
    policy = ActionPolicy([ev_no_max, boiler_no_on, bat_no_min], direction=UP, hold_off_s=0)
    assert policy.decide(SHORT, now_s=0, current=NOW_UP) == []
    # with their limits, but already there (or past it: never moved against the event)
    at_limit = ActionPolicy([EV_UP, BOILER, BATTERY_UP], direction=UP, hold_off_s=0)
    there = {EV.key: 16.0, BOILER.key: 1.0, BATTERY.key: -1500.0}
    assert at_limit.decide(SHORT, now_s=0, current=there) == []
    assert policy.touched() == {} and at_limit.touched() == {} and at_limit.log == []
    # the same levers still shed in a REDUCE event: the INCREASE limits change nothing there
    assert moves(ActionPolicy([EV_UP]).decide(SHORT, now_s=0, current=NOW)) == [("ev", 16, 12)]
    reduce = ActionPolicy([EV_UP, BATTERY_UP])  # the EV at its floor: the battery discharges more
    assert moves(reduce.decide(SHORT, now_s=0, current={EV.key: 6.0, BATTERY.key: 0.0})) == [
        ("bat", 0, 1500)]


def test_increase_setpoint_without_step_goes_straight_to_max() -> None:
    lever = Lever(device="ev", point="current_a", kind="setpoint", expected_w=2300, min=6, max=16)
    policy = ActionPolicy([lever], direction=UP)
    assert moves(policy.decide(SHORT, now_s=0, current=NOW_UP)) == [("ev", 8, 16)]


def test_increase_switch_is_not_held_by_the_shedding_comfort_rules() -> None:
    policy = ActionPolicy([BOILER], direction=UP, hold_off_s=30)  # max_off_s 600, min_on_s 300
    assert moves(policy.decide(SHORT, now_s=0, current=NOW_UP)) == [("boiler", 0, 1)]
    assert policy.decide(SHORT, now_s=600, current=NOW_UP) == []  # on is the target: no "max off"
    released = policy.decide(state(900.0), now_s=700, current=NOW_UP)
    assert moves(released) == [("boiler", 1, 0)]  # 2000 W x 300 s = 167 Wh; 900 - 167 >= 330
    assert released[0].reason == "surplus: projected 900 Wh - 167 Wh released >= 330 Wh"
    # back at its original `off` now: in a REDUCE event max_off_s would count from here; not so here
    assert policy.decide(state(900.0), now_s=2000, current=NOW_UP) == []
    assert moves(policy.decide(SHORT, now_s=2001, current=NOW_UP)) == [("boiler", 0, 1)]


def test_increase_release_steps_back_in_reverse_priority_with_the_load_estimates() -> None:
    ev = replace(EV_UP, step=None, power_w_per_unit=None)  # 2300 W spread over original..max
    policy = ActionPolicy([ev, BATTERY_UP], direction=UP, hold_off_s=0, margin=0.1)
    current = {EV.key: 11.0, BATTERY.key: 2000.0}
    for t in range(3):
        policy.decide(SHORT, now_s=t, current=current)  # EV 11 -> 16, battery 2000 -> 500 -> -1000
    assert [(a.device, a.value) for a in policy.log] == [("ev", 16), ("bat", 500), ("bat", -1000)]
    hour = 3600.0
    # battery first, one step: -1000 -> 500 W = 1500 Wh over the hour; keep 330 Wh
    assert policy.decide(state(1820.0, remaining=hour), now_s=3, current=current) == []
    assert moves(policy.decide(state(1840.0, remaining=hour), now_s=4, current=current)) == [
        ("bat", -1000, 500)]
    assert moves(policy.decide(state(1840.0, remaining=hour), now_s=5, current=current)) == [
        ("bat", 500, 2000)]
    # then the EV, at once: 16 -> 11 A is all of its 2300 W (span original..max is 5 A)
    assert policy.decide(state(2620.0, remaining=hour), now_s=6, current=current) == []
    assert moves(policy.decide(state(2640.0, remaining=hour), now_s=7, current=current)) == [
        ("ev", 16, 11)]
    assert policy.restore_all(now_s=8) == []  # every point is back at its original


def test_increase_restore_all_puts_every_kind_back_in_reverse_priority() -> None:
    policy = ActionPolicy([EV_UP, BOILER, BATTERY_UP], direction=UP, hold_off_s=0)
    for t in range(5):
        policy.decide(SHORT, now_s=t, current=NOW_UP)
    actions = policy.restore_all(now_s=700)
    assert moves(actions) == [("bat", -1000, 2000), ("boiler", 1, 0), ("ev", 16, 8)]
    assert {a.reason for a in actions} == {"restore after the window"}
    assert policy.touched() == {} and policy.restore_all(now_s=701) == []


def test_increase_snapshot_keeps_its_direction_through_a_restart() -> None:
    policy = ActionPolicy([EV_UP, BOILER], direction=UP, hold_off_s=30)
    policy.decide(SHORT, now_s=0, current=NOW_UP)  # EV 8 -> 12 A
    kept = json.loads(json.dumps(policy.snapshot()))
    assert kept["direction"] == "increase"
    resumed = ActionPolicy.resume([EV_UP, BOILER], kept, hold_off_s=30)  # the snapshot's direction wins
    assert resumed.direction is UP
    assert resumed.decide(SHORT, now_s=29, current=NOW_UP) == []  # hold-off carried over
    assert moves(resumed.decide(SHORT, now_s=30, current=NOW_UP)) == [("ev", 12, 16)]
    assert moves(resumed.restore_all(now_s=100)) == [("ev", 16, 8)]


def test_a_snapshot_without_a_direction_is_reduce_unless_told() -> None:
    policy = ActionPolicy([EV_UP], hold_off_s=0)
    policy.decide(SHORT, now_s=0, current=NOW)  # EV 16 -> 12 A
    old = {k: v for k, v in policy.snapshot().items() if k != "direction"}  # as written before
    assert ActionPolicy.resume([EV_UP], old).direction is Direction.REDUCE
    resumed = ActionPolicy.resume([EV_UP], old, hold_off_s=0)
    assert moves(resumed.decide(SHORT, now_s=1, current={})) == [("ev", 12, 8)]
    # an INCREASE event's snapshot from before INCREASE events were acted on: nothing touched
    empty: dict[str, object] = {"last_change_s": None, "touched": []}
    told = ActionPolicy.resume([EV_UP], empty, direction=UP)
    assert told.direction is UP
    assert moves(told.decide(SHORT, now_s=0, current=NOW_UP)) == [("ev", 8, 12)]


def test_a_refused_write_leaves_the_lever_where_it_was_and_is_tried_again_after_the_hold_off() -> None:
    policy = ActionPolicy([EV, BOILER], hold_off_s=30)
    [first] = policy.decide(SHORT, now_s=0, current=NOW)
    assert moves([first]) == [("ev", 16, 12)]
    policy.failed(first)  # the wallbox refused: it still charges at 16 A
    assert policy.decide(SHORT, now_s=10, current=NOW) == []  # the hold-off still holds
    [again] = policy.decide(SHORT, now_s=30, current=NOW)
    assert moves([again]) == [("ev", 16, 12)]  # the same step again, not 12 -> 8
    policy.applied(again)
    assert moves(policy.decide(SHORT, now_s=60, current=NOW)) == [("ev", 12, 8)]
    assert moves(policy.restore_all(90)) == [("ev", 8, 16)]


def test_a_refused_switch_off_is_neither_comfort_restored_nor_restored_after_the_window() -> None:
    policy = ActionPolicy([BOILER], hold_off_s=0)
    [off] = policy.decide(SHORT, now_s=0, current=NOW)
    assert moves([off]) == [("boiler", 1, 0)]
    policy.failed(off)  # the relay did not switch: the boiler is still on
    assert policy.decide(state(400.0), now_s=700, current=NOW) == []  # past max_off_s: nothing to undo
    assert policy.restore_all(800) == []


def test_a_failure_reported_after_a_later_move_of_the_same_point_changes_nothing() -> None:
    policy = ActionPolicy([EV], hold_off_s=0)
    [first] = policy.decide(SHORT, now_s=0, current=NOW)
    policy.applied(first)
    [second] = policy.decide(SHORT, now_s=1, current=NOW)
    policy.failed(first)  # a stale report: first was applied, and second moved on from it
    assert moves([second]) == [("ev", 12, 8)]
    assert moves(policy.restore_all(2)) == [("ev", 8, 16)]
