"""The gateway's identity: its secp256k1 key, its Ethereum address, and signing 32-byte digests.

Pure: the key arrives as bytes; reading and writing key files is gateway/measurement/keyfile.py.

Signing uses coincurve (libsecp256k1) directly: ~60 us a signature, always low-s (libsecp256k1
normalises s, as EIP-2 requires), returned as r || s || v with v in {27, 28}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import coincurve

from gateway.measurement.eip712 import address_from_public_key

# The order n of secp256k1 (SEC 2, section 2.4.1).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True, slots=True, eq=False)
class GatewayKey:
    """A gateway's signing key. The private key never appears in repr or str."""

    address: str
    public_key: bytes  # 65-byte uncompressed
    _private: coincurve.PrivateKey = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> GatewayKey:
        if len(secret) != 32 or not 0 < int.from_bytes(secret, "big") < SECP256K1_N:
            raise ValueError("a secp256k1 private key is 32 bytes in 1..n-1")
        private = coincurve.PrivateKey(secret)
        public = private.public_key.format(compressed=False)
        return cls(address=address_from_public_key(public), public_key=public, _private=private)

    @classmethod
    def generate(cls) -> GatewayKey:
        return cls.from_secret(coincurve.PrivateKey().secret)

    def secret(self) -> bytes:
        """The raw private key (for writing the key file; never log it)."""
        return bytes(self._private.secret)

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a 32-byte digest: 65 bytes r || s || v, low-s, v in {27, 28}."""
        if len(digest) != 32:
            raise ValueError(f"a digest has 32 bytes, got {len(digest)}")
        rsv = self._private.sign_recoverable(digest, hasher=None)
        return rsv[:64] + bytes((rsv[64] + 27,))


def recover_address(digest: bytes, signature: bytes) -> str:
    """The checksum address that made `signature` (r || s || v) over `digest`.

    Raises ValueError for a malformed signature, high s (EIP-2) or a v other than 27/28.
    """
    if len(signature) != 65:
        raise ValueError(f"a signature has 65 bytes, got {len(signature)}")
    v = signature[64]
    if v not in (27, 28):
        raise ValueError(f"signature v must be 27 or 28, got {v}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < r < SECP256K1_N or not 0 < s <= SECP256K1_N // 2:
        raise ValueError("signature r or s out of range (high s is rejected, EIP-2)")
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes((v - 27,)), digest, hasher=None)
    except Exception as exc:  # libsecp256k1 reports a failed recovery as a bare Exception
        raise ValueError(f"signature does not recover a public key: {exc}") from exc
    return address_from_public_key(public.format(compressed=False))
