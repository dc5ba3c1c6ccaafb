"""Seed 003's worked example (examples/market/evening-peak.toml) under pay-as-bid pricing, in the
reference model: payments equal the hand computation in docs/market.md (price x W x 600 / 3.6e6,
rounded down per bid), and uniform pricing keeps its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.market import model as m
from gateway.market.scenario import load_scenario

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "market" / "evening-peak.toml"
# hand computation, mtok: uniform 45_000 x W / 6000; pay-as-bid own price x W / 6000
UNIFORM = {"h2-ev": 82_500, "h1-ac": 15_000, "h3-boiler": 30_000, "h4-heatpump": 45_000,
           "h4-battery": 77_497}
PAY_AS_BID = {"h2-ev": 45_833, "h1-ac": 10_500, "h3-boiler": 21_000, "h4-heatpump": 40_000,
              "h4-battery": 77_497}


@pytest.mark.parametrize(("pricing", "expected"), [(m.Pricing.UNIFORM, UNIFORM),
                                                   (m.Pricing.PAY_AS_BID, PAY_AS_BID)])
def test_evening_peak_payments(pricing: m.Pricing, expected: dict[str, int]) -> None:
    s = load_scenario(EXAMPLE.read_text(), source=str(EXAMPLE))
    ordered = sorted(s.bids, key=lambda b: b.submitted_s)  # bid ids are submission order
    ids = {b.key: i + 1 for i, b in enumerate(ordered)}
    bids = [m.Bid(id=ids[b.key], household=b.household, from_s=b.from_s, to_s=b.to_s,
                  power_w=b.power_w, rated_w=b.rated_w, price_mtok=b.price_mtok) for b in s.bids]
    cutoff = 1 + sum(1 for b in s.bids if b.submitted_s < s.announced_s)
    spec = m.WindowSpec(start_s=s.start_s, end_s=s.end_s, retail_micro=s.retail_micro,
                        realtime_micro=s.realtime_micro, omega_milli=s.omega_milli, mode=s.mode,
                        cutoff=cutoff, pricing=pricing)
    clearing = m.clear(bids, spec, m.target_of(spec, s.mtok_per_currency), now_s=s.announced_s)
    assert (clearing.target_w, clearing.clearing_price_mtok) == (33_333, 45_000)
    every = {b.household: 10**6 for b in s.bids}  # all winners reported (simulate's case)
    results = m.settle_and_check(clearing, bids, spec, delivered=every,
                                 deposit_per_kw_mtok=s.deposit_per_kw_mtok,
                                 tolerance_bps=s.tolerance_bps)
    key = {v: k for k, v in ids.items()}
    assert {key[r.bid_id]: r.payment_mtok for r in results if r.award_w} == expected
    # settle pulls floor(sum(price x W) / 6000): uniform 45_000 x 33_333 / 6000 = 249_997.5;
    # pay-as-bid (275M + 63M + 126M + 240M + 464.985M) / 6000 = 194_830.8
    assert m.pulled_mtok(clearing, bids, spec) == {m.Pricing.UNIFORM: 249_997,
                                                   m.Pricing.PAY_AS_BID: 194_830}[pricing]
