"""Chain connections: the embedded eth-tester chain (default) or any JSON-RPC node (`--rpc URL`).

web3 and py-evm are imported inside these functions only. The embedded chain runs py-evm's Prague
VM (eth-tester's default fork), which executes the committed `evmVersion: "prague"` bytecode as is.
"""

from __future__ import annotations

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

    def set_next_timestamp(self, timestamp: int) -> None:
        """Make the next block carry `timestamp` (or the earliest valid time after the last block)."""
        latest = self.latest_timestamp()
        if timestamp <= latest + 1:
            return  # the next block gets latest + 1 by itself
        if self.tester is not None:
            self.tester.time_travel(timestamp)  # mines an empty block at timestamp - 1
        else:  # anvil: mine an empty block at timestamp, as eth_estimateGas runs on the latest
            self.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]
            self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def embedded() -> ChainNode:
    """A fresh in-process chain with ten funded accounts."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider, Web3

    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    keys = tuple(k.to_bytes() for k in tester.backend.account_keys)
    return ChainNode(w3=w3, funded_keys=keys, tester=tester)


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
