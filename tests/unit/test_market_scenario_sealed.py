"""Scenario keys for seed 002's rules (market.pricing, market.reveal_minutes, bid.sealed,
bid.revealed): read into contract units, and every mistake named with the file, key and fix."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.market.model import Pricing
from gateway.market.scenario import parse_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "market"


def example(name: str = "evening-peak-sealed.toml") -> dict[str, Any]:
    return tomllib.loads((EXAMPLES / name).read_text())


def test_the_sealed_example_reads_pay_as_bid_with_a_five_minute_reveal_phase() -> None:
    s = parse_scenario(example(), source="sealed.toml")
    assert (s.pricing, s.reveal_s) == (Pricing.PAY_AS_BID, 300)
    assert all(b.sealed and b.revealed for b in s.bids)
    plain = parse_scenario(example("evening-peak.toml"), source="plain.toml")
    assert (plain.pricing, plain.reveal_s) == (Pricing.UNIFORM, 0)
    assert not any(b.sealed for b in plain.bids)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["market"].update(pricing="first_price"),
     'market.pricing must be "uniform" or "pay_as_bid", not \'first_price\''),
    (lambda d: d["market"].update(reveal_minutes=10),  # announced 18:20, start 18:30
     "market.reveal_minutes must end before window.start"),
    (lambda d: d["market"].update(reveal_minutes=-1), "market.reveal_minutes = -1 is out of range"),
    (lambda d: d["market"].pop("reveal_minutes"),
     "bid 'h1-ac' is sealed but market.reveal_minutes is 0"),
    (lambda d: d["bid"][0].update(sealed="yes"), "bid[0].sealed must be true or false, not 'yes'"),
    (lambda d: d["bid"][0].update(sealed=False, revealed=False),
     "bid[0].revealed = false needs bid[0].sealed = true"),
    (lambda d: d["bid"][0].update(reveal=True), "key bid[0].'reveal' is not valid; did you mean"),
])
def test_mistakes_name_the_file_the_key_and_the_fix(edit: Any, message: str) -> None:
    data = example()
    edit(data)
    with pytest.raises(ConfigError) as info:
        parse_scenario(data, source="sealed.toml")
    assert str(info.value).startswith("sealed.toml: ") and message in str(info.value)
