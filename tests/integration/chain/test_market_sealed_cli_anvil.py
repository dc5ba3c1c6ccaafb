"""`drgw market bid --sealed`, `reveal`, `bids` (sealed states), `claim` and `earnings` on anvil, as
a household types them, and the operator's `announce --pricing --reveal-minutes`. Figures are hand
computations from the contract's formulas (docs/market.md, Units).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from gateway.chain.market_client import PAY_AS_BID, decoder
from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import Baseline, Report, sign_baseline, sign_report
from gateway.chain.sender import TxSender
from tests.integration.chain.test_market_household_cli_anvil import Live, live  # noqa: F401

pytestmark = [pytest.mark.anvil, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_a_sealed_bid_is_hidden_revealed_paid_as_bid_and_claimed(live: Live) -> None:  # noqa: F811
    a = live.address["A"]
    live.ok("mint", live.address["operator"], "100000", key="operator")
    live.ok("approve", "100000", key="operator")
    for h in ("A", "B"):
        live.ok("approve", "1000", key=h)
    now = live.node.latest_timestamp()
    span = ("--from", str(now), "--to", str(now + 86_400))
    out = live.ok("bid", "--sealed", *span, "--kw", "-2", "--price", "20", key="A")
    salts = Path(f"{live.keys['A']}.sealed.json")
    assert "sealed bid 1: -2 kW" in out and "deposit 200.000 tokens" in out  # 100 x 2 kW
    assert str(salts) in out and stat.S_IMODE(salts.stat().st_mode) == 0o600
    live.ok("bid", *span, "--kw", "-3", "--price", "30", key="B")  # open bid 2
    # nothing of bid 1's terms is public before the reveal
    rows = live.json("bids", "--household", a)["bids"]
    assert [(r["id"], r["state"], r["sealed"], r["price_mtok_per_kwh"], r["deposit_mtok"])
            for r in rows] == [(1, "sealed", "committed", 0, 200_000)]
    assert live.ok("bids", key="A").splitlines()[1].split()[1:6] == ["hidden"] * 4 + ["200.000"]
    assert live.json("wallet", key="A")["held_mtok"] == 200_000
    code, _, err = live.run("reveal", "1", key="A")  # no window announced yet
    assert code == 1 and "RevealNotOpen" in err and "after the next window is announced" in err
    code, _, err = live.run("reveal", "1", key="B")  # B's key: no salt beside it, not the owner
    assert code == 2 and "has no salt for its commitment" in err
    op = TxSender(w3=live.node.w3, key=live.node.funded_keys[0], outbox=ChainOutbox(":memory:"),
                  decoder=decoder())
    start = live.node.latest_timestamp() + 1200
    live.client.announce(op, start_s=start, end_s=start + 600, retail_micro=600_000,
                         realtime_micro=680_000, omega_milli=1200, mode=0, pricing=PAY_AS_BID,
                         reveal_s=300)
    assert "bid 1 revealed: -2 kW at 20.000 tokens/kWh" in live.ok("reveal", "1", key="A")
    code, _, err = live.run("reveal", "1", key="A")
    assert code == 1 and "bid 1 is not sealed" in err
    assert live.json("bids", key="A")["bids"][0]["sealed"] == "revealed"
    live.node.set_next_timestamp(int(live.client.window(1)["revealEnd"]))
    # optimum 33_333 W > 5 kW offered: A (20) 2 kW and B (30) 3 kW win in full
    assert "window 1 cleared" in live.ok("clear", key="operator")
    relay = TxSender(w3=live.node.w3, key=live.node.funded_keys[1],
                     outbox=ChainOutbox(":memory:"), decoder=decoder())
    d = live.client.deployment
    live.client.commit_baseline(relay, sign_baseline(
        Baseline(household=a, window=1, method=2, input_hash=b"\x11" * 32, baseline_wh=5000),
        key=live.gateway_key["A"], chain_id=d.chain_id, market=d.market))
    live.node.set_next_timestamp(start + 600)
    # A delivers 400 Wh >= 2000 W x 600 s / 3600 x 0.95 = 316.7 Wh: performs; B sends nothing
    report = Report(household=a, window=1, seq_from=1, seq_to=10, window_start=start,
                    window_end=start + 600, baseline_method=2, baseline_input_hash=b"\x11" * 32,
                    baseline_wh=5000, actual_wh=4600, delivered_wh=400, merkle_root=b"\x22" * 32)
    live.client.submit_report(relay, sign_report(report, key=live.gateway_key["A"],
                                                 chain_id=d.chain_id, market=d.market))
    live.ok("settle", key="operator")
    live.ok("check", key="operator")
    # pay-as-bid: A's own price, 20_000 x 2000 x 600 / 3_600_000 = 6_666 mtok (6_666.7 down),
    # plus its 200_000 deposit back: 206_666 mtok to claim; the wallet holds 1000 - 200 tokens
    wallet = live.json("wallet", key="A")
    assert (wallet["claimable_mtok"], wallet["balance_mtok"]) == (206_666, 800_000)
    assert "claimable 206.666 tokens" in live.ok("wallet", "--household", a)
    # anyone may claim for A (B's key pays the gas): the tokens go to A
    out = live.ok("claim", "--household", a, key="B")
    assert "claimed 206.666 tokens into" in out and "balance 1006.666 tokens" in out
    assert "nothing to claim" in live.ok("claim", key="A")
    assert live.json("wallet", key="B")["claimable_mtok"] == 0  # B forfeited: nothing credited
    assert json.loads(salts.read_text())  # the salt stays kept (a record of what was bid)


def test_announce_with_a_reveal_phase_and_an_unrevealed_bids_penalty_in_earnings(
        live: Live) -> None:  # noqa: F811
    b = live.address["B"]
    live.ok("approve", "1000", key="B")
    now = live.node.latest_timestamp()
    span = ("--from", str(now), "--to", str(now + 86_400))
    live.ok("bid", "--sealed", *span, "--kw", "-3", "--price", "30", key="B")  # deposit 300
    start = live.node.latest_timestamp() + 1200
    window = ("--start", str(start), "--end", str(start + 600), "--retail", "0.6",
              "--realtime", "0.68", "--omega", "1.2")
    code, _, err = live.run("announce", *window, "--pricing", "first-price", key="operator")
    assert code == 2 and "--pricing 'first-price': use uniform" in err and "pay-as-bid" in err
    for bad in ("-1", "0.001", "soon"):
        code, _, err = live.run("announce", *window, "--reveal-minutes", bad, key="operator")
        assert code == 2 and "--reveal-minutes" in err and bad in err
    code, _, err = live.run("announce", *window, "--reveal-minutes", "20", key="operator")
    assert code == 2 and "not before --start" in err  # 20 min from now ends at the start or later
    assert live.client.window_count() == 0  # nothing was sent
    out = live.ok("announce", *window, "--pricing", "pay-as-bid", "--reveal-minutes", "2.5",
                  key="operator")
    w = live.client.window(1)
    assert (w["pricing"], w["revealEnd"] - w["announcedAt"]) == (1, 150)  # 2.5 min = 150 s
    assert "pay-as-bid pricing, sealed bids reveal until" in out
    code, _, err = live.run("clear", key="operator")  # the reveal phase is still running
    assert code == 3 and "RevealRunning" in err and "wait until the window's reveal phase" in err
    live.node.set_next_timestamp(int(w["revealEnd"]))  # B never reveals
    live.ok("clear", key="operator")
    # unrevealed: refund 300 tokens minus UNREVEALED_PENALTY_BPS 10 % = 270, penalty 30
    earned = live.json("earnings", "--household", b)
    assert earned["windows"] == [{"window": 1, "award_w": 0, "payment_mtok": 0,
                                  "refunded_mtok": 270_000, "forfeited_mtok": 0,
                                  "penalty_mtok": 30_000}]
    assert (earned["penalty_mtok"], earned["net_mtok"]) == (30_000, -30_000)
    out = live.ok("earnings", key="B").splitlines()
    assert out[1].split() == ["1", "0", "0.000", "270.000", "0.000", "30.000"]
    assert "unrevealed penalties 30.000, net -30.000 tokens" in out[2]
