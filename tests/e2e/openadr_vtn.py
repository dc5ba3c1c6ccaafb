"""A real openleadr VTN for tests: its own test CA and certificates, made at run time, on loopback.

Not a test module. `make_pki` writes a CA, the VTN's server certificate (127.0.0.1) and a VEN client
certificate, all signed by the CA, with `cryptography`; no private key is committed. `TestVtn` runs
openleadr's OpenADRServer with mutual TLS and XML signatures, registers the one VEN whose certificate
fingerprint it expects (computed here with openleadr's own function), and records what the VEN
sends: opt answers per event, report registrations and report values.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VTN_ID = "DRGW-TEST-VTN"
VEN_ID, REGISTRATION_ID = "ven-drgw-1", "reg-drgw-1"


@dataclass(frozen=True)
class Pki:
    ca: Path
    vtn_cert: Path
    vtn_key: Path
    ven_cert: Path
    ven_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def make_pki(root: Path) -> Pki:
    """A CA and two leaf certificates valid for a day, in `root`."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _write_key(root / "ca.key")
    ca = (x509.CertificateBuilder().subject_name(_name("drgw test CA")).issuer_name(_name("drgw test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(stem: str, cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> None:
        key = _write_key(root / f"{stem}.key")
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        (root / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    import ipaddress

    leaf("vtn", "vtn.test", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    leaf("ven", "ven.test", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(ca=root / "ca.pem", vtn_cert=root / "vtn.pem", vtn_key=root / "vtn.key",
               ven_cert=root / "ven.pem", ven_key=root / "ven.key")


def fingerprint(cert: Path) -> str:
    from openleadr import utils

    return str(utils.certificate_fingerprint(cert.read_bytes()))


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{dt.datetime.now():%H:%M:%S.%f} VTN {record.levelname} {record.getMessage()}")


@dataclass
class TestVtn:
    """openleadr's VTN with handlers that record what the VEN does."""

    __test__ = False  # not a pytest class

    pki: Pki
    port: int
    ven_name: str
    registered: bool = False
    opts: list[tuple[str, str]] = field(default_factory=list)  # (event id, optIn | optOut)
    offered: list[dict[str, Any]] = field(default_factory=list)  # report registrations
    values: list[tuple[dt.datetime, float]] = field(default_factory=list)  # report values
    log: LogLines = field(default_factory=LogLines)
    server: Any = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    async def start(self) -> None:
        from openleadr import OpenADRServer

        logging.getLogger("openleadr").addHandler(self.log)
        logging.getLogger("openleadr").setLevel(logging.INFO)
        p = self.pki
        self.server = OpenADRServer(
            vtn_id=VTN_ID, cert=str(p.vtn_cert), key=str(p.vtn_key), http_cert=str(p.vtn_cert),
            http_key=str(p.vtn_key), http_ca_file=str(p.ca), http_host="127.0.0.1", http_port=self.port,
            requested_poll_freq=dt.timedelta(seconds=1), ven_lookup=self._lookup, show_fingerprint=False)
        self.server.add_handler("on_create_party_registration", self._register)
        self.server.add_handler("on_register_report", self._register_report)
        await self.server.run()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        logging.getLogger("openleadr").removeHandler(self.log)

    def _register(self, info: dict[str, Any]) -> tuple[str, str] | bool:
        # Only the VEN whose TLS client certificate we expect (fingerprint from openleadr itself).
        if info.get("ven_name") != self.ven_name or info.get("fingerprint") != fingerprint(self.pki.ven_cert):
            self.log.lines.append(f"VTN refused registration {info.get('ven_name')!r}")
            return False
        self.registered = True
        self.log.lines.append(f"VTN registered VEN {info['ven_name']!r} as {VEN_ID}")
        return VEN_ID, REGISTRATION_ID

    def _lookup(self, ven_id: str) -> dict[str, Any]:
        if ven_id != VEN_ID or not self.registered:
            return {}
        return {"ven_id": VEN_ID, "ven_name": self.ven_name, "registration_id": REGISTRATION_ID,
                "fingerprint": fingerprint(self.pki.ven_cert)}

    def _register_report(self, ven_id: str, resource_id: str, measurement: str, unit: str, scale: str,
                         min_sampling_interval: dt.timedelta,
                         max_sampling_interval: dt.timedelta) -> tuple[Any, dt.timedelta]:
        self.offered.append({"ven_id": ven_id, "resource_id": resource_id, "measurement": measurement,
                             "unit": unit, "scale": scale})
        return self._on_values, dt.timedelta(seconds=2)

    def _on_values(self, values: list[tuple[dt.datetime, float]]) -> None:
        self.values.extend(values)
        self.log.lines.append(f"VTN report from {VEN_ID}: {[(f'{t:%H:%M:%S.%f}', v) for t, v in values]}")

    def on_opt(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opts.append((event_id, opt_type))
        self.log.lines.append(f"VTN got {opt_type} from {ven_id} for event {event_id}")

    def add_event(self, event_id: str, *, signal_name: str, signal_type: str, start_s: int, seconds: int,
                  payload: float) -> None:
        self.server.add_event(
            ven_id=VEN_ID, event_id=event_id, signal_name=signal_name, signal_type=signal_type,
            intervals=[{"dtstart": dt.datetime.fromtimestamp(start_s, dt.UTC),
                        "duration": dt.timedelta(seconds=seconds), "signal_payload": payload}],
            callback=self.on_opt, market_context="http://drgw.test/programme")
        self.log.lines.append(f"VTN added event {event_id}: {signal_name}/{signal_type} {payload:g} "
                              f"for {seconds} s from {start_s}")

    def cancel(self, event_id: str) -> None:
        self.server.cancel_event(VEN_ID, event_id)
        self.log.lines.append(f"VTN cancelled event {event_id}")
