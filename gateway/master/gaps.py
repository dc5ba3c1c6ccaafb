"""The gap book: missing seq ranges found from the database's view of each gateway, who repairs
them, and how each ends (filled, or lost with the gateway's reason).

Why the database and not a worker's memory: with shared subscriptions a gateway's consecutive
batches land on different workers, so only the stored seq set shows a gap. A gap found is given
`grace_s` before its first resend, for batches still in flight on another worker. Each repair is
leased (lease_owner, lease_until_ms), taken by one compare-and-set UPDATE that SQLite and PostgreSQL
both run atomically, so one worker sends a gap's resends and another takes over when its lease
runs out. A gap ends filled when every seq of it is stored; lost when the gateway has sent all it
still held (its reply's `queued`) and the rest is still missing: the agent evicts oldest first
(docs/mqtt.md, "resend"), so those records are gone from the gateway for good. A gap whose records
all arrive before its first resend was only a reordering of batches over the workers: its row is
removed, so the gap book ends the same whichever order the batches took.
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


# The stored seqs above a watermark that bound a run (the first, the last, and each one followed
# by a hole), read in ONE statement: a single statement sees one snapshot in SQLite and in
# PostgreSQL (READ COMMITTED: postgresql.org/docs/current/transaction-iso.html, 13.2.1), so the
# holes, the first seq and the top agree with each other whatever another worker stores meanwhile.
_RUNS = """SELECT seq, nxt FROM (SELECT seq, LAG(seq) OVER (ORDER BY seq) AS prv,
    LEAD(seq) OVER (ORDER BY seq) AS nxt FROM measurements WHERE gw = ? AND seq > ?) AS runs
    WHERE prv IS NULL OR nxt IS NULL OR nxt > seq + 1 ORDER BY seq"""
_OPEN = """INSERT INTO gaps (gw, seq_from, seq_to, state, detected_ms, next_try_ms)
    SELECT ?, ?, ?, 'open', ?, ? WHERE NOT EXISTS (SELECT 1 FROM gaps WHERE gw = ?
    AND seq_from <= ? AND seq_to >= ?) ON CONFLICT (gw, seq_from) DO NOTHING"""
# Stored neighbours in [watermark, top] that do not chain (prev of seq + 1 <> leaf of seq). Run after
# _RUNS: every record up to `top` was committed before that statement, so this one sees them all.
# Both sides are bounded, so either may be the planner's outer loop over an index range.
_BREAKS = """SELECT b.seq FROM measurements a JOIN measurements b ON b.gw = a.gw AND b.seq = a.seq + 1
    WHERE a.gw = ? AND a.seq >= ? AND a.seq < ? AND b.seq > ? AND b.seq <= ? AND b.prev <> a.leaf
    ORDER BY b.seq"""
# Raise the watermark only if no write lowered it since the scan read it (compare-and-set): a
# batch stored meanwhile below the top the scan saw is scanned again by the next scan.
_ADVANCE = ("UPDATE gateways SET contiguous_to = ? WHERE gw = ? AND contiguous_to = ? "
            "AND contiguous_to < ?")


def holes_above(watermark: int, runs: list[tuple[int, int | None]]) -> list[tuple[int, int]]:
    """(last stored, next stored) around each hole above the watermark, from `_RUNS` rows. The
    first stored seq above the watermark bounds a hole too: the watermark was a birth's seq or
    a checked seq, so everything after it is expected."""
    holes = [(watermark, runs[0][0])] if runs and runs[0][0] > watermark + 1 else []
    return holes + [(seq, nxt) for seq, nxt in runs if nxt is not None and nxt > seq + 1]


class GapBook:
    def __init__(self, ledger: Ledger, policy: RepairPolicy) -> None:
        self.ledger = ledger
        self.sql = ledger.sql
        self.policy = policy

    def scan(self, *, now_ms: int) -> list[Alert]:
        """Find new gaps past each gateway's checked watermark and settle the open ones."""
        alerts: list[Alert] = []
        rows, _ = self.sql.run("SELECT gw, contiguous_to FROM gateways WHERE max_seq > "
                               "contiguous_to ORDER BY gw")
        for gw, watermark in rows:
            alerts += self._detect(str(gw), int(watermark), now_ms)
        alerts += self._settle(now_ms)
        self.ledger.add_alerts(alerts, now_ms=now_ms)
        for alert in alerts:
            log.warning("alert %s %s: %s", alert.kind, alert.gw, alert.detail)
        return alerts

    def _detect(self, gw: str, watermark: int, now_ms: int) -> list[Alert]:
        """Holes between stored records from the watermark on, then the watermark raised to just
        before the first hole not recorded lost (or to the top seen). Everything comes from one
        snapshot and the raise is a compare-and-set: another worker's store landing between these
        statements (shared subscriptions: it holds this gateway's neighbouring batch) must not be
        passed over unscanned (tests/integration/master/test_master_orders.py). The links of the
        records the watermark passes are audited on the way (two workers storing neighbours at
        once cannot see each other's rows): a pair that does not chain is a chain_break alert."""
        raw, _ = self.sql.run(_RUNS, [gw, watermark])
        runs = [(int(seq), None if nxt is None else int(nxt)) for seq, nxt in raw]
        if not runs:
            return []  # max_seq was raised by a store committed after our snapshot: next scan
        alerts: list[Alert] = []
        settled_to: int | None = None
        for seq, nxt in holes_above(watermark, runs):
            lo, hi = seq + 1, nxt - 1
            alerts += self._open(gw, lo, hi, now_ms)
            if settled_to is None and not self._lost(gw, lo, hi):
                settled_to = lo - 1
        top = runs[-1][0] if settled_to is None else settled_to
        breaks, _ = (self.sql.run(_BREAKS, [gw, watermark, top, watermark, top]) if top > watermark
                     else ([], 0))
        _, raised = self.sql.run(_ADVANCE, [top, gw, watermark, top])
        if raised:  # else a store lowered the watermark meanwhile: the next scan audits again
            alerts += [Alert(gw, "chain_break", f"seq {seq} does not chain to seq {seq - 1} (both "
                             "signed by the gateway, stored by two workers at once): check the "
                             "gateway's store for a restored backup") for (seq,) in breaks]
        return alerts

    def _open(self, gw: str, lo: int, hi: int, now_ms: int) -> list[Alert]:
        """Record hole lo..hi (in spans a resend may ask for) unless a gap already covers it."""
        alerts: list[Alert] = []
        for start in range(lo, hi + 1, MAX_RESEND_SPAN):
            end = min(hi, start + MAX_RESEND_SPAN - 1)
            _, added = self.sql.run(_OPEN, [gw, start, end, now_ms,
                                            now_ms + self.policy.grace_ms, gw, end, start])
            if added:
                alerts.append(Alert(gw, "gap", f"seq {start}..{end} missing "
                                    f"({end - start + 1} record(s)); resend after "
                                    f"{self.policy.grace_ms / 1000:g} s"))
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
            "WHERE m.gw = g.gw AND m.seq BETWEEN g.seq_from AND g.seq_to), g.attempts FROM gaps g "
            "WHERE g.state IN ('open', 'repairing')")
        for gw, lo, hi, queued, present, attempts in gaps:
            span, present = int(hi) - int(lo) + 1, int(present)
            if present >= span and not attempts:
                self._drop(gw, lo)
            elif present >= span:
                self._close(gw, lo, "filled", None, now_ms)
            elif queued is not None and present >= int(queued):
                reason = (f"the gateway resent {queued} of {span} record(s) and holds no more: "
                          f"{span - present} evicted (its store's age/size limits)")
                self._close(gw, lo, "lost", reason, now_ms)
                alerts.append(Alert(str(gw), "lost", f"seq {lo}..{hi}: {reason}"))
        return alerts

    def _drop(self, gw: str, lo: int) -> None:
        """Forget a gap whose records all arrived before any resend: it was a batch in flight on
        another worker (a reordering), not a gap, and which order the batches took must not show
        in the gap book (only its `gap` alert remains)."""
        self.sql.run("DELETE FROM gaps WHERE gw = ? AND seq_from = ? AND attempts = 0", [gw, lo])

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
        claims = [Claim(str(gw), int(lo), int(hi), int(n)) for gw, lo, hi, n in rows]
        return [c for c in (self._trim(c) if c.attempts == 0 else c for c in claims) if c]

    def _trim(self, claim: Claim) -> Claim | None:
        """Before the first resend: the gap narrowed to its first..last seq still missing. A gap is
        found from what is stored when it is found; records of a batch that was still in flight on
        another worker may have arrived during the grace, and neither the resend nor a later "lost"
        verdict may name them. None (and the gap forgotten, `_drop`) when nothing is missing."""
        rows, _ = self.sql.run("SELECT seq FROM measurements WHERE gw = ? AND seq BETWEEN ? AND ?",
                               [claim.gw, claim.seq_from, claim.seq_to])
        have = {int(seq) for seq, in rows}
        missing = [s for s in range(claim.seq_from, claim.seq_to + 1) if s not in have]
        if not missing:
            self._drop(claim.gw, claim.seq_from)
            return None
        lo, hi = missing[0], missing[-1]
        if (lo, hi) == (claim.seq_from, claim.seq_to):
            return claim
        taken, _ = self.sql.run("SELECT COUNT(*) FROM gaps WHERE gw = ? AND seq_from = ?",
                                [claim.gw, lo])
        if lo != claim.seq_from and int(taken[0][0]):
            return claim  # another gap row already starts there: resend the range as found
        self.sql.run("UPDATE gaps SET seq_from = ?, seq_to = ? WHERE gw = ? AND seq_from = ?",
                     [lo, hi, claim.gw, claim.seq_from])
        return Claim(claim.gw, lo, hi, claim.attempts)

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

