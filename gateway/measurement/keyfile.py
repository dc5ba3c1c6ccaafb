"""Key files on disk: the gateway key (plain hex or an eth-account keystore), passwords, operator keys.

A key lives in one of two file forms:
- a plain key file: the 32-byte private key as 64 hex digits (optionally 0x-prefixed), mode 0600;
- an eth-account keystore (Web3 Secret Storage v3 JSON, scrypt KDF), unlocked with a password.
Either way the file must not be readable by group or others; we refuse it and say how to fix it.
The key itself (signing, the address) is gateway/measurement/identity.py, which does no I/O.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from gateway.errors import ConfigError
from gateway.measurement.identity import GatewayKey


class KeyFileError(ConfigError):
    """A key, keystore or password file that can't be used: names the file and the fix."""


def check_private_file(path: Path, what: str = "key file") -> None:
    """Refuse a secret-bearing file that group or others can read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        fix = (f"create one with `drgw keys new --out {path}`" if what == "key file" else
               f"write the password in it (one line) and run: chmod 600 {path}")
        raise KeyFileError(f"{what} {path} does not exist; {fix}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{what} {path} is accessible by group or others (mode "
                           f"{stat.S_IMODE(mode):04o}); fix with: chmod 600 {path}")


def create_private(path: str | os.PathLike[str]) -> None:
    """Create `path` empty with mode 0600, whatever the umask, unless it exists (an existing file
    keeps its mode). For SQLite files: SQLite creates a database 0644 & ~umask, and gives its -wal,
    -shm and -journal files the database file's mode (os_unix.c, findCreateFileMode), so a database
    created here stays its owner's alone. A path that cannot be created is left to the caller's own
    open, which reports it in its words."""
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    with contextlib.suppress(OSError):  # exists already, or cannot be: the caller's open says which
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


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


def read_key(path: str | Path) -> bytes:
    """A secp256k1 private key as 64 hex digits (0x optional) in a file only its owner can read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="ascii").strip()
    except FileNotFoundError as exc:
        raise ConfigError(f"--key {p}: no such file; write the 64-hex-digit key there") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--key {p}: cannot read it ({exc})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"--key {p} is readable by others; run `chmod 600 {p}`")
    hex_key = text.removeprefix("0x")
    try:
        key = bytes.fromhex(hex_key)
    except ValueError as exc:
        raise ConfigError(f"--key {p}: not hex; the file must hold 64 hex digits") from exc
    if len(key) != 32:
        raise ConfigError(f"--key {p}: {len(key)} bytes; a private key is 32 bytes (64 hex digits)")
    return key
