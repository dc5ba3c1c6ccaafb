"""A gateway's first configuration, shared by `drgw init` and `drgw provision`.

Checks the installer's answers, renders drgw.toml (docs/config.md), makes the broker TLS key and its
CSR, and writes it all so that a config is either complete and valid or absent: everything is built
and parsed in memory first, secrets are written before the config that names them, and the config
itself lands with one rename.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, DrgwError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import KeyFileError, load_key, write_key
from gateway.schema import Fields

DEFAULT_CONFIG = Path("/etc/drgw/drgw.toml")
DEFAULT_STATE_DIR = Path("/var/lib/drgw")
# The line that ties a config to the provisioning bundle it came from (idempotent re-runs).
BUNDLE_MARK = "# drgw-provision-bundle: sha256:"

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def stamp(now: datetime) -> str:
    """A UTC timestamp usable in a file name on FAT boot partitions too (no ':')."""
    return now.strftime("%Y%m%dT%H%M%SZ")


# ---------------------------------------------------------------------------------------------
# Checks of single answers. `where` names the flag, prompt or bundle key the value came from.


def check_broker(url: str, *, where: str) -> str:
    from gateway.network.settings import parse_broker_url

    try:
        parse_broker_url(url)
    except DrgwError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return url.strip()


def check_address(value: str, *, where: str) -> str:
    value = value.strip()
    if not _ADDRESS.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not an Ethereum address: write 0x and 40 hex digits")
    return value


def check_rpc(url: str, *, where: str) -> str:
    url = url.strip()
    if not url.startswith(("http://", "https://", "ws://", "wss://")):
        raise ConfigError(f"{where}: {url!r}: write the node's JSON-RPC URL, e.g. "
                          "https://rpc.dr-chain.example:8545")
    return url


def reject_private_key(text: str, *, where: str) -> None:
    """Private keys never travel to a gateway: it makes its own. PEM headers of every kind
    (RFC 7468 section 10/11: PRIVATE KEY, ENCRYPTED PRIVATE KEY; and EC/RSA PRIVATE KEY of OpenSSL)."""
    if "PRIVATE KEY-----" in text:
        raise ConfigError(f"{where}: holds a PEM private key; a gateway generates its own keys, so "
                          "none may be shipped to it: remove the key (and treat it as exposed)")


def check_ca(pem: bytes, *, where: str) -> bytes:
    """One or more PEM certificates (the CA that signed the broker's certificate)."""
    from cryptography import x509

    text = pem.decode("ascii", errors="replace")
    reject_private_key(text, where=where)
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"{where}: not a PEM certificate ({exc}); give the CA certificate of the "
                          "broker, the text between -----BEGIN CERTIFICATE----- and -----END "
                          "CERTIFICATE-----") from None
    if not certs:
        raise ConfigError(f"{where}: no certificate found")
    return pem if pem.endswith(b"\n") else pem + b"\n"


# ---------------------------------------------------------------------------------------------
# The devices part of a config: a draft as `drgw scan` prints it ([[bus]] and [[device]]).


@dataclass(frozen=True, slots=True)
class DevicesDraft:
    buses: tuple[Mapping[str, Any], ...]
    devices: tuple[Mapping[str, Any], ...]

    @property
    def names(self) -> list[str]:
        return [str(d.get("name")) for d in self.devices]

    def with_main(self, name: str, *, where: str) -> DevicesDraft:
        """Mark device `name` as the household's main meter (the DR loop watches it)."""
        if name not in self.names:
            raise ConfigError(f"{where}: no device is named {name!r}; use one of "
                              f"{', '.join(self.names) or '(none)'}")
        devices = tuple({**d, "role": "main"} if d.get("name") == name
                        else {k: v for k, v in d.items() if not (k == "role" and v == "main")}
                        for d in self.devices)
        return replace(self, devices=devices)


def parse_draft(text: str, *, where: str) -> DevicesDraft:
    """A draft as `drgw scan` prints it, or the whole `drgw scan --json` output."""
    if text.lstrip().startswith("{"):
        try:
            text = str(json.loads(text)["config"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{where}: neither a TOML draft nor `drgw scan --json` output") from None
    if re.search(r"^profile = UNKNOWN", text, re.MULTILINE):
        raise ConfigError(f"{where}: a device answered but no profile matched it (profile = UNKNOWN):"
                          " set its profile from `drgw profiles list`, or delete that [[device]]")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}; give the [[bus]]/[[device]] draft that "
                          "`drgw scan` prints (without its 'unit N: ...' lines) or its --json "
                          "output") from None
    top = Fields(data, where=where)
    buses, devices = top.list("bus"), top.list("device")
    top.reject_unknown()
    if not devices:
        raise ConfigError(f"{where}: the draft has no [[device]]; scan a bus with `drgw scan`")
    from gateway.config.gateway import parse_devices

    # The draft alone must be a valid devices section: then its errors name the draft, not the
    # config that is not written yet.
    parse_devices(Fields({"bus": buses, "device": devices}, where=where))
    return DevicesDraft(buses=tuple(buses), devices=tuple(devices))


