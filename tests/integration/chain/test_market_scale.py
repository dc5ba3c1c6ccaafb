"""Issue 14 on the embedded EVM: batch clearing an operator cannot cheat, sealed bids, pay-as-bid,
several windows ahead, batched Reports with a bad signature, and pull settlement with claims.

Expected figures are hand computations in the comments (contract units, docs/market.md). The
10,000-bid run lives in bench/gas.py (minutes on py-evm); here a few hundred bids go through the
same batching code path with the batch size forced small.
"""

from __future__ import annotations

import pytest

from gateway.chain import clearing
from gateway.chain.revert import ChainRevert
from gateway.market import model as m

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def reverts(name: str, fn, *args, **kwargs) -> ChainRevert:  # type: ignore[no-untyped-def]
    with pytest.raises(ChainRevert) as info:
        fn(*args, **kwargs)
    assert info.value.revert.name == name, str(info.value)
    return info.value


def send(market, fn: str, *args):  # type: ignore[no-untyped-def]
    c = market.client
    data = getattr(c.market.functions, fn)(*args)._encode_transaction_data()
    return market.op.send(to=c.market.address, data=data, purpose=fn)


def four_bids(market):  # type: ignore[no-untyped-def]
    """b1..b4 at prices 30, 10, 20, 10 tokens/kWh (merit order b2, b4, b3, b1), 10 kW each, and
    b5 offering more load (wrong direction for a reduce window)."""
    hs = [market.household(f"s{i}") for i in range(5)]
    prices = [30_000, 10_000, 20_000, 10_000]
    bids = [market.bid(h, power_w=-10_000, price_mtok=p) for h, p in zip(hs, prices, strict=False)]
    bids.append(market.bid(hs[4], power_w=5000, price_mtok=1))
    window, start, end = market.announce()  # optimum 80 tokens spread / 2.4 = 33_333 W
    return hs, bids, window, start, end


def test_a_cheating_operator_is_reverted_and_an_honest_one_clears(market) -> None:
    _, (b1, b2, b3, b4, up), window, _, _ = four_bids(market)
    reverts("MeritOrderViolated", send, market, "clearBatch", window, [b2, b3, b4], [])
    reverts("MeritOrderViolated", send, market, "clearBatch", window, [b4, b2], [])  # tie: id
    reverts("EligibleBidSkipped", send, market, "clearBatch", window, [b2], [up, b4])
    reverts("BidNotEligible", send, market, "clearBatch", window, [up], [])
    send(market, "clearBatch", window, [b2, b4], [up])  # a first batch ...
    err = reverts("BidNotEligible", send, market, "clearBatch", window, [b2], [])  # no repeat
    assert err.revert.args["reason"] == 1  # consumed by this window already
    reverts("BidNotPassable", send, market, "clearBatch", window, [], [up])
    err = reverts("BidsNotPassed", send, market, "finishClearing", window)  # b3 and b1 skipped
    assert (err.revert.args["expected"], err.revert.args["passed"]) == (5, 3)
    send(market, "clearBatch", window, [b3, b1], [])
    send(market, "finishClearing", window)
    # 33_333 W: b2, b4 and b3 in full (30 kW), b1 the marginal 3_333 W at 30 tokens/kWh
    w = market.client.window(window)
    assert (w["state"], w["targetW"], w["clearingPrice"], w["winners"]) == (2, 33_333, 30_000, 4)
    assert [market.client.bid(b)["awardW"] for b in (b1, b2, b3, b4)] == [3_333, 10_000, 10_000,
                                                                          10_000]
    assert market.client.window_bids(window) == (b2, b4, b3, b1)
    assert market.client.bid(up)["state"] == 1  # ineligible: still open for a later window


