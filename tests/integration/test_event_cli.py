"""`drgw event list|show|plot` on a real journal (SQLite, filled through the Journal API): the table,
the JSON, suffix matching, the errors, and the PNG."""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.loop import plot
from gateway.loop.journal import ActionRow, Journal
from gateway.measurement.store import Store

HOUSEHOLD = "0x" + "ab" * 20
DONE = f"chain:{HOUSEHOLD}:3"  # completed, performed, Report accepted and settled
LIVE = f"chain:{HOUSEHOLD}:13"  # active, a gap in its trace, one failed action
CANCELLED = "agg-2026-07-01-a"  # an aggregator's event, cancelled before it began
T0 = 1_782_914_400  # 2026-07-01 14:00 UTC = 19:30 in Asia/Kolkata (UTC+05:30, no DST)
T1 = T0 + 3600


@pytest.fixture(autouse=True)
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fixed local zone with a half-hour offset, so 'local time' is tested as such."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def baseline(start_s: int, slots_w: list[float]) -> dict[str, Any]:
    return {"method": "pre_event", "method_id": 2, "input_hash": "0x" + "12" * 32, "slot_s": 300,
            "window_start_s": start_s, "slots_w": slots_w, "days_used": []}


def trace_rows(start_s: int, times: list[int], base: list[float],
               actual: Any) -> list[tuple[Any, ...]]:
    """Rows as the loop writes them; the baseline only inside the 600 s window."""
    rows: list[tuple[Any, ...]] = []
    delivered = 0.0
    for i, t in enumerate(times):
        inside = start_s <= t < start_s + 600
        b = base[(t - start_s) // 300] if inside else None
        a = actual(t)
        if inside and i:
            delivered += (b - a) * (t - times[i - 1]) / 3600 if b is not None else 0.0
        rows.append((t, b, a, None if b is None else b - a, delivered, delivered + 100.0, 237.5,
                     int(inside and t < start_s + 30)))
    return rows


def fill(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    j = Journal(path)
    j.save_event(event_id=CANCELLED, modification=2, state="cancelled", start_s=T0 - 7200, end_s=T0 - 6600,
                 body={"source": "mqtt", "window": None, "award_w": 1000, "direction": "increase",
                       "cancelled": True, "baseline": None, "aggregator": "esc-1"}, now_ms=1)
    j.save_event(event_id=DONE, modification=1, state="completed", start_s=T0, end_s=T0 + 600,
                 body={"source": "chain", "window": 3, "award_w": 1500, "direction": "reduce",
                       "tolerance_bps": 500, "cancelled": False,
                       "baseline": baseline(T0, [2500.0, 2700.0])}, now_ms=2)
    done = trace_rows(T0, list(range(T0 - 120, T0 + 661, 10)), [2500.0, 2700.0],
                      lambda t: 2500.0 if t < T0 + 30 else 900.0 if t < T0 + 600 else 2600.0)
    j.add_trace(DONE, done)
    j.add_action(DONE, ActionRow(T0 + 30, "ev", "ev_current_limit_a", 6, 16, "projected short by 120 Wh",
                                 True, None))
    j.add_action(DONE, ActionRow(T0 + 605, "ev", "ev_current_limit_a", 16, 6, "window over: restore",
                                 True, None))
    verdict = {"baseline_wh": 433, "actual_wh": 163, "delivered_wh": 270, "award_w": 1500, "seconds": 600,
               "tolerance_bps": 500, "performed": True, "shortfall_wh": 0, "coverage": 1.0,
               "required_wh": 238}
    report = {"household": HOUSEHOLD, "window": 3, "seq_from": 100, "seq_to": 160, "window_start": T0,
              "window_end": T0 + 600, "baseline_method": 2, "baseline_input_hash": "0x" + "12" * 32,
              "baseline_wh": 433, "actual_wh": 163, "delivered_wh": 270, "merkle_root": "0x" + "34" * 32,
              "signature": "0x" + "56" * 65}
    j.save_outcome(DONE, verdict=verdict, report=report, report_id=7, chain_state="queued", now_ms=3)
    j.set_chain_state(DONE, "accepted", now_ms=4)
    j.set_settlement(DONE, {"payment_mtok": 1250, "deposit": "refunded", "deposit_mtok": 5000,
                            "tx": "0x" + "78" * 32}, now_ms=5)
    j.save_event(event_id=LIVE, modification=1, state="active", start_s=T1, end_s=T1 + 600,
                 body={"source": "chain", "window": 13, "award_w": 2000, "direction": "reduce",
                       "tolerance_bps": 500, "cancelled": False, "baseline": baseline(T1, [3000.0, 3000.0])},
                 now_ms=6)
    live_times = [T1 + s for s in range(-60, 201, 20) if not 100 < s < 160]  # a 60 s hole
    live = trace_rows(T1, live_times, [3000.0, 3000.0], lambda t: 3000.0 if t < T1 else 1200.0)
    j.add_trace(LIVE, live)
    j.add_action(LIVE, ActionRow(T1 + 20, "boiler", "relay_1", 0, 1, "projected short by 300 Wh",
                                 False, "exception code 2 (illegal data address)"))
    j.close()
    return {DONE: done, LIVE: live}


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict[str, list[tuple[Any, ...]]]]:
    path = tmp_path / "drgw.db"
    return path, fill(path)


def drgw(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["event", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def cells(line: str) -> list[str]:
    return [c for c in line.split("  ") if c.strip() != ""]


def test_list_table(store: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = drgw(capsys, "list", "--store", str(store[0]))
    assert code == 0
    lines = out.splitlines()
    assert [c.strip() for c in cells(lines[0])] == ["id", "source", "window (local)", "award kW", "direction",
                                                     "state", "verdict", "delivered kWh", "chain"]
    rows = {cells(line)[0].strip(): [c.strip() for c in cells(line)] for line in lines[1:4]}
    assert rows[CANCELLED] == [CANCELLED, "mqtt", "2026-07-01T17:30+05:30/17:40", "1.00", "increase",
                               "cancelled", "—", "—", "—"]
    assert rows[DONE] == [DONE, "chain", "2026-07-01T19:30+05:30/19:40", "1.50", "reduce", "completed",
                          "performed", "0.270", "accepted"]
    live_delivered = store[1][LIVE][-1][4] / 1000
    assert rows[LIVE] == [LIVE, "chain", "2026-07-01T20:30+05:30/20:40", "2.00", "reduce", "active", "—",
                          f"~{live_delivered:.3f}", "—"]
    assert [line.split()[0] for line in lines[1:4]] == [CANCELLED, DONE, LIVE]  # by start time
    assert lines[4].startswith("~ live figure")


def test_list_json_through_the_config(store: tuple[Path, Any], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "drgw.toml"
    config.write_text('[gateway]\nkey = "gateway.key"\n\n[store]\npath = "drgw.db"\n')
    code, out, _ = drgw(capsys, "list", "--config", str(config), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["store"] == str(store[0])
    by_id = {e["event_id"]: e for e in doc["events"]}
    assert [e["event_id"] for e in doc["events"]] == [CANCELLED, DONE, LIVE]
    assert by_id[DONE] == {
        "event_id": DONE, "source": "chain", "window": 3, "start_s": T0, "end_s": T0 + 600,
        "start": "2026-07-01T19:30+05:30", "end": "2026-07-01T19:40+05:30", "award_w": 1500,
        "direction": "reduce", "state": "completed", "verdict": "performed", "delivered_wh": 270.0,
        "delivered_final": True, "chain_state": "accepted"}
    assert by_id[LIVE]["delivered_final"] is False
    assert by_id[LIVE]["delivered_wh"] == pytest.approx(store[1][LIVE][-1][4])
    assert by_id[CANCELLED]["verdict"] is None and by_id[CANCELLED]["delivered_wh"] is None


def test_show_text_by_suffix(store: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = drgw(capsys, "show", ":3", "--store", str(store[0]))
    assert code == 0
    assert f"event     {DONE} (modification 1)" in out
    assert "source    chain, chain window 3" in out
    assert "window    2026-07-01T19:30+05:30/19:40 (600 s)" in out
    assert "award     1.50 kW reduce, tolerance 5.00 %" in out
    assert "baseline  pre_event (method id 2), input hash 0x" + "12" * 32 in out
    assert "2 slots of 300 s: min 2.500 / mean 2.600 / max 2.700 kW" in out
    assert "trace     79 samples (12 before, 60 in, 7 after the window), median interval 10.0 s" in out
    assert "coverage 100.0 %, largest gap 10.0 s, shortfall projected on 3 samples" in out
    assert "  2026-07-01T19:30:30+05:30  ev.ev_current_limit_a = 6 (was 16)  ok  projected short by 120 Wh" \
        in out
    assert "verdict   performed: delivered 270 Wh (baseline 433 Wh, actual 163 Wh), shortfall 0 Wh" in out
    assert "report    id 7" in out and f"  household            {HOUSEHOLD}" in out
    assert f"  window_start         {T0} (2026-07-01T19:30+05:30)" in out
    assert "chain     accepted" in out
    assert "  payment 1.250 tokens, deposit refunded (5.000 tokens)" in out
    assert "  tx                   0x" + "78" * 32 in out


def test_show_json_of_the_live_event(store: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = drgw(capsys, "show", ":13", "--store", str(store[0]), "--json")
    assert code == 0
    d = json.loads(out)
    assert d["event"]["event_id"] == LIVE and d["event"]["state"] == "active"
    assert d["event"]["body"]["award_w"] == 2000
    assert d["verdict"] is None and d["outcome"] is None
    assert d["baseline"] == {"method": "pre_event", "method_id": 2, "input_hash": "0x" + "12" * 32,
                             "slot_s": 300, "window_start_s": T1, "days_used": [], "slots": 2,
                             "min_w": 3000.0, "mean_w": 3000.0, "max_w": 3000.0}
    t = d["trace"]
    # samples at -60..200 every 20 s without 120 and 140: a 60 s hole the checker does not bridge
    assert (t["samples"], t["before"], t["in_window"], t["after"]) == (12, 3, 9, 0)
    assert t["largest_gap_s"] == 60
    assert t["coverage"] == pytest.approx(140 / 200)
    assert t["delivered_wh"] == pytest.approx(store[1][LIVE][-1][4])
    [action] = d["actions"]
    assert action == {"t_s": T1 + 20, "time": "2026-07-01T20:30:20+05:30", "device": "boiler",
                      "point": "relay_1", "value": 0, "previous": 1, "reason": "projected short by 300 Wh",
                      "ok": False, "error": "exception code 2 (illegal data address)"}


def test_show_cancelled_event_without_outcome(store: tuple[Path, Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = drgw(capsys, "show", CANCELLED, "--store", str(store[0]))
    assert code == 0
    assert "award     1.00 kW increase, tolerance — %, cancelled" in out
    assert "baseline  —" in out
    assert "trace     0 samples" in out
    assert "verdict   — (not judged yet)" in out


def test_event_matching_errors(store: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = drgw(capsys, "show", "3", "--store", str(store[0]))
    assert code == 2
    assert "event '3' is ambiguous" in err and DONE in err and LIVE in err
    code, _, err = drgw(capsys, "plot", "nope", "-o", "x.png", "--store", str(store[0]))
    assert code == 2
    assert "no event 'nope'" in err and CANCELLED in err and "drgw event list" in err


def test_store_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.db"
    code, _, err = drgw(capsys, "list", "--store", str(missing))
    assert code == 2 and str(missing) in err and "--store" in err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    code, _, err = drgw(capsys, "list", "--store", str(junk))
    assert code == 2 and f"{junk}: not a readable gateway store" in err
    code, _, err = drgw(capsys, "list", "--config", str(tmp_path / "drgw.toml"))
    assert code == 2 and "drgw.toml: cannot read the config" in err


def test_store_without_dr_tables_lists_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "drgw.db"
    with Store(path):
        pass  # a measurement store of a gateway that never ran the DR loop
    code, out, _ = drgw(capsys, "list", "--store", str(path))
    assert (code, out) == (0, f"no DR events in {path}\n")
    code, out, _ = drgw(capsys, "list", "--store", str(path), "--json")
    assert code == 0 and json.loads(out)["events"] == []
    code, _, err = drgw(capsys, "show", "x", "--store", str(path))
    assert code == 2 and "(events: none)" in err


def test_plot_writes_the_png(store: tuple[Path, Any], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """The file is a PNG of the asked size; what it shows is read from the figure's objects in
    tests/integration/test_event_plot.py."""
    out = tmp_path / "done.png"
    code, printed, _ = drgw(capsys, "plot", ":3", "-o", str(out), "--width", "800", "--height", "400",
                            "--store", str(store[0]))
    assert (code, printed) == (0, f"{out}\n")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (800, 400)


def test_plot_live_event_marks_the_failed_action(store: tuple[Path, Any], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from zoneinfo import ZoneInfo

    import matplotlib.colors

    from gateway.loop import plot_draw

    out = tmp_path / "live.png"
    code, _, _ = drgw(capsys, "plot", LIVE, "-o", str(out), "--store", str(store[0]))
    assert code == 0 and struct.unpack(">II", out.read_bytes()[16:24]) == (1200, 600)  # the defaults
    journal = Journal(store[0], readonly=True)
    event = journal.event(LIVE)
    assert event is not None
    pic = plot.picture(event, trace=plot.samples(journal.trace(LIVE)), actions=journal.actions(LIVE),
                       outcome=journal.outcome(LIVE))
    power, energy = plot_draw.figure(pic, width_px=1200, height_px=600, tz=ZoneInfo("Asia/Kolkata")).axes[:2]
    (failed,) = power.texts
    assert failed.get_text() == "boiler.relay_1 1→0 (failed)"
    assert matplotlib.colors.to_hex(failed.get_color()) == plot.FAILED_COLOUR
    assert [t.get_text().splitlines()[1] for t in energy.texts] == ["no verdict (active)"]
    journal.close()


def test_plot_errors(store: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = drgw(capsys, "plot", CANCELLED, "-o", str(tmp_path / "c.png"), "--store", str(store[0]))
    assert code == 2 and f"event {CANCELLED} (cancelled) has no baseline and no trace" in err
    code, _, err = drgw(capsys, "plot", ":3", "-o", str(tmp_path / "d.png"), "--width", "5",
                        "--store", str(store[0]))
    assert code == 2 and "--width 5" in err
    code, _, err = drgw(capsys, "plot", ":3", "-o", str(tmp_path / "s.png"), "--speed", "0",
                        "--store", str(store[0]))
    assert code == 2 and "--speed 0: give a factor above 0" in err
    code, _, err = drgw(capsys, "plot", ":3", "-o", str(tmp_path / "no" / "d.png"), "--store", str(store[0]))
    assert code == 2 and "cannot write the plot" in err
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # as if not installed
    code, _, err = drgw(capsys, "plot", ":3", "-o", str(tmp_path / "e.png"), "--store", str(store[0]))
    assert code == 2 and "pip install 'drgw[plot]'" in err
    assert not (tmp_path / "e.png").exists()


def test_picture_series() -> None:
    """Grid-aligned slots clipped to the window; the target follows the direction."""
    body = {"baseline": {"slot_s": 900, "window_start_s": 1000, "slots_w": [1000.0, 2000.0]}}
    base = plot.baseline_steps(body, 1000, 1600)
    assert base is not None and base.t_s == (1000, 1600) and base.kw == (1.0, 1.0)
    body = {"baseline": {"slot_s": 300, "window_start_s": 1000, "slots_w": [1000.0, 2000.0, 3000.0]}}
    base = plot.baseline_steps(body, 1000, 1600)
    assert base is not None and base.t_s == (1000, 1200, 1500, 1600) and base.kw == (1.0, 2.0, 3.0, 3.0)
    assert plot.target_of(base, award_w=500, increase=False).kw == (0.5, 1.5, 2.5, 2.5)
    assert plot.target_of(base, award_w=500, increase=True).kw == (1.5, 2.5, 3.5, 3.5)
    assert plot.baseline_steps({"baseline": None}, 0, 600) is None
    assert [plot.tick_spacing(s) for s in (300, 600, 1200, 7200, 10**6)] == [60, 60, 120, 900, 86400]


def test_trace_series_breaks_at_gaps_the_checker_does_not_bridge() -> None:
    rows = [(t, None, 1000.0, None, 0.0, 0.0, 0.0, 0) for t in (0.0, 10.0, 20.0, 80.0, 90.0)]
    series = plot.trace_series(plot.samples(rows), lambda s: s.actual_w)
    assert series is not None and series.t_s == (0.0, 10.0, 20.0, 50.0, 80.0, 90.0)
    assert [math.isnan(kw) for kw in series.kw] == [False, False, False, True, False, False]
    assert plot.trace_series(plot.samples(rows), lambda s: s.baseline_w) is None  # no baseline here
