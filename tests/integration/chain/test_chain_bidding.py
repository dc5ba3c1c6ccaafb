"""Bids placed by a household's gateway on its behalf (placeBidFor), and the real market port:
Web3MarketPort's BiddingPort (terms, place, list, withdraw) and its baseline commitments, on the
embedded EVM, and over JSON-RPC with the node killed (anvil)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.chain.node import fund
from gateway.chain.port import BaselineCommit, BidOrder, Web3MarketPort
from gateway.chain.revert import ChainRevert
from tests.waits import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def reverts(name: str, fn, *args, **kwargs) -> ChainRevert:  # type: ignore[no-untyped-def]
    with pytest.raises(ChainRevert) as info:
        fn(*args, **kwargs)
    assert info.value.revert.name == name, str(info.value)
    return info.value


def with_gateway(market, name: str = "h"):  # type: ignore[no-untyped-def]
    """A household whose gateway account has gas (it sends its household's bids)."""
    h = market.household(name)
    fund(market.node, market.op, h.gateway, 10**18)
    return h, market.sender(h.gateway_key)


def port_of(market, h, tmp_path: Path) -> Web3MarketPort:  # type: ignore[no-untyped-def]
    """The real port as an agent builds it: the gateway key signs, a relayer sends Reports."""
    return Web3MarketPort(w3=market.node.w3, market=market.deployment.market, household=h.address,
                          gateway_secret=h.gateway_key, sender_secret=market.node.funded_keys[3],
                          outbox_path=tmp_path / "outbox.sqlite")


def test_the_gateway_bids_and_withdraws_for_its_household(market) -> None:
    h, gateway = with_gateway(market)
    c = market.client
    wallet_before, now = c.balance(h.address), market.now()
    bid_id, mined = c.place_bid_for(gateway, h.address, from_s=now, to_s=now + 86_400,
                                    power_w=-2000, rated_w=3000, price_mtok=30_000)
    placed = c.events("BidPlaced", mined)[0]
    # deposit = 100_000 mtok/kW x 3 kW = 300_000 mtok, from the household's wallet
    assert (placed["household"], placed["deposit"]) == (h.address, 300_000)
    assert c.balance(h.address) == wallet_before - 300_000
    assert c.balance(h.gateway) == 0  # the gateway holds no tokens: it only signs and sends
    assert c.bid(bid_id)["household"] == h.address
    reverts("NotBidOwner", c.withdraw_bid, market.stranger, bid_id)
    withdrawn = c.events("BidWithdrawn", c.withdraw_bid(gateway, bid_id))[0]
    assert (withdrawn["household"], withdrawn["deposit"]) == (h.address, 300_000)
    assert c.balance(h.address) == wallet_before  # the refund goes to the household
    own, _ = c.place_bid_for(h.wallet, h.address, from_s=now, to_s=now + 86_400, power_w=-1000,
                             rated_w=1000, price_mtok=1)  # the household itself may too
    assert c.bid(own)["household"] == h.address


def test_only_the_household_or_its_gateway_may_bid_for_it(market) -> None:
    h, _ = with_gateway(market)
    other, other_gateway = with_gateway(market, "other")
    now = market.now()
    args = dict(from_s=now, to_s=now + 600, power_w=-1000, rated_w=1000, price_mtok=1)
    err = reverts("NotHouseholdOrGateway", market.client.place_bid_for, other_gateway, h.address,
                  **args)
    assert (err.revert.args["sender"], err.revert.args["household"]) == (other.gateway, h.address)
    stranger = market.household("unregistered", register=False)
    reverts("NotHousehold", market.client.place_bid_for, other_gateway, stranger.address, **args)


def test_the_allowance_caps_the_deposits_a_gateway_puts_at_risk(market) -> None:
    h, gateway = with_gateway(market)
    market.client.approve(h.wallet, 250_000)  # the household lets the market take 250 tokens
    now = market.now()
    market.client.place_bid_for(gateway, h.address, from_s=now, to_s=now + 600, power_w=-1000,
                                rated_w=1500, price_mtok=1)  # 150_000 mtok: within the cap
    err = reverts("ERC20InsufficientAllowance", market.client.place_bid_for, gateway, h.address,
                  from_s=now, to_s=now + 600, power_w=-1000, rated_w=1500, price_mtok=1)
    assert (err.revert.args["allowance"], err.revert.args["needed"]) == (100_000, 150_000)
    assert "approve the market" in str(err)


def test_web3_port_bids_for_its_household(market, tmp_path: Path) -> None:
    h, _ = with_gateway(market)
    port = port_of(market, h, tmp_path)
    terms = port.terms()
    assert (terms.deposit_per_kw_mtok, terms.lockout_s, terms.tolerance_bps) == (100_000, 600, 500)
    assert (terms.allowance_mtok, terms.balance_mtok, terms.announced) == (10**9, 10**9, ())
    assert terms.chain_now_s == market.now()
    now = market.now()
    order = BidOrder(from_s=now, to_s=now + 86_400, power_w=-2000, rated_w=2500, price_mtok=30_000)
    first = port.place_bid(order)
    second = port.place_bid(BidOrder(from_s=now, to_s=now + 86_400, power_w=1000, rated_w=1000,
                                     price_mtok=5_000))  # an increase bid: not in a reduce window
    market.household("neighbour")  # another household's bids are not listed
    market.bid(market.households["neighbour"], power_w=-500, price_mtok=1)
    assert port.terms().allowance_mtok == 10**9 - 250_000 - 100_000
    window, start, end = market.announce()
    assert port.terms().announced == ((window, start, end),)
    market.client.clear(market.op, window)
    assert port.terms().announced == ()
    held = port.bids()
    assert [(b.bid_id, b.state, b.deposit_mtok) for b in held] == [
        (first, "consumed", 250_000), (second, "open", 100_000)]
    assert held[0].order == order and (held[0].window, held[0].award_w) == (window, 2000)
    port.withdraw_bid(second)
    assert port.bids()[1].state == "withdrawn"
    with pytest.raises(ChainRevert, match="BidNotOpen"):
        port.withdraw_bid(first)
    port.close()


def test_web3_port_commits_its_baseline_before_the_window(market, tmp_path: Path) -> None:
    h, _ = with_gateway(market)
    market.bid(h, power_w=-2000, price_mtok=30_000)
    window, start, end = market.announce()
    market.client.clear(market.op, window)
    port = port_of(market, h, tmp_path)
    commit = BaselineCommit(window=window, method=2, input_hash=b"\x11" * 32, baseline_wh=5000)
    assert port.commit_baseline(commit).state == "accepted"
    assert market.client.baseline(h.address, window)["baselineWh"] == 5000
    market.at(start)
    assert port.commit_baseline(commit).state == "accepted"  # already on chain as it is
    late = port.commit_baseline(BaselineCommit(window=window, method=2, input_hash=b"\x11" * 32,
                                               baseline_wh=4000))
    assert late.state == "rejected" and "BaselineTooLate" in (late.error or "")
    assert port.retry() == 0  # nothing kept: a refused commitment is not retried
    market.at(end)
    from gateway.chain.report import Report  # the window's Report carries the committed values

    w = market.client.window(window)
    accepted = port.submit(Report(
        household=h.address, window=window, seq_from=1, seq_to=10, window_start=w["start"],
        window_end=w["end"], baseline_method=2, baseline_input_hash=b"\x11" * 32, baseline_wh=5000,
        actual_wh=4660, delivered_wh=340, merkle_root=b"\x22" * 32))
    assert accepted.state == "accepted", accepted.error
    port.close()


def saved_block(state: Path) -> int:
    try:
        number = json.loads(state.read_text())["best_block_number"]
        return int(number, 0) if isinstance(number, str) else int(number)
    except (OSError, ValueError, KeyError, TypeError):
        return -1


@pytest.mark.anvil
def test_a_commitment_made_while_the_node_is_down_is_sent_on_the_next_poll(
        anvil, market_class, tmp_path: Path) -> None:
    from gateway.chain.outbox import ChainOutbox

    market = market_class(anvil.node(), ChainOutbox(":memory:"))
    h, _ = with_gateway(market)
    market.bid(h, power_w=-2000, price_mtok=30_000)
    window, _, _ = market.announce(lead_s=3600)
    market.client.clear(market.op, window)
    port = port_of(market, h, tmp_path)
    mined = market.node.w3.eth.block_number
    wait_for(lambda: saved_block(anvil.state) >= mined, what=f"anvil's state dump of block {mined}")
    anvil.kill()
    commit = BaselineCommit(window=window, method=2, input_hash=b"\x11" * 32, baseline_wh=5000)
    assert port.commit_baseline(commit).state == "queued"
    assert port.retry() == 1  # still down: kept
    anvil.start()
    assert port.retry() == 0  # the poll after the node is back sends it
    assert market.client.baseline(h.address, window)["committed"] is True
    port.close()
