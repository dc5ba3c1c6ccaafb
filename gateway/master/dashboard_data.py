"""What the operator dashboard shows, as plain JSON-ready values: the fleet table and the fleet-wide
ingest rate from the master's database, the DR windows and the reputation ranking from the chain.

Blocking reads: the fleet comes through the worker's database thread (`MasterParts.in_db`), the
chain through its own thread (web3 calls block). The rate is computed from the database's record
counters (`gateways.records`, which every worker adds to), not from this worker's counters, so a
dashboard on any worker shows the whole fleet's ingest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.master.sql import Sql

if TYPE_CHECKING:
    from gateway.chain.market_client import MarketClient

RATE_WINDOW_MS = 60_000  # "records/s over the last minute"
WINDOWS_SHOWN = 8  # newest DR windows on the page
# DRMarket window and bid states (gateway/chain/contracts/DRMarketBase.sol W_*; household.py BID_STATES)
WINDOW_STATES = {0: "none", 1: "announced", 2: "cleared", 3: "settled", 4: "checked", 5: "void",
                 6: "clearing"}
BID_STATES = {0: "none", 1: "open", 2: "withdrawn", 3: "consumed", 4: "done", 5: "sealed"}

_GATEWAYS = ("SELECT gw, online, reason, last_status_ms, last_health_ms, last_record_ms, "
             "backlog_rows, records, duplicates, forgeries FROM gateways ORDER BY gw")
_GAPS = "SELECT gw, state, COUNT(*) FROM gaps GROUP BY gw, state"


def fleet_rows(sql: Sql) -> list[dict[str, Any]]:
    """One row per gateway the database knows: online, last seen (the newest of status, health and
    record times), backlog, records stored, gaps open (open or being repaired) / filled / lost,
    forgeries (records quarantined as forged)."""
    gaps: dict[str, dict[str, int]] = {}
    for gw, state, n in sql.run(_GAPS)[0]:
        key = "open" if state in ("open", "repairing") else str(state)
        per = gaps.setdefault(str(gw), {"open": 0, "filled": 0, "lost": 0})
        per[key] = per.get(key, 0) + int(n)
    out = []
    for gw, online, reason, st_ms, he_ms, rec_ms, backlog, records, dups, forged in sql.run(
            _GATEWAYS)[0]:
        seen = [int(t) for t in (st_ms, he_ms, rec_ms) if t is not None]
        out.append({"gw": gw, "online": None if online is None else bool(online), "reason": reason,
                    "last_seen_ms": max(seen) if seen else None, "backlog": backlog,
                    "records": int(records), "duplicates": int(dups), "forgeries": int(forged),
                    "gaps": gaps.get(str(gw), {"open": 0, "filled": 0, "lost": 0})})
    return out


def records_total(sql: Sql) -> int:
    rows, _ = sql.run("SELECT COALESCE(SUM(records), 0) FROM gateways")
    return int(rows[0][0])


class IngestRate:
    """Records/s over the last minute from samples of the fleet's stored-record total: (newest −
    oldest sample within the minute) / their time apart. Samples are taken by the caller's clock;
    nothing here reads one."""

    def __init__(self, window_ms: int = RATE_WINDOW_MS) -> None:
        self.window_ms = window_ms
        self.samples: deque[tuple[int, int]] = deque()

    def add(self, now_ms: int, total: int) -> float:
        self.samples.append((now_ms, total))
        while len(self.samples) > 2 and now_ms - self.samples[1][0] >= self.window_ms:
            self.samples.popleft()
        return self.rate()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return 0.0 if t1 <= t0 else (n1 - n0) * 1000.0 / (t1 - t0)


class MarketView(Protocol):
    """What the dashboard reads from the market (the chain). Blocking."""

    def windows(self) -> list[dict[str, Any]]: ...

    def ranking(self) -> dict[str, list[dict[str, Any]]]: ...


@dataclass(frozen=True, slots=True)
class ChainMarketView:
    """The market through `MarketClient` views: the newest windows with their bids (award,
    delivery, outcome) and the contract's ranking views."""

    client: MarketClient
    shown: int = WINDOWS_SHOWN

    def windows(self) -> list[dict[str, Any]]:
        count = self.client.window_count()
        return [self._window(w) for w in range(count, max(0, count - self.shown), -1)]

    def _window(self, w: int) -> dict[str, Any]:
        info = self.client.window(w)
        bids = []
        for bid_id in self.client.window_bids(w):
            bid = self.client.bid(bid_id)
            take = self.client.take(bid["household"], w)
            bids.append({"id": bid_id, "household": bid["household"], "power_w": bid["powerW"],
                         "price_mtok": bid["priceMtok"], "state": BID_STATES.get(bid["state"], "?"),
                         "award_w": take["awardW"], "reported": bool(take["reported"]),
                         "delivered_wh": take["deliveredWh"],
                         "outcome": _outcome(take, WINDOW_STATES.get(info["state"], "?"))})
        return {"window": w, "state": WINDOW_STATES.get(info["state"], "?"),
                "start_s": info["start"], "end_s": info["end"],
                "mode": "reduce" if info["reduce"] else "increase", "target_w": info["targetW"],
                "clearing_price_mtok": info["clearingPrice"], "winners": info["winners"],
                "paid_mtok": info["paid"], "forfeited_mtok": info["forfeited"], "bids": bids}

    def ranking(self) -> dict[str, list[dict[str, Any]]]:
        return {"households": _ranked(self.client.rank_households()),
                "aggregators": _ranked(self.client.rank_aggregators())}


def _outcome(take: dict[str, Any], window_state: str) -> str:
    """A bid's end as the operator reads it: not awarded, awaiting its Report, or reported."""
    if not take["awardW"]:
        return "not awarded"
    if take["reported"]:
        return "reported"
    return "no report" if window_state in ("settled", "checked") else "awaiting report"


def _ranked(rows: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"rank": i + 1, "address": a, "score": s} for i, (a, s) in enumerate(rows)]
