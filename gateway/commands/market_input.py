"""What the household and operator market commands read from the user and tell back.

Amounts are typed in tokens with at most 3 decimals (the token's base unit is the milli-token,
DRToken.decimals() = 3) and converted exactly with Decimal, never through a float; addresses are
20 bytes of hex, checksummed (EIP-55) or all lower case. A refused transaction is explained from
its decoded custom error with what to do, through the one table `ADVICE`. Reads need no sender,
so `reader` connects without a key. gateway/commands/market_household.py holds the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeAlias

from gateway.errors import ConfigError, DrgwError

if TYPE_CHECKING:
    from gateway.chain.market_client import MarketClient

    Cmds: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HHMM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


class MarketRefused(DrgwError):
    """The market (or its token) refused a household's or the operator's transaction."""


def tokens(mtok: int) -> str:
    """mtok -> tokens, exactly (3 decimals)."""
    return f"{Decimal(mtok).scaleb(-3):f}"


# What to do when the contract refuses, by custom error name (DRMarket.sol, DRToken.sol, OZ 5).
ADVICE: Mapping[str, Callable[[Mapping[str, Any]], str]] = {
    "ERC20InsufficientAllowance": lambda a: (
        f"the deposit needs {tokens(a['needed'])} tokens but the market may take only "
        f"{tokens(a['allowance'])}: raise the cap with `drgw market approve TOKENS`"),
    "ERC20InsufficientBalance": lambda a: (
        f"the deposit needs {tokens(a['needed'])} tokens but the wallet holds {tokens(a['balance'])}"
        ": ask the operator to mint tokens to it (`drgw market mint`)"),
    "NotHousehold": lambda a: (
        f"{a['sender']} is not a registered household: ask the operator to register it "
        "(`drgw market register --household`)"),
    "NotHouseholdOrGateway": lambda a: (
        f"{a['sender']} is neither household {a['household']} nor its gateway: bid --for a "
        "household with its wallet's or its gateway's key"),
    "UnknownBid": lambda a: f"there is no bid {a['bidId']}: `drgw market bids` lists yours",
    "NotBidOwner": lambda a: (
        f"bid {a['bidId']} belongs to {a['owner']}: withdraw only your own bids "
        "(`drgw market bids` lists yours)"),
    "BidNotOpen": lambda a: (
        f"bid {a['bidId']} is {_bid_state(a['state'])}: only open bids can be withdrawn and "
        "only sealed ones revealed"),
    "BidLocked": lambda a: (
        f"bid {a['bidId']} is locked for window {a['window']}, announced after it was placed: "
        f"withdraw it after the window is cleared, if it did not take part"),
    "BidRangeInvalid": lambda a: "the bid's end must be after its start",
    "BidPowerInvalid": lambda a: "--kw must be non-zero and at most 1000 kW either way",
    "RatedPowerInvalid": lambda a: "--rated-kw must be at least |--kw| and at most 1000",
    "RevealNotOpen": lambda a: (
        f"no window covers bid {a['bidId']} yet: reveal after the next window is announced "
        "(`drgw market status` shows it), before its reveal phase ends"),
    "RevealClosed": lambda a: (
        f"the reveal phase for bid {a['bidId']} ended at unix {a['revealEnd']}: the bid takes no "
        "part and is refunded minus 10 % when the window is cleared (`drgw market claim`)"),
    "CommitmentMismatch": lambda a: (
        f"these terms and salt do not hash to bid {a['bidId']}'s commitment: reveal with the "
        "salts file its `bid --sealed` wrote (--salts FILE)"),
    "DepositTooSmall": lambda a: (
        f"bid {a['bidId']}'s deposit {tokens(a['deposit'])} tokens covers less than the revealed "
        f"power needs ({tokens(a['needed'])}): it cannot be revealed; withdraw it once no "
        "announced window may clear it"),
    "AccessControlUnauthorizedAccount": lambda a: (
        f"{a['account']} is not the operator: use the operator's key (--key)"),
    "RateZero": lambda a: "the rate must be above 0",
    "UnknownHousehold": lambda a: (
        f"{a['wallet']} is not a registered household: register it first "
        "(`drgw market register --household`)"),
    "ZeroAddress": lambda a: f"the {a['field']} address must not be the zero address",
}


def _bid_state(state: int) -> str:
    from gateway.chain.household import BID_STATES

    return BID_STATES.get(int(state), f"state {state}")


@contextlib.contextmanager
def refusals(action: str) -> Iterator[None]:
    """Turn a contract's refusal into a MarketRefused naming the error and what to do."""
    from gateway.chain.revert import ChainRevert

    try:
        yield
    except ChainRevert as exc:
        advice = ADVICE.get(exc.revert.name)
        what = advice(exc.revert.args) if advice and exc.revert.args else str(exc)
        raise MarketRefused(f"{action} refused: {exc.revert.name or exc.revert}: {what}") from exc


# ---- argument parsing ------------------------------------------------------------------------

def parse_bid_id(text: str) -> int:
    if not text.isdigit() or int(text) == 0 or int(text) >= 2**32:
        raise ConfigError(f"BID_ID {text!r}: a bid id is a whole number from 1 "
                          "(`drgw market bids` lists yours)")
    return int(text)


