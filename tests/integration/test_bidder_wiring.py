"""The agent builds its bidder from `[market]` (gateway/agent/bidding.py) and hands it the samples."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.agent.agent import Agent
from gateway.agent.bidding import SampleTee
from gateway.chain.port import LazyMarketPort
from gateway.config.gateway import parse_config
from gateway.measurement.identity import GatewayKey
from gateway.perception.readings import Quality, Reading, Sample
from tests.integration.test_bidder import ev_sample
from tests.unit.test_bid_config import CHAIN, MARKET
from tests.unit.test_config import HEAD, LEVER_DEVICES, LEVERS

KEY = GatewayKey.from_secret(bytes([5]) * 32)


def build(tmp_path: Path, extra: str) -> Agent:
    (tmp_path / "gw.key").write_text("")  # not read by build(): the key is handed in
    text = HEAD + LEVER_DEVICES + LEVERS + CHAIN + extra
    return Agent(parse_config(text, path=tmp_path / "drgw.toml"), key=KEY)


def close(agent: Agent) -> None:
    p = agent.parts
    if p.bidder is not None:
        p.bidder.journal.close()
    if p.dr is not None:
        p.dr.journal.close()
    p.store.close()


def test_market_builds_a_bidder_on_the_loops_port_and_feeds_it_samples(tmp_path: Path) -> None:
    agent = build(tmp_path, MARKET)
    try:
        p = agent.parts
        assert p.bidder is not None and p.dr is not None
        assert isinstance(p.dr.market, LazyMarketPort) and p.bidder.port is p.dr.market
        assert p.bidder.executor is p.dr.executor  # one chain thread: one nonce owner
        observer = p.pipeline.observer
        assert isinstance(observer, SampleTee) and observer.observers == (p.dr, p.bidder.recorder)
        # two EV samples 300 s apart close the first 5-minute slot of lever ev.ev_current_limit_a
        observer.on_sample(ev_sample(600.0, 7000.0))
        observer.on_sample(ev_sample(900.0, 0.0))
        slots = p.bidder.journal.lever_slots("ev.ev_current_limit_a", slot_s=300, start_s=0,
                                             end_s=10**9)
        assert [(s.start_s, s.avg_w) for s in slots] == [(600, 7000.0)]
        status = asyncio.run(p.control.status())
        assert status["market"]["held_deposit_mtok"] == 0 and status["market"]["enabled"] is True
    finally:
        close(agent)


def test_without_market_or_switched_off_there_is_no_bidder(tmp_path: Path) -> None:
    for extra in ("", MARKET + "enabled = false\n"):
        agent = build(tmp_path, extra)
        try:
            assert agent.parts.bidder is None
            assert agent.parts.pipeline.observer is agent.parts.dr
        finally:
            close(agent)


def test_lever_samples_of_other_devices_are_ignored(tmp_path: Path) -> None:
    agent = build(tmp_path, MARKET)
    try:
        bidder = agent.parts.bidder
        assert bidder is not None
        main = Sample(device="main", time=1.0, poll=("fast",), readings=(
            Reading("power_active_total_w", 500.0, "W", Quality.OK, 1.0),))
        bidder.recorder.on_sample(main)
        assert all(not acc.open_view(10**9) for acc in bidder.recorder.loads.values())
    finally:
        close(agent)
