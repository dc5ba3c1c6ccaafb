"""The one nonce owner of a sending account: sign, keep, send, re-send as is, poll receipts by hash.

Every transaction of an account goes through its `TxSender`: it estimates gas (a revert surfaces
here, decoded to the custom error's name), takes the next nonce, signs, commits the raw bytes to the
`ChainOutbox`, and only then broadcasts. It polls the receipt by hash and re-broadcasts the same raw
bytes when the node does not know the transaction (a restarted node lost its mempool). Transactions
left pending by a crash or an unreachable node are finished first, in nonce order, by `resume()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.chain.outbox import ChainOutbox, StoredTx
from gateway.chain.revert import ChainRevert, DecodedRevert, RevertDecoder, revert_data
from gateway.errors import RemoteError

if TYPE_CHECKING:
    from web3 import Web3

TIP_WEI = 1_000_000_000


class NodeUnavailable(RemoteError):
    """The JSON-RPC node did not answer; kept transactions are re-sent by the next attempt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mined:
    """A mined transaction's outcome."""

    tx_hash: str
    block: int
    gas_used: int
    logs: tuple[Any, ...]
    contract_address: str | None


class TxSender:
    """Owns the nonces of the account of `key` on the chain behind `w3`."""

    def __init__(
        self, *, w3: Web3, key: bytes, outbox: ChainOutbox, decoder: RevertDecoder,
        poll_s: float = 0.05, rebroadcast_s: float = 2.0, timeout_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from eth_account import Account

        self._w3 = w3
        self._account = Account.from_key(key)
        self._outbox = outbox
        self._decoder = decoder
        self._poll_s, self._rebroadcast_s, self._timeout_s = poll_s, rebroadcast_s, timeout_s
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        return str(self._account.address)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._call_node(lambda: self._w3.eth.chain_id))
        return self._chain_id

    def send(self, *, to: str | None, data: str, purpose: str, gas: int | None = None,
             value: int = 0) -> Mined:
        """Send one transaction and wait for it; raises ChainRevert with the decoded error."""
        with self._lock:
            self._resume_locked()
            tx: dict[str, Any] = {"from": self.address, "data": data, "value": value}
            if to is not None:
                tx["to"] = to
            if gas is None:
                gas = self._estimate(tx, purpose)
            tx.update(self._fees(), gas=gas, nonce=self._next_nonce(), chainId=self.chain_id)
            del tx["from"]
            signed = self._account.sign_transaction(tx)
            stored = StoredTx(chain_id=self.chain_id, account=self.address, nonce=tx["nonce"],
                              tx_hash="0x" + bytes(signed.hash).hex(),
                              raw=bytes(signed.raw_transaction), purpose=purpose, state="pending")
            self._outbox.record_tx(stored)
            return self._await(stored, tx)

    def resume(self) -> tuple[Mined, ...]:
        """Finish the transactions kept pending by a crash or an unreachable node."""
        with self._lock:
            return self._resume_locked()

    def call_revert(self, tx: dict[str, Any], action: str) -> ChainRevert | None:
        """Run `tx` as an eth_call; the decoded revert, or None when it would succeed."""
        try:
            self._w3.eth.call(tx)  # type: ignore[arg-type]
        except Exception as exc:
            return self._as_revert(exc, action)
        return None

    # ---- internals -------------------------------------------------------------------------

    def _resume_locked(self) -> tuple[Mined, ...]:
        done = []
        for stored in self._outbox.pending_txs(self.chain_id, self.address):
            done.append(self._await(stored, None))
        return tuple(done)

    def _estimate(self, tx: dict[str, Any], purpose: str) -> int:
        try:
            estimate = int(self._w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
        except Exception as exc:
            raise self._as_revert(exc, purpose) from exc
        return estimate * 5 // 4 + 10_000

    def _as_revert(self, exc: Exception, action: str) -> ChainRevert:
        if _is_connection_error(exc):
            raise NodeUnavailable(f"{action}: the chain node did not answer ({exc})") from exc
        data = revert_data(exc)
        if data is None:
            return ChainRevert(DecodedRevert(name="", args={}, data=b""), action=f"{action} ({exc})")
        return ChainRevert(self._decoder.decode(data), action=action)

    def _next_nonce(self) -> int:
        on_chain = int(self._call_node(
            lambda: self._w3.eth.get_transaction_count(self.address, "pending")))  # type: ignore[arg-type]
        kept = self._outbox.next_nonce(self.chain_id, self.address)
        return on_chain if kept is None else max(on_chain, kept)

    def _fees(self) -> dict[str, int]:
        block = self._call_node(lambda: self._w3.eth.get_block("latest"))
        base = block.get("baseFeePerGas")
        if base is None:  # pre-London or a consortium chain without a fee market
            return {"gasPrice": int(self._call_node(lambda: self._w3.eth.gas_price))}
        return {"maxFeePerGas": 2 * int(base) + TIP_WEI, "maxPriorityFeePerGas": TIP_WEI}

    def _await(self, stored: StoredTx, tx: dict[str, Any] | None) -> Mined:
        from web3.exceptions import TransactionNotFound

        refused = self._broadcast(stored)
        if refused is not None and not self._node_knows(stored):
            self._outbox.finish_tx(stored.tx_hash, state="dropped", error=refused)
            raise RemoteError(f"{stored.purpose}: the node refused the transaction: {refused}")
        deadline = self._clock() + self._timeout_s
        next_broadcast = self._clock() + self._rebroadcast_s
        while True:
            try:
                receipt = self._w3.eth.get_transaction_receipt(stored.tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                receipt = None
            except Exception as exc:
                if _is_connection_error(exc):
                    raise NodeUnavailable(
                        f"{stored.purpose}: node went away; the signed transaction "
                        f"{stored.tx_hash} is kept in {self._outbox.path} and will be re-sent"
                    ) from exc
                raise
            if receipt is not None:
                return self._finish(stored, receipt, tx)
            if self._clock() >= deadline:
                raise RemoteError(f"{stored.purpose}: no receipt for {stored.tx_hash} after "
                                  f"{self._timeout_s:g}s; it is kept and will be re-sent")
            if self._clock() >= next_broadcast:
                self._broadcast(stored)
                next_broadcast = self._clock() + self._rebroadcast_s
            self._sleep(self._poll_s)

    def _node_knows(self, stored: StoredTx) -> bool:
        try:
            self._w3.eth.get_transaction(stored.tx_hash)  # type: ignore[arg-type]
        except Exception as exc:
            if _is_connection_error(exc):
                raise NodeUnavailable(f"{stored.purpose}: the chain node did not answer") from exc
            return False
        return True

    def _broadcast(self, stored: StoredTx) -> str | None:
        """Send the kept raw bytes; the node's complaint, if it had one."""
        try:
            self._w3.eth.send_raw_transaction(stored.raw)
        except Exception as exc:
            if _is_connection_error(exc):
                raise NodeUnavailable(
                    f"{stored.purpose}: the chain node did not answer; the signed transaction "
                    f"{stored.tx_hash} is kept in {self._outbox.path} and will be re-sent"
                ) from exc
            return str(exc)  # "already known" / "nonce too low": mined or pending, or refused
        return None

    def _finish(self, stored: StoredTx, receipt: Any, tx: dict[str, Any] | None) -> Mined:
        mined = Mined(tx_hash=stored.tx_hash, block=int(receipt["blockNumber"]),
                      gas_used=int(receipt["gasUsed"]), logs=tuple(receipt["logs"]),
                      contract_address=receipt.get("contractAddress"))
        if receipt["status"] == 1:
            self._outbox.finish_tx(stored.tx_hash, state="mined", block=mined.block,
                                   gas_used=mined.gas_used)
            return mined
        revert = None
        if tx is not None:
            replay = {"from": self.address, "to": tx.get("to"), "data": tx["data"],
                      "value": tx.get("value", 0), "gas": tx["gas"]}
            revert = self.call_revert(replay, stored.purpose)
        message = str(revert) if revert else f"{stored.purpose} reverted (reason not recoverable)"
        self._outbox.finish_tx(stored.tx_hash, state="failed", block=mined.block,
                               gas_used=mined.gas_used, error=message)
        raise revert or RemoteError(message)

    def _call_node(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            if _is_connection_error(exc):
                raise NodeUnavailable(f"the chain node did not answer ({exc})") from exc
            raise


def _is_connection_error(exc: BaseException) -> bool:
    """requests/urllib3/aiohttp connection failures, without importing them."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if name in ("ConnectionError", "ConnectionRefusedError", "ConnectTimeout",
                    "ReadTimeout", "NewConnectionError", "MaxRetryError",
                    "ClientConnectorError", "ProtocolError", "RemoteDisconnected"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
