"""`drgw market simulate` with seed 002's rules on the embedded EVM: seed 003's worked example with
every bid sealed (committed, revealed after the announcement, cleared when the reveal phase ends)
and pay-as-bid pricing pays what docs/market.md's hand computation says (the reference model is
held to the same figures by tests/unit/test_market_pay_as_bid_example.py); a commitment never
revealed takes no part and is refunded minus the 10 % penalty.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.market.scenario import parse_scenario
from gateway.master.simulate import simulate

ROOT = Path(__file__).resolve().parents[3]
SEALED = ROOT / "examples" / "market" / "evening-peak-sealed.toml"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
# Hand computation (docs/market.md): own price x awarded W x 600 s / 3_600_000 mtok, rounded down
# per bid: 25 x 11 kW / 6 = 45.833; 31.5 x 2 / 6 = 10.5; 31.5 x 4 / 6 = 21; 40 x 6 / 6 = 40;
# 45 x 10.333 / 6 = 77.497 (77.4975 down). Uniform pricing would pay 45 x 33.333 / 6 = 249.997.
PAY_AS_BID = {"h2-ev": 45.833, "h1-ac": 10.5, "h3-boiler": 21.0, "h4-heatpump": 40.0,
              "h4-battery": 77.497}
AWARDS = {"h2-ev": 11.0, "h1-ac": 2.0, "h3-boiler": 4.0, "h4-heatpump": 6.0, "h4-battery": 10.333}


def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "market", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_seed_003_sealed_and_pay_as_bid_through_simulate_matches_the_hand_computation() -> None:
    done = drgw("simulate", str(SEALED), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["pricing"], out["model_checked"]) == ("pay_as_bid", 7)
    # the clearing is uniform's: target min(80 / 2.4, 35 kW) = 33.333 kW, h4-battery marginal at 45
    assert (out["target_kw"], out["clearing_price"]) == (33.333, 45.0)
    bids = {b["id"]: b for b in out["bids"]}
    assert all(b["sealed"] for b in out["bids"])
    assert {k: b["awarded_kw"] for k, b in bids.items() if b["awarded_kw"]} == AWARDS
    assert {k: b["payment"] for k, b in bids.items() if b["awarded_kw"]} == PAY_AS_BID
    assert round(sum(b["payment"] for b in out["bids"]) * 1000) == 194_830
    # h4 delivers 3 + 12 kW of its 16.333 kW awarded (91.8 % < 95 %): both deposits forfeited
    assert (bids["h4-heatpump"]["deposit_forfeited"], bids["h4-battery"]["deposit_forfeited"]) \
        == (600, 1200)
    assert bids["h1-ac"]["performed"] and bids["h1-ac"]["deposit_refunded"] == 300
    assert bids["h5-late"]["reason"] == "submitted after announcement"  # committed after it
    assert bids["h5-late"]["deposit_refunded"] == 200  # withdrawn, still sealed
    assert bids["h5-charge"]["reason"] == "wrong direction"  # known only once revealed
    assert out["timings"]["reveal"] >= 0
    table = drgw("simulate", str(SEALED)).stdout
    assert "pay-as-bid pricing" in table and "paid 194.830 tokens" in table
    assert "the reference model agrees on all 7 bids" in table


def test_an_unrevealed_commitment_takes_no_part_and_pays_the_penalty() -> None:
    data = tomllib.loads(SEALED.read_text())
    next(b for b in data["bid"] if b["id"] == "h1-ac")["revealed"] = False
    r = simulate(parse_scenario(data, source="h1-ac-unrevealed"))
    bids = {b.id: b for b in r.bids}
    # h1-ac's deposit 3 kW x 100 = 300 tokens: refund 270, penalty 10 % = 30 to the treasury
    h1 = bids["h1-ac"]
    assert (h1.eligible, h1.reason, h1.awarded_kw) == (False, "sealed bid not revealed", 0)
    assert (h1.deposit_refunded, h1.deposit_forfeited) == (270, 30)
    # without h1-ac's 2 kW the eligible 33 kW are under the 33.333 kW optimum: all win in full,
    # each paid its own price x kW / 6 (45 x 12 / 6 = 90 for h4-battery)
    assert (r.target_kw, r.clearing_price) == (33.0, 45.0)
    assert {k: (b.awarded_kw, b.payment) for k, b in bids.items() if b.awarded_kw} == {
        "h2-ev": (11.0, 45.833), "h3-boiler": (4.0, 21.0), "h4-heatpump": (6.0, 40.0),
        "h4-battery": (12.0, 90.0)}
    assert r.model_checked == 7
