"""Compiled contract artifacts (ABI + creation bytecode) shipped in gateway/chain/artifacts/.

They are produced by `node gateway/chain/contracts/compile.js` (solc-js, evmVersion "prague") and
committed, so a gateway never needs Node. Reading them needs neither web3 nor py-evm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import DrgwError

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
CONTRACT_NAMES = ("DRToken", "DRMarket")


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """One contract's ABI and creation bytecode (0x-hex)."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str
    compiler: str


def load_artifact(name: str, directory: Path = ARTIFACT_DIR) -> Artifact:
    path = directory / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DrgwError(
            f"{path} is missing; rebuild it with `npm ci --prefix gateway/chain/contracts && "
            "node gateway/chain/contracts/compile.js`"
        ) from exc
    return Artifact(name=name, abi=tuple(data["abi"]), bytecode=data["bytecode"],
                    compiler=data["compiler"])


def all_error_abis() -> tuple[dict[str, Any], ...]:
    """Every custom error declared in any artifact (for revert decoding)."""
    seen: dict[str, dict[str, Any]] = {}
    for name in CONTRACT_NAMES:
        for entry in load_artifact(name).abi:
            if entry.get("type") == "error":
                types = ",".join(i["type"] for i in entry["inputs"])
                seen[f"{entry['name']}({types})"] = entry
    return tuple(seen.values())
