"""The master's record of the fleet: verified measurements stored once, the rest quarantined, and
each gateway's state, over either backend (gateway/master/sql.py).

Idempotence is the primary key (gw, seq): a redelivery or a resend of a stored record is counted as
a duplicate; the same seq with other content is a forgery, never an overwrite. What a single payload
cannot show is judged here against the database, inside the write transaction: the stored record
before a new one must hash to its prev, and the stored record after it must name its hash as prev.
A run of payloads costs the same few statements whatever its gateways: one read of all their
stored neighbours, one bulk insert (COPY on PostgreSQL), one insert each of quarantined rows and
alerts, one upsert of the gateways' counts; rows go in (gw, seq) order, so two workers take row locks
in the same order and never wait on each other in a circle.
Each write lowers the gateway's gap-scan watermark to just below its lowest new record, so a batch
that reaches one worker after a later batch reached another is still scanned for gaps before it.
Two workers storing neighbours at the same moment cannot see each other; the gap scan
(gateway/master/gaps.py) checks those links again once both are stored, before its watermark
passes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.master.fleet_state import StatusUpdate
from gateway.master.sql import Sql
from gateway.master.verify import Accepted, BatchCheck, Rejected

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator must look at: offline, gap, lost, forgery, clock, chain_break."""

    gw: str
    kind: str
    detail: str


@dataclass(slots=True)
class StoreResult:
    inserted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    alerts: list[Alert] = field(default_factory=list)


# The stored neighbours of many gateways' seq ranges in one query: VALUES rows (gw, lo, hi) are
# named column1..column3 by both SQLite and PostgreSQL (a column alias list is PostgreSQL's only).
_NEIGHBOURS = ("SELECT m.gw, m.seq, m.leaf, m.prev FROM measurements m JOIN (VALUES {rows}) AS r "
               "ON m.gw = r.column1 AND m.seq BETWEEN r.column2 AND r.column3")
_NEIGHBOUR_CHUNK = 1000  # gateways a query: 3 parameters each, far under both backends' limits
_QUARANTINE = ("INSERT INTO quarantine (gw, seq, reason, raw, worker, time_ms) "
               "VALUES (?, ?, ?, ?, ?, ?)")
_ALERT = "INSERT INTO alerts (gw, kind, detail, worker, time_ms) VALUES (?, ?, ?, ?, ?)"
_COUNT = """INSERT INTO gateways (gw, first_seq, max_seq, contiguous_to, records, duplicates,
    forgeries, last_record_ms, records_unsynced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (gw) DO UPDATE SET
      first_seq = CASE WHEN gateways.first_seq IS NULL OR excluded.first_seq < gateways.first_seq
                  THEN excluded.first_seq ELSE gateways.first_seq END,
      max_seq = CASE WHEN gateways.max_seq IS NULL OR excluded.max_seq > gateways.max_seq
                THEN excluded.max_seq ELSE gateways.max_seq END,
      contiguous_to = CASE WHEN gateways.contiguous_to IS NULL
                      OR excluded.contiguous_to < gateways.contiguous_to
                      THEN excluded.contiguous_to ELSE gateways.contiguous_to END,
      records = gateways.records + excluded.records,
      duplicates = gateways.duplicates + excluded.duplicates,
      forgeries = gateways.forgeries + excluded.forgeries,
      last_record_ms = excluded.last_record_ms,
      records_unsynced = excluded.records_unsynced"""


