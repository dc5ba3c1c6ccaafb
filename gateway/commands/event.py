"""`drgw event list|show|plot`: the DR events this gateway took part in, read from its journal.

The journal (gateway.loop.journal) lives in the gateway store's SQLite file; these commands open it
read-only, so they are safe beside a running agent (WAL lets a reader in while the agent writes).
Times are shown in the machine's local time zone, as ISO 8601 with the UTC offset; --json keeps the
unix seconds as well.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sqlite3
import statistics
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.loop.checker import DEFAULT_MAX_GAP_S
from gateway.loop.journal import ActionRow, EventRow, Journal
from gateway.loop.plot import Sample, plot_event, samples, verdict_word

DEFAULT_CONFIG = Path("/etc/drgw/drgw.toml")
NONE = "—"
COLUMNS = ("id", "source", "window (local)", "award kW", "direction", "state", "verdict",
           "delivered kWh", "chain")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("event", help="DR events of this gateway: list, show, plot")
    actions = parser.add_subparsers(dest="event_action", metavar="ACTION", required=True)
    source = argparse.ArgumentParser(add_help=False)
    where = source.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path,
                       help=f"gateway config whose [store] holds the journal (default {DEFAULT_CONFIG})")
    where.add_argument("--store", type=Path, help="the gateway store file itself")
    listing = actions.add_parser("list", parents=[source], help="every event in the journal, oldest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_list)
    show = actions.add_parser("show", parents=[source], help="everything the journal holds about one event")
    show.add_argument("event", help="event id, or a suffix of it that matches one event")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)
    plot = actions.add_parser("plot", parents=[source],
                              help="baseline, actual load, target and actions of one event as a PNG")
    plot.add_argument("event", help="event id, or a suffix of it that matches one event")
    plot.add_argument("-o", "--out", type=Path, required=True, help="PNG file to write")
    plot.add_argument("--width", type=int, default=1200, help="image width in pixels (default 1200)")
    plot.add_argument("--height", type=int, default=600, help="image height in pixels (default 600)")
    plot.add_argument("--speed", type=float, default=1.0,
                      help="simulated seconds per real second of a simulated home (`drgw demo --speed`): "
                           "the time axis in simulated minutes (default 1)")
    plot.set_defaults(func=run_plot)


@contextmanager
def open_journal(args: argparse.Namespace) -> Iterator[Journal]:
    """The journal named by --store, or by the [store] path of --config (default DEFAULT_CONFIG)."""
    if args.store is not None:
        path = args.store
    else:
        from gateway.config.gateway import load_config

        path = load_config(args.config or DEFAULT_CONFIG).store.path
    journal = Journal(path, readonly=True)
    try:
        yield journal
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: not a readable gateway store ({exc}); give the store file of a "
                          "gateway with --store, or its config with --config") from exc
    finally:
        journal.close()


def find_event(journal: Journal, wanted: str) -> EventRow:
    """The event whose id is `wanted` or ends with it; ConfigError naming the candidates otherwise."""
    events = journal.events()
    exact = [e for e in events if e.event_id == wanted]
    if exact:
        return exact[0]
    matches = [e for e in events if e.event_id.endswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"event {wanted!r} is ambiguous; it ends {len(matches)} ids: "
                          f"{', '.join(e.event_id for e in matches)}; give more of the id")
    known = ", ".join(e.event_id for e in events[-10:]) or "none"
    raise ConfigError(f"no event {wanted!r} in {journal.path} (events: {known}); "
                      "`drgw event list` shows them all")


# ----------------------------------------------------------------------------- formatting helpers

def local(t_s: float) -> datetime:
    return datetime.fromtimestamp(t_s).astimezone()


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds" if t.second else "minutes")


def window_text(start_s: float, end_s: float) -> str:
    """ISO 8601 interval in local time; the end is shortened to its time when on the same day."""
    a, b = local(start_s), local(end_s)
    if a.date() == b.date() and a.utcoffset() == b.utcoffset():
        end = b.time().isoformat(timespec="seconds" if b.second else "minutes")
    else:
        end = _iso(b)
    return f"{_iso(a)}/{end}"


def _kwh(wh: float | None) -> str:
    return NONE if wh is None else f"{wh / 1000:.3f}"


def summary(event: EventRow, outcome: Mapping[str, Any] | None,
            trace: Sequence[Sample]) -> dict[str, Any]:
    """One event as `list --json` shows it. `delivered_final` is False for a live (trace) figure."""
    body = event.body
    verdict = outcome.get("verdict") if outcome else None
    delivered: float | None = None
    final = False
    if isinstance(verdict, Mapping) and verdict.get("delivered_wh") is not None:
        delivered, final = float(verdict["delivered_wh"]), True
    elif trace:
        delivered = trace[-1].delivered_wh
    return {
        "event_id": event.event_id, "source": body.get("source"), "window": body.get("window"),
        "start_s": event.start_s, "end_s": event.end_s,
        "start": _iso(local(event.start_s)), "end": _iso(local(event.end_s)),
        "award_w": body.get("award_w"), "direction": body.get("direction"), "state": event.state,
        "verdict": verdict_word(outcome), "delivered_wh": delivered, "delivered_final": final,
        "chain_state": outcome.get("chain_state") if outcome else None,
    }


def table_row(s: Mapping[str, Any]) -> tuple[str, ...]:
    award = s["award_w"]
    delivered = _kwh(s["delivered_wh"])
    if s["delivered_wh"] is not None and not s["delivered_final"]:
        delivered = "~" + delivered
    return (s["event_id"], s["source"] or NONE, window_text(s["start_s"], s["end_s"]),
            NONE if award is None else f"{award / 1000:.2f}", s["direction"] or NONE, s["state"],
            s["verdict"] or NONE, delivered, s["chain_state"] or NONE)


def format_table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in (COLUMNS, *rows)) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in (COLUMNS, *rows))


# ----------------------------------------------------------------------------- list

def run_list(args: argparse.Namespace) -> int:
    with open_journal(args) as journal:
        items = [summary(e, journal.outcome(e.event_id), samples(journal.trace(e.event_id)))
                 for e in journal.events()]
        path = journal.path
    if args.json:
        print(json.dumps({"store": str(path), "events": items}))
    elif not items:
        print(f"no DR events in {path}")
    else:
        print(format_table([table_row(s) for s in items]))
        if any(s["delivered_wh"] is not None and not s["delivered_final"] for s in items):
            print("~ live figure from the trace, not yet a verdict")
    return 0


# ----------------------------------------------------------------------------- show

def baseline_summary(body: Mapping[str, Any]) -> dict[str, Any] | None:
    base = body.get("baseline")
    if not isinstance(base, Mapping):
        return None
    slots = [float(w) for w in base.get("slots_w") or []]
    out = {k: base.get(k) for k in ("method", "method_id", "input_hash", "slot_s", "window_start_s")}
    out["days_used"] = list(base.get("days_used") or [])
    out["slots"] = len(slots)
    if slots:
        out.update(min_w=min(slots), mean_w=statistics.fmean(slots), max_w=max(slots))
    return out


def trace_summary(trace: Sequence[Sample], start_s: float, end_s: float) -> dict[str, Any]:
    """Samples before/in/after the window, sampling interval, largest gap, coverage of the window
    (time between samples the live checker bridges, at most DEFAULT_MAX_GAP_S apart, over the elapsed
    window) and the checker's last figures."""
    times = [s.t_s for s in trace]
    inside = [t for t in times if start_s <= t < end_s]
    out: dict[str, Any] = {"samples": len(times), "before": sum(t < start_s for t in times),
                           "in_window": len(inside), "after": sum(t >= end_s for t in times)}
    steps = [b - a for a, b in itertools.pairwise(times)]
    out["median_interval_s"] = statistics.median(steps) if steps else None
    covered = sum(max(0.0, min(b, end_s) - max(a, start_s))
                  for a, b in itertools.pairwise(times) if b - a <= DEFAULT_MAX_GAP_S)
    elapsed = min(end_s, times[-1]) - start_s if times else 0.0
    out["coverage"] = covered / elapsed if elapsed > 0 else None
    edges = [start_s, *inside, end_s] if times and times[-1] >= end_s else [start_s, *inside]
    out["largest_gap_s"] = max((b - a for a, b in itertools.pairwise(edges)), default=None)
    out["shortfall_samples"] = sum(1 for s in trace if s.shortfall)
    last = trace[-1] if trace else None
    out["delivered_wh"] = None if last is None else last.delivered_wh
    out["projected_wh"] = None if last is None else last.projected_wh
    out["required_wh"] = None if last is None else last.required_wh
    return out


