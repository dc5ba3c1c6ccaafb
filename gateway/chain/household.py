"""Chain reads for one household (its bids, wallet and earnings) and the operator's token writes.

The market keeps no per-household index of bids, so a household's bids are found from its
`BidPlaced` logs (the `household` topic is indexed, DRMarket.sol) and their current state read from
the `bid(id)` view: a log says what was offered, the view says what became of it. Earnings come
from the `BidPaid`, `DepositRefunded`, `DepositForfeited` and `CommitmentUnrevealed` logs, also
indexed by household, since the contract keeps no running totals. Amounts stay in contract units
(mtok, W, unix seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.chain.market_types import BidOrder, HeldBid

if TYPE_CHECKING:
    from gateway.chain.market_client import MarketClient
    from gateway.chain.sender import Mined, TxSender

# DRMarket.sol BID_OPEN..BID_DONE (0 = no such bid)
BID_STATES = {0: "none", 1: "open", 2: "withdrawn", 3: "consumed", 4: "done", 5: "sealed"}
HELD_STATES = frozenset({"open", "consumed", "sealed"})  # the market holds the deposit


@dataclass(frozen=True, slots=True, kw_only=True)
class Wallet:
    """What a household has and has put at risk (mtok), and its registry entry."""

    household: str
    balance_mtok: int
    allowance_mtok: int  # what the market may still take: the cap of further deposits
    held_mtok: int  # deposits of open, sealed and consumed bids
    claimable_mtok: int  # payments and refunds credited in the market, not yet claimed
    registered: bool
    gateway: str
    aggregator: str
    score: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowEarning:
    """One window's outcome for a household (mtok). A sealed bid the window passed unrevealed
    counts its refund in `refunded_mtok` and the penalty the treasury kept (UNREVEALED_PENALTY_BPS
    of its deposit, docs/market.md) in `penalty_mtok`; like a forfeit, the penalty is a loss."""

    window: int
    award_w: int
    payment_mtok: int
    refunded_mtok: int
    forfeited_mtok: int
    penalty_mtok: int = 0

    @property
    def net_mtok(self) -> int:
        return self.payment_mtok - self.forfeited_mtok - self.penalty_mtok


def household_bids(client: MarketClient, household: str) -> list[HeldBid]:
    """Every bid `household` placed or committed (sealed), oldest first, with the state the
    contract holds now. A sealed bid's terms come from its BidRevealed log once revealed; an
    unrevealed one that a window passed has a CommitmentUnrevealed log (refund minus penalty)."""
    wallet = client.w3.to_checksum_address(household)
    events, who = client.market.events, {"argument_filters": {"household": wallet},
                                         "from_block": 0}
    logs = list(events.BidPlaced().get_logs(**who))
    revealed = {int(e["args"]["bidId"]): e["args"] for e in events.BidRevealed().get_logs(**who)}
    gone = {int(e["args"]["bidId"]) for e in events.CommitmentUnrevealed().get_logs(**who)}
    out = [_held(client, log["args"]) for log in logs]
    for log in events.BidCommitted().get_logs(**who):
        out.append(_sealed(client, log["args"], revealed, gone))
    return sorted(out, key=lambda b: b.bid_id)


def _sealed(client: MarketClient, committed: Any, revealed: dict[int, Any],
            gone: set[int]) -> HeldBid:
    bid_id = int(committed["bidId"])
    now = client.bid(bid_id)
    r = revealed.get(bid_id)
    order = BidOrder(from_s=int(r["fromTs"]) if r else 0, to_s=int(r["toTs"]) if r else 0,
                     power_w=int(r["powerW"]) if r else 0, rated_w=int(committed["ratedW"]),
                     price_mtok=int(r["priceMtok"]) if r else 0)
    sealing = "revealed" if r else ("unrevealed" if bid_id in gone else "committed")
    return HeldBid(bid_id=bid_id, order=order, deposit_mtok=int(committed["deposit"]),
                   state=BID_STATES.get(int(now["state"]), "unknown"), window=int(now["window"]),
                   award_w=int(now["awardW"]), sealing=sealing)


def _held(client: MarketClient, placed: Any) -> HeldBid:
    bid_id = int(placed["bidId"])
    now = client.bid(bid_id)
    order = BidOrder(from_s=int(placed["fromTs"]), to_s=int(placed["toTs"]),
                     power_w=int(placed["powerW"]), rated_w=int(placed["ratedW"]),
                     price_mtok=int(placed["priceMtok"]))
    return HeldBid(bid_id=bid_id, order=order, deposit_mtok=int(placed["deposit"]),
                   state=BID_STATES.get(int(now["state"]), "unknown"),
                   window=int(now["window"]), award_w=int(now["awardW"]))


def wallet(client: MarketClient, household: str) -> Wallet:
    """Token balance, allowance to the market, deposits held and registration of `household`."""
    address = client.w3.to_checksum_address(household)
    allowance = int(client.token.functions.allowance(address, client.market.address).call())
    h = client.household(address)
    held = sum(b.deposit_mtok for b in household_bids(client, address) if b.state in HELD_STATES)
    return Wallet(household=address, balance_mtok=client.balance(address),
                  allowance_mtok=allowance, held_mtok=held,
                  claimable_mtok=client.claimable(address), registered=bool(h["registered"]),
                  gateway=str(h["gateway"]), aggregator=str(h["aggregator"]),
                  score=int(h["score"]))


def earnings(client: MarketClient, household: str) -> list[WindowEarning]:
    """Per settled or checked window: award, payment and the deposit refunded or forfeited; per
    cleared window, the refunds and penalties of sealed bids it passed unrevealed."""
    address = client.w3.to_checksum_address(household)
    events = client.market.events
    sums: dict[int, dict[str, int]] = {}
    for name, fields in (("BidPaid", {"amount": "paid"}), ("DepositRefunded", {"amount": "refunded"}),
                         ("DepositForfeited", {"amount": "forfeited"}),
                         ("CommitmentUnrevealed", {"refund": "refunded", "penalty": "penalty"})):
        for log in getattr(events, name)().get_logs(argument_filters={"household": address},
                                                    from_block=0):
            window = sums.setdefault(int(log["args"]["window"]), {})
            for field, key in fields.items():
                window[key] = window.get(key, 0) + int(log["args"][field])
    awards: dict[int, int] = {}
    for log in events.BidAwarded().get_logs(argument_filters={"household": address},
                                            from_block=0):
        w = int(log["args"]["window"])
        awards[w] = awards.get(w, 0) + int(log["args"]["awardW"])
    return [WindowEarning(window=w, award_w=awards.get(w, 0), payment_mtok=s.get("paid", 0),
                          refunded_mtok=s.get("refunded", 0),
                          forfeited_mtok=s.get("forfeited", 0), penalty_mtok=s.get("penalty", 0))
            for w, s in sorted(sums.items())]


# ---- operator writes MarketClient does not have ------------------------------------------------

def set_rate(client: MarketClient, sender: TxSender, mtok_per_currency: int) -> Mined:
    """DRToken.setRate: milli-tokens per currency unit (seed 003: the ESC sets it daily)."""
    data = client.token.functions.setRate(mtok_per_currency)._encode_transaction_data()
    return sender.send(to=client.token.address, data=data, purpose=f"setRate {mtok_per_currency}")


def set_gateway(client: MarketClient, sender: TxSender, *, wallet: str, gateway: str) -> Mined:
    """DRRegistry.setGateway: the household's Reports are signed by a new gateway key."""
    data = client.market.functions.setGateway(wallet, gateway)._encode_transaction_data()
    return sender.send(to=client.market.address, data=data, purpose=f"setGateway {wallet}")


def rate(client: MarketClient) -> int:
    return int(client.token.functions.mtokPerCurrency().call())