def test_many_batches_give_the_models_clearing(market, monkeypatch) -> None:
    monkeypatch.setattr(clearing, "TX_BUDGET", 7 * clearing.GAS_ELIGIBLE)  # 7 bids a batch
    hs = [market.household(f"n{i}") for i in range(6)]
    model_bids = []
    for i in range(40):  # prices repeat so that ties go by bid id across batches
        h = hs[i % len(hs)]
        power = -1000 - 100 * (i % 5) if i % 9 else 700
        bid_id = market.bid(h, power_w=power, price_mtok=1000 * (i * 7 % 11))
        now = market.now()
        model_bids.append(m.Bid(id=bid_id, household=h.address, from_s=now, to_s=now + 10 * 86_400,
                                power_w=power, rated_w=abs(power), price_mtok=1000 * (i * 7 % 11)))
    window, start, end = market.announce(omega=60)  # optimum 80_000 x 1000 / 120 = 666_666 W
    mined = market.client.clear(market.op, window)
    assert len(mined) >= 7  # 36 eligible bids, 7 per batch, then finishClearing
    spec = m.WindowSpec(start_s=start, end_s=end, retail_micro=600_000, realtime_micro=680_000,
                        omega_milli=60, mode=m.Mode.SHIFT, cutoff=41)
    model = m.clear(model_bids, spec, m.target_of(spec, 1_000_000), now_s=0)
    assert market.client.window_bids(window) == model.order
    assert {b: market.client.bid(b)["awardW"] for b in model.order} == dict(model.awards)
    assert market.client.window(window)["clearingPrice"] == model.clearing_price_mtok


def test_windows_ahead_clear_in_order_and_count_their_own_bids(market) -> None:
    h = market.household("a")
    first = market.bid(h, power_w=-1000, price_mtok=5)
    w1, _, end1 = market.announce(lead_s=1200)
    second = market.bid(h, power_w=-2000, price_mtok=7)
    start2 = end1 + 60
    market.client.announce(market.op, start_s=start2, end_s=start2 + 600, retail_micro=600_000,
                           realtime_micro=680_000, omega_milli=1200, mode=0)
    w2 = market.client.window_count()
    reverts("ClearingOutOfOrder", send, market, "finishClearing", w2)
    reverts("BidLocked", market.client.withdraw_bid, h.wallet, second)  # w2 counts on it
    market.client.clear(market.op, w1)
    market.client.clear(market.op, w2)
    assert market.client.window_bids(w1) == (first,) and market.client.window_bids(w2) == (second,)
    assert market.client.take(h.address, w1)["awardW"] == 1000
    assert market.client.take(h.address, w2)["awardW"] == 2000


def sealed_world(market, pricing: int):  # type: ignore[no-untyped-def]
    """Three sealed bids (10 kW at 10, 20 and 30 tokens/kWh) and one open bid at 25 tokens/kWh,
    10 kW; optimum 33_333 W."""
    hs = [market.household(f"z{i}") for i in range(4)]
    now = market.now()
    terms = [dict(price_mtok=p, power_w=-10_000, from_s=now, to_s=now + 86_400,
                  salt=bytes([i + 1]) * 32) for i, p in enumerate((10_000, 20_000, 30_000))]
    sealed = [market.client.commit_bid(h.wallet, h.address, rated_w=10_000, sealed=m.seal(
        household=h.address, **t))[0] for h, t in zip(hs, terms, strict=False)]
    public = market.bid(hs[3], power_w=-10_000, price_mtok=25_000)
    window, start, end = market.announce(reveal_s=300, pricing=pricing)
    return hs, terms, sealed, public, window, start, end


