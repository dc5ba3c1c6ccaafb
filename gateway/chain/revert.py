"""Revert decoding: turn a node's revert data into the custom error's name and arguments.

Nodes report reverts differently (web3's ContractCustomError with hex data for JSON-RPC nodes,
eth-tester's TransactionFailed with a bytes literal in its message); `revert_data` reads both, and
`RevertDecoder` maps the 4-byte selector to a custom error of our contracts (or Error / Panic).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import RemoteError

ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)

# What to do about the errors a user can cause from the CLI.
HINTS: Mapping[str, str] = {
    "AccessControlUnauthorizedAccount": "use the operator's key (--key) for this command",
    "LockoutViolated": "announce a later start: at least the lockout after now",
    "RevealTooLong": "shorten --reveal-minutes or announce a later --start: the reveal phase "
                     "must end before the window starts",
    "RevealRunning": "wait until the window's reveal phase ends (revealEnd), then clear",
    "WindowInProgress": "clear, settle and check the current window first",
    "WrongWindowState": "run the phases in order: announce, clear, settle, check",
    "ReportGraceRunning": "wait until the window end plus the report grace",
    "UnknownAggregator": "register the aggregator first (drgw market register --aggregator)",
    "HouseholdExists": "this wallet is registered already; use another wallet",
    "NotHousehold": "register the household's wallet with the operator first",
    "ERC20InsufficientAllowance": "approve the market to move the tokens first",
    "ERC20InsufficientBalance": "fund the account with settlement tokens first",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedRevert:
    """A revert's error name and named arguments (empty name when undecodable)."""

    name: str
    args: Mapping[str, Any]
    data: bytes

    def __str__(self) -> str:
        if not self.name:
            return f"unknown revert data 0x{self.data.hex()}" if self.data else "no revert data"
        inner = ", ".join(f"{k}={_show(v)}" for k, v in self.args.items())
        return f"{self.name}({inner})"


class ChainRevert(RemoteError):
    """The contract refused a transaction; `revert.name` is the custom error's name."""

    def __init__(self, revert: DecodedRevert, *, action: str) -> None:
        hint = HINTS.get(revert.name)
        super().__init__(f"{action} reverted with {revert}" + (f": {hint}" if hint else ""))
        self.revert = revert
        self.action = action


class RevertDecoder:
    """Selector table built from the error entries of contract ABIs."""

    def __init__(self, error_abis: Iterable[Mapping[str, Any]]) -> None:
        from eth_utils.crypto import keccak

        table: dict[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
        for entry in error_abis:
            types = tuple(_abi_type(i) for i in entry["inputs"])
            names = tuple(i["name"] or f"arg{n}" for n, i in enumerate(entry["inputs"]))
            selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
            table[selector] = (entry["name"], names, types)
        table[ERROR_STRING] = ("Error", ("message",), ("string",))
        table[PANIC] = ("Panic", ("code",), ("uint256",))
        self._table = table

    def decode(self, data: bytes) -> DecodedRevert:
        from eth_abi.abi import decode

        known = self._table.get(bytes(data[:4]))
        if known is None:
            return DecodedRevert(name="", args={}, data=bytes(data))
        name, names, types = known
        try:
            values = decode(list(types), bytes(data[4:]))
        except Exception:  # malformed arguments: still name the error
            return DecodedRevert(name=name, args={}, data=bytes(data))
        from eth_utils.address import to_checksum_address

        shown = [to_checksum_address(v) if t == "address" else v
                 for t, v in zip(types, values, strict=True)]
        return DecodedRevert(name=name, args=dict(zip(names, shown, strict=True)),
                             data=bytes(data))


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert bytes carried by a web3 or eth-tester exception, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, dict) and isinstance(data.get("data"), str):
        return bytes.fromhex(data["data"].removeprefix("0x"))
    for arg in exc.args:
        if isinstance(arg, dict) and isinstance(arg.get("data"), str):
            return bytes.fromhex(arg["data"].removeprefix("0x"))
        if isinstance(arg, str) and arg.startswith("execution reverted: b"):
            value = ast.literal_eval(arg.removeprefix("execution reverted: "))
            return bytes(value) if isinstance(value, bytes) else None
        if isinstance(arg, bytes):
            return arg
    return None


def _abi_type(entry: Mapping[str, Any]) -> str:
    if entry["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in entry["components"])
        return f"({inner})" + str(entry["type"]).removeprefix("tuple")
    return str(entry["type"])


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)
