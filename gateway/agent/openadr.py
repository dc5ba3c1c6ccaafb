"""The agent's side of the OpenADR VEN: offers the VTN's events to the closed loop, reads its reports
from the store.

An event the VTN sends becomes a closed-loop event (`EventSource.OPENADR`, id "openadr:<eventID>")
with the [dr] baseline and tolerance, when the household's policy and the levers' capacity opt in
(gateway/loop/optin.py); from there it is an event like any other: the same book, checker, policy,
actions, verdict and `dr_*` bodies on the event topic. A cancellation cancels it in the loop, which
restores the points it touched. The opt answer is published on the event topic too
(`openadr_opt`). Telemetry reports read the main meter's committed active power from the store, so
the VTN sees what the signed stream carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from gateway.errors import DrgwError
from gateway.loop import messages, optin
from gateway.loop.events import Direction, DrEvent, EventRejected, EventSource
from gateway.loop.runner import POWER, DrLoop
from gateway.measurement.store.database import Store
from gateway.network.openadr import OadrEventError, OadrRequest, OpenAdrConfig, target

log = logging.getLogger(__name__)

CHUNK = 256  # records read back from the store at a time
LATE_MS = 60_000  # records of several devices are committed out of time order by up to this


def event_id(request: OadrRequest) -> str:
    return f"openadr:{request.event_id}"


class OpenAdrIntake:
    """The VEN's port (gateway.network.openadr.ven.VenPort) over the DR loop and the store."""

    def __init__(self, *, config: OpenAdrConfig, dr: DrLoop, store: Store, main: str,
                 publish: Callable[[Mapping[str, Any]], None]) -> None:
        self.config, self.dr, self.store, self.main, self.publish = config, dr, store, main, publish
        self.joined: set[str] = set()  # events the loop holds (opted in)

    def offer(self, request: OadrRequest) -> tuple[bool, str]:
        opt = self._decide(request)
        self.publish({"type": "openadr_opt", "event_id": event_id(request),
                      "vtn_event_id": request.event_id, "modification": request.modification,
                      "opt": "optIn" if opt.opt_in else "optOut", "reason": opt.reason})
        return opt.opt_in, opt.reason

    def _decide(self, request: OadrRequest) -> optin.Opt:
        ours = event_id(request)
        if request.cancelled or ours in self.joined:
            return self._update(request)
        try:
            event = self._event(request)
        except OadrEventError as exc:
            return optin.Opt(False, exc.reason)
        opt = optin.decide(mode=self.config.opt, target_w=event.award_w, direction=event.direction,
                           levers=self.dr.config.levers)
        if not opt.opt_in:
            return opt
        try:
            self.dr.accept(event)
        except EventRejected as exc:
            return optin.Opt(False, f"the closed loop refused it: {exc.reason}")
        self.joined.add(ours)
        return opt

    def _update(self, request: OadrRequest) -> optin.Opt:
        """A new version of an event the loop holds (or a cancellation)."""
        ours = event_id(request)
        if request.cancelled:
            if ours not in self.joined:
                return optin.Opt(False, "cancelled; this household had not opted in")
            self._cancel(request)
            return optin.Opt(True, "cancelled: the event ends and its actions are undone")
        try:
            event = self._event(request)
            opt = optin.decide(mode=self.config.opt, target_w=event.award_w,
                               direction=event.direction, levers=self.dr.config.levers)
            if opt.opt_in:
                self.dr.accept(event)
                return opt
        except (OadrEventError, EventRejected) as exc:
            opt = optin.Opt(False, exc.reason)
        self._cancel(request)  # opted out of the new version: the loop stops acting on it
        return opt

    def _cancel(self, request: OadrRequest) -> None:
        try:
            held = self.dr.book.event(event_id(request))
        except KeyError:  # forgotten by the book (long over)
            self.joined.discard(event_id(request))
            return
        try:
            self.dr.accept(DrEvent(
                event_id=held.event_id, source=EventSource.OPENADR,
                modification=max(request.modification, held.modification + 1), start_s=held.start_s,
                end_s=held.end_s, award_w=held.award_w, direction=held.direction,
                tolerance_bps=held.tolerance_bps, baseline=held.baseline, cancelled=True))
        except EventRejected as exc:  # already over: nothing left to undo
            log.info("OpenADR event %s: cancel not applied: %s", held.event_id, exc.reason)
        self.joined.discard(held.event_id)

    def _event(self, request: OadrRequest) -> DrEvent:
        cfg = self.dr.config
        levels = self.config.level_w
        if levels is None:  # levels 1..3 ask for a third, two thirds and all of the levers' capacity
            whole = optin.capacity_w(cfg.levers, Direction.REDUCE)
            levels = (whole / 3, whole * 2 / 3, whole)
        aim = target(request, levels)
        return DrEvent(
            event_id=event_id(request), source=EventSource.OPENADR, modification=request.modification,
            start_s=request.start_s, end_s=request.end_s, award_w=aim.watts,
            direction=Direction.REDUCE if aim.reduce else Direction.INCREASE,
            tolerance_bps=round(cfg.tolerance * 10_000),
            baseline=messages.baseline_spec(messages.METHODS[cfg.baseline], cfg))

    def power(self, start_s: float, end_s: float) -> list[tuple[float, float]]:
        try:
            return committed_power(self.store, self.main, int(start_s * 1000), int(end_s * 1000))
        except DrgwError as exc:  # the store cannot be read now: an empty report, not a crash
            log.error("OpenADR report: the store cannot be read: %s", exc)
            return []


def committed_power(store: Store, device: str, start_ms: int, end_ms: int) -> list[tuple[float, float]]:
    """`device`'s committed active power (time s, W) with start_ms <= time < end_ms, in time order."""
    lo, hi = store.seq_bounds()
    out: list[tuple[float, float]] = []
    top = hi
    while hi and top >= lo:
        rows = store.measurements_range(max(lo, top - CHUNK + 1), top)
        for signed in rows:
            m = signed.measurement
            if m.device != device or not start_ms <= m.time_ms < end_ms:
                continue
            value = next((r.value for r in m.readings if r.name == POWER and r.quality == 0), None)
            if value is not None:
                out.append((m.time_ms / 1000, value / 1000))  # records hold milli-units
        if not rows or rows[0].measurement.time_ms < start_ms - LATE_MS:
            break
        top -= CHUNK
    return sorted(out)
