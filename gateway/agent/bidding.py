"""The agent's bidder part: built from `[market]` beside the DR loop, sharing its chain thread.

The bidder (gateway/loop/bidder.py) bids through the same market port as the loop when that port
can bid (LazyMarketPort and Web3MarketPort can), or through the BiddingPort an embedding program
hands in; its chain calls go to the loop's executor, so one thread owns the gateway account's nonce.
Its lever recorder sees every committed sample beside the loop (`SampleTee`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from gateway.config.gateway import GatewayConfig
from gateway.perception.readings import Sample

if TYPE_CHECKING:
    from gateway.agent.pipeline import SampleObserver
    from gateway.chain.market_types import BiddingPort
    from gateway.loop.bidder import Bidder
    from gateway.loop.runner import DrLoop

log = logging.getLogger(__name__)
BIDDING = ("terms", "place_bid", "withdraw_bid", "bids", "claim")  # the BiddingPort's methods


class SampleTee:
    """Hands each committed sample to several observers, in order."""

    def __init__(self, observers: Sequence[SampleObserver]) -> None:
        self.observers = tuple(observers)

    def on_sample(self, sample: Sample) -> None:
        for observer in self.observers:
            observer.on_sample(sample)


def bidder(config: GatewayConfig, *, dr: DrLoop | None, publish: Callable[[Mapping[str, Any]], None],
           bidding: BiddingPort | None) -> Bidder | None:
    """The bidder when `[market]` is on (None otherwise, or when no port can place bids)."""
    market = config.market
    if market is None or not market.enabled or dr is None or config.dr is None:
        return None
    port = bidding
    if port is None and all(hasattr(dr.market, m) for m in BIDDING):
        port = cast("BiddingPort", dr.market)
    if port is None:
        log.error("[market] is enabled but the market port cannot place bids: no automatic bids")
        return None
    from gateway.loop.bid_journal import BidJournal
    from gateway.loop.bidder import Bidder
    from gateway.loop.events import chain_event_id
    from gateway.loop.lever_record import LeverRecorder

    journal = BidJournal(config.store.path)
    loop_journal, address = dr.journal, dr.market_address

    def settlement(window: int) -> Mapping[str, Any] | None:
        """The window's payment and deposit outcome, as the DR loop journalled it (dr_settlement)."""
        outcome = loop_journal.outcome(chain_event_id(address, window))
        return None if outcome is None else outcome.get("settlement")

    return Bidder(config=market, recorder=LeverRecorder(levers=config.dr.levers, journal=journal),
                  zone=ZoneInfo(config.dr.time_zone), port=port, journal=journal, publish=publish,
                  settlement=settlement, executor=dr.executor)
