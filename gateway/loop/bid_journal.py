"""The bidder's durable record, in the gateway store's SQLite file: the bids it placed and what became
of them (window, award, deposit refunded or forfeited, payment), the claims that paid the household's
market balance out to its wallet, and the levers' measured load.

Its own tables and schema version (`bid_schema`), beside the DR journal's (gateway/loop/journal.py)
through a connection of its own (WAL allows it); migrations follow the store's rule (ordered, one
transaction each with the version bump, never edited once released). Storage stays bounded: lever
slots older than the history the bidder learns from are pruned, and finished bids after a year.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.chain.market_types import BidOrder
from gateway.loop.history import LoadSlot
from gateway.loop.journal import migrate
from gateway.measurement.keyfile import create_private

KEEP_FINISHED_S = 366 * 86400  # finished bids (withdrawn, or settled with an outcome) kept a year


def _v1(c: sqlite3.Connection) -> None:
    c.execute("CREATE TABLE market_bids (bid_id INTEGER PRIMARY KEY, from_s INTEGER NOT NULL, "
              "to_s INTEGER NOT NULL, power_w INTEGER NOT NULL, rated_w INTEGER NOT NULL, "
              "price_mtok INTEGER NOT NULL, deposit_mtok INTEGER NOT NULL, state TEXT NOT NULL, "
              "window INTEGER NOT NULL DEFAULT 0, award_w INTEGER NOT NULL DEFAULT 0, "
              "replaces INTEGER, basis TEXT NOT NULL, outcome TEXT, placed_ms INTEGER NOT NULL, "
              "updated_ms INTEGER NOT NULL)")
    c.execute("CREATE TABLE lever_slots (lever TEXT NOT NULL, start_s INTEGER NOT NULL, "
              "slot_s INTEGER NOT NULL, energy_ws REAL NOT NULL, covered_s REAL NOT NULL, "
              "PRIMARY KEY (lever, slot_s, start_s))")


def _v2(c: sqlite3.Connection) -> None:
    """Pull settlement (issue 14): payments and refunds accrue in the market until claimed."""
    c.execute("CREATE TABLE market_claims (claimed_ms INTEGER NOT NULL, "
              "amount_mtok INTEGER NOT NULL)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2)


@dataclass(frozen=True, slots=True, kw_only=True)
class BidRow:
    bid_id: int
    order: BidOrder
    deposit_mtok: int
    state: str  # as the contract last said: open, withdrawn, consumed, done
    window: int
    award_w: int
    replaces: int | None
    basis: str
    outcome: dict[str, Any] | None  # once done: deposit refunded/forfeited, payment
    placed_ms: int


class BidJournal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        create_private(self.path)  # 0600 like the store it sits in
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        migrate(self.conn, table="bid_schema", migrations=MIGRATIONS, what=f"{self.path}: bid journal")

    # ----------------------------------------------------------------------------- bids

    def add_bid(self, bid_id: int, order: BidOrder, *, deposit_mtok: int, basis: str,
                replaces: int | None, now_ms: int) -> None:
        o = order
        self.conn.execute(
            "INSERT OR REPLACE INTO market_bids (bid_id, from_s, to_s, power_w, rated_w, price_mtok, "
            "deposit_mtok, state, replaces, basis, placed_ms, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?)",
            (bid_id, o.from_s, o.to_s, o.power_w, o.rated_w, o.price_mtok, deposit_mtok, replaces,
             basis, now_ms, now_ms))

    def update(self, bid_id: int, *, state: str, window: int, award_w: int, now_ms: int) -> bool:
        """The contract's view of one of our bids; True when something changed."""
        cur = self.conn.execute(
            "UPDATE market_bids SET state = ?, window = ?, award_w = ?, updated_ms = ? "
            "WHERE bid_id = ? AND (state, window, award_w) IS NOT (?, ?, ?)",
            (state, window, award_w, now_ms, bid_id, state, window, award_w))
        return cur.rowcount > 0

    def set_outcome(self, bid_id: int, outcome: dict[str, Any], *, now_ms: int) -> None:
        self.conn.execute("UPDATE market_bids SET outcome = ?, updated_ms = ? WHERE bid_id = ?",
                          (json.dumps(outcome, sort_keys=True), now_ms, bid_id))

    def add_claim(self, amount_mtok: int, *, now_ms: int) -> None:
        self.conn.execute("INSERT INTO market_claims VALUES (?, ?)", (now_ms, amount_mtok))

    def claims(self) -> list[tuple[int, int]]:
        """(claimed_ms, amount_mtok) of every claim, oldest first."""
        cur = self.conn.execute("SELECT claimed_ms, amount_mtok FROM market_claims "
                                "ORDER BY claimed_ms, rowid")
        return [(int(r[0]), int(r[1])) for r in cur]

    def own_ids(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT bid_id FROM market_bids")}

    def bids(self) -> list[BidRow]:
        cur = self.conn.execute(
            "SELECT bid_id, from_s, to_s, power_w, rated_w, price_mtok, deposit_mtok, state, window, "
            "award_w, replaces, basis, outcome, placed_ms FROM market_bids ORDER BY bid_id")
        return [BidRow(bid_id=r[0], order=BidOrder(from_s=r[1], to_s=r[2], power_w=r[3],
                                                   rated_w=r[4], price_mtok=r[5]),
                       deposit_mtok=r[6], state=r[7], window=r[8], award_w=r[9], replaces=r[10],
                       basis=r[11], outcome=None if r[12] is None else json.loads(r[12]),
                       placed_ms=r[13]) for r in cur]

    def summary(self) -> dict[str, int]:
        """Deposits held now, and paid, refunded and forfeited in total (mtok), over our bids."""
        out = {"bids_open": 0, "held_deposit_mtok": 0, "paid_mtok": 0, "refunded_mtok": 0,
               "forfeited_mtok": 0, "awaiting_settlement": 0}
        for bid in self.bids():
            out["bids_open"] += bid.state == "open"
            if bid.state in ("open", "consumed"):
                out["held_deposit_mtok"] += bid.deposit_mtok
            if bid.state == "done" and bid.outcome is None:
                out["awaiting_settlement"] += 1
            if bid.outcome is not None:
                out["paid_mtok"] += int(bid.outcome.get("payment_mtok", 0))
                if bid.outcome.get("deposit") in ("refunded", "forfeited"):
                    out[f"{bid.outcome['deposit']}_mtok"] += bid.deposit_mtok
        out["net_mtok"] = out["paid_mtok"] - out["forfeited_mtok"]
        claims = self.claims()
        out["claims"] = len(claims)
        out["claimed_mtok"] = sum(amount for _, amount in claims)
        return out

    def prune_bids(self, *, now_s: int) -> None:
        self.conn.execute("DELETE FROM market_bids WHERE to_s < ? AND (state = 'withdrawn' OR "
                          "outcome IS NOT NULL)", (now_s - KEEP_FINISHED_S,))
        self.conn.execute("DELETE FROM market_claims WHERE claimed_ms < ?",
                          ((now_s - KEEP_FINISHED_S) * 1000,))

    # ----------------------------------------------------------------------------- lever loads

    def add_lever_slots(self, lever: str, slots: Iterable[LoadSlot]) -> None:
        """Insert finished slots; a slot seen again (partial at a restart) is merged into its row."""
        rows = [(lever, s.start_s, s.slot_s, s.energy_ws, s.covered_s) for s in slots]
        if rows:
            self.conn.executemany(
                "INSERT INTO lever_slots VALUES (?, ?, ?, ?, ?) ON CONFLICT (lever, slot_s, start_s) "
                "DO UPDATE SET energy_ws = energy_ws + excluded.energy_ws, "
                "covered_s = min(slot_s, covered_s + excluded.covered_s)", rows)

    def lever_slots(self, lever: str, *, slot_s: int, start_s: int, end_s: int) -> list[LoadSlot]:
        cur = self.conn.execute(
            "SELECT start_s, slot_s, energy_ws, covered_s FROM lever_slots WHERE lever = ? AND "
            "slot_s = ? AND start_s >= ? AND start_s < ? ORDER BY start_s",
            (lever, slot_s, start_s, end_s))
        return [LoadSlot(start_s=r[0], slot_s=r[1], energy_ws=r[2], covered_s=r[3]) for r in cur]

    def prune_levers(self, *, before_s: int) -> int:
        return self.conn.execute("DELETE FROM lever_slots WHERE start_s < ?", (before_s,)).rowcount
