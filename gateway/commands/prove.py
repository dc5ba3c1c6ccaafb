"""`drgw prove SEQ`: the Merkle proof of one signed measurement against the root of the Report it was
reported in, from the gateway's own store and DR journal (both read-only: safe beside the agent).

The Report of a market window commits to every measurement whose time lies in the window (the agent
hands the loop `Store.interval_leaves(start_ms, end_ms)`: seq order, leaf = the record's EIP-712
struct hash; docs/closed-loop.md, "End"). This command rebuilds those leaves the same way, checks that
their root is the Report's (so the proof it prints is the one the chain will accept), and prints the
record, its leaf, the sibling hashes (OpenZeppelin MerkleProof order), the root, the window and the
household. `--chain` also asks the market contract (`verifyReading`) on the [chain] node.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.measurement import merkle
from gateway.measurement.store.intervals import leaves_in_time

DEFAULT_CONFIG = Path("/etc/drgw/drgw.toml")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingProof:
    """One record proven under its Report's root; hashes are 32 raw bytes."""

    seq: int
    device: str
    time_ms: int
    leaf: bytes
    proof: tuple[bytes, ...]
    root: bytes
    index: int  # the leaf's position among the window's leaves
    leaf_count: int
    event_id: str
    market: str
    window: int
    window_start: int
    window_end: int
    household: str


@dataclass(frozen=True, slots=True)
class _Reported:
    event_id: str
    report: dict[str, Any]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("prove", help="Merkle proof of one measurement under its DR Report's root")
    parser.add_argument("seq", type=int, help="the measurement's seq")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path,
                       help=f"gateway config whose [store] holds both (default {DEFAULT_CONFIG})")
    where.add_argument("--store", type=Path, help="the gateway store file itself")
    parser.add_argument("--json", action="store_true", help="print JSON (hashes as 0x-hex)")
    parser.add_argument("--chain", action="store_true",
                        help="also verify it with the market contract on the [chain] node")
    parser.add_argument("--rpc", help="JSON-RPC URL for --chain (default: [chain] rpc of the config)")
    parser.set_defaults(func=run_prove)


def run_prove(args: argparse.Namespace) -> int:
    path = _store_path(args)
    proven = prove(path, args.seq)
    on_chain = _verify_on_chain(args, proven) if args.chain else None
    if args.json:
        body = proof_json(proven)
        if on_chain is not None:
            body["on_chain"] = on_chain
        print(json.dumps(body, indent=2))
    else:
        print(proof_text(proven, on_chain))
    return 0 if on_chain in (None, True) else 1


def prove(path: Path, seq: int) -> ReadingProof:
    """The proof of `seq` from the store at `path`; ConfigError saying what is missing otherwise."""
    from gateway.loop.journal import Journal
    from gateway.measurement.store.reader import StoreReader

    if not path.exists():
        raise ConfigError(f"{path}: no gateway store here; give the config of a gateway that has run "
                          "(`--config`), or the store with `--store`")
    journal = Journal(path, readonly=True)
    try:
        reported = _reports(journal, path)
    finally:
        journal.close()
    with StoreReader(path) as store:
        row = store.conn.execute("SELECT device, time_ms, wire FROM measurements WHERE seq = ?",
                                 [seq]).fetchone()
        if row is None:
            raise ConfigError(f"seq {seq} is not in the store {path} (never committed, or evicted); "
                              f"{_span(store.seq_span())}")
        found = _report_of(reported, seq)
        report = found.report
        # The Report covers the window's records committed when the window was judged: a record
        # read before the end but committed after it (another bus's slow poll) has a later seq.
        leaves = [(s, leaf) for s, leaf in leaves_in_time(
            store.conn, report["window_start"] * 1000, report["window_end"] * 1000)
            if s <= report["seq_to"]]
    _check_record(seq, bytes(row[2]), dict(leaves).get(seq))
    return _proof(found, seq, str(row[0]), int(row[1]), leaves)


def _reports(journal: Any, path: Path) -> list[_Reported]:
    out = []
    for row in journal.events():
        outcome = journal.outcome(row.event_id)
        if outcome is not None and outcome["report"] is not None:
            out.append(_Reported(row.event_id, outcome["report"]))
    if not out:
        raise ConfigError(f"{path}: the DR journal holds no Report: this gateway has not reported a "
                          "market window yet (`drgw event list` shows its events)")
    return out


def _report_of(reported: list[_Reported], seq: int) -> _Reported:
    for r in reported:
        if r.report["seq_from"] <= seq <= r.report["seq_to"]:
            return r
    ranges = ", ".join(f"window {r.report['window']}: seq {r.report['seq_from']}..{r.report['seq_to']}"
                       for r in reported)
    raise ConfigError(f"seq {seq} is in no reported window; the Reports in the journal cover {ranges}")