def parse_address(text: str, flag: str) -> str:
    """A 20-byte hex address, checksummed (EIP-55) or all lower case -> its checksum form."""
    from eth_utils.address import is_checksum_address, to_checksum_address

    if not _ADDRESS.fullmatch(text):
        raise ConfigError(f"{flag} {text!r}: not an address; use 0x and 40 hex digits "
                          "(20 bytes), e.g. 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    if text[2:] != text[2:].lower() and not is_checksum_address(text):
        raise ConfigError(f"{flag} {text}: the mixed-case checksum (EIP-55) is wrong; check for "
                          "a typo, or write the address in lower case")
    return str(to_checksum_address(text))


def parse_decimal(text: str, flag: str, *, unit: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{flag} {text!r}: not a number of {unit}") from None
    if not value.is_finite():
        raise ConfigError(f"{flag} {text!r}: not a number of {unit}")
    return value


def parse_mtok(text: str, flag: str, *, positive: bool = False) -> int:
    """Tokens (at most 3 decimals) -> milli-tokens."""
    value = parse_decimal(text, flag, unit="tokens")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{flag} {text}: must be {'above' if positive else 'at least'} 0 tokens")
    mtok = value * 1000
    if mtok != mtok.to_integral_value():
        raise ConfigError(f"{flag} {text}: at most 3 decimals (the token's unit is 0.001)")
    return int(mtok)


def parse_watts(text: str, flag: str) -> int:
    """kW (at most 3 decimals, signed) -> W."""
    w = parse_decimal(text, flag, unit="kW") * 1000
    if w != w.to_integral_value():
        raise ConfigError(f"{flag} {text}: at most 3 decimals (the contract counts whole W)")
    return int(w)


def bid_range(args: argparse.Namespace, now_s: int) -> tuple[int, int]:
    """--from/--to (ISO or unix seconds), or --start HH:MM (next such local time after the
    chain's now) with --hours N."""
    from gateway.master.operator import parse_time

    if (args.from_ is None) != (args.to is None) or (args.start is None) != (args.hours is None) \
            or (args.from_ is None) == (args.start is None):
        raise ConfigError("bid: give --from ISO --to ISO, or --start HH:MM --hours N")
    if args.from_ is not None:
        return parse_time(args.from_, "--from"), parse_time(args.to, "--to")
    match = _HHMM.fullmatch(args.start)
    if match is None:
        raise ConfigError(f"--start {args.start!r}: use HH:MM, e.g. 18:30 (local time)")
    hours = parse_decimal(args.hours, "--hours", unit="hours")
    if hours <= 0:
        raise ConfigError(f"--hours {args.hours}: must be above 0")
    now = dt.datetime.fromtimestamp(now_s).astimezone()
    start = now.replace(hour=int(match[1]), minute=int(match[2]), second=0, microsecond=0)
    if start <= now:
        start += dt.timedelta(days=1)
    from_s = int(start.timestamp())
    return from_s, from_s + int(hours * 3600)


# ---- sessions ----------------------------------------------------------------------------------

def chain_args(p: argparse.ArgumentParser, *, key: str, reads: bool = False) -> None:
    p.add_argument("--rpc", required=True, metavar="URL", help="JSON-RPC URL of the chain node")
    p.add_argument("--key", required=not reads, metavar="FILE",
                   help=f"file with the {key}'s private key (hex, mode 0600)"
                   + ("; not needed with --household" if reads else ""))
    p.add_argument("--deployment", default="market-deployment.json", metavar="FILE",
                   help="deployment file (written by deploy; default market-deployment.json)")
    p.add_argument("--poa", action="store_true",
                   help="the chain is proof-of-authority (QBFT/Clique): add the PoA middleware")
    if reads:
        p.add_argument("--household", metavar="ADDRESS",
                       help="read this household instead of the --key's wallet")
        p.add_argument("--json", action="store_true", help="print JSON")


def writer(args: argparse.Namespace) -> Any:
    from gateway.master.operator import open_session

    return open_session(rpc=args.rpc, key_file=args.key, deployment_file=args.deployment,
                        poa=args.poa)


def reader(args: argparse.Namespace) -> tuple[MarketClient, str]:
    """A market client without a sender, and the household to read."""
    from gateway.chain.market_client import MarketClient
    from gateway.chain.node import connect
    from gateway.master.operator import read_deployment

    if args.household is not None:
        household = parse_address(args.household, "--household")
    elif args.key is not None:
        from eth_account import Account

        from gateway.measurement.keyfile import read_key

        household = str(Account.from_key(read_key(args.key)).address)
    else:
        raise ConfigError("give --household ADDRESS (anyone's) or --key FILE (your wallet's)")
    deployment = read_deployment(args.deployment)
    node = connect(args.rpc, poa=args.poa)
    chain_id = int(node.w3.eth.chain_id)
    if chain_id != deployment.chain_id:
        raise ConfigError(f"--rpc {args.rpc} is chain {chain_id} but --deployment "
                          f"{args.deployment} was deployed on chain {deployment.chain_id}")
    return MarketClient(w3=node.w3, deployment=deployment), household


def show(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    print(json.dumps(data) if args.json else "\n".join(lines))
