"""The Report relay: gateways' signed Reports and baseline commitments (their `chain` topic) go to
the market in batches, with the gas paid by the master's `[chain] key`; no gateway needs a relayer.

A payload is judged on arrival: it must parse (gateway/chain/relay_wire.py) and be signed by the
gateway of its topic, else it is recorded `rejected` for that gateway only (and alerted): a
tampered or foreign payload never costs gas and never touches another gateway's row. The `relay`
table holds one row per (household, window, kind, gateway): its payload, state (pending, accepted,
rejected), the transaction and the decoded error. A repeat of the same payload changes nothing, so
a gateway re-publishing each poll, a broker's redelivery or a master restart never sends twice.

One worker at a time relays (lease `relay`): every `relay_s` it reads the pending rows, and in the
chain thread first asks the chain whether each is already there (a restart after sending but
before recording finds it so and marks it accepted without sending), then commits baselines one by
one (the contract takes one per call; commitments come first, as their window has not started)
and sends the Reports whose window is over as `submitReports` batches. The contract checks each
Report of a batch alone: a bad one emits ReportRejected(window, household, selector) and the
others are accepted (docs/market.md, "Batched Reports"); its selector is decoded into the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.chain.relay_wire import RelayMessage, RelayPayloadError, decode
from gateway.chain.report import SignedBaseline, SignedReport
from gateway.clock import wall_ms
from gateway.master.chain_link import MasterChain, take_lease
from gateway.master.ledger import Alert

if TYPE_CHECKING:
    from gateway.master.parts import MasterParts

log = logging.getLogger(__name__)

TABLE = """CREATE TABLE IF NOT EXISTS relay (
    household TEXT NOT NULL, win BIGINT NOT NULL, kind TEXT NOT NULL, gw TEXT NOT NULL,
    payload TEXT NOT NULL, state TEXT NOT NULL, tx TEXT, error TEXT,
    received_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
    PRIMARY KEY (household, win, kind, gw))"""
# A new payload replaces a row that is still pending or was rejected (the gateway signed again),
# and a baseline at any state (a later commitment before the start replaces the earlier one).
_UPSERT = """INSERT INTO relay (household, win, kind, gw, payload, state, error, received_ms,
    updated_ms) VALUES (?, ?, ?, ?, ?, 'pending', NULL, ?, ?)
    ON CONFLICT (household, win, kind, gw) DO UPDATE SET payload = excluded.payload,
    state = 'pending', error = NULL, tx = NULL, updated_ms = excluded.updated_ms
    WHERE relay.payload <> excluded.payload AND (relay.state <> 'accepted' OR relay.kind = 'baseline')"""
_REFUSED = """INSERT INTO relay (household, win, kind, gw, payload, state, error, received_ms,
    updated_ms) VALUES (?, ?, ?, ?, ?, 'rejected', ?, ?, ?)
    ON CONFLICT (household, win, kind, gw) DO NOTHING"""
LEASE_TTL_MS = 30_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What the chain said of one row."""

    key: tuple[str, int, str, str]  # household, window, kind, gw
    state: str  # accepted | rejected | pending (not yet: its window is not over, the node is down)
    tx: str | None = None
    error: str | None = None


async def on_chain_message(parts: MasterParts, gw: str, payload: bytes) -> None:
    """A gateway's `chain` payload: recorded pending, or rejected for that gateway only."""
    now = wall_ms()
    text = payload.decode("utf-8", "replace")[:65_536]
    try:
        msg = decode(payload)
    except RelayPayloadError as exc:
        detail = f"chain payload refused: {exc}"
        await parts.in_db(lambda: parts.ledger.add_alerts(
            [Alert(gw=gw, kind="relay", detail=detail)], now_ms=now))
        parts.counters.alerted(["relay"])
        log.warning("relay: chain payload of %s refused: %s", gw, exc)
        return
    problem = _problem(parts, gw, msg)
    key = (msg.household.lower(), msg.window, msg.kind, gw)

    def work() -> None:
        if problem is None:
            parts.sql.run(_UPSERT, [*key, text, now, now])
            return
        parts.sql.run(_REFUSED, [*key, text, problem, now, now])
        parts.ledger.add_alerts([Alert(gw=gw, kind="relay", detail=problem)], now_ms=now)

    await parts.in_db(work)
    if problem is not None:
        parts.counters.alerted(["relay"])
        log.warning("relay: %s of %s window %d refused: %s", msg.kind, gw, msg.window, problem)


def _problem(parts: MasterParts, gw: str, msg: RelayMessage) -> str | None:
    if msg.signed.signer.lower() != gw:
        return (f"signed by {msg.signed.signer}, not by the gateway of its topic {gw}: altered "
                "or forged; not relayed")
    chain = parts.chain
    if chain is not None and (msg.chain_id, msg.market.lower()) != (
            chain.client.deployment.chain_id, chain.client.deployment.market.lower()):
        return (f"signed for market {msg.market} on chain {msg.chain_id}, not this master's "
                f"{chain.client.deployment.market} on chain {chain.client.deployment.chain_id}: "
                "check the gateway's [chain] market")
    return None


