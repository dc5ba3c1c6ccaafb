"""The `chain` topic's payload (docs/mqtt.md, "chain"): a gateway's signed Report or baseline
commitment, for a relayer (the master station) to send to the market.

JSON, so that any relayer can read it without our code: the EIP-712 message fields by their
Solidity names (docs/market.md, "Reports" and "Baseline commitments"), 32-byte hashes and the
65-byte signature as 0x hex, the domain's chain id and market address. `decode` recovers the
signer from the signature over the same typed data the contract hashes, so a relayer can refuse a
payload that its topic's gateway did not sign before it costs gas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.chain.report import (
    BASELINE_FIELDS,
    REPORT_FIELDS,
    Baseline,
    Report,
    SignedBaseline,
    SignedReport,
    report_digest,
)

VERSION = 1
KINDS = ("report", "baseline")


class RelayPayloadError(ValueError):
    """A chain payload that cannot be read; the message names the field and what was expected."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayMessage:
    """A decoded payload: `signed` carries the signer recovered from its signature."""

    kind: str  # "report" or "baseline"
    chain_id: int
    market: str
    signed: SignedReport | SignedBaseline

    @property
    def household(self) -> str:
        s = self.signed
        return s.report.household if isinstance(s, SignedReport) else s.baseline.household

    @property
    def window(self) -> int:
        s = self.signed
        return s.report.window if isinstance(s, SignedReport) else s.baseline.window


def encode(signed: SignedReport | SignedBaseline, *, chain_id: int, market: str) -> bytes:
    kind, message = (("report", signed.report.message()) if isinstance(signed, SignedReport)
                     else ("baseline", signed.baseline.message()))
    fields = {k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in message.items()}
    body = {"v": VERSION, "kind": kind, "chain_id": chain_id, "market": market,
            "fields": fields, "signature": "0x" + signed.signature.hex()}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode(payload: bytes) -> RelayMessage:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RelayPayloadError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise RelayPayloadError(f"'v' must be {VERSION} (a JSON object of docs/mqtt.md, chain)")
    kind = body.get("kind")
    if kind not in KINDS:
        raise RelayPayloadError(f"'kind' {kind!r} must be one of {', '.join(KINDS)}")
    chain_id, market = body.get("chain_id"), body.get("market")
    if not isinstance(chain_id, int) or not isinstance(market, str):
        raise RelayPayloadError("'chain_id' must be an integer and 'market' an address")
    fields = body.get("fields")
    if not isinstance(fields, dict):
        raise RelayPayloadError("'fields' must be an object of the EIP-712 message")
    signature = _hex(body.get("signature"), "signature", 65)
    spec = REPORT_FIELDS if kind == "report" else BASELINE_FIELDS
    values = [_field(fields, name, abi) for name, abi in spec]
    if set(fields) != {name for name, _ in spec}:
        extra = sorted(set(fields) - {name for name, _ in spec})
        raise RelayPayloadError(f"'fields' has unknown key(s) {extra}")
    message: Report | Baseline = (Report(**dict(zip(_REPORT_ATTRS, values, strict=True)))
                                  if kind == "report"
                                  else Baseline(**dict(zip(_BASELINE_ATTRS, values, strict=True))))
    signer = _recover(message, signature, chain_id=chain_id, market=market)
    signed: SignedReport | SignedBaseline = (
        SignedReport(report=message, signature=signature, signer=signer)
        if isinstance(message, Report)
        else SignedBaseline(baseline=message, signature=signature, signer=signer))
    return RelayMessage(kind=kind, chain_id=chain_id, market=market, signed=signed)


_REPORT_ATTRS = tuple(Report.__dataclass_fields__)
_BASELINE_ATTRS = tuple(Baseline.__dataclass_fields__)


def _field(fields: dict[str, Any], name: str, abi: str) -> Any:
    value = fields.get(name)
    if abi == "bytes32":
        return _hex(value, f"fields.{name}", 32)
    if abi == "address":
        if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
            raise RelayPayloadError(f"'fields.{name}' must be an address (0x + 40 hex digits)")
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise RelayPayloadError(f"'fields.{name}' must be an integer ({abi})")
    return value


def _hex(value: Any, name: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(value[2:]) if isinstance(value, str) and value.startswith("0x") else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise RelayPayloadError(f"'{name}' must be 0x and {2 * size} hex digits")
    return raw


def _recover(message: Report | Baseline, signature: bytes, *, chain_id: int, market: str) -> str:
    from eth_keys.datatypes import Signature

    try:
        digest = report_digest(message, chain_id=chain_id, market=market)
        # r || s || v with v = 27 or 28 (Ethereum's form; eth-keys takes the recovery id 0 or 1)
        v = signature[64] - 27 if signature[64] >= 27 else signature[64]
        sig = Signature(signature_bytes=signature[:64] + bytes([v]))
        return str(sig.recover_public_key_from_msg_hash(digest).to_checksum_address())
    except Exception as exc:  # eth-keys/eth-abi: a malformed signature or field value
        raise RelayPayloadError(f"the signature does not recover: {exc}") from None
