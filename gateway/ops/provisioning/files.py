"""Writes a gateway's first configuration so that it is either complete and valid or absent.

Makes the gateway key, the broker TLS key and its CSR; everything is built and parsed in memory
first, secrets are written before the config that names them, and the config itself lands with one
rename.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.errors import ConfigError, DrgwError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import KeyFileError, load_key, write_key
from gateway.ops.provisioning.answers import Setup
from gateway.ops.provisioning.config_text import render_config


def stamp(now: datetime) -> str:
    """A UTC timestamp usable in a file name on FAT boot partitions too (no ':')."""
    return now.strftime("%Y%m%dT%H%M%SZ")


def make_csr(gateway_id: str, tls_key_pem: bytes | None, *, where: str = "") -> tuple[bytes, bytes]:
    """(TLS private key PEM, CSR PEM): an EC P-256 key (new unless given) and a CSR whose subject
    CN is the gateway id, so the broker can tie the TLS session to the signing identity."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if tls_key_pem is None:
        key = ec.generate_private_key(ec.SECP256R1())
        tls_key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    else:
        try:
            loaded = serialization.load_pem_private_key(tls_key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"the existing TLS key {where} cannot be read ({exc}); move it away or "
                              "use --force") from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"the existing TLS key {where} is not an EC key; move it away or use "
                              "--force")
        key = loaded
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id.lower())]))
           .sign(key, hashes.SHA256()))
    return tls_key_pem, csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class Outcome:
    gateway_id: str
    written: tuple[tuple[Path, str], ...]  # (file, what it is), in the order written
    kept: tuple[tuple[Path, str], ...]  # files that existed and were used as they are
    moved: tuple[tuple[Path, Path], ...]  # (old file, where it was moved or copied) on --force


class _Writer:
    """Writes files in order and remembers them, so a failure can say what is left behind."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.written: list[tuple[Path, str]] = []
        self.moved: list[tuple[Path, Path]] = []

    def move_aside(self, path: Path, label: str) -> None:
        target = path.with_name(f"{path.name}.{label}-{stamp(self.now)}")
        os.replace(path, target)
        self.moved.append((path, target))

    def back_up(self, path: Path) -> None:
        target = path.with_name(f"{path.name}.bak-{stamp(self.now)}")
        shutil.copy2(path, target)
        self.moved.append((path, target))

    def atomic(self, path: Path, data: bytes, mode: int, what: str) -> None:
        write_atomic(path, data, mode)
        self.written.append((path, what))

    def left_behind(self) -> str:
        done = [f"{p} ({what})" for p, what in self.written]
        done += [f"{old} kept as {new}" for old, new in self.moved]
        return "; ".join(done) if done else "nothing"


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a temporary file beside `path` with `mode`, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed what os.open set
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def _existing_key(setup: Setup) -> GatewayKey | None:
    if not setup.key.exists():
        return None
    if setup.keep_key:
        try:
            return load_key(setup.key)
        except KeyFileError as exc:
            raise ConfigError(f"--keep-key: {exc}") from None
    if not setup.force:
        raise ConfigError(f"{setup.key} exists: a gateway key is never overwritten. Use it with "
                          "--keep-key, or replace it with --force (the old file is kept, renamed; "
                          "the gateway gets a new id)")
    return None


def _existing_tls_key(setup: Setup) -> bytes | None:
    if not (setup.mutual_tls and setup.tls_key.exists()):
        return None
    if setup.keep_key:
        return setup.tls_key.read_bytes()
    if not setup.force:
        raise ConfigError(f"{setup.tls_key} exists: use it with --keep-key, or replace it with "
                          "--force (the old file is kept, renamed)")
    return None


def prepare(setup: Setup) -> tuple[GatewayKey, bool, bytes | None, bytes | None, str]:
    """Everything in memory, checked, before a single file is touched:
    (gateway key, is it new, TLS key PEM, CSR PEM, config text)."""
    if setup.config.exists() and not setup.force:
        raise ConfigError(f"{setup.config} exists; it is not replaced unless you give --force "
                          "(the old one is then kept as a .bak file)")
    key = _existing_key(setup)
    new_key = key is None
    key = key or GatewayKey.generate()
    tls_key = csr = None
    if setup.mutual_tls:
        tls_key, csr = make_csr(key.address, _existing_tls_key(setup), where=str(setup.tls_key))
    text = render_config(setup, gateway_id=key.address.lower())
    from gateway.config.gateway import parse_config

    parse_config(text, path=setup.config)
    return key, new_key, tls_key, csr, text


def apply(setup: Setup, *, now: datetime) -> Outcome:
    """Write keys, TLS files and the config. Raises ConfigError naming what was left behind."""
    key, new_key, tls_key, csr, text = prepare(setup)
    writer = _Writer(now)
    kept: list[tuple[Path, str]] = []
    try:
        setup.config.parent.mkdir(parents=True, exist_ok=True)
        setup.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        setup.key.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if setup.tls and setup.ca_pem is not None:
            writer.atomic(setup.ca, setup.ca_pem, 0o644, "broker CA certificate")
        if new_key:
            if setup.key.exists():
                writer.move_aside(setup.key, "replaced")
            write_key(setup.key, key)
            writer.written.append((setup.key, f"new gateway key, id {key.address.lower()}"))
        else:
            kept.append((setup.key, f"gateway key, id {key.address.lower()}"))
        if tls_key is not None and csr is not None:
            if setup.tls_key.exists() and not setup.keep_key:
                writer.move_aside(setup.tls_key, "replaced")
            if setup.tls_key.exists():
                kept.append((setup.tls_key, "TLS client key"))
            else:
                writer.atomic(setup.tls_key, tls_key, 0o600, "TLS client key")
            writer.atomic(setup.csr, csr, 0o644, "certificate signing request")
        if setup.config.exists():
            writer.back_up(setup.config)  # a copy: the old config stays in place until the rename
        writer.atomic(setup.config, text.encode(), 0o640, "config")
    except (OSError, DrgwError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        raise ConfigError(f"writing the gateway setup failed: {reason}{where}; no config was written."
                          f" Left behind: {writer.left_behind()}") from exc
    return Outcome(gateway_id=key.address.lower(), written=tuple(writer.written), kept=tuple(kept),
                   moved=tuple(writer.moved))