# ---------------------------------------------------------------------------------------------
# TOML text (only what a config holds: tables of strings, numbers, booleans and lists of them).


def toml_str(value: str) -> str:
    """A TOML basic string (TOML 1.0 "String": quote, backslash and control characters escaped)."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise ConfigError(f"{where}: a {type(value).__name__} value cannot go into the config")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_str(key)


def _table(header: str, table: Mapping[str, Any], where: str) -> list[str]:
    lines = [header]
    subs = {k: v for k, v in table.items() if isinstance(v, dict)}
    lines += [f"{_key(k)} = {_value(v, f'{where}: {k}')}" for k, v in table.items() if k not in subs]
    name = header.strip("[]")
    for key, sub in subs.items():
        lines += _table(f"[{name}.{_key(key)}]", sub, f"{where}: {key}")
    return lines


# ---------------------------------------------------------------------------------------------
# What to write, and writing it.


@dataclass(frozen=True, slots=True)
class ChainAnswers:
    rpc: str
    market: str
    household: str
    poa: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """Everything a first config is made of; paths are absolute."""

    config: Path
    state_dir: Path
    key: Path
    broker: str
    ca_pem: bytes | None  # copied to ca.pem beside the config; None = the system's CA store
    client_cert: bool  # mutual TLS: make a TLS key + CSR (only with mqtts://)
    operators: tuple[str, ...]
    chain: ChainAnswers | None
    devices: DevicesDraft
    chain_id: int | None
    keep_key: bool  # use an existing gateway key (and TLS key) instead of making new ones
    force: bool  # replace an existing config and keys (the old files are kept, renamed)
    origin: str  # who wrote the config, for its header
    bundle_hash: str | None = None

    @property
    def tls(self) -> bool:
        return self.broker.startswith("mqtts://")

    @property
    def mutual_tls(self) -> bool:
        return self.tls and self.client_cert

    # Secrets live in the state directory, which only the service user can read (systemd's
    # StateDirectory= hands it to User=); public files (CA, CSR, certificate) beside the config.
    @property
    def tls_key(self) -> Path:
        return self.state_dir / "tls.key"

    @property
    def csr(self) -> Path:
        return self.config.parent / "gateway.csr"

    @property
    def cert(self) -> Path:
        return self.config.parent / "gateway.crt"

    @property
    def ca(self) -> Path:
        return self.config.parent / "ca.pem"


def render_config(setup: Setup, *, gateway_id: str) -> str:
    where = str(setup.config)
    lines = [f"# drgw gateway config (docs/config.md), written by {setup.origin}.",
             f"# gateway id {gateway_id}"]
    if setup.bundle_hash:
        lines.append(BUNDLE_MARK + setup.bundle_hash)
    lines += ["", "[gateway]", f"key = {toml_str(str(setup.key))}"]
    if setup.chain_id is not None:
        lines.append(f"chain_id = {setup.chain_id}")
    lines += ["", "[mqtt]", f"broker = {toml_str(setup.broker)}"]
    if setup.tls and setup.ca_pem is not None:
        lines.append(f"ca = {toml_str(str(setup.ca))}")
    if setup.mutual_tls:
        lines += [f"cert = {toml_str(str(setup.cert))}  # signed from gateway.csr by the aggregator",
                  f"key = {toml_str(str(setup.tls_key))}"]
    lines += ["", "[store]", f"path = {toml_str(str(setup.state_dir / 'drgw.db'))}",
              "", "[operators]", f"allow = {_value(list(setup.operators), where)}"]
    if setup.chain is not None:
        c = setup.chain
        lines += ["", "[chain]", f"rpc = {toml_str(c.rpc)}", f"market = {toml_str(c.market)}",
                  f"household = {toml_str(c.household)}", f"poa = {_value(c.poa, where)}"]
    for i, bus in enumerate(setup.devices.buses):
        lines += ["", *_table("[[bus]]", bus, f"{where}: bus[{i}]")]
    for i, device in enumerate(setup.devices.devices):
        lines += ["", *_table("[[device]]", device, f"{where}: device[{i}]")]
    return "\n".join(lines) + "\n"


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
