"""`drgw market bid --sealed`, `reveal BID_ID` and `claim`: sealed bids and pull payments by hand.

A sealed bid (seed 002, DRMarket.commitBid) publishes only a hash of its terms and a salt; the
household must reveal the same terms and salt in the reveal phase of the first window announced
after it, or the bid is refunded minus 10 % and takes no part. The salt is therefore kept, before
the commitment is sent, in a file beside the key that sent it (`<key>.sealed.json`, mode 0600),
keyed by the commitment hash: `reveal` reads the bid's hash from the chain (`sealedHash`) and
finds its terms there, so a crash between sending and printing loses nothing. Payments and
refunds accrue in the market (pull settlement) until `claim` pays them out; anyone may send it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.commands.market_input import (
    MarketRefused,
    chain_args,
    parse_address,
    parse_bid_id,
    refusals,
    tokens,
    writer,
)
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.chain.market_types import BidOrder
    from gateway.commands.market_input import Cmds


def register(cmds: Cmds) -> None:
    p = cmds.add_parser("reveal", help="reveal a sealed bid in its window's reveal phase")
    chain_args(p, key="household wallet (or its gateway)")
    p.add_argument("bid_id", metavar="BID_ID", help="the sealed bid's id (`drgw market bids`)")
    p.add_argument("--salts", metavar="FILE",
                   help="the file `bid --sealed` kept the salt in (default: beside --key)")
    p.set_defaults(func=run_reveal)
    p = cmds.add_parser("claim", help="pay a household's payments and refunds out to its wallet")
    chain_args(p, key="household wallet (anyone's key with --household)")
    p.add_argument("--household", metavar="ADDRESS",
                   help="claim for this household (the tokens go to it; any key pays the gas)")
    p.set_defaults(func=run_claim)


def salts_path(key_file: str) -> Path:
    return Path(f"{key_file}.sealed.json")


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the sealed bids' salts ({exc}); restore it from "
                          "a backup, or the bids in it cannot be revealed") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a salts file written by `drgw market bid --sealed`")
    return data


def _keep(path: Path, sealed: bytes, entry: dict[str, Any]) -> None:
    """Add one commitment's terms and salt, written to a 0600 temporary then renamed."""
    data = _load(path)
    data["0x" + sealed.hex()] = entry
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def commit_sealed(args: argparse.Namespace, s: Any, order: BidOrder) -> int:
    """`bid --sealed`: keep the salt, then commit (commitBidFor, also for one's own household)."""
    from gateway.market.model import seal

    household = s.sender.address if args.for_ is None else parse_address(args.for_, "--for")
    salt = secrets.token_bytes(32)
    terms = {"from_s": order.from_s, "to_s": order.to_s, "power_w": order.power_w,
             "price_mtok": order.price_mtok}
    sealed = seal(salt=salt, household=household, **terms)
    path = salts_path(args.key)
    _keep(path, sealed, {**terms, "salt": "0x" + salt.hex(), "household": household,
                         "market": s.client.deployment.market})
    with refusals("bid"):
        bid_id, mined = s.client.commit_bid(s.sender, household, sealed=sealed,
                                            rated_w=order.rated_w)
    deposit = int(s.client.events("BidCommitted", mined)[0]["deposit"])
    print(f"sealed bid {bid_id}: {order.power_w / 1000:g} kW at {tokens(order.price_mtok)} "
          f"tokens/kWh, hidden until revealed; deposit {tokens(deposit)} tokens "
          f"({mined.gas_used} gas)")
    print(f"its salt is kept in {path} (0600): reveal it with `drgw market reveal {bid_id}` "
          "after the next window is announced, before its reveal phase ends, or the bid is "
          "refunded minus 10 % and takes no part")
    return int(bid_id)


def run_reveal(args: argparse.Namespace) -> int:
    bid_id = parse_bid_id(args.bid_id)
    s = writer(args)
    c = s.client
    if int(c.bid(bid_id)["household"], 16) == 0:
        raise ConfigError(f"BID_ID {bid_id}: there is no such bid; `drgw market bids` lists yours")
    sealed = bytes(c.market.functions.sealedHash(bid_id).call())
    if sealed == bytes(32):
        raise MarketRefused(f"reveal refused: bid {bid_id} is not sealed (any more): it was "
                            "revealed already, or placed open (`drgw market bids` shows it)")
    path = Path(args.salts) if args.salts else salts_path(args.key)
    entry = _load(path).get("0x" + sealed.hex())
    if entry is None:
        raise ConfigError(f"BID_ID {bid_id}: {path} has no salt for its commitment; reveal with "
                          "the key that sent `bid --sealed` (or name its file with --salts)")
    with refusals("reveal"):
        mined = c.reveal_bid(s.sender, bid_id, from_s=int(entry["from_s"]),
                             to_s=int(entry["to_s"]), power_w=int(entry["power_w"]),
                             price_mtok=int(entry["price_mtok"]),
                             salt=bytes.fromhex(entry["salt"][2:]))
    print(f"bid {bid_id} revealed: {int(entry['power_w']) / 1000:g} kW at "
          f"{tokens(int(entry['price_mtok']))} tokens/kWh; it takes part in the window's "
          f"clearing ({mined.gas_used} gas)")
    return 0


def run_claim(args: argparse.Namespace) -> int:
    s = writer(args)
    c = s.client
    account = s.sender.address if args.household is None else parse_address(args.household,
                                                                             "--household")
    owed = c.claimable(account)
    if owed == 0:
        print(f"nothing to claim for {account}: payments and refunds are credited when the "
              "operator settles a window (`drgw market earnings` lists them)")
        return 0
    with refusals("claim"):
        mined = c.claim(s.sender, account)
    paid = sum(int(e["amount"]) for e in c.events("Claimed", mined))
    print(f"claimed {tokens(paid)} tokens into {account}; balance {tokens(c.balance(account))} "
          f"tokens ({mined.gas_used} gas)")
    return 0
