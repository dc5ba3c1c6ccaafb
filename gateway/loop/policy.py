"""Local actions during a DR event: pull load levers by priority, within comfort limits (pure).

While the live checker projects a shortfall the policy escalates one lever, or one step of a lever,
per decision, lowest priority number first, and waits `hold_off_s` between changes so the last one
can show in the main meter. With a surplus beyond `margin` (after the release) it gives back in
reverse priority. For a REDUCE event escalation sheds load; for an INCREASE event (load-up, e.g. to
soak up surplus renewable power) it adds load, and only levers with an INCREASE limit take part.
A shed switch that reaches `max_off_s` is restored even inside the window. Every change is an
`Action` for the shell to execute and log; `restore_all` undoes everything at the window's end.
The rules are written out in docs/closed-loop.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.loop.checker import CheckState
from gateway.loop.events import Direction

KINDS = ("setpoint", "switch", "battery")
Key = tuple[str, str]  # (device, point)
# what an INCREASE escalation does, per kind, in the Action's reason (a battery's discharge setpoint
# goes down, so "raise" would misread there)
RAISES = {"setpoint": "raise", "switch": "switch on", "battery": "raise load"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Lever:
    """One controllable point ([[dr.lever]] in the config; field names match its keys, settings.py).

    REDUCE: setpoint lowered towards `min` (a comfort floor, e.g. 6 A for an EV charger), in `step`s
    or at once; switch set to `off`, restored after `max_off_s`, not switched off again before
    `min_on_s` of being on; battery discharge setpoint raised towards `max_w`, in `step`s or at once.
    INCREASE: setpoint raised towards `max` (e.g. 16 A), switch set to `on`, battery discharge
    setpoint lowered towards `min_w` (0, or below 0 to charge); a lever without that limit is skipped.
    `expected_w` is the load the lever sheds (REDUCE) or adds (INCREASE) when fully used;
    `power_w_per_unit` (optional) the load per unit of a setpoint (e.g. 230 W per A), else
    expected_w is spread over original..min (original..max for INCREASE).
    """

    device: str
    point: str
    kind: str
    expected_w: float
    priority: int = 1
    min: float | None = None
    step: float | None = None
    off: float | None = None
    on: float | None = None
    max_off_s: float | None = None
    min_on_s: float = 0.0
    max_w: float | None = None
    power_w_per_unit: float | None = None
    max: float | None = None  # setpoint: INCREASE limit
    min_w: float | None = None  # battery: INCREASE limit of the discharge setpoint

    def __post_init__(self) -> None:
        where = f"lever {self.device}.{self.point}"
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        needs = {"setpoint": ("min",), "switch": ("off",), "battery": ("max_w",)}[self.kind]
        for name in needs:
            if getattr(self, name) is None:
                raise ConfigError(f"{where}: a {self.kind} lever needs {name!r}")
        if self.expected_w <= 0:
            raise ConfigError(f"{where}: expected_w {self.expected_w:g} must be > 0 (W it sheds or adds)")
        if self.step is not None and self.step <= 0:
            raise ConfigError(f"{where}: step {self.step:g} must be > 0")
        self._check_increase_limits(where)

    def _check_increase_limits(self, where: str) -> None:
        own = {"max": "setpoint", "min_w": "battery"}
        for name, kind in own.items():
            if getattr(self, name) is not None and self.kind != kind:
                other = next((n for n, k in own.items() if k == self.kind), None)
                fix = f"a {self.kind} lever's INCREASE limit is {other!r}" if other else \
                    f"a {self.kind} lever's INCREASE target is 'on'"
                raise ConfigError(f"{where}: {name!r} is for {kind} levers; {fix}")
        if self.max is not None and self.max <= _num(self.min):
            raise ConfigError(f"{where}: max {self.max:g} must be above min {_num(self.min):g} "
                              f"(INCREASE raises towards max, REDUCE lowers towards min)")
        if self.min_w is not None and self.min_w >= _num(self.max_w):
            raise ConfigError(f"{where}: min_w {self.min_w:g} must be below max_w {_num(self.max_w):g} "
                              f"(INCREASE lowers the discharge setpoint towards min_w)")

    @property
    def key(self) -> Key:
        return (self.device, self.point)


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One command for the shell: write `value` to device.point (it was `previous`)."""

    t_s: float
    device: str
    point: str
    value: float
    previous: float
    reason: str
    priority: int


@dataclass(slots=True)
class _Touched:
    original: float  # value before the window: what restore_all writes back
    value: float  # last value the policy commanded
    off_since: float | None = None  # switch: when the policy switched it off
    on_since: float | None = None  # switch: when a comfort restore switched it back on


