"""DR events: validation, modification rules, the time-driven state machine, restart restore."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.loop.events import (
    ChangeKind,
    Direction,
    DrEvent,
    EventBook,
    EventRejected,
    EventSource,
    EventState,
    chain_event_id,
)

MARKET = "0x" + "ab" * 20
S = EventState


def ev(event_id: str = "mqtt:1", mod: int = 1, start: int = 10_000, end: int = 10_600,
       **changes: Any) -> DrEvent:
    base = DrEvent(event_id=event_id, source=EventSource.MQTT, modification=mod, start_s=start,
                   end_s=end, award_w=2000, direction=Direction.REDUCE, tolerance_bps=500,
                   baseline={"method": 2, "minutes": 30})
    return replace(base, **changes)


def chain_ev(window: int | None = 7, **changes: Any) -> DrEvent:
    event_id = str(changes.pop("event_id", chain_event_id(MARKET, window or 0)))
    return ev(event_id, source=EventSource.CHAIN, window=window, **changes)


def steps(book: EventBook, now: float) -> list[tuple[str, S, S, float]]:
    return [(t.event_id, t.previous, t.state, t.at_s) for t in book.advance(now)]


def test_full_life_reports_every_transition_once_at_its_boundary() -> None:
    book = EventBook(lead_s=600)
    change = book.apply(ev(), now_s=0)
    assert change.kind is ChangeKind.ADDED and change.state is S.PENDING and change.previous is None
    assert book.next_wakeup(0) == 9_400
    assert steps(book, 9_399) == []
    assert steps(book, 9_400) == [("mqtt:1", S.PENDING, S.NEAR, 9_400)]
    assert steps(book, 9_500) == [] and book.next_wakeup(9_500) == 10_000
    assert steps(book, 10_000) == [("mqtt:1", S.NEAR, S.ACTIVE, 10_000)]
    assert book.state("mqtt:1") is S.ACTIVE and book.next_wakeup(10_001) == 10_600
    assert steps(book, 10_650) == [("mqtt:1", S.ACTIVE, S.COMPLETED, 10_600)]
    assert steps(book, 20_000) == [] and book.next_wakeup(20_000) is None


def test_a_late_advance_passes_through_every_state_in_order() -> None:
    book = EventBook()
    book.apply(ev(), now_s=0)
    assert steps(book, 10_700) == [("mqtt:1", S.PENDING, S.NEAR, 9_400),
                                   ("mqtt:1", S.NEAR, S.ACTIVE, 10_000),
                                   ("mqtt:1", S.ACTIVE, S.COMPLETED, 10_600)]


def test_transitions_of_several_events_come_in_time_order() -> None:
    book = EventBook(lead_s=600)
    book.apply(ev("a", start=10_000, end=10_600), now_s=0)
    book.apply(ev("b", start=10_900, end=11_500), now_s=0)  # b is NEAR at 10300, while a runs
    assert [(i, s, at) for i, _, s, at in steps(book, 12_000)] == [
        ("a", S.NEAR, 9_400), ("a", S.ACTIVE, 10_000), ("b", S.NEAR, 10_300),
        ("a", S.COMPLETED, 10_600), ("b", S.ACTIVE, 10_900), ("b", S.COMPLETED, 11_500)]


def test_an_event_arriving_mid_window_is_active_at_once() -> None:
    book = EventBook()
    change = book.apply(ev(), now_s=10_100)
    assert change.state is S.ACTIVE
    assert [t.state for t in book.advance(10_100)] == [S.NEAR, S.ACTIVE]
    assert book.next_wakeup(10_100) == 10_600


def test_next_wakeup_is_now_while_a_transition_waits_to_be_reported() -> None:
    book = EventBook()
    book.apply(ev(), now_s=9_500)  # already NEAR, not reported yet
    assert book.next_wakeup(9_500) == 9_500
    book.advance(9_500)
    assert book.next_wakeup(9_500) == 10_000


@pytest.mark.parametrize(("event", "reason"), [
    (ev(end=10_000), "end_s 10000 is not after start_s 10000"),
    (ev(award_w=0), "award_w 0 must be > 0"),
    (ev(tolerance_bps=10_001), "tolerance_bps 10001 is outside 0..10000"),
    (ev(tolerance_bps=-1), "tolerance_bps -1 is outside 0..10000"),
    (ev(mod=-1), "modification -1 is negative"),
    (ev(event_id=""), "event_id is empty"),
    (ev(end=10_000 + 4 * 3600 + 1), "window of 14401 s is longer than the maximum 14400 s"),
    (ev(start=100, end=200), "the window ended at 200, before the event arrived at 500"),
    (chain_ev(window=None), "a chain event needs its window id"),
    (chain_ev(event_id="chain:7"), "a chain event's id is chain:<market address>:<window>"),
    (chain_ev(event_id=chain_event_id(MARKET, 8)), "a chain event's id is chain:<market address>:<window>"),
])
def test_invalid_events_are_rejected_with_the_reason(event: DrEvent, reason: str) -> None:
    book = EventBook()
    with pytest.raises(EventRejected) as err:
        book.apply(event, now_s=500)
    assert err.value.reason.startswith(reason) and err.value.event_id == event.event_id
    assert book.events() == []


def test_max_window_is_configurable() -> None:
    assert EventBook(max_window_s=600).apply(ev(), now_s=0).state is S.PENDING
    with pytest.raises(EventRejected, match="longer than the maximum 599 s"):
        EventBook(max_window_s=599).apply(ev(), now_s=0)


def test_overlapping_live_events_are_rejected_but_back_to_back_and_after_completion_are_not() -> None:
    book = EventBook()
    book.apply(ev("a"), now_s=0)
    with pytest.raises(EventRejected) as err:
        book.apply(ev("b", start=10_599, end=11_000), now_s=0)
    assert "overlaps event 'a' (10000..10600)" in err.value.reason
    book.apply(ev("c", start=10_600, end=11_000), now_s=0)  # [start, end): touching is fine
    book.apply(ev("a", mod=2, cancelled=True), now_s=0)
    book.apply(ev("d", start=10_000, end=10_300), now_s=0)  # a is cancelled: no conflict
    assert book.state("d") is S.PENDING
    with pytest.raises(EventRejected, match="overlaps event 'c'"):
        book.apply(ev("d", mod=2, end=10_700), now_s=0)  # a modification is checked too


@pytest.mark.parametrize("mod", [1, 2])
def test_out_of_order_and_duplicate_modifications_are_rejected(mod: int) -> None:
    book = EventBook()
    book.apply(ev(mod=2), now_s=0)
    with pytest.raises(EventRejected) as err:
        book.apply(ev(mod=mod, award_w=9), now_s=0)
    assert err.value.reason == f"out-of-order update: modification {mod} <= current 2"
    assert err.value.duplicate is (mod == 2)
    assert book.event("mqtt:1").award_w == 2000


def test_pending_and_near_events_take_any_change_and_move_back_when_postponed() -> None:
    book = EventBook(lead_s=600)
    book.apply(ev(), now_s=9_500)
    book.advance(9_500)
    assert book.state("mqtt:1") is S.NEAR
    later = ev(mod=2, start=20_000, end=20_900, award_w=3000, tolerance_bps=0, baseline="other")
    change = book.apply(later, now_s=9_600)
    assert change.kind is ChangeKind.MODIFIED and change.previous == ev()
    assert change.state is S.PENDING and book.event("mqtt:1") == later
    assert steps(book, 9_600) == [("mqtt:1", S.NEAR, S.PENDING, 9_600)]
    assert book.next_wakeup(9_600) == 19_400
    # brought forward into the present: goes straight through NEAR to ACTIVE
    assert book.apply(ev(mod=3, start=9_000, end=9_900), now_s=9_700).state is S.ACTIVE
    assert [t.state for t in book.advance(9_700)] == [S.NEAR, S.ACTIVE]


def test_active_events_keep_start_and_baseline_but_may_change_end_award_tolerance() -> None:
    book = EventBook()
    book.apply(ev(), now_s=10_100)
    book.advance(10_100)
    with pytest.raises(EventRejected, match="active since 10000; its start cannot move to 10050"):
        book.apply(ev(mod=2, start=10_050), now_s=10_200)
    with pytest.raises(EventRejected, match="its baseline cannot change"):
        book.apply(ev(mod=2, baseline="other"), now_s=10_200)
    with pytest.raises(EventRejected, match="would end at 10200, not after now 10200"):
        book.apply(ev(mod=2, end=10_200), now_s=10_200)
    change = book.apply(ev(mod=2, end=10_300, award_w=1500, tolerance_bps=1000), now_s=10_200)
    assert change.state is S.ACTIVE and book.event("mqtt:1").award_w == 1500
    assert steps(book, 10_300) == [("mqtt:1", S.ACTIVE, S.COMPLETED, 10_300)]


def test_direction_and_source_never_change() -> None:
    book = EventBook()
    book.apply(ev(), now_s=0)
    with pytest.raises(EventRejected, match="direction cannot change; cancel the event"):
        book.apply(ev(mod=2, direction=Direction.INCREASE), now_s=0)
    with pytest.raises(EventRejected, match="source cannot change"):
        book.apply(ev(mod=2, source=EventSource.CHAIN), now_s=0)


@pytest.mark.parametrize(("now", "before"), [(0, S.PENDING), (9_500, S.NEAR), (10_100, S.ACTIVE)])
def test_cancel_from_every_live_state_is_one_reported_transition(now: float, before: S) -> None:
    book = EventBook()
    book.apply(ev(), now_s=now)
    book.advance(now)
    change = book.apply(ev(mod=2, cancelled=True, award_w=0, end=0), now_s=now)
    assert change.kind is ChangeKind.CANCELLED and change.state is S.CANCELLED
    assert change.event.award_w == 2000 and change.event.modification == 2  # last real window kept
    assert steps(book, now) == [("mqtt:1", before, S.CANCELLED, now)]
    assert steps(book, 99_999) == [] and book.next_wakeup(now) is None


@pytest.mark.parametrize("terminal", [S.COMPLETED, S.CANCELLED])
def test_terminal_events_take_no_updates(terminal: S) -> None:
    book = EventBook()
    book.apply(ev(), now_s=0)
    if terminal is S.CANCELLED:
        book.apply(ev(mod=2, cancelled=True), now_s=0)
    book.advance(10_600)
    assert book.state("mqtt:1") is terminal
    with pytest.raises(EventRejected, match=f"the event is {terminal.value}; it takes no more updates"):
        book.apply(ev(mod=5, start=20_000, end=20_600), now_s=10_700)


def test_a_cancel_of_an_unknown_event_is_remembered_against_older_replays() -> None:
    book = EventBook()
    assert book.apply(ev(mod=3, cancelled=True), now_s=0).state is S.CANCELLED
    with pytest.raises(EventRejected, match="modification 2 <= current 3"):
        book.apply(ev(mod=2), now_s=0)
    assert book.advance(0) == [] and book.next_wakeup(0) is None


def test_json_round_trip_is_exact_and_strict() -> None:
    event = chain_ev(baseline={"method": 3, "days": 10})
    text = event.as_json()
    assert DrEvent.from_json(text) == event
    assert DrEvent.from_json(text.encode()) == event
    assert text.startswith('{"award_w":2000,"baseline":{"days":10,"method":3},"cancelled":false,')
    with pytest.raises(EventRejected, match="unknown key"):
        DrEvent.from_json(text.replace('"cancelled"', '"canceled"'))
    with pytest.raises(EventRejected, match="'award_w' has the wrong type"):
        DrEvent.from_json(text.replace('"award_w":2000', '"award_w":"2000"'))
    with pytest.raises(EventRejected, match="'start_s' has the wrong type"):
        DrEvent.from_json(text.replace('"start_s":10000', '"start_s":true'))
    with pytest.raises(EventRejected, match="version 2 is not supported"):
        DrEvent.from_json(text.replace('"v":1', '"v":2'))
    with pytest.raises(EventRejected, match="does not parse"):
        DrEvent.from_json(text[:-1])


def test_json_with_a_baseline_codec() -> None:
    class Spec:
        def __init__(self, minutes: int) -> None:
            self.minutes = minutes

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Spec) and other.minutes == self.minutes

        __hash__ = None  # type: ignore[assignment]

    event = ev(baseline=Spec(30))
    with pytest.raises(TypeError, match="pass encode_baseline="):
        event.as_json()
    text = event.as_json(encode_baseline=lambda s: {"minutes": s.minutes})  # type: ignore[attr-defined]
    back = DrEvent.from_json(text, decode_baseline=lambda d: Spec(d["minutes"]))
    assert back == event


def test_restore_after_restart_resumes_each_event_in_its_state() -> None:
    book = EventBook()
    book.apply(ev("done", start=1_000, end=1_600), now_s=0)
    book.apply(ev("running", start=10_000, end=10_600), now_s=0)
    book.apply(ev("later", start=20_000, end=20_600), now_s=0)
    book.apply(ev("gone", mod=1, start=30_000, end=30_600), now_s=0)
    book.apply(ev("gone", mod=2, cancelled=True), now_s=0)
    stored = [e.as_json() for e in book.events()]

    restarted = EventBook()
    restarted.restore((DrEvent.from_json(text) for text in stored), now_s=10_300)
    seen = {(t.event_id, t.state) for t in restarted.advance(10_300)}
    assert seen == {("done", S.NEAR), ("done", S.ACTIVE), ("done", S.COMPLETED),
                    ("running", S.NEAR), ("running", S.ACTIVE)}
    assert {e.event_id: restarted.state(e.event_id) for e in restarted.events()} == {
        "done": S.COMPLETED, "running": S.ACTIVE, "later": S.PENDING, "gone": S.CANCELLED}
    assert restarted.next_wakeup(10_300) == 10_600
    with pytest.raises(EventRejected, match="modification 2 <= current 2"):
        restarted.apply(ev("gone", mod=2), now_s=10_300)


def test_prune_forgets_old_terminal_events_only() -> None:
    book = EventBook()
    book.apply(ev("old", start=1_000, end=1_600), now_s=0)
    book.apply(ev("live"), now_s=0)
    book.advance(2_000)
    assert book.prune(before_s=2_000) == ["old"]
    assert [e.event_id for e in book.events()] == ["live"]
    with pytest.raises(KeyError, match="no event 'old'"):
        book.state("old")
    with pytest.raises(EventRejected, match="before the event arrived"):
        book.apply(ev("old", mod=9, start=1_000, end=1_600), now_s=2_000)
