"""The live operator's side of `drgw market`: keys from files, the deployment file, one session.

A session is a JSON-RPC connection, the operator's nonce owner (TxSender) backed by a SQLite outbox
next to the deployment file, and the market client. Errors name the file or flag and the fix.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from gateway.chain.market_client import Deployment, MarketClient, decoder
from gateway.chain.node import ChainNode, connect
from gateway.chain.outbox import ChainOutbox
from gateway.chain.sender import TxSender
from gateway.errors import ConfigError
from gateway.measurement.keyfile import read_key


def write_deployment(path: str | Path, deployment: Deployment) -> None:
    Path(path).write_text(json.dumps({"chain_id": deployment.chain_id, "token": deployment.token,
                                      "market": deployment.market}, indent=2) + "\n")


def read_deployment(path: str | Path) -> Deployment:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return Deployment(chain_id=int(data["chain_id"]), token=str(data["token"]),
                          market=str(data["market"]))
    except FileNotFoundError as exc:
        raise ConfigError(f"--deployment {p}: no such file; run `drgw market deploy` first") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--deployment {p}: not a deployment file written by "
                          f"`drgw market deploy` ({exc})") from exc


def outbox_path(deployment_file: str | Path) -> Path:
    return Path(deployment_file).with_suffix(".outbox.sqlite")


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """Connection, operator sender and (once deployed) the market client."""

    node: ChainNode
    sender: TxSender
    outbox: ChainOutbox
    client: MarketClient | None


def open_session(*, rpc: str, key_file: str, deployment_file: str, poa: bool,
                 deployed: bool = True) -> Session:
    node = connect(rpc, poa=poa)
    outbox = ChainOutbox(outbox_path(deployment_file))
    sender = TxSender(w3=node.w3, key=read_key(key_file), outbox=outbox, decoder=decoder())
    client = None
    if deployed:
        deployment = read_deployment(deployment_file)
        if sender.chain_id != deployment.chain_id:
            raise ConfigError(f"--rpc {rpc} is chain {sender.chain_id} but --deployment "
                              f"{deployment_file} was deployed on chain {deployment.chain_id}")
        client = MarketClient(w3=node.w3, deployment=deployment)
    return Session(node=node, sender=sender, outbox=outbox, client=client)


def parse_time(text: str, flag: str) -> int:
    """ISO 8601 date-time (with offset; naive means UTC) or unix seconds -> unix seconds."""
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: use ISO 8601 like 2024-07-01T18:30+02:00 "
                          "or unix seconds") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


WINDOW_STATES = {0: "none", 1: "announced", 2: "cleared", 3: "settled", 4: "checked", 5: "void",
                 6: "clearing"}
BID_STATES = {0: "none", 1: "open", 2: "withdrawn", 3: "consumed", 4: "done", 5: "sealed"}
