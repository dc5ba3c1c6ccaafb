"""The operator's off-chain half of batch clearing and batch settlement (DRMarket, issue 14).

The contract no longer sorts: the operator reads the bids placed before the announcement, sorts the
eligible ones by (price, bid id) here and submits them in batches that fit a block
(`DRMarket.clearBatch`), with the live bids that cannot take part; the contract checks each bid
once and the order, so a wrong plan reverts instead of clearing wrongly. Which bid is eligible is
the contract's own judgement (`reasons` view): the plan is only the sorting and the batching.
Batches are cut by an estimate of their gas (measured with bench/gas.py on the embedded EVM), well
under a 30M block gas limit once the sender adds its 25 % margin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.chain.market_client import MarketClient

PAGE = 1000  # bids per view call
# Reason codes of DRMarketBase._reason: 0 eligible; 1-3 cannot be passed; 4-8 passed as ineligible.
ELIGIBLE, NOT_LIVE, LATE, PASSED = 0, 1, 2, 3
WRONG_DIRECTION, RANGE, HOUSEHOLD_SUSPENDED, AGGREGATOR_SUSPENDED, UNREVEALED = 4, 5, 6, 7, 8
BID_OPEN, BID_CONSUMED, BID_DONE, BID_SEALED = 1, 3, 4, 5  # DRMarketBase bid states
# Estimated gas per bid in a clearing batch and the budget per transaction (bench/gas.py measures
# about 60k per awarded bid, 30k per eligible loser and 10k per ineligible bid).
GAS_ELIGIBLE = 70_000
GAS_INELIGIBLE = 15_000
GAS_SETTLE = 75_000
TX_BUDGET = 18_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearingPlan:
    """What the operator submits for a window: eligible bids in merit order, and the rest."""

    merit: tuple[int, ...]
    ineligible: tuple[int, ...]


def bid_rows(client: MarketClient, below: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(bid id, bid struct) of the bids with id < `below`, read a page at a time."""
    fn = client.market.functions.bidRange
    for start in range(1, below, PAGE):
        rows = fn(start, min(PAGE, below - start)).call()
        for offset, values in enumerate(rows):
            yield start + offset, _bid(client, values)


def reasons(client: MarketClient, window: int, below: int) -> list[int]:
    """The contract's reason code of each bid id in [1, below) for `window`, index = id - 1."""
    fn = client.market.functions.reasons
    out: list[int] = []
    for start in range(1, below, PAGE):
        out.extend(int(r) for r in fn(window, start, min(PAGE, below - start)).call())
    return out


def plan(client: MarketClient, window: int) -> ClearingPlan:
    """Sort the window's eligible bids by (price, bid id): the merit order the contract checks."""
    cutoff = int(client.window(window)["cutoff"])
    codes = reasons(client, window, cutoff)
    eligible = {i + 1 for i, code in enumerate(codes) if code == ELIGIBLE}
    prices = {bid_id: int(b["priceMtok"]) for bid_id, b in bid_rows(client, cutoff)
              if bid_id in eligible}
    merit = tuple(sorted(eligible, key=lambda b: (prices[b], b)))
    ineligible = tuple(i + 1 for i, code in enumerate(codes) if code >= WRONG_DIRECTION)
    return ClearingPlan(merit=merit, ineligible=ineligible)


def batches(p: ClearingPlan) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Cut the plan into (merit, ineligible) batches of about TX_BUDGET gas each, merit first."""
    out: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    per_tx = TX_BUDGET // GAS_ELIGIBLE
    for i in range(0, len(p.merit), per_tx):
        out.append((p.merit[i:i + per_tx], ()))
    room = (TX_BUDGET - GAS_ELIGIBLE * len(out[-1][0])) // GAS_INELIGIBLE if out else 0
    rest = list(p.ineligible)
    if out and room > 0:
        out[-1] = (out[-1][0], tuple(rest[:room]))
        rest = rest[room:]
    per_tx = TX_BUDGET // GAS_INELIGIBLE
    for i in range(0, len(rest), per_tx):
        out.append(((), tuple(rest[i:i + per_tx])))
    return out


def window_bids(client: MarketClient, window: int) -> tuple[int, ...]:
    """The bids that took part in `window` (consumed, or settled since), in merit order."""
    cutoff = int(client.window(window)["cutoff"])
    took = [(int(b["priceMtok"]), bid_id) for bid_id, b in bid_rows(client, cutoff)
            if int(b["window"]) == window and int(b["state"]) in (BID_CONSUMED, BID_DONE)
            and int(b["powerW"]) != 0]  # an unrevealed sealed bid is done with powerW 0
    return tuple(bid_id for _, bid_id in sorted(took))


def unsettled(client: MarketClient, window: int) -> list[int]:
    """The window's bids still waiting for `settleBatch`."""
    cutoff = int(client.window(window)["cutoff"])
    return [bid_id for bid_id, b in bid_rows(client, cutoff)
            if int(b["window"]) == window and int(b["state"]) == BID_CONSUMED]


def chunks(ids: Sequence[int], gas_each: int) -> list[tuple[int, ...]]:
    size = max(1, TX_BUDGET // gas_each)
    return [tuple(ids[i:i + size]) for i in range(0, len(ids), size)]


def _bid(client: MarketClient, values: Any) -> dict[str, Any]:
    from gateway.chain.market_client import _struct

    return _struct(values, client.market, "bid")
