"""The household's view of the local page, as JSON-ready values: power now and today's energy per
device, the DR event on hand (state, baseline vs actual, delivered vs required, projected, the
actions taken and why), past events with their verdicts, bids, payments, deposits, reputation.

Where each figure comes from: power now from the newest committed sample (LiveState); today's
energy from the meter's own counters, the newest value minus the first one stored since local
midnight (the first is looked up once a day in the store, through a read-only connection of its
own); events, actions and verdicts from the DR journal; bids and deposits from the bid journal;
the reputation score is the market contract's, as the last settlement the loop journalled read it
from the chain (DRMarket `households(h).score`, gateway/chain/port.py `settlement`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.agent.web.live import LiveState

if TYPE_CHECKING:
    from gateway.loop.bidder import Bidder
    from gateway.loop.journal import EventRow, Journal

POWER = "power_active_total_w"
ENERGY = {"import": "energy_import_total_wh", "export": "energy_export_total_wh"}
PAST_SHOWN = 10  # newest finished events on the page
BIDS_SHOWN = 8
SCAN_ROWS = 500  # store rows read per query while looking for the day's first counter value
LIVE_STATES = ("active", "near", "pending")  # the event on hand: the first state found wins


class TodayEnergy:
    """Each device's first energy counter value of the local day, read from the store once a day.

    Wire records hold [name, value x 10^3, unit, quality] readings (docs/measurements.md); quality 0
    is a good reading."""

    def __init__(self, store: Path, *, zone: dt.tzinfo | None) -> None:
        self.store, self.zone = store, zone
        self._db: sqlite3.Connection | None = None
        self._first: dict[tuple[str, str, int], float | None] = {}
        self._scanned: dict[tuple[str, str, int], int] = {}  # time_ms scanned up to, while not found

    def midnight_ms(self, now_s: float) -> int:
        local = dt.datetime.fromtimestamp(now_s, self.zone or dt.datetime.now().astimezone().tzinfo)
        return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)

    def first(self, device: str, point: str, *, now_s: float) -> float | None:
        day = self.midnight_ms(now_s)
        key = (device, point, day)
        if self._first.get(key) is None:
            self._first[key] = self._scan(device, point, key)
            for old in [k for k in self._first if k[2] != day]:
                self._first.pop(old)
                self._scanned.pop(old, None)
        return self._first[key]

    def _scan(self, device: str, point: str, key: tuple[str, str, int]) -> float | None:
        db = self._connect()
        if db is None:
            return None
        since = self._scanned.get(key, key[2] - 1)
        while True:
            try:
                rows = db.execute("SELECT time_ms, wire FROM measurements WHERE time_ms > ? AND "
                                  "device = ? ORDER BY time_ms LIMIT ?",
                                  (since, device, SCAN_ROWS)).fetchall()
            except sqlite3.Error:
                return None  # busy or not created yet: tried again at the next push
            for time_ms, wire in rows:
                since = int(time_ms)
                value = reading(wire, point)
                if value is not None:
                    return value
            self._scanned[key] = since
            if len(rows) < SCAN_ROWS:
                return None

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None:
            with contextlib.suppress(sqlite3.Error):
                self._db = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True,
                                           check_same_thread=False)
                self._db.execute("PRAGMA busy_timeout=200")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def reading(wire: bytes | str, point: str) -> float | None:
    """The good value of `point` in one stored wire record, or None."""
    try:
        for name, scaled, _unit, quality in json.loads(wire)["r"]:
            if name == point and quality == 0:
                return float(scaled) / 1000
    except (ValueError, KeyError, TypeError):
        return None
    return None


def devices(names: Iterable[tuple[str, str, str]], live: LiveState, energy: TodayEnergy, *,
            now_s: float) -> list[dict[str, Any]]:
    """(name, role, profile) of each device -> its power now and today's imported/exported Wh."""
    out = []
    for name, role, profile in names:
        power = live.latest(name, POWER)
        row: dict[str, Any] = {"name": name, "role": role, "profile": profile,
                               "power_w": None if power is None else round(power.value, 1),
                               "power_time_ms": None if power is None else int(power.time * 1000)}
        for way, point in ENERGY.items():
            now = live.latest(name, point)
            first = None if now is None else energy.first(name, point, now_s=now_s)
            row[f"{way}_today_wh"] = None if now is None or first is None else round(
                now.value - first, 3) + 0.0  # never -0.0
        out.append(row)
    return out


