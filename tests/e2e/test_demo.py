"""`drgw demo`'s flow end to end, shortened: real simulated devices (Modbus TCP + RTU on ptys), a real
mosquitto, the real agent, the market contract on the embedded EVM. The home's bid comes from its own
agent's bidder and forecast (history seeded from gateway/demo/history.py); one home that delivers with
its levers, one whose levers have nothing to shed on the day (the car already charges at its 6 A
floor, the boiler's tank is hot) and forfeits its deposit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak

from gateway.demo.run import DemoOptions, DemoResult, demo_scenario, run_demo
from gateway.loop.bid_journal import BidJournal
from gateway.loop.journal import Journal

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, **kw: Any) -> tuple[DemoResult, list[str]]:
    lines: list[str] = []
    opts = DemoOptions(speed=40.0, workdir=tmp_path / "demo", out=lines.append, **kw)
    return asyncio.run(run_demo(opts)), lines


def _journalled_bid(result: DemoResult) -> tuple[int, int]:
    """(bid id, power W) of the one bid the gateway's bidder journalled."""
    assert result.workdir is not None
    journal = BidJournal(result.workdir / "drgw.db")
    try:
        rows = journal.bids()
    finally:
        journal.close()
    assert len(rows) == 1
    return rows[0].bid_id, rows[0].order.power_w


def _check_bid_from_the_agent(result: DemoResult, lines: list[str]) -> None:
    """The bid on chain is the bidder's: same id and W, sent by the gateway key for the household."""
    market = result.market
    assert market is not None
    c = market.market
    household = market.wallets["home"].address
    bid_id, power_w = _journalled_bid(result)
    assert power_w < 0  # a REDUCE bid
    logs = c.market.events.BidPlaced().get_logs(argument_filters={"household": household},
                                                from_block=0)
    assert [int(e["args"]["bidId"]) for e in logs] == [bid_id]
    assert int(logs[0]["args"]["powerW"]) == power_w
    tx = market.node.w3.eth.get_transaction(logs[0]["transactionHash"])
    assert tx["from"] == result.gateway != household  # the gateway key, not the wallet
    # the call is placeBidFor: the first 4 bytes of keccak256 of its signature (Solidity ABI spec,
    # "Function Selector"), the signature as DRMarket.sol declares it
    selector = keccak(text="placeBidFor(address,uint40,uint40,int32,uint32,uint64)")[:4]
    assert bytes(tx["input"])[:4] == selector
    assert result.award_w == -power_w  # the home's bid was awarded whole (carol is marginal)
    line = next(x for x in lines if x.startswith("home's gateway bid "))
    assert f"{-power_w / 1000:.1f} kW" in line and "from its forecast" in line
    assert "basis: " in line and "matched week" in line and "ev.ev_current_limit_a" in line


def _check_baseline_committed(result: DemoResult) -> None:
    """Committed on chain before the window started, and equal to the Report's baseline."""
    market = result.market
    assert market is not None and result.report is not None
    c, household = market.market, market.wallets["home"].address
    w = c.window(result.window)
    committed = c.market.events.BaselineCommitted().get_logs(
        argument_filters={"household": household, "window": result.window}, from_block=0)
    assert len(committed) == 1
    mined_at = market.node.w3.eth.get_block(committed[0]["blockNumber"])["timestamp"]
    assert mined_at < int(w["start"])
    on_chain = c.baseline(household, result.window)
    assert on_chain["committed"] is True
    assert int(on_chain["baselineWh"]) == result.report["baseline_wh"]


def test_demo_home_bids_by_itself_performs_is_paid_and_refunded(tmp_path: Path) -> None:
    result, lines = _run(tmp_path)
    _check_bid_from_the_agent(result, lines)
    _check_baseline_committed(result)
    v = result.verdict
    # the award was met within tolerance, judged exactly as the contract judges it
    assert v["performed"] is True
    assert v["delivered_wh"] == v["baseline_wh"] - v["actual_wh"]
    assert v["delivered_wh"] >= v["required_wh"] > 0
    # the checker acted (EV down to its comfort floor, boiler off) and restored after the window
    acted = [(a["device"], a["point"], a["value"]) for a in result.actions]
    assert ("ev", "ev_current_limit_a", 6.0) in acted
    assert all(a["ok"] for a in result.actions)
    first: dict[tuple[str, str], float] = {}
    last: dict[tuple[str, str], float] = {}
    for a in result.actions:
        first.setdefault((a["device"], a["point"]), a["previous"])
        last[(a["device"], a["point"])] = a["value"]
    assert last == first
    # the signed Report went on chain and the settlement followed
    assert result.report is not None and result.chain_state == "accepted"
    assert result.report["delivered_wh"] == v["delivered_wh"]
    s = result.settlement
    assert s is not None and s["deposit"] == "refunded" and s["payment_mtok"] > 0
    assert s["delivered_wh_on_chain"] == v["delivered_wh"]
    # one reading proven against the Report's root by the contract; a changed leaf is not
    p = result.proof
    assert p is not None and p.device == "main" and p.on_chain is True
    assert result.report["seq_from"] <= p.seq <= result.report["seq_to"]
    assert result.market is not None
    tampered = bytes([p.leaf[0] ^ 1]) + p.leaf[1:]
    assert result.market.market.verify_reading(result.market.wallets["home"].address,
                                               result.window, tampered, p.proof) is False
    assert any(f"reading seq {p.seq} (device main) proven against the Report's Merkle root on "
               "chain: true" in line for line in lines)
    assert any("baseline" in x and "committed on chain" in x and "accepted" in x for x in lines)
    # the journal holds the event for `drgw event`, and the plot was drawn
    journal = Journal(result.workdir / "drgw.db", readonly=True)  # type: ignore[operator]
    try:
        row = journal.event(result.event_id)
        assert row is not None and row.state == "completed"
    finally:
        journal.close()
    assert result.plot is not None and result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_home_whose_levers_have_nothing_to_shed_is_judged_short_and_forfeits(tmp_path: Path) -> None:
    # the forecast (weeks of evenings with the car charging) promises flexibility; on the day the car
    # already charges at its 6 A floor and the boiler is off: the 1 - confidence risk came true
    text = demo_scenario().read_text()
    assert "ev_current_limit_a = 10" in text and "relay_1_on = 1" in text
    scenario = tmp_path / "home.toml"
    scenario.write_text(text.replace("ev_current_limit_a = 10", "ev_current_limit_a = 6")
                        .replace("relay_1_on = 1", "relay_1_on = 0"))
    result, lines = _run(tmp_path, scenario=scenario, plot=False)
    _check_bid_from_the_agent(result, lines)
    _check_baseline_committed(result)
    v = result.verdict
    assert v["performed"] is False and v["delivered_wh"] < v["required_wh"]
    assert result.chain_state == "accepted"  # a short Report is still a valid Report
    s = result.settlement
    assert s is not None and s["deposit"] == "forfeited" and s["deposit_mtok"] > 0
    assert s["payment_mtok"] > 0  # paid for what was awarded; the deposit answers for the shortfall
