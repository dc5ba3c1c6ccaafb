"""The gateway's Report: an EIP-712 struct of what a household delivered in a DR window, and its signing.

Field order, names and types are exactly the contract's REPORT_TYPEHASH (DRMarket.sol); the domain is
("DRMarket", "1", chain id, market address). eth-account is imported only when signing or hashing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

REPORT_FIELDS: tuple[tuple[str, str], ...] = (
    ("household", "address"),
    ("window", "uint32"),
    ("seqFrom", "uint48"),
    ("seqTo", "uint48"),
    ("windowStart", "uint40"),
    ("windowEnd", "uint40"),
    ("baselineMethod", "uint16"),
    ("baselineInputHash", "bytes32"),
    ("baselineWh", "uint64"),
    ("actualWh", "uint64"),
    ("deliveredWh", "int64"),
    ("merkleRoot", "bytes32"),
)
DOMAIN_NAME = "DRMarket"
DOMAIN_VERSION = "1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What a gateway signs: the household's delivery in one window. Hashes are 32 raw bytes."""

    household: str
    window: int
    seq_from: int
    seq_to: int
    window_start: int
    window_end: int
    baseline_method: int
    baseline_input_hash: bytes
    baseline_wh: int
    actual_wh: int
    delivered_wh: int
    merkle_root: bytes

    def as_tuple(self) -> tuple[Any, ...]:
        """ABI tuple in struct order, for `submitReport(Report, bytes)`."""
        return tuple(asdict(self).values())

    def message(self) -> dict[str, Any]:
        return dict(zip((n for n, _ in REPORT_FIELDS), self.as_tuple(), strict=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedReport:
    """A Report with its 65-byte signature (r, s, v) by the household's gateway key."""

    report: Report
    signature: bytes
    signer: str


def typed_data(report: Report, *, chain_id: int, market: str) -> dict[str, Any]:
    """The full EIP-712 message (types, domain, message) for eth-account."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Report": [{"name": n, "type": t} for n, t in REPORT_FIELDS],
        },
        "primaryType": "Report",
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
                   "verifyingContract": market},
        "message": report.message(),
    }


def report_digest(report: Report, *, chain_id: int, market: str) -> bytes:
    """keccak256(0x1901 || domainSeparator || hashStruct(report)): the 32 bytes that get signed."""
    from eth_account.messages import encode_typed_data
    from eth_utils.crypto import keccak

    signable = encode_typed_data(full_message=typed_data(report, chain_id=chain_id, market=market))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_report(report: Report, *, key: bytes, chain_id: int, market: str) -> SignedReport:
    """Sign with the gateway's secp256k1 key (32 raw bytes)."""
    from eth_account import Account

    signed = Account.sign_typed_data(key, full_message=typed_data(
        report, chain_id=chain_id, market=market))
    signer = Account.from_key(key).address
    return SignedReport(report=report, signature=bytes(signed.signature), signer=signer)
