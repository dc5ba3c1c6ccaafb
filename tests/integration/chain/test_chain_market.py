"""The DR market contract on the embedded EVM: every phase, role checks, lockout, clearing rules."""

from __future__ import annotations

import pytest

from gateway.chain.revert import ChainRevert

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def reverts(name: str, fn, *args, **kwargs) -> ChainRevert:  # type: ignore[no-untyped-def]
    with pytest.raises(ChainRevert) as info:
        fn(*args, **kwargs)
    assert info.value.revert.name == name, str(info.value)
    assert name in str(info.value)
    return info.value


def test_only_the_operator_runs_the_phases_and_the_registry(market) -> None:
    h = market.household("h1")
    c, stranger = market.client, market.stranger
    err = reverts("AccessControlUnauthorizedAccount", c.announce, stranger, start_s=market.now()
                  + 3600, end_s=market.now() + 4200, retail_micro=600_000,
                  realtime_micro=680_000, omega_milli=1200, mode=0)
    assert err.revert.args["account"].lower() == stranger.address.lower()
    reverts("AccessControlUnauthorizedAccount", c.register_aggregator, stranger, stranger.address)
    reverts("AccessControlUnauthorizedAccount", c.register_household, h.wallet,
            wallet=stranger.address, gateway=stranger.address, aggregator=market.aggregator.address)
    market.bid(h, power_w=-2000, price_mtok=30_000)
    window, _, _ = market.announce()
    for phase in (c.clear, c.settle):
        reverts("AccessControlUnauthorizedAccount", phase, stranger, window)
    data = c.market.functions.settleBatch(window, [1])._encode_transaction_data()
    reverts("AccessControlUnauthorizedAccount", stranger.send, to=c.market.address, data=data,
            purpose="settleBatch")


def test_a_household_bids_only_for_itself(market) -> None:
    h1, h2 = market.household("h1"), market.household("h2")
    outsider = market.household("outsider", register=False)
    reverts("NotHousehold", market.bid, outsider, power_w=-1000, price_mtok=1)
    bid = market.bid(h1, power_w=-1000, price_mtok=1)
    reverts("NotBidOwner", market.client.withdraw_bid, h2.wallet, bid)
    before = market.client.balance(h1.address)
    market.client.withdraw_bid(h1.wallet, bid)
    assert market.client.balance(h1.address) == before + 100_000  # 100 tokens/kW x 1 kW
    reverts("BidNotOpen", market.client.withdraw_bid, h1.wallet, bid)


def test_bid_escrows_deposit_rate_times_rated_power(market) -> None:
    h = market.household("h1")
    before = market.client.balance(h.address)
    bid = market.bid(h, power_w=-2000, rated_w=3000, price_mtok=31_500)
    assert before - market.client.balance(h.address) == 100_000 * 3000 // 1000
    assert market.client.bid(bid)["deposit"] == 300_000
    reverts("RatedPowerInvalid", market.bid, h, power_w=-2000, rated_w=1999, price_mtok=1)
    reverts("BidPowerInvalid", market.bid, h, power_w=0, price_mtok=1)
    reverts("BidRangeInvalid", market.bid, h, power_w=-1, price_mtok=1, from_s=10, to_s=10)


def test_lockout_late_bids_and_locked_withdrawal(market) -> None:
    h = market.household("h1")
    early = market.bid(h, power_w=-2000, price_mtok=30_000)
    err = reverts("LockoutViolated", market.announce, lead_s=599)
    assert err.revert.args["earliestStart"] > err.revert.args["start"]
    window, _, _ = market.announce(lead_s=600)
    late = market.bid(h, power_w=-2000, price_mtok=1)  # cheaper, but after the announcement
    reverts("BidLocked", market.client.withdraw_bid, h.wallet, early)
    reverts("WindowOverlap", market.announce, lead_s=600)  # the next window starts after this one
    market.client.clear(market.op, window)
    assert market.client.window_bids(window) == (early,)
    assert market.client.bid(late)["state"] == 1  # still open for a later window
    reverts("WrongWindowState", market.client.clear, market.op, window)


