"""Market operation: the service sets DR windows from the real-time price feed and takes each one
through announce, clear, settle, check and claims on the chain's clock.

The decision is seed 003's ESC decision (its Table 1, as /work/shared/design.md, "The master
station", summarises it): a window is worth setting for a slot when the real-time price departs
from the retail price by at least the configured threshold; its direction follows the sign (the
contract reduces load when realtime >= retail, else increases it) and the mode values a kWh as
Table 1 does: shift (dEc = 0, the spread alone) or curtail (dEc = the retail price as well),
docs/market.md "Units". `decide` is that rule, pure; the rest moves the window along.

Each window is a row of `market_windows` (keyed by its slot's start), and the chain is the truth:
every round re-reads each open window's state on chain and does the one step it is due for, so a
restart (or a step that failed half-way) resumes where the chain is. Windows on chain beyond the
table's last (announced before a crash lost the row) are adopted, not announced again, and a new
window starts only after the last one on chain. One worker operates (lease `market`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.chain.port import W_ANNOUNCED, W_CHECKED, W_CLEARED, W_CLEARING, W_SETTLED, W_VOID
from gateway.clock import wall_ms
from gateway.master.chain_link import LEASES, MasterChain, take_lease
from gateway.master.chain_settings import MarketOps
from gateway.master.price_feed import PriceSlot, read_feed
from gateway.master.relay import TABLE as RELAY_TABLE
from gateway.master.sql import Sql

if TYPE_CHECKING:
    from gateway.master.parts import MasterParts

log = logging.getLogger(__name__)

TABLE = """CREATE TABLE IF NOT EXISTS market_windows (
    slot_start BIGINT PRIMARY KEY, win BIGINT, state TEXT NOT NULL, start_s BIGINT NOT NULL,
    end_s BIGINT NOT NULL, retail_micro BIGINT NOT NULL, realtime_micro BIGINT NOT NULL,
    mode TEXT NOT NULL, outcome TEXT, error TEXT, updated_ms BIGINT NOT NULL)"""
FINAL = ("done", "void")
STATE_NAMES = {W_ANNOUNCED: "announced", W_CLEARING: "clearing", W_CLEARED: "cleared",
               W_SETTLED: "settled", W_CHECKED: "checked", W_VOID: "void"}
LEASE_TTL_MS = 60_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A window to announce."""

    start_s: int
    end_s: int
    realtime_micro: int


def create_tables(sql: Sql) -> None:
    """The relay's and the market's tables and the leases (idempotent)."""
    with sql.transaction():
        for statement in (RELAY_TABLE, TABLE, LEASES):
            sql.run(statement)


def decide(slots: list[PriceSlot], *, ops: MarketOps, now_s: int, lockout_s: int,
           free_from_s: int) -> Plan | None:
    """The earliest slot worth a window (|realtime - retail| >= threshold) that can still be
    announced (start >= now + lockout + lead), lies within the horizon and starts after the last
    window set (the market refuses overlaps: WindowOverlap)."""
    earliest = max(now_s + lockout_s + ops.lead_s, free_from_s)
    for slot in slots:
        if slot.start_s < earliest or slot.start_s > now_s + ops.horizon_s:
            continue
        if abs(slot.realtime_micro - ops.retail_micro) >= ops.threshold_micro:
            return Plan(start_s=slot.start_s, end_s=slot.start_s + ops.slot_s,
                        realtime_micro=slot.realtime_micro)
    return None


