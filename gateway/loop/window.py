"""One DR event inside its window: its baseline, live checker and action policy, and what each sample
of the main meter makes of them.

Pure: `observe` takes a sample (time, W) and returns what the shell is to do with it: the trace row to
journal, the actions to run, the `dr_live` body to publish when one is due. Nothing here writes to a
device, the journal or MQTT.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.loop import messages
from gateway.loop.baselines import Baseline
from gateway.loop.checker import LiveChecker, SampleError
from gateway.loop.events import DrEvent
from gateway.loop.policy import Action, ActionPolicy

LIVE_EVERY_S = 5.0  # live event state on MQTT at most this often (every sample is in the journal)
TraceRow = tuple[float, float, float, float, float, float, float, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What one sample made of the event: a trace row, actions to run, and a `dr_live` body if due."""

    trace: TraceRow
    actions: list[Action]
    live: dict[str, Any] | None


class ActiveEvent:
    """One event inside its window, with the points' values as the loop last knew or set them."""

    def __init__(self, event: DrEvent, baseline: Baseline, checker: LiveChecker,
                 policy: ActionPolicy) -> None:
        self.event, self.baseline, self.checker, self.policy = event, baseline, checker, policy
        self.current: dict[tuple[str, str], float] = {}
        self.last_live = 0.0
        self.last_sample: tuple[float, float] | None = None

    def replay(self, trace: Iterable[Sequence[float]]) -> None:
        """Feed the checker the journalled trace again (a restart inside the window)."""
        for t, _baseline, actual, *_rest in trace:
            with contextlib.suppress(SampleError):
                self.checker.observe(t, actual)
                self.last_sample = (t, actual)

    def observe(self, t: float, watts: float) -> Observation | None:
        """A main-meter sample; None when the event does not need it. Raises SampleError.

        A sample counts by the time it was taken, whenever it arrives (group commit hands them over
        up to a second late, several at once): one taken before the start is not the window's, even
        if it comes after the window opened; the policy decides on each sample at its own time."""
        ev, last = self.event, self.last_sample
        if t < ev.start_s or (last and t <= last[0]):
            return None
        if t >= ev.end_s and last and last[0] >= ev.end_s:
            return None  # one sample past the end closes the last interval; more are not needed
        state = self.checker.observe(t, watts)
        self.last_sample = (t, watts)
        trace: TraceRow = (t, state.baseline_w, watts, state.performance_w, state.delivered_wh,
                           state.projected_wh, state.required_wh, int(state.shortfall))
        # the policy was built with the event's direction: it sheds for REDUCE, adds load for INCREASE
        actions = (self.policy.decide(state, now_s=t, current=self.current)
                   if ev.start_s <= t < ev.end_s else [])
        live = None
        if t - self.last_live >= LIVE_EVERY_S or t >= ev.end_s:
            self.last_live = t
            live = messages.live(ev.event_id, t, watts, state)
        return Observation(trace=trace, actions=actions, live=live)