class Ledger:
    """Writes of one worker. Blocking: the service calls it from its database thread."""

    def __init__(self, sql: Sql, *, worker: str) -> None:
        self.sql = sql
        self.worker = worker

    def store(self, checks: Sequence[BatchCheck], *, now_ms: int) -> StoreResult:
        """Store a run of verified payloads in one transaction."""
        result = StoreResult()
        runs: dict[str, _GatewayRun] = {}
        for check in checks:
            runs.setdefault(check.gw, _GatewayRun()).add(check)
        order = sorted(runs)
        with self.sql.transaction():
            stored = self._neighbours({gw: runs[gw].fresh for gw in order if runs[gw].fresh})
            for gw in order:
                runs[gw].against_stored(stored.get(gw, {}))
            inserted = self.sql.insert_measurements([
                (gw, a.seq, a.leaf, a.prev, a.time_ms, int(a.synced), a.device, a.wire,
                 self.worker, now_ms) for gw in order for a in runs[gw].in_order()])
            self._quarantine([(gw, r) for gw in order for r in runs[gw].rejected], now_ms, result)
            self._count(runs, order, inserted, now_ms)
        for gw in order:
            result.inserted += inserted.get(gw, 0)
            result.duplicates += runs[gw].duplicates_given(inserted.get(gw, 0))
        for alert in result.alerts:
            log.warning("alert %s %s: %s", alert.kind, alert.gw, alert.detail)
        return result

    def _neighbours(self, fresh: dict[str, dict[int, Accepted]]
                    ) -> dict[str, dict[int, tuple[bytes, bytes]]]:
        """(leaf, prev) of the stored records from just before to just after each gateway's new
        ones, by gateway and seq."""
        out: dict[str, dict[int, tuple[bytes, bytes]]] = {}
        ranges = [(gw, min(seqs) - 1, max(seqs) + 1) for gw, seqs in fresh.items()]
        for i in range(0, len(ranges), _NEIGHBOUR_CHUNK):
            chunk = ranges[i:i + _NEIGHBOUR_CHUNK]
            rows, _ = self.sql.run(_NEIGHBOURS.format(rows=", ".join(["(?, ?, ?)"] * len(chunk))),
                                   [v for r in chunk for v in r])
            for gw, seq, leaf, prev in rows:
                out.setdefault(gw, {})[int(seq)] = (bytes(leaf), bytes(prev))
        return out

    def _quarantine(self, rejected: list[tuple[str, Rejected]], now_ms: int,
                    result: StoreResult) -> None:
        if not rejected:
            return
        self.sql.many(_QUARANTINE, [(gw, r.seq, r.reason, r.raw, self.worker, now_ms)
                                    for gw, r in rejected])
        alerts = [Alert(gw, "forgery", f"{'payload' if r.seq is None else f'seq {r.seq}'} "
                                       f"quarantined: {r.reason}") for gw, r in rejected]
        self.add_alerts(alerts, now_ms=now_ms)
        result.alerts.extend(alerts)
        result.quarantined += len(rejected)

    def _count(self, runs: dict[str, _GatewayRun], order: list[str], inserted: dict[str, int],
               now_ms: int) -> None:
        rows = []
        for gw in order:
            run = runs[gw]
            seqs = sorted(run.fresh)
            first = seqs[0] if seqs else None
            rows.append((gw, first, seqs[-1] if seqs else None, None if first is None else first - 1,
                         inserted.get(gw, 0), run.duplicates_given(inserted.get(gw, 0)),
                         len(run.rejected), now_ms if seqs else None,
                         int(any(not a.synced for a in run.fresh.values()))))
        self.sql.many(_COUNT, rows)

    def add_alerts(self, alerts: Sequence[Alert], *, now_ms: int) -> None:
        if alerts:
            self.sql.many(_ALERT, [(a.gw, a.kind, a.detail, self.worker, now_ms) for a in alerts])

    def record_status(self, gw: str, status: StatusUpdate, *, now_ms: int) -> list[Alert]:
        """Fold in a status message. A change of `online` or `clock_synced` is an alert once, by
        whichever worker writes the change first (compare-and-set in one statement)."""
        alerts: list[Alert] = []
        with self.sql.transaction():
            self.sql.run("INSERT INTO gateways (gw) VALUES (?) ON CONFLICT (gw) DO NOTHING", [gw])
            if status.online is not None:
                _, changed = self.sql.run(
                    "UPDATE gateways SET online = ? WHERE gw = ? AND (online IS NULL OR online <> ?)",
                    [int(status.online), gw, int(status.online)])
                if changed and not status.online:
                    alerts.append(Alert(gw, "offline", f"gateway went offline ({status.reason})"))
            if status.clock_synced is not None:
                _, changed = self.sql.run(
                    "UPDATE gateways SET clock_synced = ? WHERE gw = ? AND "
                    "(clock_synced IS NULL OR clock_synced <> ?)",
                    [int(status.clock_synced), gw, int(status.clock_synced)])
                if changed and not status.clock_synced:
                    alerts.append(Alert(gw, "clock", "the gateway's clock is not synchronised: its "
                                        "records carry sync=false until NTP/PTP is back"))
            if status.online and status.seq is not None:
                self._birth(gw, status.seq)
            self.sql.run(
                "UPDATE gateways SET reason = ?, version = COALESCE(?, version), config_hash = "
                "COALESCE(?, config_hash), status_seq = COALESCE(?, status_seq), backlog_rows = "
                "COALESCE(?, backlog_rows), disk_full = COALESCE(?, disk_full), "
                "last_status_ms = ? WHERE gw = ?",
                [status.reason, status.version, status.config_hash, status.seq,
                 status.backlog_rows, status.disk_full, now_ms, gw])
            self.add_alerts(alerts, now_ms=now_ms)
        for alert in alerts:
            log.warning("alert %s %s: %s", alert.kind, alert.gw, alert.detail)
        return alerts

    def _birth(self, gw: str, seq: int) -> None:
        """A birth: every record after its seq is published from now on, so the gap scan starts
        there at the latest (a lost first batch is a gap too, not history before the master)."""
        self.sql.run("UPDATE gateways SET contiguous_to = ? WHERE gw = ? AND "
                     "(contiguous_to IS NULL OR contiguous_to > ?)", [seq, gw, seq])

    def record_health(self, gw: str, body: str, *, now_ms: int) -> None:
        self.sql.run("INSERT INTO gateways (gw, health, last_health_ms) VALUES (?, ?, ?) "
                     "ON CONFLICT (gw) DO UPDATE SET health = excluded.health, "
                     "last_health_ms = excluded.last_health_ms", [gw, body, now_ms])