def _action(a: ActionRow) -> dict[str, Any]:
    return {"t_s": a.t_s, "time": local(a.t_s).isoformat(timespec="seconds"), "device": a.device,
            "point": a.point, "value": a.value, "previous": a.previous, "reason": a.reason,
            "ok": a.ok, "error": a.error}


def details(journal: Journal, event: EventRow) -> dict[str, Any]:
    """Everything about one event, as `show --json` prints it."""
    trace = samples(journal.trace(event.event_id))
    outcome = journal.outcome(event.event_id)
    return {
        "event": {"event_id": event.event_id, "modification": event.modification, "state": event.state,
                  "start_s": event.start_s, "end_s": event.end_s, "start": _iso(local(event.start_s)),
                  "end": _iso(local(event.end_s)), "body": event.body},
        "verdict": verdict_word(outcome), "baseline": baseline_summary(event.body),
        "trace": trace_summary(trace, event.start_s, event.end_s),
        "actions": [_action(a) for a in journal.actions(event.event_id)], "outcome": outcome,
    }


def _num(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return NONE if value is None else str(value)
    return f"{value / scale:.{digits}f}"


def _event_lines(d: Mapping[str, Any]) -> Iterator[str]:
    e, body = d["event"], d["event"]["body"]
    yield f"event     {e['event_id']} (modification {e['modification']})"
    window = f", chain window {body['window']}" if body.get("window") is not None else ""
    yield f"source    {body.get('source', NONE)}{window}"
    yield f"state     {e['state']}"
    yield f"window    {window_text(e['start_s'], e['end_s'])} ({e['end_s'] - e['start_s']} s)"
    tolerance = body.get("tolerance_bps")
    yield (f"award     {_num(body.get('award_w'), 1000, 2)} kW {body.get('direction', NONE)}, "
           f"tolerance {_num(tolerance, 100, 2)} %" + (", cancelled" if body.get("cancelled") else ""))
    b = d["baseline"]
    if b is None:
        yield f"baseline  {NONE}"
        return
    yield f"baseline  {b['method']} (method id {b['method_id']}), input hash {b['input_hash']}"
    if b["slots"]:
        yield (f"          {b['slots']} slots of {b['slot_s']} s: min {_num(b['min_w'], 1000)} / "
               f"mean {_num(b['mean_w'], 1000)} / max {_num(b['max_w'], 1000)} kW")
    yield f"          days used: {', '.join(b['days_used']) or NONE}"


def _trace_lines(t: Mapping[str, Any]) -> Iterator[str]:
    yield (f"trace     {t['samples']} samples ({t['before']} before, {t['in_window']} in, {t['after']} "
           f"after the window), median interval {_num(t['median_interval_s'], 1, 1)} s")
    if t["samples"]:
        yield (f"          coverage {_num(t['coverage'], 0.01, 1)} %, largest gap "
               f"{_num(t['largest_gap_s'], 1, 1)} s, shortfall projected on {t['shortfall_samples']} "
               f"samples")
        yield (f"          last: delivered {_num(t['delivered_wh'], 1, 1)} Wh, projected "
               f"{_num(t['projected_wh'], 1, 1)} Wh, required {_num(t['required_wh'], 1, 1)} Wh")


def _action_lines(actions: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    yield f"actions   {len(actions) or NONE}"
    for a in actions:
        was = "" if a["previous"] is None else f" (was {a['previous']:g})"
        status = "ok" if a["ok"] else f"FAILED: {a['error']}"
        yield f"  {a['time']}  {a['device']}.{a['point']} = {a['value']:g}{was}  {status}  {a['reason']}"


def _outcome_lines(outcome: Mapping[str, Any] | None, word: str | None) -> Iterator[str]:
    if outcome is None:
        yield f"verdict   {NONE} (not judged yet)"
        return
    v = outcome.get("verdict") or {}
    yield (f"verdict   {word or NONE}: delivered {v.get('delivered_wh', NONE)} Wh (baseline "
           f"{v.get('baseline_wh', NONE)} Wh, actual {v.get('actual_wh', NONE)} Wh), shortfall "
           f"{v.get('shortfall_wh', NONE)} Wh, coverage {_num(v.get('coverage'), 0.01, 1)} %")
    report = outcome.get("report")
    yield f"report    {NONE if report is None else 'id ' + str(outcome.get('report_id', NONE))}"
    for key, value in (report or {}).items():
        when = f" ({_iso(local(value))})" if key in ("window_start", "window_end") and \
            isinstance(value, int) else ""
        yield f"  {key:<20} {value}{when}"
    yield f"chain     {outcome.get('chain_state') or NONE}"
    settlement = outcome.get("settlement")
    yield f"settlement {NONE if settlement is None else ''}".rstrip()
    if settlement is not None:
        yield (f"  payment {_num(settlement.get('payment_mtok'), 1000)} tokens, deposit "
               f"{settlement.get('deposit', NONE)} ({_num(settlement.get('deposit_mtok'), 1000)} tokens)")
        for key, value in settlement.items():
            if key not in ("payment_mtok", "deposit", "deposit_mtok"):
                yield f"  {key:<20} {value}"


def run_show(args: argparse.Namespace) -> int:
    with open_journal(args) as journal:
        d = details(journal, find_event(journal, args.event))
    if args.json:
        print(json.dumps(d))
        return 0
    for lines in (_event_lines(d), _trace_lines(d["trace"]), _action_lines(d["actions"]),
                  _outcome_lines(d["outcome"], d["verdict"])):
        for line in lines:
            print(line)
    return 0


# ----------------------------------------------------------------------------- plot

def run_plot(args: argparse.Namespace) -> int:
    if not 0 < args.speed <= 10_000:
        raise ConfigError(f"event plot: --speed {args.speed:g}: give a factor above 0, at most 10000")
    if not (100 <= args.width <= 10_000 and 100 <= args.height <= 10_000):
        raise ConfigError(f"event plot: --width {args.width} / --height {args.height}: give 100..10000 "
                          "pixels each")
    with open_journal(args) as journal:
        event = find_event(journal, args.event)
        print(plot_event(journal, event.event_id, args.out, width_px=args.width,
                         height_px=args.height, time_scale=args.speed))
    return 0