def dr_section(journal: Journal, live: LiveState) -> dict[str, Any]:
    """The event on hand (active, else near, else the next pending) and the finished ones."""
    rows = journal.events()
    current = next((r for state in LIVE_STATES for r in rows if r.state == state), None)
    finished = [r for r in rows if r.state not in LIVE_STATES]
    finished.sort(key=lambda r: (r.end_s, r.event_id), reverse=True)
    return {"configured": True,
            "current": None if current is None else _current(journal, current, live),
            "upcoming": [_event(r) for r in rows if r.state == "pending"
                         and (current is None or r.event_id != current.event_id)][:5],
            "past": [_past(journal, r) for r in finished[:PAST_SHOWN]],
            "reputation": reputation(journal, finished)}


def _event(r: EventRow) -> dict[str, Any]:
    return {"event_id": r.event_id, "state": r.state, "source": r.body.get("source"),
            "window": r.body.get("window"), "start_s": r.start_s, "end_s": r.end_s,
            "award_w": r.body.get("award_w"), "direction": r.body.get("direction")}


def _actions(journal: Journal, event_id: str) -> list[dict[str, Any]]:
    return [{"t_s": a.t_s, "device": a.device, "point": a.point, "value": a.value,
             "previous": a.previous, "reason": a.reason, "ok": a.ok, "error": a.error}
            for a in journal.actions(event_id)]


def _current(journal: Journal, r: EventRow, live: LiveState) -> dict[str, Any]:
    baseline = r.body.get("baseline")
    return {**_event(r), "baseline_method": None if baseline is None else baseline.get("method"),
            "actions": _actions(journal, r.event_id), "live": live.dr_live.get(r.event_id)}


def _past(journal: Journal, r: EventRow) -> dict[str, Any]:
    outcome = journal.outcome(r.event_id) or {}
    verdict = outcome.get("verdict") or {}
    settled = outcome.get("settlement") or {}
    return {**_event(r),
            "verdict": None if not verdict else {
                k: verdict.get(k) for k in ("performed", "delivered_wh", "required_wh",
                                            "baseline_wh", "actual_wh", "shortfall_wh")},
            "chain_state": outcome.get("chain_state"),
            "settlement": None if not settled else {
                k: settled.get(k) for k in ("payment_mtok", "deposit", "deposit_mtok", "score")},
            "actions": len(journal.actions(r.event_id))}


def reputation(journal: Journal, finished: list[EventRow]) -> dict[str, Any] | None:
    """The household's score in the market contract, as the newest settlement read it."""
    for r in finished:
        settled = (journal.outcome(r.event_id) or {}).get("settlement") or {}
        if "score" in settled:
            return {"score": settled["score"], "window": settled.get("window"),
                    "claimable_mtok": settled.get("claimable_mtok")}
    return None


def market_section(bidder: Bidder) -> dict[str, Any]:
    """The bidder's summary (deposits held, paid, refunded, forfeited) and its newest bids."""
    bids = bidder.journal.bids()[-BIDS_SHOWN:]
    return {"configured": True, "summary": bidder.status(), "bids": [
        {"bid_id": b.bid_id, "from_s": b.order.from_s, "to_s": b.order.to_s,
         "power_w": b.order.power_w, "price_mtok": b.order.price_mtok,
         "deposit_mtok": b.deposit_mtok, "state": b.state, "window": b.window,
         "award_w": b.award_w, "outcome": b.outcome} for b in reversed(bids)]}
