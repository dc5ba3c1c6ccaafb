"""Broker connection settings: the broker URL form, TLS / mutual-TLS files, and the SSL context."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.network.errors import LinkConfigError


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """mqtt://host[:1883] or mqtts://host[:8883]; anything else is a LinkConfigError with the fix."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise LinkConfigError(
            f"broker URL {url!r} is not valid: write mqtt://host:port or mqtts://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise LinkConfigError(f"broker URL {url!r}: drop the path/query; only host and port")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise LinkConfigError(f"broker URL {url!r}: the port must be 1-65535") from None
    return BrokerAddress(parts.hostname, port, tls)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """CA bundle to verify the broker, and an optional client cert+key for mutual TLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        """An SSL context that verifies the broker (CA file or system store), with our cert if set."""
        if (self.cert is None) != (self.key is None):
            raise LinkConfigError("mutual TLS needs both [broker] cert and key (or neither)")
        for label, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            if path is not None and not Path(path).is_file():
                raise LinkConfigError(f"[broker] {label} = {str(path)!r}: no such file")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.ca is not None:
                ctx.load_verify_locations(cafile=str(self.ca))
            if self.cert is not None and self.key is not None:
                ctx.load_cert_chain(certfile=str(self.cert), keyfile=str(self.key))
        except (ssl.SSLError, OSError) as exc:
            raise LinkConfigError(
                f"cannot load TLS files (ca={self.ca}, cert={self.cert}, key={self.key}): {exc}; "
                "they must be PEM and the key must match the certificate") from None
        return ctx


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Everything MqttLink needs to reach the broker."""

    broker: BrokerAddress
    client_id: str
    tls: TlsSettings = TlsSettings()
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    timeout_s: float = 10.0

    @classmethod
    def from_url(cls, url: str, *, client_id: str, ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None,
                 keepalive_s: int = 30) -> LinkSettings:
        address = parse_broker_url(url)
        if not address.tls and (ca or cert or key):
            raise LinkConfigError(
                f"broker URL {url!r} is plain mqtt:// but TLS files are set: use mqtts://")
        return cls(broker=address, client_id=client_id, tls=TlsSettings(ca, cert, key),
                   keepalive_s=keepalive_s)
