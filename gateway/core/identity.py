"""The gateway's identity: its secp256k1 key, its Ethereum address, and signing 32-byte digests.

A key lives in one of two file forms:
- a plain key file: the 32-byte private key as 64 hex digits (optionally 0x-prefixed), mode 0600;
- an eth-account keystore (Web3 Secret Storage v3 JSON, scrypt KDF), unlocked with a password.
Either way the file must not be readable by group or others; we refuse it and say how to fix it.

Signing uses coincurve (libsecp256k1) directly: ~60 us a signature, always low-s (libsecp256k1
normalises s, as EIP-2 requires), returned as r || s || v with v in {27, 28}.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import coincurve

from gateway.core.eip712 import address_from_public_key
from gateway.errors import ConfigError

# The order n of secp256k1 (SEC 2, section 2.4.1).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class KeyFileError(ConfigError):
    """A key, keystore or password file that can't be used: names the file and the fix."""


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


def check_private_file(path: Path, what: str = "key file") -> None:
    """Refuse a secret-bearing file that group or others can read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist; create one with `drgw keys new --out "
                           f"{path}`") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{what} {path} is accessible by group or others (mode "
                           f"{stat.S_IMODE(mode):04o}); fix with: chmod 600 {path}")


def load_key(path: str | os.PathLike[str], password: str | None = None) -> GatewayKey:
    """Read a plain key file or an eth-account keystore (then `password` is required)."""
    path = Path(path)
    check_private_file(path)
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if text.startswith("{"):
        return _load_keystore(path, text, password)
    digits = text[2:] if text[:2].lower() == "0x" else text
    try:
        secret = bytes.fromhex(digits)
        return GatewayKey.from_secret(secret)
    except ValueError:
        raise KeyFileError(f"{path} is not a key file: expected 64 hex digits (a secp256k1 private "
                           "key) or an eth-account keystore JSON; create one with "
                           "`drgw keys new`") from None


def _load_keystore(path: Path, text: str, password: str | None) -> GatewayKey:
    if password is None:
        raise KeyFileError(f"{path} is an encrypted keystore: give its password "
                           "(--password-file FILE)")
    try:
        keystore = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{path} is not valid keystore JSON: {exc}") from None
    from eth_account import Account  # the keystore is read once at start; keep the import out

    try:
        secret = bytes(Account.decrypt(keystore, password))
    except ValueError as exc:
        raise KeyFileError(f"cannot decrypt keystore {path}: {exc} (wrong password?)") from None
    except (KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an eth-account keystore (missing {exc})") from None
    return GatewayKey.from_secret(secret)


def read_password_file(path: str | os.PathLike[str]) -> str:
    """A keystore password from a file (one line; a trailing newline is dropped)."""
    path = Path(path)
    check_private_file(path, "password file")
    return path.read_text(encoding="utf-8").rstrip("\r\n")


def write_key(path: str | os.PathLike[str], key: GatewayKey, *, password: str | None = None) -> None:
    """Create a new key file (mode 0600) or, with a password, a scrypt keystore. Never overwrites."""
    path = Path(path)
    if password is None:
        body = key.secret().hex() + "\n"
    else:
        from eth_account import Account

        body = json.dumps(Account.encrypt(key.secret(), password, kdf="scrypt"))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; a gateway key is never overwritten: choose "
                           "another --out or move the old file away first") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
