"""What `drgw demo` prints: a line per loop event, the home's bid, one reading proven on chain, the summary.

Read-only over what the demo's parts said (the loop's and the bidder's MQTT event bodies, the agent's
store after it stopped, the market contract's views); it decides nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.chain.market_client import MarketClient
    from gateway.demo.market import DemoMarket


@dataclass(slots=True)
class DemoResult:
    award_w: int = 0
    window: int = 0
    verdict: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    chain_state: str | None = None
    settlement: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    bids: list[dict[str, Any]] = field(default_factory=list)  # the gateway's dr_bid messages
    baselines: list[dict[str, Any]] = field(default_factory=list)  # its dr_baseline messages
    proof: ProvenReading | None = None
    plot: Path | None = None
    workdir: Path | None = None
    event_id: str = ""
    gateway: str = ""  # the home gateway's address (its key signs bids, commitments, Reports)
    market: DemoMarket | None = None  # the embedded chain's market side, still readable afterwards

    def placed(self) -> dict[str, Any] | None:
        """The home's first bid placed by its gateway, once it is."""
        return next((b for b in self.bids if b.get("change") == "placed"), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvenReading:
    seq: int
    device: str
    leaf: bytes
    proof: tuple[bytes, ...]
    root: bytes
    on_chain: bool


class Progress:
    """Turns the loop's and the bidder's MQTT event bodies into one line each for the terminal."""

    def __init__(self, out: Callable[[str], None], result: DemoResult) -> None:
        self.out, self.result = out, result

    def __call__(self, body: Mapping[str, Any]) -> None:
        kind = body.get("type")
        if kind == "dr_bid":
            self.result.bids.append(dict(body))  # the demo prints the placed bid as its own line
            if body.get("change") not in ("placed", "renewed"):
                self.out(f"  gateway: bid {body['bid_id']} {body['change']} ({body['reason']})")
        elif kind == "dr_baseline":
            self.result.baselines.append(dict(body))
            self.out(f"  gateway: baseline {body['baseline_wh']} Wh ({body['method']}) committed on "
                     f"chain for window {body['window']}: {body['chain_state']}"
                     + (f" ({body['error']})" if body.get("error") else ""))
        elif kind == "dr_event":
            self.out(f"  gateway: DR event {body['event_id']} {body['change']} "
                     f"({body['award_w']} W {body['direction']}, state {body['state']})")
        elif kind == "dr_state":
            self.out(f"  gateway: event {body['from']} -> {body['to']}")
        else:
            self._window(kind, body)

    def _window(self, kind: object, body: Mapping[str, Any]) -> None:
        if kind == "dr_live":
            short = "SHORTFALL projected" if body["shortfall"] else "on track"
            self.out(f"  live: baseline {body['baseline_w']:7.0f} W  actual {body['actual_w']:7.0f} W  "
                     f"delivered {body['delivered_wh']:6.2f} Wh  projected {body['projected_wh']:6.2f}"
                     f" / required {body['required_wh']:6.2f} Wh  {short}")
        elif kind == "dr_action":
            self.result.actions.append(dict(body))
            self.out(f"  action: {body['device']}.{body['point']} {body['previous']:g} -> "
                     f"{body['value']:g} ({body['reason']}){'' if body['ok'] else ' FAILED'}")
        elif kind == "dr_verdict":
            self.out(f"  verdict: delivered {body['delivered_wh']} Wh of {body['required_wh']} Wh "
                     f"required -> {'performed' if body['performed'] else 'SHORT'}")
        elif kind == "dr_error":
            self.out(f"  DR error: {body['reason']}")


def bid_line(bid: Mapping[str, Any], *, zone: dt.tzinfo, confidence: float) -> str:
    """"home's gateway bid 1.9 kW at 30 tok/kWh for 14:23-16:23 UTC from its forecast (...)"."""
    def clock(t: int) -> str:
        return dt.datetime.fromtimestamp(t, zone).strftime("%H:%M")

    kw = abs(int(bid["power_w"])) / 1000
    direction = "reduction" if int(bid["power_w"]) < 0 else "increase"
    return (f"home's gateway bid {kw:.1f} kW {direction} at {bid['price_mtok_per_kwh'] / 1000:g} "
            f"tok/kWh for {clock(bid['from_s'])}-{clock(bid['to_s'])} {zone} (bid {bid['bid_id']}, "
            f"deposit {bid['deposit_mtok'] / 1000:g} tokens) from its forecast at confidence "
            f"{confidence:g} (basis: {bid.get('basis', 'none given')})")


def prove_reading(store: Path, *, client: MarketClient, household: str, window: int,
                  report: Mapping[str, Any], device: str = "main") -> ProvenReading | None:
    """The first reading of `device` under the Report's root, proven the way `drgw prove` does it
    (the window's leaves from the store, leaf = the record's EIP-712 struct hash, OpenZeppelin
    proof order) and checked by the contract's verifyReading. None: no such reading."""
    from gateway.measurement import merkle
    from gateway.measurement.store.intervals import leaves_in_time
    from gateway.measurement.store.reader import StoreReader

    with StoreReader(store) as reader:
        leaves = [(s, leaf) for s, leaf in leaves_in_time(  # as `drgw prove`: up to the Report's seq_to
            reader.conn, int(report["window_start"]) * 1000, int(report["window_end"]) * 1000)
            if s <= int(report["seq_to"])]
        row = reader.conn.execute(
            "SELECT seq FROM measurements WHERE device = ? AND seq BETWEEN ? AND ? ORDER BY seq LIMIT 1",
            [device, int(report["seq_from"]), int(report["seq_to"])]).fetchone()
    seqs = [s for s, _ in leaves]
    if row is None or int(row[0]) not in seqs:
        return None
    hashes = [leaf for _, leaf in leaves]
    index = seqs.index(int(row[0]))
    proof = tuple(merkle.proof(hashes, index))
    on_chain = client.verify_reading(household, window, hashes[index], proof)
    return ProvenReading(seq=int(row[0]), device=device, leaf=hashes[index], proof=proof,
                         root=merkle.root(hashes), on_chain=on_chain)


def summary(r: DemoResult, out: Callable[[str], None]) -> None:
    v, s = r.verdict, r.settlement or {}
    out("")
    out("summary")
    bid = r.placed()
    if bid is not None:
        out(f"  bid          {abs(int(bid['power_w'])) / 1000:.1f} kW placed by the home's gateway "
            f"(bid {bid['bid_id']}) from its forecast")
    out(f"  award        {r.award_w / 1000:.2f} kW reduction in window {r.window}")
    committed = [b for b in r.baselines if b.get("chain_state") == "accepted"]
    if committed:
        out(f"  committed    baseline {committed[-1]['baseline_wh']} Wh on chain before the window")
    if v:
        out(f"  baseline     {v['baseline_wh']} Wh, actual {v['actual_wh']} Wh")
        out(f"  delivered    {v['delivered_wh']} Wh of {v['required_wh']} Wh required "
            f"(award x window x (1 - tolerance))")
        out(f"  verdict      {'performed' if v['performed'] else 'SHORT of the award'}")
    out(f"  actions      {len(r.actions)}: " + "; ".join(
        f"{a['device']}.{a['point']}={a['value']:g}" for a in r.actions))
    if r.report:
        out(f"  Report       seq {r.report['seq_from']}..{r.report['seq_to']}, Merkle root "
            f"{r.report['merkle_root'][:18]}..., chain: {r.chain_state}")
    if r.proof is not None:
        p = r.proof
        out(f"  proof        reading seq {p.seq} (device {p.device}) proven against the Report's "
            f"Merkle root on chain: {str(p.on_chain).lower()} ({len(p.proof)} sibling hashes; "
            f"`drgw prove {p.seq} --store {r.workdir}/drgw.db` prints them)")
    if s:
        price = s["clearing_price_mtok_per_kwh"] / 1000
        out(f"  payment      {s['payment_mtok'] / 1000:.3f} tokens at {price:g} tok/kWh")
        out(f"  deposit      {s['deposit']} ({s['deposit_mtok'] / 1000:.3f} tokens); reputation "
            f"{s['score']}")
    if r.plot:
        out(f"  plot         {r.plot}")
