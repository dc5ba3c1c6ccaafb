"""Baselines committed on chain before the window, Reports held to them, and signed energies.

Issue 13 deliverables 4 and 6 on the embedded EVM: a gateway-signed EIP-712 `Baseline` is accepted
only before the window starts, a later one replaces an earlier one, and a Report reverts unless its
baseline method, input hash and energy equal the commitment; a household that exports during a
reduce window (negative actual energy) is credited with all of its response.
"""

from __future__ import annotations

import pytest

from gateway.chain.report import Baseline, baseline_digest
from gateway.chain.revert import ChainRevert
from gateway.market import model as m

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def reverts(name: str, fn, *args, **kwargs) -> ChainRevert:  # type: ignore[no-untyped-def]
    with pytest.raises(ChainRevert) as info:
        fn(*args, **kwargs)
    assert info.value.revert.name == name, str(info.value)
    return info.value


def won(market, power_w: int = -2000):  # type: ignore[no-untyped-def]
    """One household wins one 10-minute reduce window of `power_w` (cleared, not yet started)."""
    h = market.household("h")
    bid = market.bid(h, power_w=power_w, price_mtok=30_000)
    window, start, end = market.announce()
    market.client.clear(market.op, window)
    assert market.client.bid(bid)["awardW"] == -power_w
    return h, bid, window, start, end


def test_the_contract_hashes_a_baseline_as_the_gateway_signs_it(market) -> None:
    h, _, window, _, _ = won(market)
    b = Baseline(household=h.address, window=window, method=3, input_hash=b"\x42" * 32,
                 baseline_wh=-1234)
    on_chain = market.client.market.functions.baselineDigest(b.as_tuple()).call()
    assert bytes(on_chain) == baseline_digest(b, chain_id=market.deployment.chain_id,
                                              market=market.deployment.market)


def test_commitment_before_the_start_is_stored_and_after_the_start_reverts(market) -> None:
    h, _, window, start, _ = won(market)
    assert market.client.baseline(h.address, window)["committed"] is False
    mined = market.commit(h, window, baseline_wh=-700, method=4, input_hash=b"\x33" * 32)
    event = market.client.events("BaselineCommitted", mined)[0]
    assert (event["household"], event["window"], event["sender"]) == (
        h.address, window, market.stranger.address)  # the gateway signs, anyone sends
    assert market.client.baseline(h.address, window) == {
        "inputHash": b"\x33" * 32, "baselineWh": -700, "method": 4, "committed": True}
    assert m.commit_refusal(window_state=2, now_s=market.now(), start_s=start) == ""
    market.at(start)  # the window has started: too late to fix the baseline
    err = reverts("BaselineTooLate", market.commit, h, window)
    assert (err.revert.args["window"], err.revert.args["start"]) == (window, start)
    assert m.commit_refusal(window_state=2, now_s=start, start_s=start) == "BaselineTooLate"
    assert market.client.baseline(h.address, window)["baselineWh"] == -700  # unchanged


def test_commitment_must_be_signed_by_the_households_gateway(market) -> None:
    h, _, window, _, _ = won(market)
    other = market.household("other")
    err = reverts("WrongSigner", market.commit, h, window, key=other.gateway_key)
    assert err.revert.args["gateway"] == h.gateway
    reverts("UnknownWindow", market.commit, h, window + 1)


def test_a_later_commitment_before_the_start_replaces_the_earlier(market) -> None:
    h, _, window, _, end = won(market)
    market.commit(h, window, baseline_wh=5000)
    market.commit(h, window, baseline_wh=4000)  # the forecast changed before the window
    market.at(end)
    err = reverts("BaselineMismatch", market.client.submit_report, market.stranger,
                  market.report(h, window, delivered=340, baseline_wh=5000))
    assert err.revert.args["committedWh"] == 4000
    market.client.submit_report(market.stranger,
                                market.report(h, window, delivered=340, baseline_wh=4000))
    assert market.client.take(h.address, window)["deliveredWh"] == 340


def test_a_report_without_a_commitment_reverts(market) -> None:
    h, _, window, _, end = won(market)
    market.at(end)
    err = reverts("BaselineNotCommitted", market.client.submit_report, market.stranger,
                  market.report(h, window, delivered=340))
    assert (err.revert.args["household"], err.revert.args["window"]) == (h.address, window)


@pytest.mark.parametrize("field", ["baseline_method", "baseline_input_hash", "baseline_wh"])
def test_a_report_that_differs_from_the_commitment_reverts(market, field: str) -> None:
    h, _, window, _, end = won(market)
    market.commit(h, window)  # method 2, input hash 0x11.., 5000 Wh: market.report's defaults
    market.at(end)
    changed = {"baseline_method": {"baseline_method": 3},
               "baseline_input_hash": {"baseline_input_hash": b"\x12" + b"\x11" * 31},
               "baseline_wh": {"baseline_wh": 5001}}[field]
    signed = market.report(h, window, delivered=340, **changed)
    reverts("BaselineMismatch", market.client.submit_report, market.stranger, signed)
    market.client.submit_report(market.stranger, market.report(h, window, delivered=340))


def test_an_exporting_household_is_credited_in_full(market) -> None:
    # Award 2000 W x 600 s = 333.3 Wh; tolerance 5%: needs 333.3 x 0.95 = 316.7 Wh.
    # Baseline 100 Wh, actual -250 Wh (PV exports 250 Wh over the window): delivered = 350 Wh,
    # performed. With energies clamped at 0 (uint64) it would have been 100 - 0 = 100 Wh: forfeit.
    h, bid, window, _, end = won(market)
    market.commit(h, window, baseline_wh=100)
    market.at(end)
    signed = market.report(h, window, delivered=350, baseline_wh=100)
    assert (signed.report.actual_wh, signed.report.delivered_wh) == (-250, 350)
    market.client.submit_report(market.stranger, signed)
    before = market.client.balance(h.address)
    market.client.settle(market.op, window)
    checked = market.client.check(market.op, window)
    paid = market.client.events("BidPaid", checked)
    market.client.claim(market.stranger, h.address)
    # payment = 30_000 mtok/kWh x 2000 W x 600 s / 3_600_000 = 10_000 mtok; deposit 100 x 2 kW
    assert [(e["bidId"], e["amount"]) for e in paid] == [(bid, 10_000)]
    assert [e["bidId"] for e in market.client.events("DepositRefunded", checked)] == [bid]
    assert market.client.balance(h.address) - before == 10_000 + 200_000
    assert m.verdict(350, 2000, 600, 500) is m.Outcome.PERFORMED
