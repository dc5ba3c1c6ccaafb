"""The closed loop's shell: events in (chain awards, aggregator commands), samples in, actions out,
verdict and Report at the end. The pure parts (events, baselines, checker, policy, verdict) decide;
this class only moves values between them, the journal, the devices, MQTT and the market port.

Everything that happens is journalled before it is published: an event's versions, each sample of
the window (the trace), each action with its outcome, the verdict and the Report. A restart resumes
an active event from the journal (the checker replays the trace, the policy its snapshot), so the
points it touched are still restored after the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, Protocol

from gateway.chain.port import Award, MarketPort
from gateway.errors import DrgwError
from gateway.loop import baselines as bl
from gateway.loop.checker import LiveChecker, SampleError
from gateway.loop.events import (
    Direction,
    DrEvent,
    EventBook,
    EventRejected,
    EventSource,
    EventState,
    Transition,
    chain_event_id,
)
from gateway.loop.history import SlotAccumulator
from gateway.loop.journal import ActionRow, Journal
from gateway.loop.policy import Action, ActionPolicy
from gateway.loop.settings import DrConfig
from gateway.loop.verdict import Verdict, judge
from gateway.measurement import merkle
from gateway.perception.readings import Quality, Sample

log = logging.getLogger(__name__)

POWER = "power_active_total_w"
METHODS = {"contracted": bl.Method.CONTRACTED, "pre_event": bl.Method.PRE_EVENT,
           "ten_in_ten": bl.Method.TEN_IN_TEN, "high_x_of_y": bl.Method.HIGH_X_OF_Y,
           "recent_days": bl.Method.RECENT_DAYS}
NAMES = {v: k for k, v in METHODS.items()}
# each DR action and verdict is news, not a flapping meter's repeat: past the repeat filter
ALWAYS = {"state_change": True}
LIVE_EVERY_S = 5.0  # live event state on MQTT at most this often (every sample is in the journal)


class PointIO(Protocol):
    async def write(self, device: str, name: str, value: float) -> None: ...
    async def read(self, device: str, name: str) -> float | None: ...


class _Active:
    """One event inside its window: its baseline, checker and policy."""

    def __init__(self, event: DrEvent, baseline: bl.Baseline, checker: LiveChecker,
                 policy: ActionPolicy) -> None:
        self.event, self.baseline, self.checker, self.policy = event, baseline, checker, policy
        self.current: dict[tuple[str, str], float] = {}
        self.last_live = 0.0
        self.last_sample: tuple[float, float] | None = None


class DrLoop:
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
        self.book = EventBook(lead_s=config.lead_minutes * 60,
                              max_window_s=config.max_window_minutes * 60)
        self.slots = SlotAccumulator(slot_s=config.slot_s, max_gap_s=max(3.0 * config.slot_s, 30.0))
        self.active: dict[str, _Active] = {}
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.unsettled: set[str] = set()
        self.unreported: dict[str, int] = {}  # event id -> chain outbox id of a Report still queued
        self.errors: list[str] = []
        self.policy_lock = asyncio.Lock()

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
        if change.state is EventState.CANCELLED and held.event_id in self.active:
            self._spawn(self._finish_cancelled(held.event_id), f"cancel {held.event_id}")
        self.wake.set()
        return {"event_id": held.event_id, "state": change.state.value, "change": change.kind.value}

    def from_command(self, args: Mapping[str, Any]) -> DrEvent:
        """The aggregator's `dr_event` command as an event (arguments already type-checked)."""
        method = METHODS[args.get("baseline", self.config.baseline)]
        try:
            spec = self._spec(method, args.get("baseline_params", {}), args.get("curve_w", ()))
        except ValueError as exc:
            raise EventRejected(f"baseline: {exc}", event_id=args["event_id"]) from None
        return DrEvent(
            event_id=args["event_id"], source=EventSource.MQTT, modification=args["modification"],
            start_s=args["start"], end_s=args["end"], award_w=args["target_w"],
            direction=Direction(args.get("direction", "reduce")),
            tolerance_bps=args.get("tolerance_bps", round(self.config.tolerance * 10_000)),
            baseline=spec, cancelled=bool(args.get("cancelled", False)))

    def _spec(self, method: bl.Method, given: Mapping[str, float], curve: Any) -> bl.BaselineSpec:
        """The event's baseline: the config's parameters when it names the config's method."""
        params: dict[str, int | float] = {}
        if method is METHODS[self.config.baseline]:
            params.update(self.config.baseline_params)
            if method is bl.Method.PRE_EVENT:
                params.setdefault("minutes", self.config.pre_event_minutes)
        params.update(given)
        return bl.BaselineSpec(method=method, params=tuple(params.items()), curve_w=tuple(curve))

    def from_award(self, award: Award) -> DrEvent:
        method = METHODS[self.config.baseline]
        if method is bl.Method.CONTRACTED:
            raise EventRejected("a market award has no contracted curve: set [dr] baseline to a "
                                "measured method", event_id=chain_event_id(self.market_address,
                                                                           award.window))
        current = None
        with contextlib.suppress(KeyError):
            current = self.book.event(chain_event_id(self.market_address, award.window))
        return DrEvent(
            event_id=chain_event_id(self.market_address, award.window), source=EventSource.CHAIN,
            modification=0 if current is None else current.modification + 1,
            start_s=award.start_s, end_s=award.end_s, award_w=award.award_w,
            direction=Direction.REDUCE if award.reduce else Direction.INCREASE,
            tolerance_bps=award.tolerance_bps, baseline=self._spec(method, {}, ()),
            window=award.window, cancelled=award.voided)

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
        done = self.slots.add(t, watts)
        if done:
            self.journal.add_slots(self.main, done)
        for act in list(self.active.values()):
            self._observe(act, t, watts)

    def _observe(self, act: _Active, t: float, watts: float) -> None:
        ev = act.event
        if t < ev.start_s - 60 or (act.last_sample and t <= act.last_sample[0]):
            return
        if t >= ev.end_s and act.last_sample and act.last_sample[0] >= ev.end_s:
            return  # one sample past the end closes the last interval; more are not needed
        try:
            state = act.checker.observe(t, watts)
        except SampleError as exc:
            log.warning("%s", exc)
            return
        act.last_sample = (t, watts)
        self.journal.add_trace(ev.event_id, [(t, state.baseline_w, watts, state.performance_w,
                                              state.delivered_wh, state.projected_wh,
                                              state.required_wh, int(state.shortfall))])
        # the policy was built with the event's direction: it sheds for REDUCE, adds load for INCREASE
        if ev.start_s <= t < ev.end_s:
            actions = act.policy.decide(state, now_s=t, current=act.current)
            if actions:
                self._spawn(self._execute(act, actions), f"actions {ev.event_id}")
        if t - act.last_live >= LIVE_EVERY_S or t >= ev.end_s:
            act.last_live = t
            self.publish({"type": "dr_live", "event_id": ev.event_id, "t": round(t, 3),
                          "baseline_w": round(state.baseline_w, 1), "actual_w": round(watts, 1),
                          "performance_w": round(state.performance_w, 1),
                          "deviation_w": round(state.deviation_w, 1),
                          "delivered_wh": round(state.delivered_wh, 3),
                          "projected_wh": round(state.projected_wh, 3),
                          "required_wh": round(state.required_wh, 3), "shortfall": state.shortfall})

    # ----------------------------------------------------------------------------- actions

    async def _execute(self, act: _Active, actions: list[Action], *, restoring: bool = False) -> None:
        async with self.policy_lock:
            if not restoring and self.active.get(act.event.event_id) is not act:
                # Decided inside the window, but the event completed or was cancelled (and its points
                # restored) while this waited for the lock: applying it now would undo the restore.
                log.info("DR event %s ended; %d late action(s) dropped", act.event.event_id,
                         len(actions))
                return
            for a in actions:
                ok, error = True, None
                try:
                    await self.io.write(a.device, a.point, a.value)
                    act.current[(a.device, a.point)] = a.value
                except (DrgwError, OSError, TimeoutError) as exc:
                    ok, error = False, str(exc)
                    log.error("DR action %s.%s = %g failed: %s", a.device, a.point, a.value, exc)
                self.journal.add_action(act.event.event_id, ActionRow(
                    t_s=a.t_s, device=a.device, point=a.point, value=a.value, previous=a.previous,
                    reason=a.reason, ok=ok, error=error))
                log.warning("DR action %s: %s.%s %g -> %g (%s)%s", act.event.event_id, a.device,
                            a.point, a.previous, a.value, a.reason, "" if ok else f" FAILED: {error}",
                            extra=ALWAYS)
                self.publish({"type": "dr_action", "event_id": act.event.event_id, "t": a.t_s,
                              "device": a.device, "point": a.point, "value": a.value,
                              "previous": a.previous, "reason": a.reason, "ok": ok, "error": error})
            # The restores at COMPLETED/CANCELLED come here too: their row is already saved in its
            # terminal state (with the baseline) and must not be turned back into "active".
            event_id = act.event.event_id
            if self.book.state(event_id) is EventState.ACTIVE:
                self._save(self.book.event(event_id), EventState.ACTIVE, policy=act.policy.snapshot())

    async def _read_levers(self, act: _Active) -> None:
        for lever in self.config.levers:
            for attempt in range(3):  # a bus hiccup must not cost the event a lever
                try:
                    value = await self.io.read(lever.device, lever.point)
                    break
                except (DrgwError, OSError, TimeoutError) as exc:
                    if attempt == 2:
                        log.error("DR lever %s.%s unreadable, left out: %s", lever.device,
                                  lever.point, exc)
                    value = None
            if value is not None:
                act.current.setdefault(lever.key, value)

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

    async def _poll_market(self) -> None:
        assert self.market is not None
        loop = asyncio.get_running_loop()
        try:
            awards = await loop.run_in_executor(self.executor, self.market.poll_awards)
        except Exception as exc:  # a node that is down must not stop the loop
            log.warning("market poll failed (will retry): %s", exc)
            return
        for award in awards:
            with contextlib.suppress(KeyError):
                held = self.book.event(chain_event_id(self.market_address, award.window))
                if (held.start_s, held.end_s, held.award_w, held.cancelled) == (
                        award.start_s, award.end_s, award.award_w, award.voided):
                    continue  # seen before a restart: nothing changed
            try:
                self.accept(self.from_award(award))
            except EventRejected as exc:
                log.error("market award of window %d not taken: %s", award.window, exc)
        for event_id, report_id in list(self.unreported.items()):
            state = await loop.run_in_executor(self.executor, self.market.report_state, report_id)
            if state != "queued":
                del self.unreported[event_id]
                self.journal.set_chain_state(event_id, state, now_ms=_ms(self.clock()))
                self.publish({"type": "dr_report", "event_id": event_id, "chain_state": state})
                log.warning("DR event %s: Report %s", event_id, state, extra=ALWAYS)
        for event_id in list(self.unsettled):
            event = self.book.event(event_id)
            assert event.window is not None
            settled = await loop.run_in_executor(self.executor, self.market.settlement, event.window)
            if settled is not None:
                self.unsettled.discard(event_id)
                self.journal.set_settlement(event_id, settled, now_ms=_ms(self.clock()))
                self.publish({"type": "dr_settlement", "event_id": event_id, **settled})
                log.info("DR event %s settled: %s", event_id, settled)

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
        if tr.state is EventState.ACTIVE:
            await self._start(event, snapshot)
        elif tr.state is EventState.COMPLETED:
            await self._complete(event)

    async def _start(self, event: DrEvent, snapshot: Mapping[str, Any] | None) -> None:
        try:
            baseline = self._baseline(event)
        except (bl.BaselineUnavailable, ValueError) as exc:
            self._fail(event, f"no baseline: {exc}")
            return
        levers, hold, way = self.config.levers, self.config.hold_off_s, event.direction
        policy = (ActionPolicy.resume(levers, snapshot, direction=way, hold_off_s=hold) if snapshot
                  else ActionPolicy(levers, direction=way, hold_off_s=hold))
        act = _Active(event, baseline, LiveChecker(event, baseline, now_s=self.clock()), policy)
        for t, _b, actual, *_rest in self.journal.trace(event.event_id):  # resumed after a restart
            with contextlib.suppress(SampleError):
                act.checker.observe(t, actual)
                act.last_sample = (t, actual)
        self.active[event.event_id] = act
        await self._read_levers(act)
        for key, value in policy.touched().items():
            act.current.setdefault(key, value)
        self._save(event, EventState.ACTIVE, policy=act.policy.snapshot())
        log.warning("DR event %s active: baseline %s %.0f W avg, award %d W", event.event_id,
                    NAMES[baseline.method], baseline.energy_wh() * 3600 / event.seconds, event.award_w,
                    extra=ALWAYS)

    def _baseline(self, event: DrEvent) -> bl.Baseline:
        spec = event.baseline
        if not isinstance(spec, bl.BaselineSpec):
            raise ValueError(f"event {event.event_id} carries no baseline spec")
        slot_s = self.config.slot_s
        lookback = 0
        for name in ("lookback_days", "y", "days"):
            with contextlib.suppress(KeyError):
                lookback = max(lookback, int(spec.param(name)) * 2 + 10)
        start = event.start_s - max(lookback, 2) * 86400
        slots = self.journal.slots(self.main or "", slot_s=slot_s, start_s=start, end_s=event.start_s)
        slots += self.slots.open_view(event.start_s)
        history = bl.History(slot_s=slot_s, slots=tuple(
            bl.Slot(start_s=s.start_s, avg_w=s.avg_w, coverage=s.coverage) for s in slots),
            utc_offset_s=_utc_offset(), event_days=frozenset(self._event_days(event)))
        return bl.compute(spec, history, window_start_s=event.start_s, window_end_s=event.end_s)

    def _event_days(self, event: DrEvent) -> list[dt.date]:
        return [dt.date.fromtimestamp(e.start_s) for e in self.book.events()
                if e.event_id != event.event_id and not e.cancelled and e.start_s < event.start_s]

    async def _complete(self, event: DrEvent) -> None:
        act = self.active.pop(event.event_id, None)
        if act is None:
            return
        await self._restore_points(act)
        final = act.checker.final()
        verdict = judge(event, final, act.baseline)
        if verdict.clamped:
            log.warning("DR event %s: the household exported on balance; its energies were clamped "
                        "at 0 Wh for the Report (docs/closed-loop.md)", event.event_id)
        report, submission = None, None
        if event.source is EventSource.CHAIN and self.market is not None:
            report = self._report(event, act.baseline, verdict)
        self.journal.save_outcome(event.event_id, verdict=_verdict_json(verdict),
                                  report=None if report is None else _report_json(report),
                                  report_id=None, chain_state="queued" if report else None,
                                  now_ms=_ms(self.clock()))
        summary = {"type": "dr_verdict", **_verdict_json(verdict)}
        if report is not None:
            assert self.market is not None
            loop = asyncio.get_running_loop()
            try:
                submission = await loop.run_in_executor(self.executor, self.market.submit, report)
                state = submission.state if submission.error is None else \
                    f"{submission.state}: {submission.error}"
                if submission.state == "queued":
                    self.unreported[event.event_id] = submission.report_id
            except Exception as exc:  # kept queued in the chain outbox
                state = f"queued: {exc}"
            self.journal.set_chain_state(event.event_id, state, now_ms=_ms(self.clock()))
            summary["report"] = {"seq_from": report.seq_from, "seq_to": report.seq_to,
                                 "merkle_root": "0x" + report.merkle_root.hex(), "chain_state": state}
            self.unsettled.add(event.event_id)
        self.publish(summary)
        log.warning("DR event %s: delivered %d Wh of %d required -> %s", event.event_id,
                    verdict.delivered_wh, verdict.required_wh,
                    "performed" if verdict.performed else "SHORT", extra=ALWAYS)

    def _report(self, event: DrEvent, baseline: bl.Baseline, verdict: Verdict) -> Any:
        from gateway.chain.report import Report

        assert self.market is not None and event.window is not None
        leaves = self.leaves(event.start_s * 1000, event.end_s * 1000)
        if not leaves:
            raise DrgwError(f"event {event.event_id}: no measurements in the window to report")
        return Report(
            household=self.market.household, window=event.window, seq_from=leaves[0][0],
            seq_to=leaves[-1][0], window_start=event.start_s, window_end=event.end_s,
            baseline_method=int(baseline.method), baseline_input_hash=baseline.input_hash,
            baseline_wh=verdict.baseline_wh, actual_wh=verdict.actual_wh,
            delivered_wh=verdict.delivered_wh, merkle_root=merkle.root([leaf for _, leaf in leaves]))

    async def _restore_points(self, act: _Active) -> None:
        actions = act.policy.restore_all(self.clock())
        if actions:
            await self._execute(act, actions, restoring=True)

    async def _finish_cancelled(self, event_id: str) -> None:
        act = self.active.pop(event_id, None)
        if act is not None:
            await self._restore_points(act)

    def _fail(self, event: DrEvent, reason: str) -> None:
        self.errors.append(f"{event.event_id}: {reason}")
        log.error("DR event %s: %s", event.event_id, reason)
        self.publish({"type": "dr_error", "event_id": event.event_id, "reason": reason})

    # ----------------------------------------------------------------------------- persistence

    def _save(self, event: DrEvent, state: EventState, *, policy: dict[str, Any] | None = None) -> None:
        body = self._describe(event, state)
        if policy is not None:
            body["policy"] = policy
        self.journal.save_event(event_id=event.event_id, modification=event.modification,
                                state=state.value, start_s=event.start_s, end_s=event.end_s,
                                body=body, now_ms=_ms(self.clock()))

    def _describe(self, event: DrEvent, state: EventState) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": event.event_id, "state": state.value, "source": event.source.value,
            "window": event.window, "start_s": event.start_s, "end_s": event.end_s,
            "award_w": event.award_w, "direction": event.direction.value,
            "tolerance_bps": event.tolerance_bps, "cancelled": event.cancelled,
            "modification": event.modification, "event": event.as_json(encode_baseline=_spec_json),
        }
        act = self.active.get(event.event_id)
        if act is not None:
            b = act.baseline
            body["baseline"] = {"method": NAMES[b.method], "method_id": int(b.method),
                                "input_hash": "0x" + b.input_hash.hex(), "slot_s": b.slot_s,
                                "window_start_s": b.window_start_s, "slots_w": list(b.slots_w),
                                "days_used": [d.isoformat() for d in b.days_used]}
        return body

    def _restore(self) -> None:
        now = self.clock()
        rows = self.journal.events(states=("pending", "near", "active"))
        events = []
        for row in rows:
            try:
                events.append(DrEvent.from_json(row.body["event"], decode_baseline=_spec_from_json))
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


def _spec_json(spec: object) -> Any:
    if not isinstance(spec, bl.BaselineSpec):
        return None
    return {"method": int(spec.method), "params": [list(p) for p in spec.params],
            "curve_w": list(spec.curve_w)}


def _spec_from_json(data: Any) -> object:
    if data is None:
        return None
    return bl.BaselineSpec(method=bl.Method(data["method"]),
                           params=tuple((str(k), v) for k, v in data["params"]),
                           curve_w=tuple(data["curve_w"]))


def _verdict_json(v: Verdict) -> dict[str, Any]:
    return asdict(v)


def _report_json(r: Any) -> dict[str, Any]:
    out = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in asdict(r).items()}
    return out


def _ms(t: float) -> int:
    return int(t * 1000)


def _clock(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S")


def _utc_offset() -> int:
    offset = dt.datetime.now().astimezone().utcoffset()
    return int(offset.total_seconds()) if offset else 0
