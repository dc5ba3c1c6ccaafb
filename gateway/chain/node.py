"""Chain connections: the embedded eth-tester chain (default) or any JSON-RPC node (`--rpc URL`).

web3 and py-evm are imported inside these functions only. The embedded chain runs py-evm's Prague
VM (eth-tester's default fork), which executes the committed `evmVersion: "prague"` bytecode as is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from web3 import Web3


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainNode:
    """A connected chain. `tester` is the EthereumTester of an embedded chain, else None."""

    w3: Web3
    funded_keys: tuple[bytes, ...]
    tester: Any = None

    def latest_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def set_next_timestamp(self, timestamp: int, *, hold: bool = False) -> None:
        """Make the next block carry `timestamp` (or the earliest valid time after the last block).

        On anvil the blocks after the pinned one are stamped by anvil's wall clock, so under load a
        transaction meant for that moment can land a second or more later (seed 003's example
        announces exactly at the lockout's edge, and was refused so). With `hold`, anvil keeps
        stamping every block with `timestamp` until the next call or `release_clock`
        (anvil_setBlockTimestampInterval 0). The embedded chain ignores `hold`: its blocks are
        one second apart whatever the wall clock does."""
        latest = self.latest_timestamp()
        if self.tester is not None:
            if timestamp > latest + 1:
                self.tester.time_travel(timestamp)  # mines an empty block at timestamp - 1
            return
        if timestamp > latest + (0 if hold else 1):
            # an empty block at `timestamp`, as eth_estimateGas runs on the latest block
            self._rpc("evm_setNextBlockTimestamp", timestamp)
            self._rpc("evm_mine")
        if hold:
            self._rpc("anvil_setBlockTimestampInterval", 0)

    def release_clock(self) -> None:
        """Undo `set_next_timestamp(..., hold=True)`: anvil's blocks follow its clock again."""
        if self.tester is None:
            self._rpc("anvil_removeBlockTimestampInterval")

    def _rpc(self, method: str, *params: Any) -> Any:
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if reply.get("error"):
            raise ConfigError(f"the chain node refused {method}: {reply['error']} (anvil, or a "
                              "node with its test methods, is needed for this)")
        return reply.get("result")

    def set_clock_lag(self, lag_s: int) -> None:
        """From the next block on, blocks carry the wall-clock time less `lag_s` (an embedded chain
        made with `clock_lag_s` only)."""
        backend: Any = None if self.tester is None else self.tester.backend
        if not hasattr(backend, "clock_lag_s"):
            raise ConfigError("set_clock_lag needs an embedded chain made with clock_lag_s")
        backend.clock_lag_s = lag_s


def embedded(*, clock_lag_s: int | None = None) -> ChainNode:
    """A fresh in-process chain with ten funded accounts.

    With `clock_lag_s=None` blocks keep eth-tester's own clock: each block one second after its
    parent or the time the previous block was mined, so a burst of transactions runs the chain's
    clock ahead of the wall clock, one second per block. With an int the chain starts that many
    seconds in the past and every block carries the wall-clock time it is mined at less the lag
    (or one second after its parent, as timestamps must increase): a burst mined while the lag is
    large lands in the past, and after `set_clock_lag(0)` the chain's clock is the wall clock.
    """
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider, Web3

    backend = PyEVMBackend() if clock_lag_s is None else _wall_clock_backend(clock_lag_s)
    tester = EthereumTester(backend)
    w3 = Web3(EthereumTesterProvider(tester))
    keys = tuple(k.to_bytes() for k in tester.backend.account_keys)
    return ChainNode(w3=w3, funded_keys=keys, tester=tester)


def _wall_clock_backend(lag_s: int) -> Any:
    """eth-tester's py-evm backend, stamping each block when it is filled rather than when its
    parent was mined (py-evm fixes the pending header's time then: `new_timestamp_from_parent`)."""
    from eth_tester import PyEVMBackend

    class WallClockBackend(PyEVMBackend):  # type: ignore[misc]
        def __init__(self) -> None:
            self.clock_lag_s = lag_s
            genesis = int(time.time()) - lag_s
            super().__init__(PyEVMBackend.generate_genesis_params(overrides={"timestamp": genesis}))

        def _stamp(self) -> None:
            chain = self.chain
            if chain.get_block().transactions:
                return  # the pending block already ran transactions at its time
            parent = chain.get_canonical_head().timestamp
            now = int(time.time()) - self.clock_lag_s
            chain.header = chain.header.copy(timestamp=max(parent + 1, now))

        def send_raw_transaction(self, *args: Any, **kwargs: Any) -> Any:
            self._stamp()
            return super().send_raw_transaction(*args, **kwargs)

        def send_signed_transaction(self, *args: Any, **kwargs: Any) -> Any:
            self._stamp()
            return super().send_signed_transaction(*args, **kwargs)

        def send_transaction(self, *args: Any, **kwargs: Any) -> Any:
            self._stamp()
            return super().send_transaction(*args, **kwargs)

        def mine_blocks(self, num_blocks: int = 1, *args: Any) -> tuple[Any, ...]:
            hashes: tuple[Any, ...] = ()
            for _ in range(num_blocks):
                self._stamp()
                hashes += tuple(super().mine_blocks(1, *args))
            return hashes

        def time_travel(self, to_timestamp: int) -> int:
            # as eth-tester does (an empty block at to_timestamp - 1), without re-stamping it
            self.chain.header = self.chain.header.copy(timestamp=to_timestamp - 1)
            super().mine_blocks(1)
            return to_timestamp

    return WallClockBackend()


def connect(url: str, *, poa: bool = False, timeout_s: float = 10.0) -> ChainNode:
    """A JSON-RPC node. `poa` adds web3's ExtraDataToPOAMiddleware (QBFT/Clique chains)."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--rpc {url!r} must be an http:// or https:// JSON-RPC URL")
    from web3 import Web3
    from web3.middleware import ExtraDataToPOAMiddleware

    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
    if poa:
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return ChainNode(w3=w3, funded_keys=())


def fund(node: ChainNode, sender: Any, address: str, wei: int) -> None:
    """Send `wei` of gas money from `sender` (a TxSender) to `address`."""
    sender.send(to=address, data="0x", value=wei, purpose=f"fund {address}", gas=21_000)