class _GatewayRun:
    """One gateway's part of a run: its new records by seq, the rejected, the duplicates."""

    __slots__ = ("duplicates", "fresh", "rejected")

    def __init__(self) -> None:
        self.fresh: dict[int, Accepted] = {}
        self.rejected: list[Rejected] = []
        self.duplicates = 0

    def add(self, check: BatchCheck) -> None:
        """A payload's verdict: a seq twice in the run is a duplicate, or a forgery with other
        content."""
        self.rejected.extend(check.rejected)
        for record in check.accepted:
            same = self.fresh.get(record.seq)
            if same is None:
                self.fresh[record.seq] = record
            elif same.leaf == record.leaf:
                self.duplicates += 1
            else:
                self.rejected.append(Rejected(seq=record.seq, raw=record.wire,
                                              reason=f"seq {record.seq} twice with other content"))

    def in_order(self) -> list[Accepted]:
        return [self.fresh[seq] for seq in sorted(self.fresh)]

    def duplicates_given(self, inserted: int) -> int:
        """Duplicates, counting the new records the insert skipped (another worker stored them
        since we looked)."""
        return self.duplicates + len(self.fresh) - inserted

    def against_stored(self, stored: dict[int, tuple[bytes, bytes]]) -> None:
        """Drop from `fresh` the records already stored (duplicates) and those that contradict
        the stored ones (moved to `rejected`); `stored` is (leaf, prev) by seq."""
        for seq in sorted(self.fresh):
            record, here = self.fresh[seq], stored.get(seq)
            before, after = stored.get(seq - 1), stored.get(seq + 1)
            problem = None
            if here is not None and here[0] == record.leaf:
                self.duplicates += 1
            elif here is not None:
                problem = f"seq {seq} is already stored with other content"
            elif before is not None and before[0] != record.prev:
                problem = f"prev hash of seq {seq} does not match the stored seq {seq - 1}"
            elif after is not None and after[1] != record.leaf:
                problem = f"the stored seq {seq + 1} does not chain to seq {seq}"
            if here is not None or problem is not None:
                del self.fresh[seq]
            if problem is not None:
                self.rejected.append(Rejected(seq=seq, reason=problem, raw=record.wire))