def _check_record(seq: int, wire: bytes, stored_leaf: bytes | None) -> None:
    """The record's own struct hash must be the leaf the Report was built over."""
    from gateway.measurement.wire import MeasurementFormatError, from_wire

    if stored_leaf is None:
        raise ConfigError(f"seq {seq} lies in the Report's seq range but its time is outside the window, "
                          "so it is not under the Report's root (the clock stepped while it was taken)")
    try:
        leaf = from_wire(wire).leaf
    except MeasurementFormatError as exc:
        raise ConfigError(f"seq {seq}: the stored record cannot be decoded ({exc}); "
                          "`drgw verify --db` checks the store") from None
    if leaf != stored_leaf:
        raise ConfigError(f"seq {seq}: the stored leaf 0x{stored_leaf.hex()} is not the record's struct "
                          f"hash 0x{leaf.hex()}: the store is damaged; `drgw verify --db` checks it")


def _proof(found: _Reported, seq: int, device: str, time_ms: int,
           leaves: list[tuple[int, bytes]]) -> ReadingProof:
    r = found.report
    hashes = [leaf for _, leaf in leaves]
    root = merkle.root(hashes)
    want = bytes.fromhex(str(r["merkle_root"]).removeprefix("0x"))
    got_range = (leaves[0][0], leaves[-1][0])
    if root != want or got_range != (r["seq_from"], r["seq_to"]):
        raise ConfigError(
            f"root mismatch for window {r['window']} ({found.event_id}): the store's {len(leaves)} "
            f"records of the window (seq {got_range[0]}..{got_range[1]}) give root 0x{root.hex()}, the "
            f"journalled Report says 0x{want.hex()} over seq {r['seq_from']}..{r['seq_to']}; records "
            "of the window were evicted or changed, or this journal is not this store's")
    index = [s for s, _ in leaves].index(seq)
    proof = merkle.proof(hashes, index)
    assert merkle.verify(proof, root, hashes[index])  # the tree's own invariant, cheap to hold
    return ReadingProof(
        seq=seq, device=device, time_ms=time_ms, leaf=hashes[index], proof=tuple(proof), root=root,
        index=index, leaf_count=len(hashes), event_id=found.event_id,
        market=found.event_id.split(":")[1] if found.event_id.startswith("chain:") else "",
        window=int(r["window"]), window_start=int(r["window_start"]), window_end=int(r["window_end"]),
        household=str(r["household"]))


def proof_json(p: ReadingProof) -> dict[str, Any]:
    return {k: ("0x" + v.hex() if isinstance(v, bytes) else
                ["0x" + h.hex() for h in v] if isinstance(v, tuple) else v)
            for k, v in asdict(p).items()}


def proof_text(p: ReadingProof, on_chain: bool | None) -> str:
    def utc(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    lines = [
        f"seq        {p.seq} (device {p.device}, {utc(p.time_ms / 1000)})",
        f"leaf       0x{p.leaf.hex()}  (EIP-712 struct hash; leaf {p.index + 1} of {p.leaf_count})",
        f"proof      {len(p.proof)} sibling hash(es), leaf to root:",
        *[f"  {i + 1:>3}    0x{h.hex()}" for i, h in enumerate(p.proof)],
        f"root       0x{p.root.hex()}  (= the Report's merkleRoot)",
        f"window     {p.window} ({utc(p.window_start)} .. {utc(p.window_end)}), {p.event_id}",
        f"household  {p.household}",
    ]
    if on_chain is not None:
        lines.append("on chain   " + ("verified by verifyReading" if on_chain else
                                      "NOT verified by verifyReading (no accepted Report with this root?)"))
    return "\n".join(lines)


def _store_path(args: argparse.Namespace) -> Path:
    if args.store is not None:
        return Path(args.store)
    from gateway.config.gateway import load_config

    return Path(load_config(args.config or DEFAULT_CONFIG).store.path)


def _verify_on_chain(args: argparse.Namespace, p: ReadingProof) -> bool:
    """MarketClient.verify_reading on the node of --rpc or the config's [chain] rpc."""
    rpc = args.rpc
    if rpc is None:
        if args.store is not None:
            raise ConfigError("--chain needs the node: give --rpc URL, or --config with a [chain] table")
        from gateway.config.gateway import load_config

        chain = load_config(args.config or DEFAULT_CONFIG).chain
        if chain is None:
            raise ConfigError("--chain needs a [chain] table in the config (its rpc), or --rpc URL")
        rpc = chain.rpc
    if not p.market:
        raise ConfigError(f"{p.event_id} is not a market window: nothing to verify on chain")
    from gateway.chain.market_client import Deployment, MarketClient
    from gateway.chain.node import connect

    w3 = connect(rpc).w3
    market = w3.to_checksum_address(p.market)
    probe = MarketClient(w3=w3, deployment=Deployment(chain_id=0, token=market, market=market))
    client = MarketClient(w3=w3, deployment=Deployment(
        chain_id=int(w3.eth.chain_id), token=probe.market.functions.token().call(), market=market))
    return client.verify_reading(w3.to_checksum_address(p.household), p.window, p.leaf, p.proof)


def _span(span: tuple[int, int] | None) -> str:
    return "the store holds no records" if span is None else f"the store holds seq {span[0]}..{span[1]}"
