"""A small, fast EIP-712 encoder for fixed struct types, and keccak256.

The generic typed-data path of eth-account parses a JSON type description on every call (a few ms per
message); the hot path signs thousands of measurements a second, so the struct types are fixed in code
and each field is encoded by one of the functions below. The rules are those of EIP-712
("Definition of encodeData"): atomic values are padded to 32 bytes, `string` and `bytes` are
replaced by their keccak256, arrays by the keccak256 of their concatenated element encodings, and a
nested struct by its hashStruct. Tests cross-check every result against eth-account.

keccak256 is, in order of preference (the first that loads and hashes b"" right):
  1. safe-pysha3's C `keccak_256` (eth-hash's other backend; wheels for x86_64 and aarch64): ~1.2 us for
     a 160-byte Reading encoding, one call into C;
  2. pycryptodome's C Keccak called through its raw cffi functions on a reusable per-thread state: ~2.3 us
     (three cffi calls and a copy);
  3. `Crypto.Hash.keccak.new(...).digest()`: ~6-8 us.
A record of 21 readings takes 24 hashes, so the wrapper's cost is a large part of signing it
(bench/sign_store.py prints the backend in use). `KECCAK_BACKEND` names the one loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from Crypto.Hash import keccak as _keccak

ZERO32 = bytes(32)
_UINT_MAX = {bits: (1 << bits) - 1 for bits in range(8, 257, 8)}
# Keccak-256: capacity 2 x 256 bits = 64 bytes, 24 rounds of Keccak-f[1600], and the original
# multi-rate padding byte 0x01 (FIPS 202's SHA3-256 pads with 0x06 instead: hashlib.sha3_256 is not it).
_CAPACITY_BYTES, _ROUNDS, _KECCAK_PAD = 64, 24, 0x01


def _public_keccak256(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


class _RawKeccak(threading.local):
    """One Keccak state per thread, reset for every hash (init/destroy cost more than the hash)."""

    def __init__(self, lib: Any, ffi: Any) -> None:
        handle = ffi.new("void **")
        if lib.keccak_init(handle, _CAPACITY_BYTES, _ROUNDS):
            raise OSError("keccak_init failed")
        out = ffi.new("uint8_t[32]")
        # One attribute: every lookup on a threading.local costs ~60 ns, and this runs 24x a record.
        self.parts = (ffi.gc(handle[0], lib.keccak_destroy), out, ffi.buffer(out))


def _raw_keccak256() -> Callable[[bytes], bytes] | None:
    """keccak256 on pycryptodome's raw C functions, or None when they are not reachable (their
    loader is private API: another pycryptodome, or its ctypes backend, falls back to the public one)."""
    try:
        from Crypto.Util import _raw_api

        lib, ffi = _keccak._raw_keccak_lib, _raw_api.ffi  # type: ignore[attr-defined]
        scratch = _RawKeccak(lib, ffi)
    except (ImportError, AttributeError, OSError):
        return None
    reset, absorb, digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest

    def keccak256(data: bytes) -> bytes:
        """Ethereum's keccak256 (the original Keccak padding, not NIST SHA3-256)."""
        state, out, view = scratch.parts
        if reset(state) or absorb(state, data, len(data)) or digest(state, out, 32, _KECCAK_PAD):
            raise OSError("pycryptodome's keccak failed")  # non-zero: its error codes
        return view[:]  # type: ignore[no-any-return]

    if keccak256(b"") != _public_keccak256(b""):  # never trust a private API blindly
        return None
    return keccak256


def _pysha3_keccak256() -> Callable[[bytes], bytes] | None:
    """safe-pysha3's keccak_256 (one C call per hash), or None when it is not installed (armv7 has no
    wheel; pycryptodome is then the backend)."""
    try:
        from _pysha3 import keccak_256  # the C module behind safe-pysha3's `sha3`, which patches hashlib
    except ImportError:
        return None

    def keccak256(data: bytes) -> bytes:
        """Ethereum's keccak256 (the original Keccak padding, not NIST SHA3-256)."""
        return keccak_256(data).digest()  # type: ignore[no-any-return]

    return keccak256 if keccak256(b"") == _public_keccak256(b"") else None


class _Hashed:
    """A finished hash with hashlib's `.digest()`: what keccak_new returns on the pycryptodome paths."""

    __slots__ = ("_digest",)

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    def digest(self) -> bytes:
        return self._digest


def _pick_keccak256() -> tuple[str, Callable[[bytes], bytes], Callable[[bytes], Any]]:
    fast = _pysha3_keccak256()
    if fast is not None:
        from _pysha3 import keccak_256

        return "safe-pysha3", fast, keccak_256
    raw = _raw_keccak256()
    if raw is not None:
        return "pycryptodome-raw", raw, lambda data: _Hashed(raw(data))
    return "pycryptodome", _public_keccak256, lambda data: _Hashed(_public_keccak256(data))


# keccak_new(data).digest() == keccak256(data): for loops that hash many short inputs, where the
# wrapper's Python frame (~0.15 us) is worth saving; with safe-pysha3 it is the C constructor itself.
KECCAK_BACKEND, keccak256, keccak_new = _pick_keccak256()


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


def address_bytes(address: str) -> bytes:
    """The 20 bytes of a "0x" + 40 hex digits address (any case; the checksum is not checked)."""
    if len(address) != 42 or address[:2] != "0x":
        raise ValueError(f"address {address!r} is not 0x + 40 hex digits")
    return bytes.fromhex(address[2:])


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
