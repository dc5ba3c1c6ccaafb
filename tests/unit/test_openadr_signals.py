"""OpenADR events into closed-loop targets, opt-in by capacity, and the [openadr] table (pure parts).

Expected values are hand arithmetic from the rule in docs/openadr.md; the event dicts have the shape
openleadr's parser gives (checked against a real VTN in tests/e2e/test_openadr.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.loop import optin
from gateway.loop.events import Direction
from gateway.loop.policy import Lever
from gateway.network.openadr import OadrEventError, parse_openadr, read_event, target
from gateway.network.openadr.ven import newest_per_slot
from gateway.schema import Fields

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)  # 1893499200


def event(name: str, kind: str, payloads: list[tuple[int, float]], *, status: str = "far",
          scale: str | None = None, modification: int = 0) -> dict[str, Any]:
    intervals: list[dict[str, Any]] = []
    t = T0
    for seconds, payload in payloads:
        intervals.append({"dtstart": t, "duration": dt.timedelta(seconds=seconds),
                          "signal_payload": payload, "uid": len(intervals)})
        t += dt.timedelta(seconds=seconds)
    signal: dict[str, Any] = {"signal_name": name, "signal_type": kind, "intervals": intervals}
    if scale is not None:
        signal["measurement"] = {"name": "powerReal", "unit": "W", "scale": scale}
    return {"event_descriptor": {"event_id": "e1", "modification_number": modification,
                                 "event_status": status, "market_context": "http://mc"},
            "active_period": {"dtstart": T0, "duration": t - T0}, "event_signals": [signal],
            "response_required": "always"}


LEVELS = (1000.0, 2000.0, 4000.0)


def test_simple_levels_are_time_weighted() -> None:
    # 600 s at level 2 (2000 W) and 300 s at level 1 (1000 W): (2000*600 + 1000*300) / 900 = 1666.67
    req = read_event(event("SIMPLE", "level", [(600, 2), (300, 1)]))
    assert (req.start_s, req.end_s, req.modification, req.cancelled) == (1893499200, 1893500100, 0, False)
    assert target(req, LEVELS) == optin_target(1667, reduce=True)


def test_load_dispatch_delta_scales_and_signs() -> None:
    # itemBase scale "k": -2.5 kW -> 2500 W reduce; without an itemBase the payload is kW too
    assert target(read_event(event("LOAD_DISPATCH", "delta", [(900, -2.5)], scale="k")), LEVELS) == \
        optin_target(2500, reduce=True)
    assert target(read_event(event("LOAD_DISPATCH", "delta", [(900, 1.5)])), LEVELS) == \
        optin_target(1500, reduce=False)
    # scale "none": the payload is W
    assert target(read_event(event("LOAD_DISPATCH", "delta", [(900, -700)], scale="none")), LEVELS) == \
        optin_target(700, reduce=True)


def optin_target(watts: int, *, reduce: bool) -> Any:
    from gateway.network.openadr import Target

    return Target(watts=watts, reduce=reduce)


@pytest.mark.parametrize("bad, why", [
    (event("ELECTRICITY_PRICE", "price", [(900, 0.3)]), "no SIMPLE or LOAD_DISPATCH"),
    (event("LOAD_DISPATCH", "setpoint", [(900, 3.0)]), "signal type 'setpoint'"),
    (event("LOAD_DISPATCH", "delta", [(900, -1.0), (900, 1.0)]), None),
    (event("SIMPLE", "level", [(900, 4)]), None),
])
def test_unsupported_events_say_why(bad: dict[str, Any], why: str | None) -> None:
    with pytest.raises(OadrEventError) as err:
        target(read_event(bad), LEVELS)
    if why:
        assert why in str(err.value)


def test_open_ended_event_is_refused_but_its_cancel_is_read() -> None:
    open_ended = event("SIMPLE", "level", [(900, 1)])
    open_ended["active_period"]["duration"] = dt.timedelta(0)
    with pytest.raises(OadrEventError, match="open-ended"):
        read_event(open_ended)
    cancel = event("ELECTRICITY_PRICE", "price", [(900, 1)], status="cancelled", modification=3)
    req = read_event(cancel)
    assert (req.cancelled, req.modification) == (True, 3)


def levers() -> list[Lever]:
    return [Lever(device="ev", point="limit", kind="setpoint", min=6, expected_w=2760),
            Lever(device="boiler", point="relay", kind="switch", off=0, on=1, expected_w=2000)]


def test_opt_by_capacity_and_policy() -> None:
    assert optin.capacity_w(levers(), Direction.REDUCE) == 4760
    assert optin.capacity_w(levers(), Direction.INCREASE) == 2000  # the setpoint has no `max`
    assert optin.decide(mode="capacity", target_w=4760, direction=Direction.REDUCE, levers=levers()).opt_in
    out = optin.decide(mode="capacity", target_w=4761, direction=Direction.REDUCE, levers=levers())
    assert not out.opt_in and "4761 W" in out.reason and "4760 W" in out.reason
    assert optin.decide(mode="always", target_w=9000, direction=Direction.REDUCE, levers=levers()).opt_in
    assert not optin.decide(mode="never", target_w=1, direction=Direction.REDUCE, levers=levers()).opt_in
    assert not optin.decide(mode="always", target_w=0, direction=Direction.REDUCE, levers=levers()).opt_in


def test_report_takes_the_newest_reading_per_interval() -> None:
    samples = [(10.0, 1.0), (10.5, 2.0), (11.9, 3.0), (12.0, 4.0), (15.0, 5.0)]
    # 2 s intervals from 10: [10, 12) -> 3.0 at 11.9, [12, 14) -> 4.0, [14, 16) -> 5.0
    assert newest_per_slot(samples, 10.0, 2.0) == [(11.9, 3.0), (12.0, 4.0), (15.0, 5.0)]


def section(tmp_path: Path, **over: Any) -> dict[str, Any]:
    for name in ("ven.pem", "ven.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    return {"vtn_url": "https://vtn.example:8080/OpenADR2/Simple/2.0b", "ven_name": "house-1",
            "cert": "ven.pem", "key": "ven.key", "vtn_ca": "ca.pem", **over}


def test_settings_read_strictly(tmp_path: Path) -> None:
    cfg = parse_openadr(Fields(section(tmp_path, level_w=[500, 1000, 2000]), where="t"), base=tmp_path)
    assert cfg.cert == tmp_path / "ven.pem" and cfg.level_w == (500.0, 1000.0, 2000.0)
    assert cfg.opt == "capacity"
    cases: list[tuple[dict[str, Any], str]] = [({"vtn_url": "http://vtn:8080/x"}, "requires TLS"),
                        ({"cert": "missing.pem"}, "is not a file"),
                        ({"vtn_fingerprint": "AB:CD"}, "ten hex bytes"),
                        ({"level_w": [1, 2]}, "three numbers"),
                        ({"opt": "sometimes"}, "use one of"),
                        ({"colour": "red"}, "colour")]
    for over, words in cases:
        with pytest.raises(ConfigError, match=words):
            parse_openadr(Fields(section(tmp_path, **over), where="t"), base=tmp_path)
