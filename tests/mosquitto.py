"""Test fixture: a real mosquitto broker on a free loopback port, plain or mutual TLS.

Not a conftest: tests/conftest.py imports `Broker`, `TlsFiles` and `broker_fixture` from here. The
broker listens on 127.0.0.1 only; tests never reach a public broker. `restart()` comes back on the
SAME port, so clients with a reconnect loop find it again (the outage tests rely on that).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.network.localbroker import MOSQUITTO_FIX, Broker, find_mosquitto, free_port

__all__ = ["MOSQUITTO_FIX", "Broker", "TlsFiles", "broker_fixture", "find_mosquitto", "free_port",
           "make_password_file", "make_tls_files"]


def make_password_file(path: Path, logins: dict[str, str]) -> Path:
    """A mosquitto password file for `Broker(password_file=...)`, hashed by mosquitto's own
    mosquitto_passwd(1) (in the mosquitto package)."""
    import shutil
    import subprocess

    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise RuntimeError(MOSQUITTO_FIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    path.chmod(0o600)
    for user, password in logins.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
    return path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A throwaway CA plus server and client certificates (PEM files) for mutual-TLS tests."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate a CA, a server cert for 127.0.0.1/localhost and a client cert, all signed by the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("drgw test CA")).issuer_name(name("drgw test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None
             ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, [
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key, client_cert = leaf("drgw-test-client", ExtendedKeyUsageOID.CLIENT_AUTH, None)

    files = TlsFiles(
        ca=directory / "ca.pem", server_cert=directory / "server.pem",
        server_key=directory / "server.key", client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    files.client_cert.write_bytes(client_cert.public_bytes(pem))
    write_key(server_key, files.server_key)
    write_key(client_key, files.client_key)
    return files


def broker_fixture(*, tls: bool = False, persistence: bool = False
                   ) -> Callable[[Path], Iterator[Broker]]:
    """Factory of a pytest fixture body; wrap it with `pytest.fixture` (name it as you like).

    Example in conftest.py:  `mqtt_broker = pytest.fixture(broker_fixture())`
    """

    def fixture(tmp_path: Path) -> Iterator[Broker]:
        tls_files = make_tls_files(tmp_path / "tls") if tls else None
        with Broker(tmp_path / "mosquitto", tls=tls_files, persistence=persistence) as broker:
            yield broker

    return fixture