def summary(sql: Sql) -> dict[str, object]:
    """The fleet as the database sees it (`drgw master status`): one row per gateway, open and
    lost gaps, the latest alerts; with [chain], the relay's rows by kind and state (and those not
    accepted) and the DR windows the market task operates (None: no such table, no [chain])."""
    cols = ("gw", "online", "reason", "version", "config_hash", "clock_synced", "backlog_rows",
            "first_seq", "max_seq", "records", "duplicates", "forgeries", "last_status_ms",
            "last_record_ms")
    rows, _ = sql.run(f"SELECT {', '.join(cols)} FROM gateways ORDER BY gw")
    gaps, _ = sql.run("SELECT gw, seq_from, seq_to, state, attempts, reason FROM gaps "
                      "ORDER BY gw, seq_from")
    alerts, _ = sql.run("SELECT gw, kind, detail, worker, time_ms FROM alerts ORDER BY id DESC "
                        "LIMIT 50")
    names = tables(sql)
    return {
        "relay": _relay(sql) if "relay" in names else None,
        "windows": market_windows(sql) if "market_windows" in names else None,
        "gateways": [dict(zip(cols, r, strict=True)) for r in rows],
        "gaps": [dict(zip(("gw", "seq_from", "seq_to", "state", "attempts", "reason"), g,
                          strict=True)) for g in gaps],
        "alerts": [dict(zip(("gw", "kind", "detail", "worker", "time_ms"), a, strict=True))
                   for a in alerts],
    }


def tables(sql: Sql) -> set[str]:
    """The tables of the master's database (the relay's and the market's exist with [chain])."""
    query = ("SELECT name FROM sqlite_master WHERE type = 'table'" if sql.name.startswith("sqlite")
             else "SELECT table_name FROM information_schema.tables "
                  "WHERE table_schema = current_schema()")
    rows, _ = sql.run(query)
    return {str(r[0]) for r in rows}


def _relay(sql: Sql) -> dict[str, object]:
    """Relayed Reports and commitments: counts by (kind, state), and the rows still waiting or
    refused with their error."""
    counts, _ = sql.run("SELECT kind, state, COUNT(*) FROM relay GROUP BY kind, state "
                        "ORDER BY kind, state")
    cols = ("household", "win", "kind", "gw", "state", "tx", "error", "updated_ms")
    open_rows, _ = sql.run(f"SELECT {', '.join(cols)} FROM relay WHERE state <> 'accepted' "
                           "ORDER BY updated_ms DESC LIMIT 20")
    return {"counts": [{"kind": k, "state": st, "count": int(n)} for k, st, n in counts],
            "open": [dict(zip(cols, r, strict=True)) for r in open_rows]}


def market_windows(sql: Sql) -> list[dict[str, object]]:
    """The newest DR windows of the market task (gateway/master/market_ops.py), newest first."""
    cols = ("slot_start", "win", "state", "start_s", "end_s", "retail_micro", "realtime_micro",
            "mode", "outcome", "error")
    rows, _ = sql.run(f"SELECT {', '.join(cols)} FROM market_windows ORDER BY slot_start DESC "
                      "LIMIT 20")
    return [dict(zip(cols, r, strict=True)) for r in rows]
