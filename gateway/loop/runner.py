"""The closed loop's shell: events in (chain awards, aggregator commands), samples in, actions out,
verdict and Report at the end. The pure parts decide: events (the book), baselines, window (one
event's checker and policy per sample), verdict (and the Report), messages (the JSON in and out);
this class only moves values between them, the journal, the devices, MQTT and the market port.

Everything that happens is journalled before it is published: an event's versions, each sample of
the window (the trace), each action with its outcome, the verdict and the Report. A restart resumes
an active event from the journal (the checker replays the trace, the policy its snapshot), so the
points it touched are still restored after the window.

A market window's baseline is fixed before it starts: at NEAR (`[dr] lead_minutes` before the start,
or at once for an award that arrives later) the loop computes it from the measurements made so far,
journals it and commits it on chain (market_link.py). That Baseline is the window's, for the checker,
the verdict and the Report; a restart reads it back from the journal, never recomputes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

from gateway.chain.market_types import Award, MarketPort
from gateway.loop import baselines as bl
from gateway.loop import messages
from gateway.loop.baseline_inputs import compute_for
from gateway.loop.checker import LiveChecker, SampleError
from gateway.loop.events import DrEvent, EventBook, EventRejected, EventSource, EventState, Transition
from gateway.loop.history import SlotAccumulator
from gateway.loop.horizon import START_WAIT_S, SampleHorizon
from gateway.loop.journal import ActionRow, Journal
from gateway.loop.market_link import ALWAYS, MarketLink
from gateway.loop.points import RESTORE_ATTEMPTS, PointIO, read_levers, write_point
from gateway.loop.policy import Action, ActionPolicy
from gateway.loop.settings import DrConfig
from gateway.loop.verdict import judge, report
from gateway.loop.window import ActiveEvent
from gateway.perception.readings import Quality, Sample

log = logging.getLogger(__name__)

POWER = "power_active_total_w"


class DrLoop:
    """One gateway's closed loop: built by the agent with its ports, run by `run()` until cancelled."""

    def __init__(self, *, config: DrConfig, journal: Journal, main_device: str | None, io: PointIO,
                 publish: Callable[[Mapping[str, Any]], None],
                 leaves: Callable[[int, int], list[tuple[int, bytes]]],
                 market: MarketPort | None = None, market_address: str = "",
                 poll_interval_s: float = 15.0, executor: Executor | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.journal, self.main, self.io = config, journal, main_device, io
        self.publish, self.leaves, self.market = publish, leaves, market
        self.market_address = market_address.lower()
        self.poll_interval_s = poll_interval_s
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="chain")
        self.clock = clock
        # the household's calendar for baselines (config load has checked the name)
        self.zone = ZoneInfo(config.time_zone)
        self.book = EventBook(lead_s=config.lead_minutes * 60,
                              max_window_s=config.max_window_minutes * 60)
        self.slots = SlotAccumulator(slot_s=config.slot_s, max_gap_s=max(3.0 * config.slot_s, 30.0))
        self.active: dict[str, ActiveEvent] = {}
        self.fixed: dict[str, bl.Baseline] = {}  # market events' committed baselines, by event id
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.market_link = MarketLink(self, log=log)
        self.errors: list[str] = []
        self.policy_lock = asyncio.Lock()
        self.horizon = SampleHorizon(main_device)  # waited for at a window's end (horizon.py)

    # ----------------------------------------------------------------------------- intake

    def accept(self, event: DrEvent) -> dict[str, Any]:
        """Add or update an event (either source). Raises EventRejected with the reason."""
        now = self.clock()
        change = self.book.apply(event, now)
        held = change.event
        self._save(held, change.state)
        body = {"type": "dr_event", "change": change.kind.value, **self._describe(held, change.state)}
        self.publish(body)
        log.info("DR event %s %s: %s..%s, %d W %s", held.event_id, change.kind.value,
                 _clock(held.start_s), _clock(held.end_s), held.award_w, held.direction.value)
        act = self.active.get(held.event_id)
        if act is not None and change.state is EventState.ACTIVE:
            act.checker.retarget(held)  # a new end, award or tolerance counts from now on
            act.event = held
        if change.state is EventState.CANCELLED:
            self._forget(held.event_id)
        if change.state is EventState.CANCELLED and held.event_id in self.active:
            self._spawn(self._finish_cancelled(held.event_id), f"cancel {held.event_id}")
        self.wake.set()
        return {"event_id": held.event_id, "state": change.state.value, "change": change.kind.value}

    def from_command(self, args: Mapping[str, Any]) -> DrEvent:
        """The aggregator's `dr_event` command as an event (arguments already type-checked)."""
        return messages.event_from_command(args, self.config)

    def from_award(self, award: Award) -> DrEvent:
        """A market award as the `chain:<market>:<window>` event."""
        return self.market_link.event_from(award)

    # ----------------------------------------------------------------------------- samples

    def on_sample(self, sample: Sample) -> None:
        """Every sample of the agent passes here (sync, cheap): the main meter's power feeds the
        load history and the checkers of active events."""
        if sample.device != self.main:
            return
        power = next((r for r in sample.readings if r.name == POWER), None)
        if power is None or power.quality is not Quality.OK or not isinstance(power.value, int | float):
            return
        t, watts = sample.time, float(power.value)
        self.horizon.saw(t, watts)
        done = self.slots.add(t, watts)
        if done:
            self.journal.add_slots(self.main, done)
        for act in list(self.active.values()):
            self._observe(act, t, watts)

    def _observe(self, act: ActiveEvent, t: float, watts: float) -> None:
        try:
            seen = act.observe(t, watts)
        except SampleError as exc:
            log.warning("%s", exc)
            return
        if seen is None:
            return
        self.journal.add_trace(act.event.event_id, [seen.trace])
        if seen.actions:
            self._spawn(self._execute(act, seen.actions), f"actions {act.event.event_id}")
        if seen.live is not None:
            self.publish(seen.live)

    # ----------------------------------------------------------------------------- actions

    async def _execute(self, act: ActiveEvent, actions: list[Action], *, restoring: bool = False) -> None:
        async with self.policy_lock:
            event_id = act.event.event_id
            if not restoring and self.active.get(event_id) is not act:
                # Decided inside the window, but the event completed or was cancelled (and its points
                # restored) while this waited for the lock: applying it now would undo the restore.
                log.info("DR event %s ended; %d late action(s) dropped", event_id, len(actions))
                return
            for a in actions:
                await self._act(act, a, attempts=RESTORE_ATTEMPTS if restoring else 1)
            # The restores at COMPLETED/CANCELLED come here too: their row is already saved in its
            # terminal state (with the baseline) and must not be turned back into "active".
            if self.book.state(event_id) is EventState.ACTIVE:
                self._save(self.book.event(event_id), EventState.ACTIVE, policy=act.policy.snapshot())

    async def _act(self, act: ActiveEvent, a: Action, *, attempts: int = 1) -> None:
        error = await write_point(self.io, a.device, a.point, a.value, attempts=attempts)
        ok = error is None
        if ok:
            act.current[(a.device, a.point)] = a.value
            act.policy.applied(a)
        else:  # the point holds what it held: the policy must not believe otherwise
            act.policy.failed(a)
        event_id = act.event.event_id
        self.journal.add_action(event_id, ActionRow(
            t_s=a.t_s, device=a.device, point=a.point, value=a.value, previous=a.previous,
            reason=a.reason, ok=ok, error=error))
        log.warning("DR action %s: %s.%s %g -> %g (%s)%s", event_id, a.device, a.point, a.previous,
                    a.value, a.reason, "" if ok else f" FAILED: {error}", extra=ALWAYS)
        self.publish(messages.action(event_id, a, ok=ok, error=error))

    async def _restore_points(self, act: ActiveEvent) -> None:
        actions = act.policy.restore_all(self.clock())
        if actions:
            await self._execute(act, actions, restoring=True)

    async def _settle_actions(self, event_id: str) -> None:
        """Let the actions already decided for this event finish before it ends: the policy has
        recorded them, so dropping one as "late" would leave its lever out of `restore_all`, and
        publishing the verdict first would put an action of the window after its verdict."""
        pending = [t for t in self.tasks if t.get_name() == f"actions {event_id}"]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _finish_cancelled(self, event_id: str) -> None:
        await self._settle_actions(event_id)
        act = self.active.pop(event_id, None)
        if act is not None:
            await self._restore_points(act)

    # ----------------------------------------------------------------------------- the timer

    async def run(self) -> None:
        self._restore()
        next_poll = 0.0
        while True:
            now = self.clock()
            if self.market is not None and now >= next_poll:
                next_poll = now + self.poll_interval_s
                await self._poll_market()
            for tr in self.book.advance(self.clock()):
                await self._transition(tr)
            wake = self.book.next_wakeup(self.clock())
            timeout = min(x for x in (wake, next_poll if self.market else None, now + 60.0)
                          if x is not None) - self.clock()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.05, timeout))

    async def _transition(self, tr: Transition) -> None:
        event = self.book.event(tr.event_id)
        prior = self.journal.event(tr.event_id)
        # After a restart the book replays PENDING -> NEAR -> ACTIVE: the NEAR row in between must
        # keep the policy snapshot (the points switched before the crash and their originals), or
        # the resumed policy would take the shed values for originals and never restore them.
        snapshot = prior.body.get("policy") if prior is not None else None
        live = tr.state in (EventState.NEAR, EventState.ACTIVE)
        self._save(event, tr.state, policy=snapshot if live else None)
        self.publish({"type": "dr_state", "event_id": tr.event_id, "from": tr.previous.value,
                      "to": tr.state.value, "at": tr.at_s})
        if tr.state is EventState.NEAR and event.source is EventSource.CHAIN and self.market:
            await self._fix_baseline(event)
        elif tr.state is EventState.ACTIVE:
            await self.horizon.through(event.start_s, START_WAIT_S)  # the baseline's last samples
            await self._start(event, snapshot)
        elif tr.state is EventState.COMPLETED:
            await self.horizon.through(event.end_s)  # the window's last samples committed
            await self._complete(event)

    # ----------------------------------------------------------------------------- the window

    async def _fix_baseline(self, event: DrEvent) -> None:
        """A market window's baseline, from the measurements made until now, journalled and then
        committed (docs/baselines.md, "Committed baselines"). Held already after a restart."""
        if event.event_id in self.fixed:
            return
        inputs_end_s = int(self.clock())
        await self.horizon.through(inputs_end_s, START_WAIT_S)  # every sample before it is in
        try:
            baseline = self._baseline(event, inputs_end_s=inputs_end_s)
        except (bl.BaselineUnavailable, ValueError) as exc:
            self._fail(event, f"no baseline to commit: {exc}")
            return
        self.fixed[event.event_id] = baseline
        self.resave(event.event_id)
        await self.market_link.commit(event, baseline)

    async def _start(self, event: DrEvent, snapshot: Mapping[str, Any] | None) -> None:
        baseline = self.fixed.get(event.event_id)
        if baseline is None or (baseline.window_start_s, baseline.window_end_s) != (
                event.start_s, event.end_s):
            try:
                baseline = self._baseline(event)
            except (bl.BaselineUnavailable, ValueError) as exc:
                self._fail(event, f"no baseline: {exc}")
                return
        levers, hold, way = self.config.levers, self.config.hold_off_s, event.direction
        policy = (ActionPolicy.resume(levers, snapshot, direction=way, hold_off_s=hold) if snapshot
                  else ActionPolicy(levers, direction=way, hold_off_s=hold))
        act = ActiveEvent(event, baseline, LiveChecker(event, baseline, now_s=self.clock()), policy)
        act.replay(self.journal.trace(event.event_id))  # resumed after a restart
        await read_levers(self.io, self.config.levers, act.current)
        for key, value in policy.touched().items():
            act.current.setdefault(key, value)
        if self.book.state(event.event_id) is not EventState.ACTIVE:
            return  # cancelled while the levers were read: nothing touched yet
        held = self.book.event(event.event_id)
        if held.modification != event.modification:  # modified while the levers were read
            act.checker.retarget(held)
            act.event = held
        self.active[event.event_id] = act
        for t, watts in self.horizon.since(event.start_s):  # taken in the window, seen before it
            self._observe(act, t, watts)
        self._save(act.event, EventState.ACTIVE, policy=act.policy.snapshot())
        log.warning("DR event %s active: baseline %s %.0f W avg, award %d W", event.event_id,
                    messages.NAMES[baseline.method], baseline.energy_wh() * 3600 / event.seconds,
                    event.award_w, extra=ALWAYS)

    def _baseline(self, event: DrEvent, *, inputs_end_s: int | None = None) -> bl.Baseline:
        return compute_for(event, journal=self.journal, open_slots=self.slots, device=self.main or "",
                           slot_s=self.config.slot_s, zone=self.zone, others=self.book.events(),
                           inputs_end_s=inputs_end_s)

    async def _complete(self, event: DrEvent) -> None:
        await self._settle_actions(event.event_id)
        act = self.active.pop(event.event_id, None)
        if act is None:
            return
        await self._restore_points(act)
        self._forget(event.event_id)
        verdict = judge(event, act.checker.final(), act.baseline)
        signed = None
        if event.source is EventSource.CHAIN and self.market is not None:
            signed = report(event, verdict, household=self.market.household,
                            baseline_method=int(act.baseline.method), input_hash=act.baseline.input_hash,
                            leaves=self.leaves(event.start_s * 1000, event.end_s * 1000))
        self.journal.save_outcome(event.event_id, verdict=messages.verdict_json(verdict),
                                  report=None if signed is None else messages.report_json(signed),
                                  report_id=None, chain_state="queued" if signed else None,
                                  now_ms=_ms(self.clock()))
        summary = {"type": "dr_verdict", **messages.verdict_json(verdict)}
        if signed is not None:
            summary["report"] = await self.market_link.submit(event.event_id, signed)
        self.publish(summary)
        log.warning("DR event %s: delivered %d Wh of %d required -> %s", event.event_id,
                    verdict.delivered_wh, verdict.required_wh,
                    "performed" if verdict.performed else "SHORT", extra=ALWAYS)

    def _fail(self, event: DrEvent, reason: str) -> None:
        self.fail(event.event_id, reason)

    def fail(self, event_id: str, reason: str) -> None:
        """Log and publish (`dr_error`) what went wrong with an event."""
        self.errors.append(f"{event_id}: {reason}")
        log.error("DR event %s: %s", event_id, reason)
        self.publish({"type": "dr_error", "event_id": event_id, "reason": reason})

    # ----------------------------------------------------------------------------- the market

    async def _poll_market(self) -> None:
        await self.market_link.poll()

    # ----------------------------------------------------------------------------- persistence

    def _save(self, event: DrEvent, state: EventState, *, policy: dict[str, Any] | None = None) -> None:
        body = self._describe(event, state)
        if policy is not None:
            body["policy"] = policy
        self.journal.save_event(event_id=event.event_id, modification=event.modification,
                                state=state.value, start_s=event.start_s, end_s=event.end_s,
                                body=body, now_ms=_ms(self.clock()))

    def resave(self, event_id: str) -> None:
        """Journal the event again as it stands (its baseline, commitment), keeping its policy."""
        prior = self.journal.event(event_id)
        policy = prior.body.get("policy") if prior is not None else None
        self._save(self.book.event(event_id), self.book.state(event_id), policy=policy)

    def _forget(self, event_id: str) -> None:
        self.fixed.pop(event_id, None)
        self.market_link.forget(event_id)

    def _describe(self, event: DrEvent, state: EventState) -> dict[str, Any]:
        act = self.active.get(event.event_id)
        baseline = act.baseline if act is not None else self.fixed.get(event.event_id)
        return messages.describe(event, state, baseline,
                                 self.market_link.commitments.get(event.event_id))

    def _restore(self) -> None:
        now = self.clock()
        rows = self.journal.events(states=("pending", "near", "active"))
        events = []
        for row in rows:
            try:
                events.append(DrEvent.from_json(row.body["event"], decode_baseline=messages.spec_from_json))
                if events[-1].source is EventSource.CHAIN and "baseline" in row.body:
                    # fixed before the window: the window's baseline, read back, never recomputed
                    self.fixed[row.event_id] = baseline = messages.baseline_from_json(row.body["baseline"])
                    self.market_link.restore(events[-1], baseline, row.body.get("commitment"))
            except (EventRejected, KeyError, ValueError) as exc:
                log.error("DR journal: event %s not restored: %s", row.event_id, exc)
        self.book.restore(events, now)
        if events:
            log.info("DR loop: %d event(s) restored from the journal", len(events))

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def status(self) -> dict[str, Any]:
        return {"events": [{"event_id": e.event_id, "state": self.book.state(e.event_id).value,
                            "start_s": e.start_s, "end_s": e.end_s, "award_w": e.award_w}
                           for e in self.book.events()],
                "active": sorted(self.active), "errors": self.errors[-5:]}


def _ms(t: float) -> int:
    return int(t * 1000)


def _clock(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S")