async def run_market(parts: MasterParts, stopped: asyncio.Event) -> None:
    ops = parts.settings.market
    assert ops is not None
    while not stopped.is_set():
        try:
            if await parts.in_db(lambda: take_lease(parts.sql, name="market", owner=parts.worker,
                                                    now_ms=wall_ms(), ttl_ms=LEASE_TTL_MS)):
                await operate_once(parts)
        except Exception as exc:  # a feed, node or database that failed: the next round retries
            log.error("market: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), ops.poll_ms / 1000)


async def operate_once(parts: MasterParts) -> list[dict[str, Any]]:
    """One round: move every open window one step, then announce the next one worth it."""
    chain, ops = parts.chain, parts.settings.market
    assert chain is not None and ops is not None
    if parts.price_topic is not None:  # mqtt:TOPIC: the newest message that parsed
        slots = parts.price_topic.slots
    else:
        slots = await asyncio.to_thread(read_feed, ops.feed)
    rows = await parts.in_db(lambda: _open_rows(parts.sql))
    changes = await chain.run(lambda: _step(chain, ops, rows, slots))
    await parts.in_db(lambda: _save(parts.sql, changes))
    return changes


def _open_rows(sql: Sql) -> tuple[list[dict[str, Any]], int]:
    rows, _ = sql.run("SELECT slot_start, win, state, start_s, end_s FROM market_windows "
                      "WHERE state NOT IN ('done', 'void') ORDER BY slot_start")
    known, _ = sql.run("SELECT MAX(win) FROM market_windows")
    open_rows = [dict(zip(("slot_start", "win", "state", "start_s", "end_s"), r, strict=True))
                 for r in rows]
    return open_rows, int(known[0][0] or 0)


def _step(chain: MasterChain, ops: MarketOps, rows: tuple[list[dict[str, Any]], int],
          slots: list[PriceSlot]) -> list[dict[str, Any]]:
    """In the chain thread: adopt windows the table lost, advance each open window, then maybe
    announce one after the last window on chain."""
    config = chain.client.config()
    adopted = _adopt(chain, known=rows[1])
    changes = adopted + [_advance(chain, ops, row, config.report_grace_s)
                         for row in rows[0] + [a for a in adopted if a["state"] not in FINAL]]
    plan = decide(slots, ops=ops, now_s=chain.now(), lockout_s=config.lockout_s,
                  free_from_s=_last_end(chain))
    if plan is not None:
        from gateway.chain.revert import ChainRevert

        try:
            changes.append(_announce(chain, ops, plan))
        except ChainRevert as exc:  # e.g. a window someone else set meanwhile: the next round
            log.warning("market: window for %d..%d not announced: %s", plan.start_s, plan.end_s,
                        exc)
    return changes


def _last_end(chain: MasterChain) -> int:
    """The end of the latest window on chain that was not voided (set by anyone)."""
    c = chain.client
    for k in range(c.window_count(), 0, -1):
        w = c.window(k)
        if int(w["state"]) != W_VOID:
            return int(w["end"])
    return 0


def _announce(chain: MasterChain, ops: MarketOps, plan: Plan) -> dict[str, Any]:
    from gateway.market import model

    c = chain.client
    c.announce(chain.sender, start_s=plan.start_s, end_s=plan.end_s,
               retail_micro=ops.retail_micro, realtime_micro=plan.realtime_micro,
               omega_milli=ops.omega_milli, mode=model.Mode[ops.mode.upper()].value,
               pricing=1 if ops.pricing == "pay-as-bid" else 0)
    window = c.window_count()
    log.warning("market: window %d announced for %d..%d (realtime %.6f vs retail %.6f, %s)",
                window, plan.start_s, plan.end_s, plan.realtime_micro / 1e6,
                ops.retail_micro / 1e6, ops.mode)
    return {"slot_start": plan.start_s, "win": window, "state": "announced",
            "start_s": plan.start_s, "end_s": plan.end_s, "realtime_micro": plan.realtime_micro,
            "retail_micro": ops.retail_micro, "mode": ops.mode, "new": True}


def _adopt(chain: MasterChain, *, known: int) -> list[dict[str, Any]]:
    """Windows on chain after the last one in the table: announced before a crash lost the row
    (or by `drgw market announce`). They get a row and are operated like the service's own;
    their prices are not on chain (only the spread), so the row keeps the spread as realtime."""
    c, out = chain.client, []
    for k in range(known + 1, c.window_count() + 1):
        w = c.window(k)
        state = int(w["state"])
        out.append({"slot_start": int(w["start"]), "win": k, "state": STATE_NAMES.get(
            state, str(state)) if state != W_CHECKED else "checked", "start_s": int(w["start"]),
            "end_s": int(w["end"]), "retail_micro": 0, "realtime_micro": int(w["spreadMtok"]),
            "mode": "curtail" if int(w["mode"]) == 1 else "shift", "new": True})
        log.warning("market: window %d adopted from the chain (not in the table)", k)
    return out


def _advance(chain: MasterChain, ops: MarketOps, row: dict[str, Any],
             grace_s: int) -> dict[str, Any]:
    """The one step the window is due for, by its state on chain."""
    from gateway.chain.revert import ChainRevert

    c, window = chain.client, int(row["win"])
    state = int(c.window(window)["state"])
    error = None
    try:
        if state in (W_ANNOUNCED, W_CLEARING):
            c.clear(chain.sender, window)
        elif state == W_CLEARED and chain.now() >= int(row["end_s"]) + grace_s:
            c.settle(chain.sender, window)
        elif state == W_SETTLED:
            c.check(chain.sender, window)
        elif state == W_CHECKED:
            return {**row, "state": "done", "outcome": _outcome(chain, ops, window)}
    except ChainRevert as exc:  # e.g. RevealRunning or a grace not over on a slow node: next round
        error = str(exc)
        log.warning("market: window %d: %s", window, exc)
    state = int(c.window(window)["state"])
    name = STATE_NAMES.get(state, str(state))
    return {**row, "state": "void" if state == W_VOID else name, "error": error}


def _outcome(chain: MasterChain, ops: MarketOps, window: int) -> dict[str, Any]:
    """What the chain says of a checked window; claims paid out when [market] claims is on."""
    c = chain.client
    w = c.window(window)
    households = sorted({str(c.bid(b)["household"]) for b in c.window_bids(window)})
    claimed = 0
    for h in households if ops.claims else []:
        if c.claimable(h) > 0:
            mined = c.claim(chain.sender, h)
            claimed += sum(int(e["amount"]) for e in c.events("Claimed", mined))
    takes = {h: c.take(h, window) for h in households}
    return {"clearing_price_mtok_per_kwh": int(w["clearingPrice"]), "target_w": int(w["targetW"]),
            "winners": int(w["winners"]),
            "reported": sum(1 for t in takes.values() if bool(t["reported"])),
            "delivered_wh": {h: int(t["deliveredWh"]) for h, t in takes.items()},
            "claimed_mtok": claimed}


def _save(sql: Sql, changes: list[dict[str, Any]]) -> None:
    now = wall_ms()
    with sql.transaction():
        for ch in changes:
            if ch.get("new"):
                sql.run("INSERT INTO market_windows (slot_start, win, state, start_s, end_s, "
                        "retail_micro, realtime_micro, mode, updated_ms) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (slot_start) DO NOTHING",
                        [ch["slot_start"], ch["win"], ch["state"], ch["start_s"], ch["end_s"],
                         ch["retail_micro"], ch["realtime_micro"], ch["mode"], now])
            outcome = ch.get("outcome")
            sql.run("UPDATE market_windows SET state = ?, outcome = COALESCE(?, outcome), "
                    "error = ?, updated_ms = ? WHERE slot_start = ?",
                    [ch["state"], None if outcome is None else json.dumps(outcome),
                     ch.get("error"), now, ch["slot_start"]])
