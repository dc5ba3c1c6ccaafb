"""The bidder's shell (gateway/loop/bidder.py) against the in-memory market, with a real SQLite
journal, lever loads recorded from samples and the real flexibility forecaster.

The household: an EV charger that drew 7 kW from 17:00 to 21:00 (UTC) on each of the last 14 days.
Monday 11 March 2024, 12:00 UTC: the 17:00-21:00 block starts in 5 h (tomorrow's, 29 h ahead, is
outside the 24 h horizon). The 10 matched weekdays each shed 7000 W (load 7000 W - floor 0), so
7000 W is deliverable at any confidence: one bid of -7000 W, rated 7000 W, deposit 100000 mtok/kW x
7000 W / 1000 = 700000 mtok, at min_price 25 tokens/kWh = 25000 mtok/kWh.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.chain.port import MarketTerms
from gateway.loop.bid_journal import BidJournal
from gateway.loop.bidder import Bidder
from gateway.loop.lever_record import LeverRecorder
from gateway.loop.market_settings import DailyHours, MarketConfig
from gateway.loop.policy import Lever
from gateway.perception.readings import Quality, Reading, Sample
from gateway.testing.fake_market import FakeBiddingPort

NOW = int(dt.datetime(2024, 3, 11, 12, 0, tzinfo=dt.UTC).timestamp())
BLOCK = (NOW + 5 * 3600, NOW + 9 * 3600)
EV = Lever(device="ev", point="ev_current_limit_a", kind="setpoint", min=6, expected_w=7000)
CONFIG = MarketConfig(enabled=True, min_price_mtok=25_000, max_deposit_mtok=10**9,
                      hours=(DailyHours(start_min=17 * 60, end_min=21 * 60),), confidence=0.9,
                      directions=("reduce",), min_bid_w=500, renew_s=900.0, horizon_s=86_400,
                      hysteresis=0.2, margin_s=300, history_days=28)


def ev_sample(t: float, watts: float) -> Sample:
    return Sample(device="ev", time=t, poll=("fast",), readings=(
        Reading("power_active_total_w", watts, "W", Quality.OK, t),))


class Home:
    """The bidder's parts: a journal, the recorder fed with 14 evenings of charging, the market."""

    def __init__(self, tmp_path: Path, port: FakeBiddingPort) -> None:
        self.journal = BidJournal(tmp_path / "drgw.db")
        self.recorder = LeverRecorder(levers=[EV], journal=self.journal)
        for day in range(14, 0, -1):
            evening = NOW - day * 86400 + 5 * 3600  # 17:00 UTC that day
            for minute in range(240):
                self.recorder.on_sample(ev_sample(evening + minute * 60, 7000.0))
            for minute in range(240, 251):
                self.recorder.on_sample(ev_sample(evening + minute * 60, 0.0))
        self.port = port
        self.messages: list[Mapping[str, Any]] = []
        self.settlements: dict[int, Mapping[str, Any]] = {}
        self.bidder = Bidder(config=CONFIG, recorder=self.recorder, zone=ZoneInfo("UTC"), port=port,
                             journal=self.journal, publish=self.messages.append,
                             settlement=self.settlements.get, executor=ThreadPoolExecutor(1))

    def cycle(self, now_s: int = NOW) -> list[Any]:
        return asyncio.run(self.bidder.cycle(now_s))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path, FakeBiddingPort(now_s=NOW))
    yield h
    h.journal.close()


def test_the_household_bids_its_forecast_and_keeps_the_bid(home: Home) -> None:
    changes = home.cycle()
    assert [(c.change, c.from_s, c.to_s, c.power_w, c.deposit_mtok) for c in changes] == [
        ("placed", *BLOCK, -7000, 700_000)]
    held = home.port.bids()
    assert [(b.order.power_w, b.order.rated_w, b.order.price_mtok, b.deposit_mtok) for b in held] == [
        (-7000, 7000, 25_000, 700_000)]
    message = home.messages[0]
    assert message["type"] == "dr_bid" and message["change"] == "placed"
    assert "10 matched weekdays" in message["basis"]  # the forecast's basis line travels with it
    assert [b.bid_id for b in home.journal.bids()] == [held[0].bid_id]
    assert home.bidder.status()["held_deposit_mtok"] == 700_000
    # an hour later nothing changed: the bid is kept, not renewed
    assert home.cycle(NOW + 3600) == []
    assert len(home.port.bids()) == 1


def test_a_smaller_allowance_cuts_the_bid(tmp_path: Path) -> None:
    # allowance 500000 mtok = 5000 W at 100000 mtok/kW
    h = Home(tmp_path, FakeBiddingPort(now_s=NOW, allowance_mtok=500_000))
    assert [c.power_w for c in h.cycle()] == [-5000]
    h.journal.close()


class DownPort(FakeBiddingPort):
    """The node is away: every read fails as a connection would."""

    def terms(self) -> MarketTerms:
        raise ConnectionError("connection refused: http://127.0.0.1:8545")


class StalePort(FakeBiddingPort):
    """Says the allowance is larger than the token will take (it changed between read and send)."""

    def terms(self) -> MarketTerms:
        return replace(super().terms(), allowance_mtok=10**9)


def test_a_node_that_is_down_is_retried_next_cycle(tmp_path: Path) -> None:
    h = Home(tmp_path, DownPort(now_s=NOW))
    assert h.cycle() == []
    assert "market unreachable: connection refused" in str(h.bidder.status()["last_error"])
    h.journal.close()


def test_a_revert_skips_the_action_and_is_logged_once(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    h = Home(tmp_path, StalePort(now_s=NOW, allowance_mtok=1000))
    with caplog.at_level(logging.ERROR, logger="gateway.loop.bidder"):
        first, second = h.cycle(), h.cycle(NOW + 900)
    assert [c.change for c in first] == [c.change for c in second] == ["rejected"]
    assert "ERC20InsufficientAllowance" in first[0].reason
    assert len([r for r in caplog.records if "place bid rejected" in r.getMessage()]) == 1
    assert h.port.bids() == [] and h.journal.bids() == []
    h.journal.close()


def test_payments_and_forfeits_are_tracked_per_bid(home: Home) -> None:
    home.cycle()
    bid = home.port.held[0]
    # window 3 cleared it with a 5000 W award; the household fell short: its deposit is forfeited
    home.port.held[0] = replace(bid, state="done", window=3, award_w=5000)
    assert home.cycle(NOW + 900) == []  # no settlement journalled yet: it waits
    assert home.bidder.status()["awaiting_settlement"] == 1
    home.settlements[3] = {"deposit": "forfeited", "payment_mtok": 0,
                           "clearing_price_mtok_per_kwh": 25_000}
    changes = home.cycle(NOW + 1800)
    assert [(c.change, c.outcome["deposit"] if c.outcome else None) for c in changes] == [
        ("settled", "forfeited")]
    status = home.bidder.status()
    assert (status["forfeited_mtok"], status["paid_mtok"], status["net_mtok"],
            status["held_deposit_mtok"]) == (700_000, 0, -700_000, 0)
    assert home.messages[-1]["change"] == "settled"
