"""The gap book: missing seq ranges found from the database's view of each gateway, who repairs
them, and how each ends (filled, or lost with the gateway's reason).

Why the database and not a worker's memory: with shared subscriptions a gateway's consecutive
batches land on different workers, so only the stored seq set shows a gap. A gap found is given
`grace_s` before its first resend, for batches still in flight on another worker. Each repair is
leased (lease_owner, lease_until_ms), taken by one compare-and-set UPDATE that SQLite and PostgreSQL
both run atomically, so one worker sends a gap's resends and another takes over when its lease
runs out. A gap ends filled when every seq of it is stored; lost when the gateway has sent all it
still held (its reply's `queued`) and the rest is still missing: the agent evicts oldest first
(docs/mqtt.md, "resend"), so those records are gone from the gateway for good.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.master.ledger import Alert, Ledger
from gateway.master.settings import RepairPolicy
from gateway.network.command_args import MAX_RESEND_SPAN

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """A gap this worker may send a resend for now."""

    gw: str
    seq_from: int
    seq_to: int
    attempts: int


_LEAD = """SELECT seq, nxt FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt
    FROM measurements WHERE gw = ? AND seq >= ?) AS runs WHERE nxt > seq + 1 ORDER BY seq"""
_OPEN = """INSERT INTO gaps (gw, seq_from, seq_to, state, detected_ms, next_try_ms)
    SELECT ?, ?, ?, 'open', ?, ? WHERE NOT EXISTS (SELECT 1 FROM gaps WHERE gw = ?
    AND seq_from <= ? AND seq_to >= ?) ON CONFLICT (gw, seq_from) DO NOTHING"""


class GapBook:
    def __init__(self, ledger: Ledger, policy: RepairPolicy) -> None:
        self.ledger = ledger
        self.sql = ledger.sql
        self.policy = policy

    def scan(self, *, now_ms: int) -> list[Alert]:
        """Find new gaps past each gateway's checked watermark and settle the open ones."""
        alerts: list[Alert] = []
        rows, _ = self.sql.run("SELECT gw, contiguous_to, first_seq FROM gateways WHERE max_seq > "
                               "contiguous_to ORDER BY gw")
        for gw, watermark, first in rows:
            alerts += self._detect(str(gw), int(watermark), int(first), now_ms)
        alerts += self._settle(now_ms)
        self.ledger.add_alerts(alerts, now_ms=now_ms)
        for alert in alerts:
            log.warning("alert %s %s: %s", alert.kind, alert.gw, alert.detail)
        return alerts

    def _detect(self, gw: str, watermark: int, first: int, now_ms: int) -> list[Alert]:
        """Holes between stored records from the watermark on, and before the first stored one
        when the watermark is lower (a birth's seq said the gateway was there: Ledger.record_status)."""
        alerts: list[Alert] = []
        holes, _ = self.sql.run(_LEAD, [gw, watermark])
        if first > watermark + 1:
            holes = [(watermark, first), *holes]
        settled_to: int | None = None
        for seq, nxt in holes:
            lo, hi = int(seq) + 1, int(nxt) - 1
            for start in range(lo, hi + 1, MAX_RESEND_SPAN):
                end = min(hi, start + MAX_RESEND_SPAN - 1)
                _, added = self.sql.run(_OPEN, [gw, start, end, now_ms,
                                                now_ms + self.policy.grace_ms, gw, end, start])
                if added:
                    alerts.append(Alert(gw, "gap", f"seq {start}..{end} missing "
                                        f"({end - start + 1} record(s)); resend after "
                                        f"{self.policy.grace_ms / 1000:g} s"))
            if settled_to is None and not self._lost(gw, lo, hi):
                settled_to = lo - 1
        if settled_to is None:
            self.sql.run("UPDATE gateways SET contiguous_to = max_seq WHERE gw = ?", [gw])
        else:
            self.sql.run("UPDATE gateways SET contiguous_to = ? WHERE gw = ?",
                         [max(settled_to, watermark), gw])
        return alerts

    def _lost(self, gw: str, lo: int, hi: int) -> bool:
        """Whether seq lo..hi is wholly recorded as lost (the watermark may pass over it)."""
        rows, _ = self.sql.run("SELECT COUNT(*) FROM gaps WHERE gw = ? AND state = 'lost' AND "
                               "seq_from <= ? AND seq_to >= ?", [gw, lo, hi])
        return int(rows[0][0]) > 0

    def _settle(self, now_ms: int) -> list[Alert]:
        """Close the gaps that are filled, and those whose remaining records the gateway no
        longer holds."""
        alerts: list[Alert] = []
        gaps, _ = self.sql.run(
            "SELECT g.gw, g.seq_from, g.seq_to, g.queued, (SELECT COUNT(*) FROM measurements m "
            "WHERE m.gw = g.gw AND m.seq BETWEEN g.seq_from AND g.seq_to) FROM gaps g "
            "WHERE g.state IN ('open', 'repairing')")
        for gw, lo, hi, queued, present in gaps:
            span, present = int(hi) - int(lo) + 1, int(present)
            if present >= span:
                self._close(gw, lo, "filled", None, now_ms)
            elif queued is not None and present >= int(queued):
                reason = (f"the gateway resent {queued} of {span} record(s) and holds no more: "
                          f"{span - present} evicted (its store's age/size limits)")
                self._close(gw, lo, "lost", reason, now_ms)
                alerts.append(Alert(str(gw), "lost", f"seq {lo}..{hi}: {reason}"))
        return alerts

    def _close(self, gw: str, lo: int, state: str, reason: str | None, now_ms: int) -> None:
        self.sql.run("UPDATE gaps SET state = ?, reason = ?, closed_ms = ?, lease_owner = NULL "
                     "WHERE gw = ? AND seq_from = ?", [state, reason, now_ms, gw, lo])

    def claim(self, *, now_ms: int, limit: int = 100) -> list[Claim]:
        """Lease the gaps whose next try is due and that no live lease holds."""
        worker, until = self.ledger.worker, now_ms + self.policy.lease_ms
        self.sql.run(
            "UPDATE gaps SET lease_owner = ?, lease_until_ms = ? WHERE state IN ('open', "
            "'repairing') AND next_try_ms <= ? AND (lease_owner IS NULL OR lease_owner = ? OR "
            "lease_until_ms < ?)", [worker, until, now_ms, worker, now_ms])
        rows, _ = self.sql.run(
            "SELECT gw, seq_from, seq_to, attempts FROM gaps WHERE lease_owner = ? AND "
            "lease_until_ms = ? AND state IN ('open', 'repairing') AND next_try_ms <= ? "
            "ORDER BY next_try_ms LIMIT ?", [worker, until, now_ms, limit])
        return [Claim(str(gw), int(lo), int(hi), int(n)) for gw, lo, hi, n in rows]

    def sent(self, claim: Claim, *, cmd_id: str, now_ms: int) -> None:
        """A resend went out: the next try after the backoff, unless the range arrives first."""
        self.sql.run(
            "UPDATE gaps SET state = 'repairing', attempts = attempts + 1, cmd_id = ?, "
            "next_try_ms = ?, lease_until_ms = ? WHERE gw = ? AND seq_from = ? AND lease_owner = ?",
            [cmd_id, now_ms + self.policy.backoff_ms(claim.attempts + 1),
             now_ms + self.policy.backoff_ms(claim.attempts + 1) + self.policy.lease_ms,
             claim.gw, claim.seq_from, self.ledger.worker])

    def replied(self, *, cmd_id: str, queued: int | None, error: str | None) -> bool:
        """The gateway's (signed) reply to a resend: how many it queued, or why it refused."""
        _, n = self.sql.run("UPDATE gaps SET queued = COALESCE(?, queued), last_error = ? "
                            "WHERE cmd_id = ?", [queued, error, cmd_id])
        return n > 0

    def audit(self) -> list[tuple[str, int]]:
        """Stored neighbours that do not chain (seq, seq + 1 with prev != leaf): stored by two
        workers at once, so neither transaction saw the other. Each is a chain_break to explain."""
        rows, _ = self.sql.run(
            "SELECT b.gw, b.seq FROM measurements a JOIN measurements b ON b.gw = a.gw AND "
            "b.seq = a.seq + 1 WHERE b.prev <> a.leaf")
        return [(str(gw), int(seq)) for gw, seq in rows]