class ActionPolicy:
    """Escalation and release of levers for one event (create one per event, with its direction)."""

    def __init__(self, levers: Iterable[Lever], *, direction: Direction = Direction.REDUCE,
                 hold_off_s: float = 30.0, margin: float = 0.1) -> None:
        ordered = sorted(enumerate(levers), key=lambda il: (il[1].priority, il[0]))
        self.levers: tuple[Lever, ...] = tuple(lever for _, lever in ordered)
        seen: set[Key] = set()
        for lever in self.levers:
            if lever.key in seen:
                raise ConfigError(f"two levers act on {lever.device}.{lever.point}; keep one")
            seen.add(lever.key)
        if hold_off_s < 0 or margin < 0:
            raise ValueError("hold_off_s and margin must be >= 0")
        self.direction = direction
        self.hold_off_s = hold_off_s
        self.margin = margin
        self._touched: dict[Key, _Touched] = {}
        self._last_change_s: float | None = None
        self.log: list[Action] = []
        # What each decided action replaced, until the shell says how its write went (`failed`,
        # `applied`): a refused write must not leave the policy believing the new value.
        self._before: dict[tuple[Key, float, float], _Touched] = {}

    def touched(self) -> Mapping[Key, float]:
        """Every point the policy has written, with its value before the window."""
        return {key: t.original for key, t in self._touched.items()}

    def decide(self, state: CheckState, *, now_s: float, current: Mapping[Key, float]) -> list[Action]:
        """Actions for this moment: comfort restores first, then at most one escalation or release.
        `current` holds the present value of each lever's point (a lever whose point is missing
        there and that was not touched yet is skipped: it could not be restored)."""
        actions = self._comfort(now_s)
        held = self._last_change_s is not None and now_s - self._last_change_s < self.hold_off_s
        if not held and state.remaining_s > 0:
            change = (self._escalate(state, now_s, current) if state.shortfall
                      else self._release(state, now_s))
            if change is not None:
                actions.append(change)
                self._last_change_s = now_s
        self.log.extend(actions)
        return actions

    def restore_all(self, now_s: float) -> list[Action]:
        """Put every touched point back to its value before the window, in reverse priority."""
        actions = []
        for lever in reversed(self.levers):
            t = self._touched.pop(lever.key, None)
            if t is not None and t.value != t.original:
                actions.append(self._act(lever, t, t.original, now_s, "restore after the window"))
        for (device, point), t in self._touched.items():  # resumed from a snapshot, lever since removed
            if t.value != t.original:
                actions.append(Action(t_s=now_s, device=device, point=point, value=t.original,
                                      previous=t.value, priority=0,
                                      reason="restore after the window (lever no longer configured)"))
        self._touched.clear()
        self._last_change_s = None
        self.log.extend(actions)
        return actions

    def applied(self, action: Action) -> None:
        """The shell wrote `action`: forget what it replaced."""
        self._before.pop((_key(action), action.t_s, action.value), None)

    def failed(self, action: Action) -> None:
        """The shell could not write `action`: the point still holds what it held, so the policy
        goes back to its record from before the action (the hold-off stays: the next decision after
        it tries again, rather than at once against a device that just refused). A restore after
        the window has nothing to go back to (restore_all has let the points go)."""
        before = self._before.pop((_key(action), action.t_s, action.value), None)
        t = self._touched.get(_key(action))
        if before is None or t is None or t.value != action.value:
            return  # not ours, already let go, or a later action moved the point since
        t.value, t.off_since, t.on_since = before.value, before.off_since, before.on_since

    def snapshot(self) -> dict[str, Any]:
        """JSON-able record of the touched points, so a restarted gateway can still restore them."""
        return {"direction": self.direction.value, "last_change_s": self._last_change_s,
                "touched": [{"device": d, "point": p, "original": t.original, "value": t.value,
                             "off_since": t.off_since, "on_since": t.on_since}
                            for (d, p), t in self._touched.items()]}

    @classmethod
    def resume(cls, levers: Sequence[Lever], snapshot: Mapping[str, Any], *,
               direction: Direction = Direction.REDUCE, hold_off_s: float = 30.0,
               margin: float = 0.1) -> ActionPolicy:
        """A policy that continues from `snapshot()` after a restart; `restore_all` also restores
        points whose lever was removed from the config meanwhile. The snapshot's direction wins;
        `direction` is for a snapshot that records none (written before INCREASE events were acted
        on, so it touched nothing): pass the event's."""
        kept = snapshot.get("direction")
        way = direction if kept is None else Direction(kept)
        policy = cls(levers, direction=way, hold_off_s=hold_off_s, margin=margin)
        policy._last_change_s = snapshot["last_change_s"]
        for item in snapshot["touched"]:
            policy._touched[(item["device"], item["point"])] = _Touched(
                original=item["original"], value=item["value"], off_since=item["off_since"],
                on_since=item["on_since"])
        return policy

    # ---- internals

    def _act(self, lever: Lever, t: _Touched, value: float, now_s: float, reason: str) -> Action:
        action = Action(t_s=now_s, device=lever.device, point=lever.point, value=value,
                        previous=t.value, reason=reason, priority=lever.priority)
        self._before[(lever.key, now_s, value)] = _Touched(
            original=t.original, value=t.value, off_since=t.off_since, on_since=t.on_since)
        t.value = value
        if lever.kind == "switch" and self.direction is Direction.REDUCE:
            t.off_since = now_s if value == lever.off else None
        return action

    def _comfort(self, now_s: float) -> list[Action]:
        actions: list[Action] = []
        if self.direction is Direction.INCREASE:
            return actions  # max_off_s / min_on_s protect comfort from shedding, not from a load-up
        for lever in self.levers:
            t = self._touched.get(lever.key)
            if (lever.max_off_s is None or t is None or t.off_since is None
                    or now_s - t.off_since < lever.max_off_s):
                continue
            off_for = now_s - t.off_since
            # the original is not `off`: a switch already off is never pulled
            actions.append(self._act(lever, t, t.original, now_s,
                                     f"comfort limit: off for {off_for:g} s, max_off_s {lever.max_off_s:g}"))
            t.on_since = now_s
        return actions

    def _escalate(self, state: CheckState, now_s: float, current: Mapping[Key, float]) -> Action | None:
        for lever in self.levers:
            t = self._touched.get(lever.key)
            if t is None:
                if lever.key not in current:
                    continue
                t = _Touched(original=current[lever.key], value=current[lever.key])
            target = self._further(lever, t, now_s)
            if target is None:
                continue
            self._touched[lever.key] = t
            reason = (f"shortfall: projected {state.projected_wh:.0f} Wh < required "
                      f"{state.required_wh:.0f} Wh")
            if self.direction is Direction.INCREASE:
                reason += f"; {RAISES[lever.kind]}"
            return self._act(lever, t, target, now_s, reason)
        return None

    def _limit(self, lever: Lever) -> float | None:
        """Where escalation takes the lever in this event's direction (None: not used for it)."""
        if self.direction is Direction.REDUCE:
            return {"setpoint": lever.min, "switch": lever.off, "battery": lever.max_w}[lever.kind]
        return {"setpoint": lever.max, "switch": lever.on, "battery": lever.min_w}[lever.kind]

    def _further(self, lever: Lever, t: _Touched, now_s: float) -> float | None:
        """The lever's next value in the event's direction, or None at (or past) its limit."""
        limit, v = self._limit(lever), t.value
        if limit is None:
            return None  # e.g. a setpoint without `max` in an INCREASE event
        if lever.kind == "switch":
            if v == limit:
                return None
            if t.on_since is not None and (now_s == t.on_since or now_s - t.on_since < lever.min_on_s):
                return None  # comfort: back on for too short a time (or just now, by a comfort restore)
            return limit
        # shedding lowers a setpoint and raises a discharge setpoint; a load-up the other way round
        up = (lever.kind == "battery") is (self.direction is Direction.REDUCE)
        if (v >= limit) if up else (v <= limit):
            return None  # never moved against the event (a setpoint already below its floor)
        if not lever.step:
            return limit
        return min(limit, v + lever.step) if up else max(limit, v - lever.step)

    def _release(self, state: CheckState, now_s: float) -> Action | None:
        for lever in reversed(self.levers):
            t = self._touched.get(lever.key)
            if t is None or t.value == t.original:
                continue
            back = self._back(lever, t)
            loss_wh = self._effect_w(lever, t, back) * state.remaining_s / 3600
            keep = state.required_wh * (1 + self.margin)
            if state.projected_wh - loss_wh < keep:
                return None  # releasing the last lever pulled would risk the award
            reason = (f"surplus: projected {state.projected_wh:.0f} Wh - {loss_wh:.0f} Wh released "
                      f">= {keep:.0f} Wh")
            return self._act(lever, t, back, now_s, reason)
        return None

    @staticmethod
    def _back(lever: Lever, t: _Touched) -> float:
        """One step back towards the original value (either direction)."""
        if lever.kind == "switch" or not lever.step:
            return t.original
        if t.value < t.original:
            return min(t.original, t.value + lever.step)
        return max(t.original, t.value - lever.step)

    def _effect_w(self, lever: Lever, t: _Touched, back: float) -> float:
        """Estimated load change (W, shed or added) that moving from the current value to `back`
        gives back."""
        if lever.kind == "switch":
            return lever.expected_w
        delta = abs(back - t.value)
        if lever.power_w_per_unit is not None:
            return delta * lever.power_w_per_unit
        if lever.kind == "battery":
            return delta  # a discharge setpoint is in W itself
        span = abs(t.original - _num(self._limit(lever)))  # an engaged lever has its limit
        return lever.expected_w * delta / span if span > 0 else lever.expected_w


def _key(action: Action) -> Key:
    return (action.device, action.point)


def _num(value: float | None) -> float:
    if value is None:  # Lever.__post_init__ guarantees the kind's limits
        raise AssertionError("lever limit missing")
    return value
