"""`drgw market simulate` and `drgw market reputation-sim` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "market" / "evening-peak.toml"
BID_KEYS = ["id", "bid_id", "household", "sealed", "eligible", "reason", "awarded_kw", "payment", "surplus",
            "performed", "deposit", "deposit_refunded", "deposit_forfeited"]


def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "market", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_simulate_json_has_the_documented_shape_and_consistent_money() -> None:
    done = drgw("simulate", str(EXAMPLE), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert list(out) == ["target_kw", "clearing_price", "pricing", "window_hours", "bids",
                         "operator_gain", "tx", "model_checked", "timings"]
    assert list(out["tx"]) == ["count", "gas_total", "gas_max"] and out["tx"]["count"] > 0
    assert out["pricing"] == "uniform" and out["model_checked"] == 7
    # seconds per phase and in total, measured (not asserted: a shared machine's timing is noise)
    assert "total" in out["timings"] and all(t >= 0 for t in out["timings"].values())
    assert all(list(b) == BID_KEYS for b in out["bids"])
    bids = {b["id"]: b for b in out["bids"]}
    hours, price = out["window_hours"], out["clearing_price"]
    assert hours == pytest.approx(10 / 60)
    assert sum(b["awarded_kw"] for b in out["bids"]) == pytest.approx(out["target_kw"])
    assert out["target_kw"] == 33.333  # min(80 tokens / 2.4, 35 kW offered), floored to W
    assert price == 45.0  # h4-battery is the marginal bid
    assert 0 < bids["h4-battery"]["awarded_kw"] < 12
    for b in out["bids"]:
        assert b["payment"] == pytest.approx(price * b["awarded_kw"] * hours, abs=0.001)
        assert b["deposit_refunded"] + b["deposit_forfeited"] == b["deposit"]
    assert bids["h1-ac"]["awarded_kw"] == 2.0 and bids["h3-boiler"]["awarded_kw"] == 4.0
    assert not bids["h5-late"]["eligible"]
    assert bids["h5-late"]["reason"] == "submitted after announcement"
    assert bids["h5-charge"]["reason"] == "wrong direction"
    assert not bids["h4-heatpump"]["performed"] and bids["h4-heatpump"]["deposit_forfeited"] == 600
    assert bids["h1-ac"]["performed"] and bids["h1-ac"]["deposit_refunded"] == 300
    spread = 80.0
    awarded = sum(b["awarded_kw"] for b in out["bids"])
    assert out["operator_gain"] == pytest.approx((spread - price) * awarded * hours)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_simulate_table_and_a_bad_scenario(tmp_path: Path) -> None:
    done = drgw("simulate", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "clearing price 45 tokens/kWh" in done.stdout and "h4-battery" in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("omega =", "omgea ="))
    done = drgw("simulate", str(bad))
    assert done.returncode == 2
    assert "bad.toml: key market.'omgea' is not valid; did you mean 'omega'?" in done.stderr


def test_reputation_sim_prints_both_completion_rates() -> None:
    done = drgw("reputation-sim", "--users", "25", "--aggregators", "4", "--rounds", "300",
                "--seed", "5", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert 0 < out["by_reputation"]["mean"] <= 1 and 0 < out["at_random"]["mean"] <= 1
    assert len(out["per_seed"]["by_reputation"]) == 20  # --seeds defaults to 20
    text = drgw("reputation-sim", "--rounds", "50", "--seed", "5", "--seeds", "2").stdout
    assert "by reputation" in text and "at random" in text and "seeds 5..6" in text
