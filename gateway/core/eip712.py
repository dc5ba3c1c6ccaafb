"""A small, fast EIP-712 encoder for fixed struct types, and keccak256.

The generic typed-data path of eth-account parses a JSON type description on every call (a few ms per
message); the hot path signs thousands of measurements a second, so the struct types are fixed in code
and each field is encoded by one of the functions below. The rules are those of EIP-712
("Definition of encodeData"): atomic values are padded to 32 bytes, `string` and `bytes` are
replaced by their keccak256, arrays by the keccak256 of their concatenated element encodings, and a
nested struct by its hashStruct. Tests cross-check every result against eth-account.

keccak256 comes from pycryptodome's `Crypto.Hash.keccak` (the backend eth-hash itself uses here): it is
about twice as fast called directly as through `eth_utils.keccak`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from Crypto.Hash import keccak as _keccak

ZERO32 = bytes(32)
_UINT_MAX = {bits: (1 << bits) - 1 for bits in range(8, 257, 8)}


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak256 (the original Keccak padding, not NIST SHA3-256)."""
    return _keccak.new(digest_bits=256, data=data).digest()


# A pure memo: device names, reading names and units repeat in every record, and hashing them again
# costs ~5 us each. The cache can never change a result, so it is not state in the sense that matters.
@lru_cache(maxsize=4096)
def hash_text(text: str) -> bytes:
    """encodeData of a `string` value: keccak256 of its UTF-8 bytes (EIP-712, "Definition of encodeData")."""
    return keccak256(text.encode("utf-8"))


def type_hash(encoded_type: str) -> bytes:
    """typeHash = keccak256(encodeType(T)); `encoded_type` is already in encodeType form."""
    return keccak256(encoded_type.encode("ascii"))


def enc_uint(value: int, bits: int = 256) -> bytes:
    """A uintN, big-endian, left-padded to 32 bytes. Raises ValueError when out of range."""
    if not 0 <= value <= _UINT_MAX[bits]:
        raise ValueError(f"{value} does not fit uint{bits}")
    return value.to_bytes(32, "big")


def enc_int(value: int, bits: int = 256) -> bytes:
    """An intN, two's complement, sign-extended to 32 bytes. Raises ValueError when out of range."""
    limit = 1 << (bits - 1)
    if not -limit <= value < limit:
        raise ValueError(f"{value} does not fit int{bits}")
    return value.to_bytes(32, "big", signed=True)


def enc_bool(value: bool) -> bytes:
    return enc_uint(1 if value else 0, 8)


def enc_address(address: bytes) -> bytes:
    """An address: 20 bytes left-padded with zeros to 32 (encoded as uint160)."""
    if len(address) != 20:
        raise ValueError(f"an address has 20 bytes, got {len(address)}")
    return b"\x00" * 12 + address


def enc_bytes32(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError(f"bytes32 needs 32 bytes, got {len(value)}")
    return value


def hash_struct(type_hash_: bytes, *encoded_fields: bytes) -> bytes:
    """hashStruct(s) = keccak256(typeHash || encodeData(s)), fields already encoded in order."""
    return keccak256(type_hash_ + b"".join(encoded_fields))


DOMAIN_TYPE_NO_CONTRACT = "EIP712Domain(string name,string version,uint256 chainId)"


@dataclass(frozen=True, slots=True)
class Domain:
    """An EIP-712 domain of (name, version, chainId) with its separator computed once.

    No verifyingContract: see docs/measurements.md for why measurements are not bound to a contract.
    """

    name: str
    version: str
    chain_id: int
    separator: bytes

    @classmethod
    def create(cls, *, name: str, version: str, chain_id: int) -> Domain:
        separator = hash_struct(
            type_hash(DOMAIN_TYPE_NO_CONTRACT),
            hash_text(name), hash_text(version), enc_uint(chain_id),
        )
        return cls(name=name, version=version, chain_id=chain_id, separator=separator)


def typed_digest(domain_separator: bytes, struct_hash: bytes) -> bytes:
    """keccak256("\\x19\\x01" || domainSeparator || hashStruct(message)) (EIP-712, "Specification")."""
    return keccak256(b"\x19\x01" + domain_separator + struct_hash)


def checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case checksum encoding of a 20-byte address."""
    hex_addr = address.hex()
    digest = keccak256(hex_addr.encode("ascii")).hex()
    return "0x" + "".join(
        ch.upper() if ch.isalpha() and int(digest[i], 16) >= 8 else ch
        for i, ch in enumerate(hex_addr)
    )


def address_from_public_key(uncompressed: bytes) -> str:
    """The checksum address of a 65-byte uncompressed secp256k1 public key (0x04 || X || Y)."""
    return checksum_address(keccak256(uncompressed[1:])[12:])
