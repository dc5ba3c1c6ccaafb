"""`drgw market simulate` on anvil (JSON-RPC, 30M block gas limit): seed 003's worked example
exact, a generated market of many households cleared in several batches with the reference model's
result, and the CLI's --rpc/--households with its phase timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.chain.node import ChainNode
from gateway.market.scenario import generate_scenario, load_scenario
from gateway.master.simulate import PHASES, simulate
from gateway.master.simulate_run import open_node

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "market" / "evening-peak.toml"
pytestmark = [pytest.mark.anvil, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
BLOCK_GAS = 30_000_000  # anvil's default block gas limit (the conftest starts it with defaults)


def node_of(anvil: Any) -> ChainNode:
    node = open_node(anvil.url)
    assert node.w3.eth.get_block("latest")["gasLimit"] == BLOCK_GAS
    return node


def test_seed_003_example_is_exact_on_anvil(anvil: Any) -> None:
    scenario = load_scenario(EXAMPLE.read_text(), source=str(EXAMPLE))
    r = simulate(scenario, node=node_of(anvil))
    bids = {b.id: b for b in r.bids}
    assert r.target_kw == 33.333  # min(80 tokens / 2.4, 35 kW offered), floored to W (seed 003)
    assert r.clearing_price == 45.0  # h4-battery is the marginal bid
    assert bids["h1-ac"].awarded_kw == 2.0 and bids["h3-boiler"].awarded_kw == 4.0
    assert bids["h4-heatpump"].deposit_forfeited == 600  # 6 kW x 100 tokens, did not perform
    assert set(r.timings) == {*PHASES, "total"}


def test_many_households_clear_in_batches_with_the_models_result(anvil: Any) -> None:
    """1,000 bids (the 10,000-bid run is bench/gas.py's and `simulate --households 10000`):
    the same code path, clearing in several clearBatch transactions. simulate() itself raises
    when a bid's award, payment or forfeit differs from the reference model's."""
    n = 1000
    r = simulate(generate_scenario(households=n, seed=7), node=node_of(anvil))
    assert len(r.bids) == n
    awarded = [b for b in r.bids if b.awarded_kw > 0]
    assert 0 < len(awarded) < n
    # the awards add up to the target (the marginal bid takes the rest), each paid at the price
    assert sum(b.awarded_kw for b in r.bids) == pytest.approx(r.target_kw, abs=1e-6)
    assert all(b.payment == pytest.approx(r.clearing_price * b.awarded_kw / 6, abs=0.002)
               for b in awarded if b.reason == "")
    assert r.timings["total"] > 0


def test_cli_simulate_rpc_generated_households(anvil: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "market", "simulate", "--households", "40",
         "--seed", "3", "--rpc", anvil.url, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["bids"]) == 40 and list(out["timings"]) == [*PHASES, "total"]
    assert out["timings"]["total"] >= sum(out["timings"][p] for p in PHASES) - 1e-6
    bad = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "market", "simulate", str(EXAMPLE), "--households",
         "3"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "SCENARIO file or --households N" in bad.stderr