def test_sealed_bids_reveal_then_clear_pay_as_bid_and_an_unrevealed_one_pays_a_penalty(
        market) -> None:
    hs, terms, sealed, public, window, _, end = sealed_world(market, pricing=1)
    assert market.client.bid(sealed[0])["priceMtok"] == 0  # nothing public before the reveal
    bad = dict(terms[0], price_mtok=9_999)
    reverts("CommitmentMismatch", market.client.reveal_bid, hs[0].wallet, sealed[0], **bad)
    for h, bid_id, t in zip(hs[:2], sealed[:2], terms[:2], strict=True):
        market.client.reveal_bid(h.wallet, bid_id, **t)
    reverts("RevealRunning", market.client.clear, market.op, window)
    market.at(market.client.window(window)["revealEnd"])
    reverts("RevealClosed", market.client.reveal_bid, hs[2].wallet, sealed[2], **terms[2])
    mined = market.client.clear(market.op, window)
    # merit: sealed0 (10), sealed1 (20), public (25): 30 kW in full, under the 33_333 W optimum
    awards = [market.client.bid(b)["awardW"] for b in (*sealed[:2], public)]
    assert awards == [10_000, 10_000, 10_000]
    # unrevealed: deposit 100 tokens/kW x 10 kW = 1_000_000 mtok; 10 % penalty
    [gone] = market.client.events("CommitmentUnrevealed", mined)
    assert (gone["bidId"], gone["refund"], gone["penalty"]) == (sealed[2], 900_000, 100_000)
    for h in (*hs[:2], hs[3]):
        market.commit(h, window)
    market.at(end)
    for h, award in zip((*hs[:2], hs[3]), awards, strict=True):
        market.client.submit_report(market.stranger, market.report(
            h, window, delivered=award * 600 // 3600))
    market.client.settle(market.op, window)
    checked = market.client.check(market.op, window)
    # pay-as-bid, 10 kW for 600 s: 10_000 x 10_000 x 600 / 3.6e6 = 16_666 (rounded down);
    # 20_000 x ... = 33_333; 25_000 x ... = 41_666
    paid = {e["bidId"]: e["amount"] for e in market.client.events("BidPaid", checked)}
    assert paid == {sealed[0]: 16_666, sealed[1]: 33_333, public: 41_666}
    assert market.client.claimable(hs[2].address) == 900_000
    before = market.client.balance(hs[0].address)
    market.client.claim(market.stranger, hs[0].address)
    assert market.client.balance(hs[0].address) - before == 16_666 + 1_000_000
    assert market.client.claimable(hs[0].address) == 0


def test_uniform_pricing_pays_everyone_the_marginal_price_and_returns_the_rest(market) -> None:
    hs, terms, sealed, _, window, _, end = sealed_world(market, pricing=0)
    for h, bid_id, t in zip(hs[:3], sealed, terms, strict=True):  # all three revealed this time
        market.client.reveal_bid(h.wallet, bid_id, **t)
    market.at(market.client.window(window)["revealEnd"])
    market.client.clear(market.op, window)
    # merit 10, 20, 25 (public), 30: awards 10 kW, 10 kW, 10 kW, 3_333 W; price 30 tokens/kWh
    assert market.client.window(window)["clearingPrice"] == 30_000
    market.commit(hs[0], window)
    market.at(end)
    market.client.submit_report(market.stranger, market.report(hs[0], window, delivered=1667))
    treasury = market.client.claimable(market.op.address)
    settled = market.client.settle(market.op, window)
    # pulled: 30_000 x 33_333 W x 600 s / 3.6e6 = 166_665 (every winner, rounded once)
    assert market.client.events("WindowSettled", settled)[0]["paid"] == 166_665
    checked = market.client.check(market.op, window)
    # only hs[0] reported: 30_000 x 10_000 x 600 / 3.6e6 = 50_000; the other three winners forfeit
    # 1_000_000 each; the unpaid 166_665 - 50_000 = 116_665 returns to the treasury's balance
    assert [e["amount"] for e in market.client.events("BidPaid", checked)] == [50_000]
    assert market.client.claimable(market.op.address) - treasury == 116_665 + 3 * 1_000_000


def test_batched_reports_accept_the_good_and_reject_a_bad_signature_alone(market) -> None:
    hs = [market.household(f"r{i}") for i in range(3)]
    for h in hs:
        market.bid(h, power_w=-2000, price_mtok=10_000)
    window, _, end = market.announce()
    market.client.clear(market.op, window)
    for h in hs:
        market.commit(h, window)
    market.at(end)
    good = [market.report(h, window, delivered=333) for h in hs]
    forged = market.report(hs[1], window, delivered=333, key=hs[0].gateway_key)
    mined = market.client.submit_reports(market.stranger, [good[0], forged, good[2]])
    accepted = market.client.events("ReportAccepted", mined)
    assert [e["household"] for e in accepted] == [hs[0].address, hs[2].address]
    assert all(e["sender"] == market.stranger.address for e in accepted)
    [rejected] = market.client.events("ReportRejected", mined)
    from eth_utils import keccak

    wrong_signer = keccak(text="WrongSigner(address,address)")[:4]
    assert (rejected["household"], rejected["reason"]) == (hs[1].address, wrong_signer)
    assert market.client.take(hs[1].address, window)["reported"] is False
    market.client.submit_reports(market.stranger, [good[1]])  # the good one still goes in later
    assert market.client.take(hs[1].address, window)["reported"] is True
