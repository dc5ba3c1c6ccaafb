"""`drgw market wallet|approve|bid|withdraw|bids|earnings` (household), `mint|set-rate|set-gateway`
(operator), on a live chain over --rpc.

The household's wallet key signs its own approval, bids and withdrawals: the market takes deposits
from the account that calls it, within the allowance that account gave it, so the allowance is the
household's cap on deposits at risk. Reads need no key (`--household ADDRESS`): the chain is public.
Each write is read back from the chain after it is mined and the read-back is what gets printed.
Parsing, refusal advice and sessions live in gateway/commands/market_input.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import asdict
from typing import TYPE_CHECKING

from gateway.commands.market_input import (
    MarketRefused,
    bid_range,
    chain_args,
    parse_address,
    parse_bid_id,
    parse_mtok,
    parse_watts,
    reader,
    refusals,
    show,
    tokens,
    writer,
)
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.chain.market_types import HeldBid
    from gateway.commands.market_input import Cmds


def register(cmds: Cmds) -> None:
    """Add the household and operator subcommands to `drgw market`."""
    from gateway.commands import market_sealed

    for add in (_add_wallet, _add_approve, _add_bid, _add_withdraw, _add_bids, _add_earnings,
                _add_mint, _add_set_rate, _add_set_gateway, market_sealed.register):
        add(cmds)


def _add_wallet(cmds: Cmds) -> None:
    p = cmds.add_parser("wallet", help="a household's tokens, deposits at risk and registration")
    chain_args(p, key="household wallet", reads=True)
    p.set_defaults(func=run_wallet)


def _add_approve(cmds: Cmds) -> None:
    p = cmds.add_parser("approve", help="set the household's cap on deposits at risk")
    chain_args(p, key="household wallet")
    p.add_argument("tokens", metavar="TOKENS",
                   help="the most the market may take as deposits from now on (tokens)")
    p.set_defaults(func=run_approve)


def _add_bid(cmds: Cmds) -> None:
    p = cmds.add_parser("bid", help="offer flexibility: place a bid with its deposit")
    chain_args(p, key="household wallet")
    p.add_argument("--from", dest="from_", metavar="TIME", help="ISO 8601 or unix seconds")
    p.add_argument("--to", metavar="TIME", help="ISO 8601 or unix seconds")
    p.add_argument("--start", metavar="HH:MM", help="the next such local time (with --hours)")
    p.add_argument("--hours", metavar="N", help="the bid's length from --start")
    p.add_argument("--kw", required=True, help="kW offered; negative = reduce load (-3.5)")
    p.add_argument("--price", required=True, help="tokens per kWh asked")
    p.add_argument("--rated-kw", help="rated power the deposit is reckoned on (default |--kw|)")
    p.add_argument("--for", dest="for_", metavar="HOUSEHOLD",
                   help="bid for this household with its gateway's --key (placeBidFor); the "
                   "deposit still comes from the household's wallet, within its allowance")
    p.add_argument("--sealed", action="store_true",
                   help="commit a hidden bid (seed 002): reveal it with `drgw market reveal` once "
                   "a window is announced; its salt is kept beside --key")
    p.set_defaults(func=run_bid)


def _add_withdraw(cmds: Cmds) -> None:
    p = cmds.add_parser("withdraw", help="withdraw an open bid and take its deposit back")
    chain_args(p, key="household wallet")
    p.add_argument("bid_id", metavar="BID_ID", help="the bid's id (`drgw market bids`)")
    p.set_defaults(func=run_withdraw)


def _add_bids(cmds: Cmds) -> None:
    p = cmds.add_parser("bids", help="a household's bids and what became of them")
    chain_args(p, key="household wallet", reads=True)
    p.set_defaults(func=run_bids)


def _add_earnings(cmds: Cmds) -> None:
    p = cmds.add_parser("earnings", help="a household's payments and deposits per window")
    chain_args(p, key="household wallet", reads=True)
    p.set_defaults(func=run_earnings)


def _add_mint(cmds: Cmds) -> None:
    p = cmds.add_parser("mint", help="operator: create settlement tokens for an address")
    chain_args(p, key="operator")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("tokens", metavar="TOKENS")
    p.set_defaults(func=run_mint)


def _add_set_rate(cmds: Cmds) -> None:
    p = cmds.add_parser("set-rate", help="operator: set the tokens per currency unit")
    chain_args(p, key="operator")
    p.add_argument("rate", metavar="TOKENS_PER_CURRENCY", help="e.g. 1000")
    p.set_defaults(func=run_set_rate)


def _add_set_gateway(cmds: Cmds) -> None:
    p = cmds.add_parser("set-gateway", help="operator: a household's gateway has a new key")
    chain_args(p, key="operator")
    p.add_argument("wallet", metavar="WALLET")
    p.add_argument("gateway", metavar="GATEWAY")
    p.set_defaults(func=run_set_gateway)


# ---- household ---------------------------------------------------------------------------------

def run_wallet(args: argparse.Namespace) -> int:
    from gateway.chain.household import wallet

    client, household = reader(args)
    w = wallet(client, household)
    reg = (f"registered: gateway {w.gateway}, aggregator {w.aggregator}, score {w.score}"
           if w.registered else "not registered: ask the operator (`drgw market register`)")
    show(args, asdict(w), [
        f"household {w.household}", reg,
        f"balance {tokens(w.balance_mtok)} tokens",
        f"allowance {tokens(w.allowance_mtok)} tokens (the most further deposits may take)",
        f"deposits held {tokens(w.held_mtok)} tokens (open, sealed and consumed bids)",
        f"claimable {tokens(w.claimable_mtok)} tokens (payments and refunds credited: "
        "`drgw market claim`)"])
    return 0


def run_approve(args: argparse.Namespace) -> int:
    amount = parse_mtok(args.tokens, "TOKENS")
    s = writer(args)
    with refusals("approve"):
        mined = s.client.approve(s.sender, amount)
    now = int(s.client.token.functions.allowance(s.sender.address, s.client.market.address).call())
    print(f"the market may take up to {tokens(now)} tokens of {s.sender.address} as deposits "
          f"({mined.gas_used} gas)")
    return 0


def run_bid(args: argparse.Namespace) -> int:
    power = parse_watts(args.kw, "--kw")
    rated = abs(power) if args.rated_kw is None else parse_watts(args.rated_kw, "--rated-kw")
    price = parse_mtok(args.price, "--price")
    if power == 0:
        raise ConfigError("--kw 0: offer a non-zero power (negative = reduce load)")
    if rated < abs(power):
        raise ConfigError(f"--rated-kw {args.rated_kw}: must be at least |--kw| ({abs(power)} W)")
    s = writer(args)
    from_s, to_s = bid_range(args, s.node.latest_timestamp())
    if to_s <= from_s:
        raise ConfigError("bid: the end (--to) must be after the start (--from)")
    order = {"from_s": from_s, "to_s": to_s, "power_w": power, "rated_w": rated,
             "price_mtok": price}
    if args.sealed:
        from gateway.chain.market_types import BidOrder
        from gateway.commands.market_sealed import commit_sealed

        commit_sealed(args, s, BidOrder(**order))
        return 0
    with refusals("bid"):
        if args.for_ is None:
            bid_id, mined = s.client.place_bid(s.sender, **order)
        else:
            bid_id, mined = s.client.place_bid_for(
                s.sender, parse_address(args.for_, "--for"), **order)
    deposit = int(s.client.events("BidPlaced", mined)[0]["deposit"])
    print(f"bid {bid_id}: {power / 1000:g} kW from {_iso(from_s)} to {_iso(to_s)} at "
          f"{tokens(price)} tokens/kWh; deposit {tokens(deposit)} tokens ({mined.gas_used} gas)")
    return 0


def run_withdraw(args: argparse.Namespace) -> int:
    from gateway.chain.household import BID_STATES

    bid_id = parse_bid_id(args.bid_id)
    s = writer(args)
    held = s.client.bid(bid_id)
    if int(held["household"], 16) == 0:
        raise ConfigError(f"BID_ID {bid_id}: there is no such bid; `drgw market bids` lists yours")
    owner = held["household"]
    if s.sender.address not in (owner, s.client.household(owner)["gateway"]):
        raise MarketRefused(f"withdraw refused: bid {bid_id} belongs to {owner}, not to "
                            f"{s.sender.address}: withdraw only your own bids (or with your "
                            "household's gateway key)")
    with refusals("withdraw"):
        mined = s.client.withdraw_bid(s.sender, bid_id)
    (event,) = s.client.events("BidWithdrawn", mined)
    state = BID_STATES[int(s.client.bid(bid_id)["state"])]
    print(f"bid {bid_id} {state}: deposit {tokens(int(event['deposit']))} tokens returned "
          f"({mined.gas_used} gas)")
    return 0


def run_bids(args: argparse.Namespace) -> int:
    from gateway.chain.household import household_bids

    client, household = reader(args)
    bids = household_bids(client, household)
    data = [{"id": b.bid_id, "from": b.order.from_s, "to": b.order.to_s,
             "power_w": b.order.power_w, "rated_w": b.order.rated_w,
             "price_mtok_per_kwh": b.order.price_mtok, "deposit_mtok": b.deposit_mtok,
             "state": b.state, "window": b.window, "award_w": b.award_w,
             "sealed": b.sealing or None} for b in bids]
    head = ("id", "from", "to", "kW", "price/kWh", "deposit", "state", "sealed", "window",
            "award kW")
    rows = [(str(b.bid_id), *_terms(b), tokens(b.deposit_mtok), b.state, b.sealing or "-",
             str(b.window or "-"), f"{b.award_w / 1000:g}" if b.window else "-") for b in bids]
    show(args, {"household": household, "bids": data},
         _table(head, rows) if rows else [f"household {household} has placed no bids"])
    return 0


def run_earnings(args: argparse.Namespace) -> int:
    from gateway.chain.household import earnings

    client, household = reader(args)
    per_window = earnings(client, household)
    paid = sum(e.payment_mtok for e in per_window)
    refunded = sum(e.refunded_mtok for e in per_window)
    forfeited = sum(e.forfeited_mtok for e in per_window)
    penalty = sum(e.penalty_mtok for e in per_window)
    net = sum(e.net_mtok for e in per_window)
    data = {"household": household, "windows": [asdict(e) for e in per_window],
            "paid_mtok": paid, "refunded_mtok": refunded, "forfeited_mtok": forfeited,
            "penalty_mtok": penalty, "net_mtok": net}
    head = ("window", "award kW", "payment", "deposit refunded", "deposit forfeited",
            "unrevealed penalty")
    rows = [(str(e.window), f"{e.award_w / 1000:g}", tokens(e.payment_mtok),
             tokens(e.refunded_mtok), tokens(e.forfeited_mtok), tokens(e.penalty_mtok))
            for e in per_window]
    total = (f"total: paid {tokens(paid)}, forfeited {tokens(forfeited)}, unrevealed penalties "
             f"{tokens(penalty)}, net {tokens(net)} tokens (refunded deposits {tokens(refunded)})")
    show(args, data, [*_table(head, rows), total] if rows else
         [f"household {household} has no settled windows", total])
    return 0


# ---- operator ----------------------------------------------------------------------------------

def run_mint(args: argparse.Namespace) -> int:
    to = parse_address(args.address, "ADDRESS")
    amount = parse_mtok(args.tokens, "TOKENS", positive=True)
    s = writer(args)
    with refusals("mint"):
        mined = s.client.mint(s.sender, to, amount)
    print(f"minted {tokens(amount)} tokens to {to}; balance {tokens(s.client.balance(to))} "
          f"tokens ({mined.gas_used} gas)")
    return 0


def run_set_rate(args: argparse.Namespace) -> int:
    from gateway.chain.household import rate, set_rate

    mtok_per_currency = parse_mtok(args.rate, "TOKENS_PER_CURRENCY", positive=True)
    s = writer(args)
    with refusals("set-rate"):
        mined = set_rate(s.client, s.sender, mtok_per_currency)
    print(f"rate {tokens(rate(s.client))} tokens per currency unit ({mined.gas_used} gas)")
    return 0


def run_set_gateway(args: argparse.Namespace) -> int:
    from gateway.chain.household import set_gateway

    wallet = parse_address(args.wallet, "WALLET")
    gateway = parse_address(args.gateway, "GATEWAY")
    s = writer(args)
    with refusals("set-gateway"):
        mined = set_gateway(s.client, s.sender, wallet=wallet, gateway=gateway)
    now = s.client.household(wallet)["gateway"]
    print(f"household {wallet}: Reports are now signed by gateway {now} ({mined.gas_used} gas)")
    return 0


def _terms(b: HeldBid) -> tuple[str, str, str, str]:
    """from, to, kW, price of a bid; a sealed bid's stay hidden until its reveal."""
    if b.sealing in ("committed", "unrevealed"):
        return ("hidden", "hidden", "hidden", "hidden")
    o = b.order
    return (_iso(o.from_s), _iso(o.to_s), f"{o.power_w / 1000:g}", tokens(o.price_mtok))


def _iso(unix_s: int) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in (head, *rows)]
