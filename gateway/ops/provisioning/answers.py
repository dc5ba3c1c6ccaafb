"""The installer's answers for a gateway's first configuration, each checked where it is given.

`where` names the flag, prompt or bundle key a value came from, so an error points at it. The
answers together make a `Setup`: everything a first config is made of.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, DrgwError
from gateway.schema import Fields

DEFAULT_CONFIG = Path("/etc/drgw/drgw.toml")
DEFAULT_STATE_DIR = Path("/var/lib/drgw")

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


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
# All the answers together.


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
