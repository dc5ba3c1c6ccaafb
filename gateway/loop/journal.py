"""The DR loop's durable record, in the gateway store's SQLite file: load slots, events, the live
trace, actions and outcomes. `drgw event list|show|plot` read it; the agent resumes from it.

Its own tables and its own schema version (`loop_schema`), next to the measurement store's, through
a second connection (WAL allows it). Migrations follow the store's rule: ordered, one transaction
each together with the version bump, never edited once released.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.loop.history import LoadSlot
from gateway.measurement.keyfile import create_private


def _v1(c: sqlite3.Connection) -> None:
    c.execute("CREATE TABLE load_slots (device TEXT NOT NULL, start_s INTEGER NOT NULL, "
              "slot_s INTEGER NOT NULL, energy_ws REAL NOT NULL, covered_s REAL NOT NULL, "
              "PRIMARY KEY (device, slot_s, start_s))")
    c.execute("CREATE TABLE dr_events (event_id TEXT PRIMARY KEY, modification INTEGER NOT NULL, "
              "state TEXT NOT NULL, start_s INTEGER NOT NULL, end_s INTEGER NOT NULL, "
              "body TEXT NOT NULL, updated_ms INTEGER NOT NULL)")
    c.execute("CREATE TABLE dr_trace (event_id TEXT NOT NULL, t_s REAL NOT NULL, baseline_w REAL, "
              "actual_w REAL, performance_w REAL, delivered_wh REAL, projected_wh REAL, "
              "required_wh REAL, shortfall INTEGER)")
    c.execute("CREATE INDEX dr_trace_event ON dr_trace(event_id, t_s)")
    c.execute("CREATE TABLE dr_actions (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, "
              "t_s REAL NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL, value REAL NOT NULL, "
              "previous REAL, reason TEXT NOT NULL, ok INTEGER NOT NULL, error TEXT)")
    c.execute("CREATE TABLE dr_outcomes (event_id TEXT PRIMARY KEY, verdict TEXT NOT NULL, "
              "report TEXT, report_id INTEGER, chain_state TEXT, settlement TEXT, "
              "updated_ms INTEGER NOT NULL)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1,)


@dataclass(frozen=True, slots=True)
class EventRow:
    event_id: str
    modification: int
    state: str
    start_s: int
    end_s: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ActionRow:
    t_s: float
    device: str
    point: str
    value: float
    previous: float | None
    reason: str
    ok: bool
    error: str | None


class Journal:
    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise ConfigError(f"{self.path}: no gateway store here; give the config of a gateway "
                                  "that has run (`--config`), or the store with `--store`")
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        else:
            create_private(self.path)  # the agent keeps it in the store file: 0600 like the store
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        self.conn.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        migrate(self.conn, table="loop_schema", migrations=MIGRATIONS,
                what=f"{self.path}: DR journal")

    def _tables(self) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'dr_events'").fetchone() \
            is not None

    # ----------------------------------------------------------------------------- load history

    def add_slots(self, device: str, slots: Iterable[LoadSlot]) -> None:
        """Insert finished slots; a slot seen again (partial at a restart) is merged into its row."""
        rows = [(device, s.start_s, s.slot_s, s.energy_ws, s.covered_s) for s in slots]
        if rows:
            self.conn.executemany(
                "INSERT INTO load_slots VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, slot_s, start_s) "
                "DO UPDATE SET energy_ws = energy_ws + excluded.energy_ws, "
                "covered_s = min(slot_s, covered_s + excluded.covered_s)", rows)

    def slots(self, device: str, *, slot_s: int, start_s: int, end_s: int) -> list[LoadSlot]:
        if not self._tables():
            return []
        cur = self.conn.execute(
            "SELECT start_s, slot_s, energy_ws, covered_s FROM load_slots WHERE device = ? AND "
            "slot_s = ? AND start_s >= ? AND start_s < ? ORDER BY start_s",
            (device, slot_s, start_s, end_s))
        return [LoadSlot(start_s=r[0], slot_s=r[1], energy_ws=r[2], covered_s=r[3]) for r in cur]

    def slot_devices(self) -> list[str]:
        """The devices with load history, most slots first (the loop records its main meter's)."""
        if not self._tables():
            return []
        cur = self.conn.execute("SELECT device FROM load_slots GROUP BY device ORDER BY count(*) DESC")
        return [str(r[0]) for r in cur]

    # ----------------------------------------------------------------------------- events

    def save_event(self, *, event_id: str, modification: int, state: str, start_s: int, end_s: int,
                   body: dict[str, Any], now_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO dr_events VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
            "modification = excluded.modification, state = excluded.state, start_s = excluded.start_s, "
            "end_s = excluded.end_s, body = excluded.body, updated_ms = excluded.updated_ms",
            (event_id, modification, state, start_s, end_s, json.dumps(body, sort_keys=True), now_ms))

    def events(self, *, states: Sequence[str] | None = None) -> list[EventRow]:
        if not self._tables():
            return []
        sql = "SELECT event_id, modification, state, start_s, end_s, body FROM dr_events"
        args: tuple[Any, ...] = ()
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = tuple(states)
        cur = self.conn.execute(sql + " ORDER BY start_s, event_id", args)
        return [EventRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in cur]

    def event(self, event_id: str) -> EventRow | None:
        rows = [e for e in self.events() if e.event_id == event_id]
        if rows:
            return rows[0]
        matches = [e for e in self.events() if e.event_id.endswith(event_id)]
        return matches[0] if len(matches) == 1 else None

    # ----------------------------------------------------------------------------- live trace, actions

    def add_trace(self, event_id: str, rows: Sequence[tuple[float, ...]]) -> None:
        self.conn.executemany("INSERT INTO dr_trace VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              [(event_id, *r) for r in rows])

    def trace(self, event_id: str) -> list[tuple[float, ...]]:
        cur = self.conn.execute(
            "SELECT t_s, baseline_w, actual_w, performance_w, delivered_wh, projected_wh, required_wh, "
            "shortfall FROM dr_trace WHERE event_id = ? ORDER BY t_s", (event_id,))
        return [tuple(r) for r in cur]

    def add_action(self, event_id: str, action: ActionRow) -> None:
        a = action
        self.conn.execute(
            "INSERT INTO dr_actions (event_id, t_s, device, point, value, previous, reason, ok, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, a.t_s, a.device, a.point, a.value, a.previous, a.reason, int(a.ok), a.error))

    def actions(self, event_id: str) -> list[ActionRow]:
        cur = self.conn.execute(
            "SELECT t_s, device, point, value, previous, reason, ok, error FROM dr_actions "
            "WHERE event_id = ? ORDER BY id", (event_id,))
        return [ActionRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in cur]

    # ----------------------------------------------------------------------------- outcomes

    def save_outcome(self, event_id: str, *, verdict: dict[str, Any], report: dict[str, Any] | None,
                     report_id: int | None, chain_state: str | None, now_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO dr_outcomes (event_id, verdict, report, report_id, chain_state, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
            "verdict = excluded.verdict, report = excluded.report, report_id = excluded.report_id, "
            "chain_state = excluded.chain_state, updated_ms = excluded.updated_ms",
            (event_id, json.dumps(verdict, sort_keys=True),
             None if report is None else json.dumps(report, sort_keys=True), report_id, chain_state,
             now_ms))

    def set_chain_state(self, event_id: str, chain_state: str, *, now_ms: int) -> None:
        self.conn.execute("UPDATE dr_outcomes SET chain_state = ?, updated_ms = ? WHERE event_id = ?",
                          (chain_state, now_ms, event_id))

    def set_settlement(self, event_id: str, settlement: dict[str, Any], *, now_ms: int) -> None:
        """What the chain decided after the Report: payment, deposit refunded or forfeited."""
        self.conn.execute("UPDATE dr_outcomes SET settlement = ?, updated_ms = ? WHERE event_id = ?",
                          (json.dumps(settlement, sort_keys=True), now_ms, event_id))

    def outcome(self, event_id: str) -> dict[str, Any] | None:
        if not self._tables():
            return None
        r = self.conn.execute("SELECT verdict, report, report_id, chain_state, settlement FROM dr_outcomes "
                              "WHERE event_id = ?", (event_id,)).fetchone()
        if r is None:
            return None
        return {"verdict": json.loads(r[0]), "report": None if r[1] is None else json.loads(r[1]),
                "report_id": r[2], "chain_state": r[3],
                "settlement": None if r[4] is None else json.loads(r[4])}


def migrate(c: sqlite3.Connection, *, table: str, migrations: Sequence[Callable[[sqlite3.Connection], None]],
            what: str) -> None:
    """Bring the schema versioned in `table` up to len(migrations), each step in its own
    transaction; refuse a schema newer than this drgw knows (`what` names the file and the part)."""
    c.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
    row = c.execute(f"SELECT version FROM {table}").fetchone()
    current = int(row[0]) if row else 0
    if row is None:
        c.execute(f"INSERT INTO {table} VALUES (0)")
    if current > len(migrations):
        raise ConfigError(f"{what} schema {current} is newer than this drgw understands "
                          f"({len(migrations)}): upgrade drgw")
    for version in range(current + 1, len(migrations) + 1):
        c.execute("BEGIN IMMEDIATE")
        try:
            migrations[version - 1](c)
            c.execute(f"UPDATE {table} SET version = ?", (version,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
