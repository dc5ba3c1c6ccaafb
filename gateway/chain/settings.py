"""The `[chain]` table of the gateway config: the node, the market and the household Reports go to.

Read strictly like the rest of the config (gateway/config/gateway.py): an address that is not 0x + 40
hex digits, or an RPC that is not a URL, fails at start-up with the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.schema import Fields

EMBEDDED = "embedded"  # [chain] rpc of `drgw demo`'s own in-process chain
RELAYS = ("direct", "mqtt")  # [chain] relay: who sends the gateway's Reports and commitments


@dataclass(frozen=True, slots=True)
class ChainConfig:
    rpc: str  # JSON-RPC URL of a node ("embedded" is reserved for `drgw demo`)
    market: str  # DRMarket contract address
    household: str  # the household's wallet, registered on chain with this gateway's address
    poa: bool  # add web3's ExtraDataToPOAMiddleware (QBFT / Clique consortium chains)
    sender_key: Path | None  # key that pays gas for Reports; None = the gateway key itself
    outbox: Path  # SQLite file of the chain outbox (signed transactions, queued Reports)
    poll_interval: float  # seconds between polls for awards and window changes
    relay: str = "direct"  # "mqtt": Reports and commitments go to a relayer over MQTT (no gas)



def _address(f: Fields, key: str) -> str:
    value = f.require_str(key)
    if not (value.startswith("0x") and len(value) == 42):
        f.fail(key, f"{value!r} is not an Ethereum address (0x + 40 hex digits)")
    try:
        int(value[2:], 16)
    except ValueError:
        f.fail(key, f"{value!r} is not an Ethereum address (0x + 40 hex digits)")
    return value


def parse_chain(f: Fields, *, base: Path, store_path: Path) -> ChainConfig:
    rpc = f.require_str("rpc")
    # "embedded": the chain `drgw demo` runs inside its own process and hands the agent its market
    # port; nothing else can reach it (gateway/chain/node.py `connect` refuses it with the fix).
    if rpc != EMBEDDED and not rpc.startswith(("http://", "https://", "ws://", "wss://")):
        f.fail("rpc", f"{rpc!r}: write the node's JSON-RPC URL, e.g. http://127.0.0.1:8545")
    key = f.optional_str("sender_key")
    outbox = f.optional_str("outbox")
    interval = f.optional_number("poll_interval", minimum=0.1, maximum=3600, unit="seconds",
                                 default=15.0)
    relay = f.optional_str("relay") or "direct"
    if relay not in RELAYS:
        f.fail("relay", f"{relay!r}: write \"direct\" (this gateway sends its Reports, with "
               "sender_key or its own gas) or \"mqtt\" (a master station relays them)")
    if relay == "mqtt" and key is not None:
        f.fail("sender_key", "is not used with relay = \"mqtt\" (the master station pays for "
               "Reports and commitments; bids go from the gateway key): remove it")
    cfg = ChainConfig(
        rpc=rpc, market=_address(f, "market"), household=_address(f, "household"),
        poa=bool(f.optional_bool("poa")),
        sender_key=None if key is None else _rel(Path(key), base),
        outbox=_rel(Path(outbox), base) if outbox else store_path.with_name("chain-outbox.sqlite"),
        poll_interval=interval, relay=relay,
    )
    f.reject_unknown()
    return cfg


def _rel(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path
