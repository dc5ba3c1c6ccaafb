"""The master's record of the fleet: verified measurements stored once, the rest quarantined, and
each gateway's state, over either backend (gateway/master/sql.py).

Idempotence is the primary key (gw, seq): a redelivery or a resend of a stored record is counted as
a duplicate; the same seq with other content is a forgery, never an overwrite. What a single payload
cannot show is judged here against the database, inside the write transaction: the stored record
before a new one must hash to its prev, and the stored record after it must name its hash as prev.
Each write lowers the gateway's gap-scan watermark to just below its lowest new record, so a batch
that reaches one worker after a later batch reached another is still scanned for gaps before it.
Two workers storing neighbours at the same moment cannot see each other; the gap book's audit
(gateway/master/gaps.py) checks those links again once both are stored.
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


_INSERT = ("INSERT INTO measurements (gw, seq, leaf, prev, time_ms, synced, device, wire, worker, "
           "stored_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gw, seq) DO NOTHING")
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
        """Store a run of verified payloads in one transaction (one gateway's rows locked in gw
        order, so two workers never wait on each other in a circle)."""
        result = StoreResult()
        by_gw: dict[str, list[BatchCheck]] = {}
        for check in checks:
            by_gw.setdefault(check.gw, []).append(check)
        with self.sql.transaction():
            for gw in sorted(by_gw):
                self._store_gateway(gw, by_gw[gw], now_ms, result)
        for alert in result.alerts:
            log.warning("alert %s %s: %s", alert.kind, alert.gw, alert.detail)
        return result

    def _store_gateway(self, gw: str, checks: list[BatchCheck], now_ms: int,
                       result: StoreResult) -> None:
        fresh: dict[int, Accepted] = {}
        rejected: list[Rejected] = [r for c in checks for r in c.rejected]
        duplicates = 0
        for record in sorted((a for c in checks for a in c.accepted), key=lambda a: a.seq):
            same = fresh.get(record.seq)
            if same is None:
                fresh[record.seq] = record
            elif same.leaf == record.leaf:
                duplicates += 1
            else:
                rejected.append(Rejected(seq=record.seq, raw=record.wire,
                                         reason=f"seq {record.seq} twice with other content"))
        if fresh:
            duplicates += self._against_stored(gw, fresh, rejected)
        inserted = self.sql.many(_INSERT, [
            (gw, a.seq, a.leaf, a.prev, a.time_ms, int(a.synced), a.device, a.wire, self.worker,
             now_ms) for a in fresh.values()]) if fresh else 0
        duplicates += len(fresh) - inserted  # stored by another worker since we looked
        self._quarantine(gw, rejected, now_ms, result)
        self._count(gw, fresh, inserted, duplicates, len(rejected), now_ms)
        result.inserted += inserted
        result.duplicates += duplicates

    def _against_stored(self, gw: str, fresh: dict[int, Accepted], rejected: list[Rejected]) -> int:
        """Drop from `fresh` the records already stored (duplicates, returned as a count) and those
        that contradict the stored ones (moved to `rejected`)."""
        lo, hi = min(fresh) - 1, max(fresh) + 1
        rows, _ = self.sql.run("SELECT seq, leaf, prev FROM measurements WHERE gw = ? AND seq "
                               "BETWEEN ? AND ?", [gw, lo, hi])
        stored = {int(seq): (bytes(leaf), bytes(prev)) for seq, leaf, prev in rows}
        duplicates = 0
        for seq in list(fresh):
            record, here = fresh[seq], stored.get(seq)
            before, after = stored.get(seq - 1), stored.get(seq + 1)
            problem = None
            if here is not None and here[0] == record.leaf:
                duplicates += 1
            elif here is not None:
                problem = f"seq {seq} is already stored with other content"
            elif before is not None and before[0] != record.prev:
                problem = f"prev hash of seq {seq} does not match the stored seq {seq - 1}"
            elif after is not None and after[1] != record.leaf:
                problem = f"the stored seq {seq + 1} does not chain to seq {seq}"
            if here is not None or problem is not None:
                del fresh[seq]
            if problem is not None:
                rejected.append(Rejected(seq=seq, reason=problem, raw=record.wire))
        return duplicates

    def _quarantine(self, gw: str, rejected: list[Rejected], now_ms: int,
                    result: StoreResult) -> None:
        if not rejected:
            return
        self.sql.many(_QUARANTINE, [(gw, r.seq, r.reason, r.raw, self.worker, now_ms)
                                    for r in rejected])
        for r in rejected:
            what = "payload" if r.seq is None else f"seq {r.seq}"
            result.alerts.append(Alert(gw, "forgery", f"{what} quarantined: {r.reason}"))
        self.add_alerts(result.alerts[-len(rejected):], now_ms=now_ms)
        result.quarantined += len(rejected)

    def _count(self, gw: str, fresh: dict[int, Accepted], inserted: int, duplicates: int,
               forgeries: int, now_ms: int) -> None:
        seqs = sorted(fresh)
        unsynced = int(any(not a.synced for a in fresh.values()))
        first = seqs[0] if seqs else None
        self.sql.run(_COUNT, [gw, first, seqs[-1] if seqs else None,
                              None if first is None else first - 1, inserted, duplicates,
                              forgeries, now_ms if seqs else None, unsynced])

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


def summary(sql: Sql) -> dict[str, object]:
    """The fleet as the database sees it (`drgw master status`): one row per gateway, open and
    lost gaps, the latest alerts."""
    cols = ("gw", "online", "reason", "version", "config_hash", "clock_synced", "backlog_rows",
            "first_seq", "max_seq", "records", "duplicates", "forgeries", "last_status_ms",
            "last_record_ms")
    rows, _ = sql.run(f"SELECT {', '.join(cols)} FROM gateways ORDER BY gw")
    gaps, _ = sql.run("SELECT gw, seq_from, seq_to, state, attempts, reason FROM gaps "
                      "ORDER BY gw, seq_from")
    alerts, _ = sql.run("SELECT gw, kind, detail, worker, time_ms FROM alerts ORDER BY id DESC "
                        "LIMIT 50")
    return {
        "gateways": [dict(zip(cols, r, strict=True)) for r in rows],
        "gaps": [dict(zip(("gw", "seq_from", "seq_to", "state", "attempts", "reason"), g,
                          strict=True)) for g in gaps],
        "alerts": [dict(zip(("gw", "kind", "detail", "worker", "time_ms"), a, strict=True))
                   for a in alerts],
    }
