"""Many transactions from many accounts at once: sign with local nonces, broadcast in JSON-RPC batches,
collect the receipts afterwards (simulations and benchmarks at programme scale, issue 14).

`TxSender` is the durable path of a real gateway: one transaction at a time, estimated, kept in the
outbox before broadcast and awaited. Here throughput is the point and nothing is worth keeping
across a crash (a simulation starts again from a fresh deployment), so: no outbox, no per-tx
estimate (the caller gives a gas limit per kind of call), each account's nonce read once per call
and counted locally, raw transactions sent a batch of JSON-RPC requests at a time (the JSON-RPC 2.0
spec, section 6 "Batch": https://www.jsonrpc.org/specification#batch), and receipts fetched the
same way once all are sent (anvil automines whatever is pending). A failed receipt is replayed as
an eth_call to name the contract's custom error, as `TxSender` does. On the embedded eth-tester
chain the same calls go one by one through the provider (it has no batch endpoint, and with
automining off it replays pending transactions under new hashes), one block each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.chain.revert import ChainRevert, DecodedRevert, RevertDecoder, revert_data
from gateway.chain.sender import TIP_WEI, Mined, NodeUnavailable
from gateway.errors import RemoteError

if TYPE_CHECKING:
    from web3 import Web3

# A cap, not a price: EIP-1559 charges base fee + tip. A burst of thousands of transactions fills
# blocks, and each full block raises the base fee by 1/8 (EIP-1559), so a cap of twice the base
# fee at signing time strands the rest of the burst; 1000 gwei leaves room for ~40 full blocks.
MAX_FEE_WEI = 1000 * 10**9
BATCH = 100
WAVE = 500  # requests per JSON-RPC batch: anvil 1.7 stalled on batches of 500 raw transactions


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkTx:
    """One transaction to send: from the account of `key`, with a fixed gas limit."""

    key: bytes
    to: str | None
    data: str
    gas: int
    purpose: str
    value: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Signed:
    tx: BulkTx
    sender: str
    raw: str
    tx_hash: str


class BulkSender:
    """Sends `BulkTx`s through `w3`'s node; `count` and `gas` total what it mined."""

    def __init__(self, *, w3: Web3, decoder: RevertDecoder, timeout_s: float = 300.0,
                 poll_s: float = 0.02, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._w3, self._decoder = w3, decoder
        self._timeout_s, self._poll_s, self._sleep, self._clock = timeout_s, poll_s, sleep, clock
        self._accounts: dict[bytes, Any] = {}
        self._chain_id = 0
        self._session: Any = None
        self._manual = False
        self._scanned = 0  # the last block whose receipts were read
        self.count = 0
        self.gas = 0
        self.gas_max = 0  # the most gas one transaction used

    def address(self, key: bytes) -> str:
        return str(self._account(key).address)

    def send(self, txs: Sequence[BulkTx]) -> list[Mined]:
        """Send all of `txs` (each account's in the given order) and return their receipts in the
        same order; raises ChainRevert (the first failure, decoded) once all are mined."""
        if not txs:
            return []
        signed = self._sign(txs)
        by_hash: dict[str, Mined] = {}
        if self._endpoint() is not None:
            self._scanned = _int(self._batch("eth_blockNumber", [[]])[0][0])
        self._manual = self._automine(False)
        try:
            for wave in _waves(signed):
                for part in _rounds(wave):
                    replies = self._batch("eth_sendRawTransaction", [[s.raw] for s in part])
                    for s, (_, error) in zip(part, replies, strict=True):
                        if error is not None:
                            raise RemoteError(f"{s.tx.purpose}: the node refused the "
                                              f"transaction: {error}")
                by_hash.update((m.tx_hash, m) for m in self._receipts(wave))
        finally:
            if self._manual:
                self._automine(True)
        mined = [by_hash[s.tx_hash] for s in signed]
        self.count += len(mined)
        self.gas += sum(m.gas_used for m in mined)
        self.gas_max = max([self.gas_max, *(m.gas_used for m in mined)])
        return mined

    # ---- internals -------------------------------------------------------------------------

    def _account(self, key: bytes) -> Any:
        if key not in self._accounts:
            from eth_account import Account

            self._accounts[key] = Account.from_key(key)
        return self._accounts[key]

    def _sign(self, txs: Sequence[BulkTx]) -> list[_Signed]:
        if not self._chain_id:
            self._chain_id = int(self._w3.eth.chain_id)
        senders = list(dict.fromkeys(self.address(t.key) for t in txs))
        counts = self._batch("eth_getTransactionCount", [[a, "pending"] for a in senders])
        nonces = {a: _int(c) for a, (c, _) in zip(senders, counts, strict=True)}
        base = self._w3.eth.get_block("latest").get("baseFeePerGas")
        fees = {"gasPrice": int(self._w3.eth.gas_price)} if base is None else {
            "maxFeePerGas": max(2 * int(base) + TIP_WEI, MAX_FEE_WEI),
            "maxPriorityFeePerGas": TIP_WEI}
        out = []
        for t in txs:
            account = self._account(t.key)
            tx: dict[str, Any] = {"data": t.data, "value": t.value, "gas": t.gas,
                                  "nonce": nonces[account.address], "chainId": self._chain_id,
                                  **fees}
            if t.to is not None:
                tx["to"] = t.to
            nonces[account.address] += 1
            s = account.sign_transaction(tx)
            out.append(_Signed(tx=t, sender=account.address, raw="0x" + bytes(s.raw_transaction).hex(),
                               tx_hash="0x" + bytes(s.hash).hex()))
        return out

    def _receipts(self, signed: list[_Signed]) -> list[Mined]:
        found: dict[str, Any] = {}
        wanted = {s.tx_hash for s in signed}
        deadline = self._clock() + self._timeout_s
        while len(found) < len(signed):
            if self._manual:
                self._batch("evm_mine", [[]])  # one block of all that is pending
            before = len(found)
            found.update(self._new_receipts(wanted - found.keys()))
            if before == len(found) and self._endpoint() is not None:
                # Nothing new: send the same bytes again. anvil 1.7 loses a few of a burst
                # (accepted with their hash, never pooled); one it holds is refused as known.
                for part in _rounds([s for s in signed if s.tx_hash not in found]):
                    self._batch("eth_sendRawTransaction", [[s.raw] for s in part])
            if len(found) < len(signed):
                if self._clock() >= deadline:
                    first = next(s for s in signed if s.tx_hash not in found)
                    raise RemoteError(f"{len(signed) - len(found)} transactions not mined after "
                                      f"{self._timeout_s:g}s (first: {first.tx.purpose}, "
                                      f"{first.tx_hash})")
                if not self._manual:
                    self._sleep(self._poll_s)
        mined = [_mined(s.tx_hash, found[s.tx_hash]) for s in signed]
        for s, m, receipt in zip(signed, mined, (found[s.tx_hash] for s in signed), strict=True):
            if _int(receipt["status"]) != 1:
                raise self._revert(s, m)
        return mined

    def _endpoint(self) -> str | None:
        url = getattr(self._w3.provider, "endpoint_uri", None)
        return None if url is None else str(url)

    def _new_receipts(self, missing: set[str]) -> dict[str, Any]:
        """Receipts of `missing` mined since the last look. On a JSON-RPC node a whole block's
        at a time (`eth_getBlockReceipts`): anvil answers eth_getTransactionReceipt in time
        proportional to the block's transactions, so asking per transaction is quadratic."""
        if self._endpoint() is None:
            out = {}
            for h in missing:
                receipt, _ = _local(self._w3, "eth_getTransactionReceipt", [h])
                if receipt is not None:
                    out[h] = receipt
            return out
        latest = _int(self._batch("eth_blockNumber", [[]])[0][0])
        blocks = [[hex(b)] for b in range(self._scanned + 1, latest + 1)]
        self._scanned = latest
        return {r["transactionHash"]: r for receipts, _ in self._batch("eth_getBlockReceipts",
                                                                        blocks)
                for r in receipts or () if r["transactionHash"] in missing}

    def _automine(self, on: bool) -> bool:
        """anvil mines one block per arriving transaction, which caps a burst at its block rate;
        with automining off (`evm_setAutomine`, a development method) `evm_mine` packs each
        block up to its gas limit. True when the node took it (a production node refuses)."""
        if self._endpoint() is None:
            return False
        return self._batch("evm_setAutomine", [[on]])[0][1] is None

    def _revert(self, s: _Signed, m: Mined) -> ChainRevert | RemoteError:
        call = {"from": s.sender, "data": s.tx.data, "value": s.tx.value, "gas": s.tx.gas}
        if s.tx.to is not None:
            call["to"] = s.tx.to
        try:
            self._w3.eth.call(call, m.block - 1)  # type: ignore[arg-type]
        except Exception as exc:
            data = revert_data(exc)
            if data is not None:
                return ChainRevert(self._decoder.decode(data), action=s.tx.purpose)
            return ChainRevert(DecodedRevert(name="", args={}, data=b""),
                               action=f"{s.tx.purpose} ({exc})")
        return RemoteError(f"{s.tx.purpose} reverted in {m.tx_hash} (out of gas at {s.tx.gas}?)")

    def _batch(self, method: str, params: list[list[Any]]) -> list[tuple[Any, Any]]:
        """(result, error) per request; one HTTP POST per BATCH requests on a JSON-RPC node."""
        provider: Any = self._w3.provider
        url = getattr(provider, "endpoint_uri", None)
        if url is None:  # the embedded chain: one request at a time, web3-formatted
            return [_local(self._w3, method, p) for p in params]
        import requests

        if self._session is None:
            self._session = requests.Session()  # keep-alive: thousands of small batches
        out: list[tuple[Any, Any]] = []
        for i in range(0, len(params), BATCH):
            body: list[Any] = [{"jsonrpc": "2.0", "id": j, "method": method, "params": p}
                    for j, p in enumerate(params[i:i + BATCH])]
            try:
                replies = self._session.post(str(url), json=body, timeout=120).json()
            except requests.RequestException as exc:
                raise NodeUnavailable(f"{method}: the chain node at {url} did not answer "
                                      f"({exc})") from exc
            by_id = {r["id"]: r for r in replies}
            out.extend((by_id[j].get("result"), by_id[j].get("error")) for j in range(len(body)))
        return out


def _waves(signed: list[_Signed]) -> list[list[_Signed]]:
    """At most WAVE transactions per account in flight: anvil 1.7's pool quietly loses an
    account's transactions beyond about a thousand pending (seen with 2,000 from the operator:
    accepted with their hashes, never mined, pool empty)."""
    waves: list[list[_Signed]] = []
    seen: dict[str, int] = {}
    for s in signed:
        k = seen.get(s.sender, 0) // WAVE
        seen[s.sender] = seen.get(s.sender, 0) + 1
        if k == len(waves):
            waves.append([])
        waves[k].append(s)
    return waves


def _rounds(signed: list[_Signed]) -> list[list[_Signed]]:
    """Batches with at most one transaction per account, each account's in nonce order across
    batches: anvil 1.7 handles the requests of one batch concurrently and silently drops a
    transaction that reaches its pool ahead of a lower nonce (answered with its hash, never
    mined), so an account's next transaction goes only in a later batch."""
    rounds: list[list[_Signed]] = []
    seen: dict[str, int] = {}
    for s in signed:
        k = seen.get(s.sender, 0)
        seen[s.sender] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(s)
    return [r[i:i + BATCH] for r in rounds for i in range(0, len(r), BATCH)]


def _local(w3: Web3, method: str, p: list[Any]) -> tuple[Any, Any]:
    from web3.exceptions import TransactionNotFound

    try:
        if method == "eth_sendRawTransaction":
            return w3.eth.send_raw_transaction(bytes.fromhex(p[0][2:])), None
        if method == "eth_getTransactionCount":
            return w3.eth.get_transaction_count(p[0], p[1]), None
        if method == "eth_getTransactionReceipt":
            return dict(w3.eth.get_transaction_receipt(p[0])), None
    except TransactionNotFound:
        return None, None
    except ValueError as exc:
        return None, str(exc)
    raise ValueError(f"no local form of {method}")


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _mined(tx_hash: str, receipt: dict[str, Any]) -> Mined:
    """A receipt as `Mined`; raw JSON logs get the bytes fields web3's event decoder expects."""
    from hexbytes import HexBytes

    def log(raw: Any) -> Any:
        if not isinstance(raw.get("data"), str):
            return raw  # already formatted by web3
        return {**raw, "topics": [HexBytes(t) for t in raw["topics"]],
                "data": HexBytes(raw["data"]), "logIndex": _int(raw["logIndex"]),
                "blockNumber": _int(raw["blockNumber"]),
                "transactionIndex": _int(raw["transactionIndex"]),
                "transactionHash": HexBytes(raw["transactionHash"]),
                "blockHash": HexBytes(raw["blockHash"])}

    return Mined(tx_hash=tx_hash, block=_int(receipt["blockNumber"]),
                 gas_used=_int(receipt["gasUsed"]),
                 logs=tuple(log(x) for x in receipt["logs"]),
                 contract_address=receipt.get("contractAddress"))


class Calldata:
    """Encodes calls to one contract without building a web3 function object per call (about ten
    times faster, which counts at 10,000 bids); overloaded names are not supported."""

    def __init__(self, abi: Sequence[Any]) -> None:
        from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types

        self._fns = {e["name"]: (function_abi_to_4byte_selector(e), get_abi_input_types(e))
                     for e in abi if e.get("type") == "function"}

    def __call__(self, fn: str, *args: Any) -> str:
        from eth_abi.abi import encode

        selector, types = self._fns[fn]
        return "0x" + (selector + encode(types, list(args))).hex()


def event_logs(mined: Sequence[Mined], topic: bytes) -> list[Any]:
    """The logs of `mined` whose first topic is `topic` (an event's signature hash)."""
    return [log for m in mined for log in m.logs if log["topics"] and bytes(log["topics"][0]) == topic]
