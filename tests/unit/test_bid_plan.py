"""The bid planner (gateway/loop/bid_plan.py): quantities, deposits, lockout, hysteresis, expiry.

Every expected figure is worked out by hand in the comments from the contract's rules
(DRMarket.placeBid: deposit = depositPerKw x ratedW / 1000, rounded down) and the policy in
docs/bidding.md; the forecasts are fixed values standing in for gateway/forecast/flex.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from gateway.chain.port import BidOrder, HeldBid, MarketTerms
from gateway.loop.bid_plan import BidPolicy, BlockForecast, blocks, plan, quantity_w
from gateway.loop.market_settings import DailyHours

NOW = 1_700_000_000
H = 3600
TERMS = MarketTerms(chain_now_s=NOW, deposit_per_kw_mtok=100_000, lockout_s=600, tolerance_bps=500,
                    allowance_mtok=10**9, balance_mtok=10**9)
POLICY = BidPolicy(price_mtok=25_000, max_deposit_mtok=10**9, confidence=0.9, min_bid_w=500,
                   hysteresis=0.2, margin_s=300)


@dataclass(frozen=True)
class Fixed:
    """A flexibility forecast with a fixed deliverable W at any confidence."""

    w: float
    mean_w: float = 0.0
    basis: str = "fixed"

    def deliverable_w(self, confidence: float) -> float:
        return self.w


def block(w: float, *, start: int = NOW + 5 * H, hours: int = 4, direction: str = "reduce") -> BlockForecast:
    return BlockForecast(from_s=start, to_s=start + hours * H, direction=direction, flex=Fixed(w))


def held(bid_id: int, power_w: int, *, start: int = NOW + 5 * H, hours: int = 4, state: str = "open",
         price: int = 25_000) -> HeldBid:
    rated = abs(power_w)
    return HeldBid(bid_id=bid_id, order=BidOrder(from_s=start, to_s=start + hours * H, power_w=power_w,
                                                 rated_w=rated, price_mtok=price),
                   deposit_mtok=100_000 * rated // 1000, state=state)


def test_a_new_block_gets_its_deliverable_rounded_down_to_100_w() -> None:
    # 2345.6 W deliverable -> 2300 W; deposit 100000 mtok/kW x 2300 W / 1000 = 230000 mtok
    p = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(2345.6)], held=[], own=[])
    assert len(p.actions) == 1
    a = p.actions[0]
    assert a.kind == "place" and a.deposit_mtok == 230_000 and a.basis == "fixed"
    assert a.order == BidOrder(from_s=NOW + 5 * H, to_s=NOW + 9 * H, power_w=-2300, rated_w=2300,
                               price_mtok=25_000)


def test_quantity_rounds_down_and_never_below_zero() -> None:
    assert quantity_w(Fixed(99.9), 0.9) == 0
    assert quantity_w(Fixed(-50.0), 0.9) == 0
    assert quantity_w(Fixed(700.0), 0.9) == 700


def test_below_min_bid_nothing_is_placed() -> None:
    # 450 W < min_bid 500 W
    p = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(450)], held=[], own=[])
    assert p.actions == () and "below min_bid" in p.notes[0]


def test_an_increase_block_bids_positive_power() -> None:
    p = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(1000, direction="increase")],
             held=[], own=[])
    assert p.actions[0].order is not None and p.actions[0].order.power_w == 1000


def test_a_block_within_lockout_and_margin_is_left_alone() -> None:
    # lockout 600 s + margin 300 s = 900 s: a block starting 900 s from now is frozen, 901 s is not
    frozen = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(3000, start=NOW + 900)],
                  held=[held(1, -1000, start=NOW + 900)], own=[1])
    assert frozen.actions == ()
    free = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(3000, start=NOW + 901)],
                held=[held(1, -1000, start=NOW + 901)], own=[1])
    assert [a.kind for a in free.actions] == ["withdraw", "place"]


def test_the_later_clock_counts_for_the_lockout() -> None:
    # chain time 1000 s ahead of ours: the held bid's block 1500 s from our now is 500 s from the
    # chain's, inside lockout + margin (900 s): its renewal waits; by our clock alone it would renew
    mine = [held(7, -1000, start=NOW + 1500)]
    ahead = plan(now_s=NOW, terms=replace(TERMS, chain_now_s=NOW + 1000), policy=POLICY,
                 forecasts=[block(3000, start=NOW + 1500)], held=mine, own=[7])
    assert ahead.actions == ()
    ours = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(3000, start=NOW + 1500)],
                held=mine, own=[7])
    assert [a.kind for a in ours.actions] == ["withdraw", "place"]


def test_a_started_block_without_a_bid_still_gets_one_while_a_window_fits() -> None:
    # a 1 h block that started 10 minutes ago: windows announced from now start after the lockout
    # (600 s) and a bid over the whole block covers them, so a new bid goes in; a block ending within
    # lockout + margin (900 s) of now has no room left for a window: nothing
    started = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(2000, start=NOW - 600, hours=1)],
                   held=[], own=[])
    assert [(a.kind, a.order.from_s if a.order else None) for a in started.actions] == [
        ("place", NOW - 600)]
    late = plan(now_s=NOW, terms=TERMS, policy=POLICY,
                forecasts=[block(2000, start=NOW - 3 * H + 900, hours=3)], held=[], own=[])
    assert late.actions == ()


def test_hysteresis_keeps_a_bid_until_the_forecast_moves_by_more_than_a_fifth() -> None:
    # held 2300 W; hysteresis 0.2 x 2300 = 460 W: 2700 (moved 400) keeps it, 2800 (moved 500) renews
    mine = [held(7, -2300)]
    assert plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(2799)], held=mine,
                own=[7]).actions == ()  # 2799 -> 2700 W
    p = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(2800)], held=mine, own=[7])
    assert [(a.kind, a.bid_id, a.replaces) for a in p.actions] == [("withdraw", 7, None),
                                                                  ("place", None, 7)]
    assert p.actions[1].order is not None and p.actions[1].order.power_w == -2800
    down = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(1800)], held=mine, own=[7])
    assert [a.kind for a in down.actions] == ["withdraw", "place"]  # moved 500 W down


def test_a_new_price_renews_the_bid() -> None:
    mine = [held(7, -2300, price=20_000)]
    p = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(2300)], held=mine, own=[7])
    assert [a.kind for a in p.actions] == ["withdraw", "place"]
    assert p.actions[1].order is not None and p.actions[1].order.price_mtok == 25_000


def test_a_forecast_below_min_bid_withdraws_the_held_bid() -> None:
    p = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(400)], held=[held(7, -2300)],
             own=[7])
    assert [(a.kind, a.bid_id) for a in p.actions] == [("withdraw", 7)]


def test_max_deposit_cuts_the_bid_and_counts_the_households_own_bids() -> None:
    # max 300000 mtok; the household's hand-placed bid 9 (1000 W) holds 100000 -> room 200000 mtok
    # = 2000 W at 100000 mtok/kW. Bid 9 is not ours: it is never withdrawn.
    policy = replace(POLICY, max_deposit_mtok=300_000)
    p = plan(now_s=NOW, terms=TERMS, policy=policy, forecasts=[block(5000)],
             held=[held(9, -1000, start=NOW + 30 * H)], own=[])
    assert len(p.actions) == 1 and p.actions[0].order is not None
    assert p.actions[0].order.power_w == -2000 and p.actions[0].deposit_mtok == 200_000


def test_the_allowance_caps_deposits_and_is_not_refilled_by_withdrawals() -> None:
    # allowance 150000 mtok -> 1500 W for the first block; a second block gets nothing (0 left),
    # even though a withdrawal of bid 3 (expired) refunds 50000 mtok to the balance
    terms = replace(TERMS, allowance_mtok=150_000)
    expired = held(3, -500, start=NOW - 4 * H, hours=4)  # ended now: within the lockout
    p = plan(now_s=NOW, terms=terms, policy=POLICY, held=[expired], own=[3],
             forecasts=[block(5000), block(5000, start=NOW + 20 * H)])
    assert [(a.kind, a.order.power_w if a.order else a.bid_id) for a in p.actions] == [
        ("withdraw", 3), ("place", -1500)]
    assert any("deposit budget allows 0 W" in n for n in p.notes)


def test_an_expired_bid_is_withdrawn_unless_a_window_is_announced() -> None:
    # ends 600 s from now = within the lockout: no window announced from now can fit in it
    old = held(4, -1000, start=NOW - 3 * H, hours=3)
    old = replace(old, order=replace(old.order, to_s=NOW + 600))
    assert [(a.kind, a.bid_id) for a in plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[],
                                             held=[old], own=[4]).actions] == [("withdraw", 4)]
    announced = replace(TERMS, announced=((12, NOW + 700, NOW + 1300),))
    p = plan(now_s=NOW, terms=announced, policy=POLICY, forecasts=[], held=[old], own=[4])
    assert p.actions == () and "window(s) [12] announced" in p.notes[0]


def test_a_block_whose_bid_took_part_in_a_window_gets_no_new_bid() -> None:
    spent = held(5, -2000, state="consumed")
    p = plan(now_s=NOW, terms=TERMS, policy=POLICY, forecasts=[block(3000)], held=[spent], own=[5])
    assert p.actions == ()


def test_blocks_follow_local_time_across_a_dst_change() -> None:
    # Europe/Berlin moves to CEST (UTC+2) on Sunday 2024-03-31. "17:00-21:00" on Saturday 30 March
    # (CET, UTC+1) is 16:00-20:00 UTC; on Sunday 31 March it is 15:00-19:00 UTC.
    zone = ZoneInfo("Europe/Berlin")
    now = int(dt.datetime(2024, 3, 30, 12, 0, tzinfo=dt.UTC).timestamp())
    got = blocks(now, [DailyHours(start_min=17 * 60, end_min=21 * 60)], zone=zone, horizon_s=36 * H)
    utc = [(dt.datetime.fromtimestamp(a, dt.UTC).strftime("%d %H:%M"),
            dt.datetime.fromtimestamp(b, dt.UTC).strftime("%d %H:%M")) for a, b in got]
    assert utc == [("30 16:00", "30 20:00"), ("31 15:00", "31 19:00")]


def test_a_block_past_midnight_ends_the_next_day() -> None:
    # 22:00-02:00 UTC, now 23:00 on day D: the block that started at 22:00 on D (ends 02:00 D+1)
    # still runs; the next starts at 22:00 on D+1 (23 h ahead, inside a 24 h horizon)
    zone = ZoneInfo("UTC")
    now = int(dt.datetime(2024, 5, 1, 23, 0, tzinfo=dt.UTC).timestamp())
    got = blocks(now, [DailyHours(start_min=22 * 60, end_min=2 * 60)], zone=zone, horizon_s=24 * H)
    assert [(a - now, b - now) for a, b in got] == [(-H, 3 * H), (23 * H, 27 * H)]