async def run_relay(parts: MasterParts, stopped: asyncio.Event) -> None:
    """Every `relay_s`, on the worker that holds the lease: relay what is pending."""
    assert parts.chain is not None and parts.settings.chain is not None
    every_ms = parts.settings.chain.relay_ms
    while not stopped.is_set():
        try:
            if await parts.in_db(lambda: take_lease(parts.sql, name="relay", owner=parts.worker,
                                                    now_ms=wall_ms(), ttl_ms=LEASE_TTL_MS)):
                await relay_once(parts)
        except Exception as exc:  # a node or a database that went away: the next round retries
            log.error("relay: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), every_ms / 1000)


async def relay_once(parts: MasterParts) -> list[Outcome]:
    chain, limit = parts.chain, parts.settings.chain
    assert chain is not None and limit is not None
    rows = await parts.in_db(lambda: parts.sql.run(
        "SELECT household, win, kind, gw, payload FROM relay WHERE state = 'pending' "
        "ORDER BY kind, received_ms LIMIT ?", [limit.batch_max * 4])[0])
    if not rows:
        return []
    pending = [((str(r[0]), int(r[1]), str(r[2]), str(r[3])), decode(str(r[4]).encode()))
               for r in rows]
    outcomes = await chain.run(lambda: send(chain, pending, batch_max=limit.batch_max))
    done = [o for o in outcomes if o.state != "pending"]
    now = wall_ms()
    await parts.in_db(lambda: parts.sql.many(
        "UPDATE relay SET state = ?, tx = ?, error = ?, updated_ms = ? "
        "WHERE household = ? AND win = ? AND kind = ? AND gw = ?",
        [(o.state, o.tx, o.error, now, *o.key) for o in done]))
    for o in done:
        log.info("relay: %s of %s window %d: %s%s", o.key[2], o.key[0], o.key[1], o.state,
                 f" ({o.error})" if o.error else "")
    return outcomes


def send(chain: MasterChain, pending: list[tuple[tuple[str, int, str, str], RelayMessage]], *,
         batch_max: int) -> list[Outcome]:
    """In the chain thread: commitments one by one, then Reports in batches."""
    from gateway.chain.sender import NodeUnavailable

    out: list[Outcome] = []
    try:
        for key, msg in pending:
            if isinstance(msg.signed, SignedBaseline):
                out.append(_commit(chain, key, msg.signed))
        reports = [(k, m.signed) for k, m in pending if isinstance(m.signed, SignedReport)]
        out.extend(_reports(chain, reports, batch_max=batch_max))
    except NodeUnavailable as exc:
        log.warning("relay: node unavailable (%s); pending rows wait for the next round", exc)
    return out


def _commit(chain: MasterChain, key: tuple[str, int, str, str], s: SignedBaseline) -> Outcome:
    from gateway.chain.revert import ChainRevert

    c, b = chain.client, s.baseline
    if _committed(chain, s):
        return Outcome(key=key, state="accepted", error="already on chain")
    try:
        mined = c.commit_baseline(chain.sender, s)
    except ChainRevert as exc:
        if _committed(chain, s):
            return Outcome(key=key, state="accepted", error="already on chain")
        return Outcome(key=key, state="rejected", error=str(exc))
    log.debug("relay: baseline of %s window %d committed", b.household, b.window)
    return Outcome(key=key, state="accepted", tx=mined.tx_hash)


def _committed(chain: MasterChain, s: SignedBaseline) -> bool:
    b = s.baseline
    on = chain.client.baseline(b.household, b.window)
    return bool(on["committed"]) and (int(on["method"]), bytes(on["inputHash"]),
                                      int(on["baselineWh"])) == (b.method, b.input_hash,
                                                                 b.baseline_wh)


def _reports(chain: MasterChain, rows: list[tuple[tuple[str, int, str, str], SignedReport]], *,
             batch_max: int) -> list[Outcome]:
    """Reports already on chain are settled without sending; a household's second candidate for
    the same window waits for the next round, so each ReportRejected names one row."""
    c, now, out = chain.client, chain.now(), []
    batch: dict[tuple[int, str], tuple[tuple[str, int, str, str], SignedReport]] = {}
    for key, s in rows:
        r = s.report
        if bool(c.take(r.household, r.window)["reported"]):
            same = c.report_root(r.household, r.window) == r.merkle_root
            out.append(Outcome(key=key, state="accepted" if same else "rejected",
                               error="already on chain" if same else
                               "DuplicateReport: another Report of this household is on chain"))
        elif r.window_end <= now and (r.window, key[0]) not in batch and len(batch) < batch_max:
            batch[(r.window, key[0])] = (key, s)
    if batch:
        out.extend(_submit(chain, list(batch.values())))
    return out


def _submit(chain: MasterChain, batch: list[tuple[tuple[str, int, str, str], SignedReport]]
            ) -> list[Outcome]:
    from gateway.chain.market_client import decoder
    from gateway.chain.revert import ChainRevert

    try:
        mined = chain.client.submit_reports(chain.sender, [s for _, s in batch])
    except ChainRevert as exc:  # the whole call failed (not one Report): each row says why
        return [Outcome(key=k, state="rejected", error=str(exc)) for k, _ in batch]
    refused = {(int(e["window"]), str(e["household"]).lower()): bytes(e["reason"])
               for e in chain.client.events("ReportRejected", mined)}
    out = []
    for key, _ in batch:
        reason = refused.get((key[1], key[0]))
        if reason is None:
            out.append(Outcome(key=key, state="accepted", tx=mined.tx_hash))
        else:
            name = decoder().decode(reason).name or "0x" + reason.hex()
            out.append(Outcome(key=key, state="rejected", tx=mined.tx_hash,
                               error=f"{name} (ReportRejected in a batch of {len(batch)})"))
    log.info("relay: submitReports of %d Report(s), %d rejected, gas %d", len(batch),
             len(refused), mined.gas_used)
    return out
