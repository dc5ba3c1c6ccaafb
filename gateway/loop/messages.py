"""The closed loop's JSON: the aggregator's `dr_event` command in, the bodies it journals and publishes out.

Pure: values in, JSON-able values out. The `dr_*` bodies are the MQTT contract (docs/mqtt.md); the
event body is also the journal's row that `drgw event` reads back, and the baseline spec's JSON form
is how a restart gets an event's baseline back from the journal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from gateway.loop import baselines as bl
from gateway.loop.checker import CheckState
from gateway.loop.events import Direction, DrEvent, EventRejected, EventSource, EventState
from gateway.loop.policy import Action
from gateway.loop.settings import DrConfig
from gateway.loop.verdict import Verdict

# the names of the methods in the config, in commands and in the journal
METHODS = {"contracted": bl.Method.CONTRACTED, "pre_event": bl.Method.PRE_EVENT,
           "ten_in_ten": bl.Method.TEN_IN_TEN, "high_x_of_y": bl.Method.HIGH_X_OF_Y,
           "recent_days": bl.Method.RECENT_DAYS}
NAMES = {v: k for k, v in METHODS.items()}


# ------------------------------------------------------------------------------------------------- in

def event_from_command(args: Mapping[str, Any], config: DrConfig) -> DrEvent:
    """The aggregator's `dr_event` command as an event (arguments already type-checked)."""
    method = METHODS[args.get("baseline", config.baseline)]
    try:
        spec = baseline_spec(method, config, args.get("baseline_params", {}), args.get("curve_w", ()))
    except ValueError as exc:
        raise EventRejected(f"baseline: {exc}", event_id=args["event_id"]) from None
    return DrEvent(
        event_id=args["event_id"], source=EventSource.MQTT, modification=args["modification"],
        start_s=args["start"], end_s=args["end"], award_w=args["target_w"],
        direction=Direction(args.get("direction", "reduce")),
        tolerance_bps=args.get("tolerance_bps", round(config.tolerance * 10_000)),
        baseline=spec, cancelled=bool(args.get("cancelled", False)))


def baseline_spec(method: bl.Method, config: DrConfig, given: Mapping[str, float] | None = None,
                  curve: Any = ()) -> bl.BaselineSpec:
    """An event's baseline: the config's parameters when it names the config's method, then `given`."""
    params: dict[str, int | float] = {}
    if method is METHODS[config.baseline]:
        params.update(config.baseline_params)
        if method is bl.Method.PRE_EVENT:
            params.setdefault("minutes", config.pre_event_minutes)
    params.update(given or {})
    return bl.BaselineSpec(method=method, params=tuple(params.items()), curve_w=tuple(curve))


def spec_from_json(data: Any) -> object:
    if data is None:
        return None
    return bl.BaselineSpec(method=bl.Method(data["method"]),
                           params=tuple((str(k), v) for k, v in data["params"]),
                           curve_w=tuple(data["curve_w"]))


# ------------------------------------------------------------------------------------------------ out

def describe(event: DrEvent, state: EventState, baseline: bl.Baseline | None,
             commitment: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The event as journalled and published (`dr_event`); with its baseline once it is fixed (a
    market event's at its commitment, any other at its start) and the commitment's chain state."""
    body: dict[str, Any] = {
        "event_id": event.event_id, "state": state.value, "source": event.source.value,
        "window": event.window, "start_s": event.start_s, "end_s": event.end_s,
        "award_w": event.award_w, "direction": event.direction.value,
        "tolerance_bps": event.tolerance_bps, "cancelled": event.cancelled,
        "modification": event.modification, "event": event.as_json(encode_baseline=spec_json),
    }
    if baseline is not None:
        body["baseline"] = baseline_json(baseline)
    if commitment is not None:
        body["commitment"] = dict(commitment)
    return body


def baseline_json(b: bl.Baseline) -> dict[str, Any]:
    """Everything of a Baseline, so a restart reads back the committed one instead of recomputing
    it (JSON floats round-trip exactly, so its energy and hence baselineWh are the same)."""
    return {"method": NAMES[b.method], "method_id": int(b.method),
            "input_hash": "0x" + b.input_hash.hex(), "slot_s": b.slot_s,
            "window_start_s": b.window_start_s, "window_end_s": b.window_end_s,
            "slots_w": list(b.slots_w), "days_used": [d.isoformat() for d in b.days_used],
            "adjustment": b.adjustment, "inputs_end_s": b.inputs_end_s}


def baseline_from_json(data: Mapping[str, Any]) -> bl.Baseline:
    """The inverse of `baseline_json`; KeyError or ValueError for a body written without one."""
    return bl.Baseline(
        method=bl.Method(int(data["method_id"])), window_start_s=int(data["window_start_s"]),
        window_end_s=int(data["window_end_s"]), slot_s=int(data["slot_s"]),
        slots_w=tuple(float(w) for w in data["slots_w"]),
        input_hash=bytes.fromhex(str(data["input_hash"]).removeprefix("0x")),
        days_used=tuple(dt.date.fromisoformat(d) for d in data["days_used"]),
        adjustment=float(data["adjustment"]), inputs_end_s=data.get("inputs_end_s"))


def live(event_id: str, t: float, watts: float, state: CheckState) -> dict[str, Any]:
    """`dr_live`: the event's standing after a sample."""
    return {"type": "dr_live", "event_id": event_id, "t": round(t, 3),
            "baseline_w": round(state.baseline_w, 1), "actual_w": round(watts, 1),
            "performance_w": round(state.performance_w, 1), "deviation_w": round(state.deviation_w, 1),
            "delivered_wh": round(state.delivered_wh, 3), "projected_wh": round(state.projected_wh, 3),
            "required_wh": round(state.required_wh, 3), "shortfall": state.shortfall}


def action(event_id: str, a: Action, *, ok: bool, error: str | None) -> dict[str, Any]:
    """`dr_action`: one write to a lever and its outcome."""
    return {"type": "dr_action", "event_id": event_id, "t": a.t_s, "device": a.device, "point": a.point,
            "value": a.value, "previous": a.previous, "reason": a.reason, "ok": ok, "error": error}


def spec_json(spec: object) -> Any:
    if not isinstance(spec, bl.BaselineSpec):
        return None
    return {"method": int(spec.method), "params": [list(p) for p in spec.params],
            "curve_w": list(spec.curve_w)}


def verdict_json(v: Verdict) -> dict[str, Any]:
    return asdict(v)


def report_json(r: Any) -> dict[str, Any]:
    """A Report (a dataclass) with its bytes fields as 0x-hex."""
    return {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in asdict(r).items()}
