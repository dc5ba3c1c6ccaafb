"""`drgw market simulate --households N`: the generated window is reproducible from its seed."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.market.scenario import generate_scenario


def test_same_seed_same_window_other_seed_other_bids() -> None:
    a, b = generate_scenario(households=200, seed=5), generate_scenario(households=200, seed=5)
    assert a == b
    c = generate_scenario(households=200, seed=6)
    assert [x.price_mtok for x in c.bids] != [x.price_mtok for x in a.bids]


def test_generated_bids_vary_and_the_optimum_is_about_half_the_offer() -> None:
    s = generate_scenario(households=1000, seed=1)
    assert len({b.household for b in s.bids}) == 1000
    assert len({b.price_mtok for b in s.bids}) > 50 and len({b.power_w for b in s.bids}) > 50
    assert any(b.power_w > 0 for b in s.bids)  # wrong-direction bids exist
    assert any(b.submitted_s > s.announced_s for b in s.bids)  # late bids exist
    offered = sum(-b.power_w for b in s.bids if b.power_w < 0)
    # optimum = spread x 1000 / (2 omega) (docs/market.md), spread = 0.08 currency x 1000 tokens
    optimum = 80_000 * 1000 // (2 * s.omega_milli)
    assert offered * 0.4 < optimum < offered * 0.8
    with pytest.raises(ConfigError, match="--households 0"):
        generate_scenario(households=0, seed=1)
