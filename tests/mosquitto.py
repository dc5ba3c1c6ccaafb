"""Test fixture: a real mosquitto broker on a free loopback port, plain or mutual TLS.

Not a conftest: tests/conftest.py imports `Broker`, `TlsFiles` and `broker_fixture` from here. The
broker listens on 127.0.0.1 only; tests never reach a public broker. `restart()` comes back on the
SAME port, so clients with a reconnect loop find it again (the outage tests rely on that).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO_FIX = (
    "mosquitto is not installed: run `apt-get install -y mosquitto` "
    "(or scripts/setup, which installs it) and run the tests again"
)


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or a RuntimeError that says how to install it."""
    for candidate in ("/usr/sbin/mosquitto", shutil.which("mosquitto")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(MOSQUITTO_FIX)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class Broker:
    """One mosquitto process on 127.0.0.1:<port>; start/stop/kill/restart keep the same port."""

    def __init__(self, workdir: Path, *, persistence: bool = False, tls: TlsFiles | None = None,
                 port: int | None = None) -> None:
        self.binary = find_mosquitto()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.host = "127.0.0.1"
        self.tls = tls
        self.persistence = persistence
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            # mosquitto started as root drops to user "mosquitto", which cannot read pytest's
            # 0700 tmp dirs (certs, persistence); a throwaway test broker may keep root.
            lines.append("user root")
        if self.persistence:
            data = self.workdir / "data"
            data.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {data}/", "autosave_interval 1"]
        else:
            lines += ["persistence false"]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}", "require_certificate true",
                "tls_version tlsv1.2",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)], stdout=log, stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode} on port {self.port}; "
                    f"its log {self.log_path}:\n{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on 127.0.0.1:{self.port} "
                           f"within {timeout}s; see {self.log_path}")

    def _end(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): mosquitto saves its persistence file if enabled."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Hard stop (SIGKILL): clients see the socket drop, nothing is flushed."""
        self._end(signal.SIGKILL)

    def restart(self, *, down_for: float = 0.0, hard: bool = True) -> None:
        """Kill (or stop) the broker, stay down for `down_for` seconds, start it on the same port."""
        self.kill() if hard else self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


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

