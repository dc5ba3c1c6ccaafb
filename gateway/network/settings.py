"""Broker connection settings: the broker URL form, TLS / mutual-TLS files, the MQTT login, the SSL context.

A broker URL may carry the login, `mqtt://user:pass@host:port` (RFC 3986 userinfo, percent-encoded:
a `@` in the password is `%40`). `split_login` takes it out, so the URL that is logged, shown in errors
or announced never holds the password; `redact` hides it in a URL that is not split yet.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.network.errors import LinkConfigError


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def redact(url: str) -> str:
    """`url` with the password of its userinfo replaced by `***` (for messages and logs)."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def split_login(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without its userinfo, the user name, the password), both percent-decoded; None
    when the URL has none. `mqtt://gw-17:s%40cret@host:1883` -> (`mqtt://host:1883`, `gw-17`, `s@cret`)."""
    scheme, sep, rest = url.strip().partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url.strip(), None, None
    user, colon, password = userinfo.partition(":")
    if not user:
        raise LinkConfigError(f"broker URL {redact(url)!r}: the login has no user name; write "
                              "mqtt://user:password@host:port or leave the login out")
    return f"{scheme}://{host}", unquote(user), unquote(password) if colon else None


def parse_broker_url(url: str) -> BrokerAddress:
    """mqtt://host[:1883] or mqtts://host[:8883] (a login in it is ignored here: `split_login`);
    anything else is a LinkConfigError with the fix."""
    url = redact(url)
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
            raise LinkConfigError("mutual TLS needs both [mqtt] cert and key (or neither)")
        for label, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            if path is not None and not Path(path).is_file():
                raise LinkConfigError(f"[mqtt] {label} = {str(path)!r}: no such file")
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
    """Everything MqttLink needs to reach the broker. The password never shows in a repr."""

    broker: BrokerAddress
    client_id: str
    tls: TlsSettings = TlsSettings()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive_s: int = 30
    timeout_s: float = 10.0

    @classmethod
    def from_url(cls, url: str, *, client_id: str, ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None,
                 keepalive_s: int = 30, username: str | None = None,
                 password: str | None = None) -> LinkSettings:
        """The login comes from the URL or from `username`/`password` ([mqtt] username, password,
        password_file; `drgw fleet --username --password-file`), not both."""
        bare, url_user, url_password = split_login(url)
        address = parse_broker_url(bare)
        if not address.tls and (ca or cert or key):
            raise LinkConfigError(
                f"broker URL {bare!r} is plain mqtt:// but TLS files are set: use mqtts://")
        if url_user is not None and (username is not None or password is not None):
            raise LinkConfigError(
                f"broker URL {redact(url)!r} carries a login and the username/password settings "
                "give one too: keep one of them")
        if url_user is not None:
            username, password = url_user, url_password
        if password is not None and username is None:
            # MQTT 3.1.1, 3.1.2.9: a password flag without the user name flag is a protocol error.
            raise LinkConfigError("an MQTT password needs a user name: set [mqtt] username "
                                  "(or write mqtt://user:password@host:port)")
        return cls(broker=address, client_id=client_id, tls=TlsSettings(ca, cert, key),
                   keepalive_s=keepalive_s, username=username, password=password)
