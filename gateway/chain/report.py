"""The gateway's EIP-712 messages to the market: the Report of what a household delivered in a DR
window, and the Baseline it commits before the window; and their signing.

Field order, names and types are exactly the contract's REPORT_TYPEHASH and BASELINE_TYPEHASH
(DRMarket.sol); both share the domain ("DRMarket", "1", chain id, market address). Energies are
signed Wh (int64): a household exporting during a window reports a negative actual energy.
eth-account is imported only when signing or hashing.
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
    ("baselineWh", "int64"),
    ("actualWh", "int64"),
    ("deliveredWh", "int64"),
    ("merkleRoot", "bytes32"),
)
BASELINE_FIELDS: tuple[tuple[str, str], ...] = (
    ("household", "address"),
    ("window", "uint32"),
    ("method", "uint16"),
    ("inputHash", "bytes32"),
    ("baselineWh", "int64"),
)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    """What a gateway commits before a window (DRMarket.commitBaseline): the baseline method id,
    the hash of its inputs and the baseline's energy over the window in signed Wh. The window's
    Report must carry the same three values."""

    household: str
    window: int
    method: int
    input_hash: bytes
    baseline_wh: int

    def as_tuple(self) -> tuple[Any, ...]:
        """ABI tuple in struct order, for `commitBaseline(Baseline, bytes)`."""
        return tuple(asdict(self).values())

    def message(self) -> dict[str, Any]:
        return dict(zip((n for n, _ in BASELINE_FIELDS), self.as_tuple(), strict=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedBaseline:
    """A Baseline with its 65-byte signature by the household's gateway key."""

    baseline: Baseline
    signature: bytes
    signer: str


def typed_data(report: Report | Baseline, *, chain_id: int, market: str) -> dict[str, Any]:
    """The full EIP-712 message (types, domain, message) for eth-account."""
    primary, fields = (("Report", REPORT_FIELDS) if isinstance(report, Report)
                       else ("Baseline", BASELINE_FIELDS))
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary: [{"name": n, "type": t} for n, t in fields],
        },
        "primaryType": primary,
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
                   "verifyingContract": market},
        "message": report.message(),
    }


def report_digest(report: Report | Baseline, *, chain_id: int, market: str) -> bytes:
    """keccak256(0x1901 || domainSeparator || hashStruct(message)): the 32 bytes that get signed
    (of a Report or of a Baseline: `baseline_digest` is the same function under its own name)."""
    from eth_account.messages import encode_typed_data
    from eth_utils.crypto import keccak

    signable = encode_typed_data(full_message=typed_data(report, chain_id=chain_id, market=market))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


baseline_digest = report_digest


def sign_report(report: Report, *, key: bytes, chain_id: int, market: str) -> SignedReport:
    """Sign with the gateway's secp256k1 key (32 raw bytes)."""
    from eth_account import Account

    signed = Account.sign_typed_data(key, full_message=typed_data(
        report, chain_id=chain_id, market=market))
    signer = Account.from_key(key).address
    return SignedReport(report=report, signature=bytes(signed.signature), signer=signer)


def sign_baseline(baseline: Baseline, *, key: bytes, chain_id: int, market: str) -> SignedBaseline:
    """Sign a baseline commitment with the gateway's key (the Report's signer, the same domain)."""
    from eth_account import Account

    if not INT64_MIN <= baseline.baseline_wh <= INT64_MAX:
        raise ValueError(f"baseline_wh {baseline.baseline_wh} does not fit the contract's int64")
    signed = Account.sign_typed_data(key, full_message=typed_data(
        baseline, chain_id=chain_id, market=market))
    signer = Account.from_key(key).address
    return SignedBaseline(baseline=baseline, signature=bytes(signed.signature), signer=signer)