def test_ties_go_to_the_earlier_bid_and_the_marginal_bid_is_partial(market) -> None:
    hs = [market.household(f"h{i}") for i in range(4)]
    b0 = market.bid(hs[0], power_w=-20_000, price_mtok=30_000)
    b1 = market.bid(hs[1], power_w=-10_000, price_mtok=31_500)
    b2 = market.bid(hs[2], power_w=-10_000, price_mtok=31_500)  # same price, submitted later
    b3 = market.bid(hs[3], power_w=-10_000, price_mtok=20_000)
    window, _, _ = market.announce()  # optimum (80 tokens spread) / 2.4 = 33_333 W
    market.client.clear(market.op, window)
    w = market.client.window(window)
    awards = {b: market.client.bid(b)["awardW"] for b in (b0, b1, b2, b3)}
    assert w["optimumW"] == 80_000 * 1000 // 2400
    assert w["targetW"] == w["optimumW"] == sum(awards.values())
    assert awards == {b3: 10_000, b0: 20_000, b1: 3_333, b2: 0}
    assert w["clearingPrice"] == 31_500  # the marginal (partial) bid's price
    assert market.client.window_bids(window) == (b3, b0, b1, b2)  # merit order


def test_undersubscribed_window_accepts_every_eligible_bid(market) -> None:
    h1, h2 = market.household("h1"), market.household("h2")
    b1 = market.bid(h1, power_w=-2000, price_mtok=10_000)
    b2 = market.bid(h2, power_w=-3000, price_mtok=50_000)
    wrong = market.bid(h2, power_w=4000, price_mtok=1)  # adds load: wrong direction
    window, start, end = market.announce()
    narrow = market.bid(h1, power_w=-1000, price_mtok=1, from_s=start + 60, to_s=end)
    market.client.clear(market.op, window)
    w = market.client.window(window)
    assert w["targetW"] == 5000 < w["optimumW"]
    assert w["clearingPrice"] == 50_000
    assert [market.client.bid(b)["awardW"] for b in (b1, b2, wrong, narrow)] == [2000, 3000, 0, 0]
    assert market.client.window_bids(window) == (b1, b2)


def test_no_eligible_bids_means_no_window(market) -> None:
    h = market.household("h1")
    up = market.bid(h, power_w=2000, price_mtok=1)  # the market wants less load
    window, _, _ = market.announce()
    mined = market.client.clear(market.op, window)
    assert market.client.events("WindowVoided", mined)[0]["reason"] == 1
    assert market.client.window(window)["state"] == 5
    assert market.client.bid(up)["state"] == 1
    market.announce()  # a void window does not block the next one


def test_increase_window_when_realtime_is_below_retail(market) -> None:
    h1, h2 = market.household("h1"), market.household("h2")
    down = market.bid(h1, power_w=-2000, price_mtok=1)
    up = market.bid(h2, power_w=3000, price_mtok=5)
    window, _, _ = market.announce(retail=600_000, realtime=500_000)
    market.client.clear(market.op, window)
    assert market.client.window(window)["reduce"] is False
    assert market.client.bid(up)["awardW"] == 3000
    assert market.client.bid(down)["state"] == 1


def test_curtailment_adds_retail_price_to_the_target(market) -> None:
    h = market.household("h1")
    market.bid(h, power_w=-1_000_000, price_mtok=1)
    window, _, _ = market.announce(mode=1)
    w = market.client.window(window)
    assert w["dEcMtok"] == 600_000 and w["spreadMtok"] == 80_000
    assert w["optimumW"] == (600_000 + 80_000) * 1000 // 2400


def test_clearing_after_the_window_started_voids_it(market) -> None:
    h = market.household("h1")
    bid = market.bid(h, power_w=-2000, price_mtok=1)
    window, start, _ = market.announce()
    market.at(start)
    mined = market.client.clear(market.op, window)
    assert market.client.events("WindowVoided", mined)[0]["reason"] == 3
    assert market.client.bid(bid)["state"] == 1
