"""`drgw init` and `drgw provision` as an installer runs them, against a simulated meter on Modbus TCP.

The written config must load in `drgw run`'s loader, the CSR must verify and carry the gateway id, and
a certificate signed from it must open a mutual-TLS session with a real mosquitto.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import select
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from gateway.commands.run import _load
from gateway.measurement.keyfile import load_key
from gateway.network.settings import TlsSettings
from gateway.ops.provisioning import toml_str
from tests.mosquitto import Broker, TlsFiles, make_tls_files

HOME = """
[[device]]
name = "grid"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.load]
kind = "constant"
power_w = 2300
"""
OPERATOR = "0x1111111111111111111111111111111111111111"
MARKET = "0x2222222222222222222222222222222222222222"
HOUSEHOLD = "0x3333333333333333333333333333333333333333"


def drgw(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.fixture(scope="module")
def meter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HOST:PORT of a simulated SDM630 (unit 1) served by `drgw simulate`."""
    scenario = tmp_path_factory.mktemp("home") / "home.toml"
    scenario.write_text(HOME)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", str(scenario), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        yield str(json.loads(proc.stdout.readline())["devices"][0]["address"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass(frozen=True, slots=True)
class Pki:
    """The broker's TLS files, plus the client CA an aggregator signs gateway CSRs with (its cert is
    appended to the broker's CA file, so mosquitto trusts what it signs)."""

    files: TlsFiles
    client_ca_key: ec.EllipticCurvePrivateKey
    client_ca: x509.Certificate

    @property
    def ca(self) -> Path:
        return self.files.ca

    def sign(self, csr_pem: bytes) -> bytes:
        csr = x509.load_pem_x509_csr(csr_pem)
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.client_ca.subject)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.client_ca_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls(tmp_path: Path) -> Pki:
    files = make_tls_files(tmp_path / "tls")
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ESC gateway CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    with files.ca.open("ab") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    return Pki(files=files, client_ca_key=key, client_ca=cert)


def csr_cn(path: Path) -> str:
    csr = x509.load_pem_x509_csr(path.read_bytes())
    assert csr.is_signature_valid
    return str(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def init_flags(tmp: Path, *extra: str) -> list[str]:
    return ["init", "--config", str(tmp / "etc" / "drgw.toml"), "--state-dir", str(tmp / "var"), *extra]


def test_init_by_flags_scans_writes_a_loadable_config_and_a_working_csr(
        meter: str, tls: Pki, tmp_path: Path) -> None:
    ca_file = tls.ca
    broker = Broker(tmp_path / "mosquitto", tls=tls.files)
    out = drgw(*init_flags(tmp_path, "--broker", broker.url, "--ca", str(ca_file), "--operator", OPERATOR,
                           "--scan-tcp", meter, "--scan-units", "1-3", "--main", "eastron_sdm630_1",
                           "--rpc", "http://127.0.0.1:8545", "--market", MARKET, "--household",
                           HOUSEHOLD, "--json"))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    config_path = tmp_path / "etc" / "drgw.toml"
    config = _load(config_path)  # the loader of `drgw run`
    gateway_id = load_key(config.key).address.lower()
    assert result["gateway_id"] == gateway_id
    assert [(d.name, d.role, d.unit) for d in config.devices.devices] == [("eastron_sdm630_1", "main", 1)]
    assert config.devices.buses[0].tcp == meter
    assert config.operators == (OPERATOR,)
    assert config.chain is not None and config.chain.market == MARKET
    assert (mode(config_path), mode(config.key)) == (0o640, 0o600)
    assert config.mqtt.key is not None and config.mqtt.cert is not None and config.mqtt.ca is not None
    assert mode(config.mqtt.key) == 0o600 and mode(tmp_path / "etc" / "gateway.csr") == 0o644
    assert config.mqtt.ca.read_bytes() == ca_file.read_bytes()
    assert csr_cn(tmp_path / "etc" / "gateway.csr") == gateway_id
    assert str(tmp_path / "etc" / "gateway.csr") in " ".join(result["next"])

    # The aggregator signs the CSR; the gateway's files then open a mutual-TLS MQTT session.
    config.mqtt.cert.write_bytes(tls.sign((tmp_path / "etc" / "gateway.csr").read_bytes()))
    context = TlsSettings(config.mqtt.ca, config.mqtt.cert, config.mqtt.key).context()

    async def hello() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=context,
                                  identifier=f"drgw-{gateway_id[2:14]}") as client:
            await client.publish(f"drgw/v1/{gateway_id}/status", b"{}", qos=1)

    with broker:
        asyncio.run(hello())


def test_init_without_a_terminal_names_the_missing_flag_and_writes_nothing(tmp_path: Path) -> None:
    out = drgw(*init_flags(tmp_path, "--operator", OPERATOR, "--scan-tcp", "127.0.0.1:1"))
    assert out.returncode == 2
    assert "--broker is required" in out.stderr
    out = drgw(*init_flags(tmp_path, "--broker", "mqtt://127.0.0.1:1883"))
    assert out.returncode == 2 and "--scan-serial PORT or --scan-tcp HOST:PORT" in out.stderr
    out = drgw(*init_flags(tmp_path, "--broker", "mqtt://127.0.0.1:1883", "--devices", "x.toml",
                           "--rpc", "http://127.0.0.1:8545"))
    assert out.returncode == 2 and "missing --market, --household" in out.stderr
    assert not (tmp_path / "etc").exists() and not (tmp_path / "var").exists()


def test_a_bad_draft_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    draft = tmp_path / "draft.toml"
    draft.write_text('[[bus]]\nname = "bus1"\ntcp = "127.0.0.1:502"\n\n[[device]]\nname = "m"\n'
                     'profile = "eastron_sdm630"\nbus = "bus1"\nunit = 1\ntimout = 2\n')
    out = drgw(*init_flags(tmp_path, "--broker", "mqtt://127.0.0.1:1883", "--devices", str(draft)))
    assert out.returncode == 2
    assert f"--devices {draft}: device[0]: option 'timout' is not valid; did you mean 'timeout'?" \
        in out.stderr
    assert not (tmp_path / "etc").exists() and not (tmp_path / "var").exists()


def write_draft(tmp_path: Path) -> Path:
    draft = tmp_path / "draft.toml"
    draft.write_text('[[bus]]\nname = "bus1"\ntcp = "127.0.0.1:502"\n\n[[device]]\nname = "m"\n'
                     'profile = "eastron_sdm630"\nbus = "bus1"\nunit = 1\n')
    return draft


def test_an_existing_key_is_kept_or_replaced_only_on_request(tmp_path: Path) -> None:
    args = init_flags(tmp_path, "--broker", "mqtt://127.0.0.1:1883", "--devices",
                      str(write_draft(tmp_path)), "--json")
    first = drgw(*args)
    assert first.returncode == 0, first.stderr
    gateway_id = json.loads(first.stdout)["gateway_id"]
    config = tmp_path / "etc" / "drgw.toml"
    text = config.read_text()
    again = drgw(*args)
    assert again.returncode == 2 and f"{config} exists" in again.stderr
    config.unlink()
    again = drgw(*args)
    assert again.returncode == 2 and "--keep-key" in again.stderr and "--force" in again.stderr
    assert not config.exists()
    kept = drgw(*args, "--keep-key")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["gateway_id"] == gateway_id and config.read_text() == text
    replaced = drgw(*args, "--force")
    assert replaced.returncode == 0, replaced.stderr
    moved = json.loads(replaced.stdout)["moved"]
    assert json.loads(replaced.stdout)["gateway_id"] != gateway_id
    olds = {Path(m["from"]).name: Path(m["to"]) for m in moved}
    assert set(olds) == {"gateway.key", "drgw.toml"}
    assert load_key(olds["gateway.key"]).address.lower() == gateway_id  # the old identity survives
    assert olds["drgw.toml"].read_text() == text


def test_a_failed_write_says_what_was_left_behind(tmp_path: Path, tls: Pki) -> None:
    (tmp_path / "etc" / "gateway.csr").mkdir(parents=True)  # the CSR cannot be written there
    out = drgw(*init_flags(tmp_path, "--broker", "mqtts://127.0.0.1:8883", "--ca", str(tls.ca),
                           "--devices", str(write_draft(tmp_path))))
    assert out.returncode == 2
    assert "no config was written" in out.stderr
    assert f"{tmp_path / 'var' / 'gateway.key'} (new gateway key, id 0x" in out.stderr
    assert not (tmp_path / "etc" / "drgw.toml").exists()
    assert not [p for p in (tmp_path / "etc").iterdir() if ".tmp-" in p.name]


class Pty:
    """A child process on a pseudo-terminal, driven like a person at the keyboard."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, limit: float = 60.0) -> str:
        """Read until `text` shows up; `limit` only guards against a hung child."""
        deadline = time.monotonic() + limit
        while text not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r}; the terminal showed:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # EIO: the child closed the terminal
                    chunk = ""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"exited before {text!r}:\n{self.seen}")
                self.seen += chunk
        before, _, self.seen = self.seen.partition(text)
        return before

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> int:
        code = self.proc.wait(timeout=60)
        os.close(self.master)
        return code


def test_interactive_init_on_a_terminal_reasks_bad_answers(
        meter: str, tls: Pki, tmp_path: Path) -> None:
    term = Pty([sys.executable, "-m", "gateway.cli", *init_flags(tmp_path)])
    try:
        term.expect("broker (mqtts://host:8883): ")
        term.send("http://nope")
        assert "write mqtt://host:port or mqtts://host:port" in term.expect("broker (mqtts://host:8883): ")
        term.send("mqtts://127.0.0.1:8883")
        term.expect("system's CA store): ")
        term.send(str(tmp_path / "missing.pem"))
        assert "cannot read it" in term.expect("system's CA store): ")
        term.send(str(tls.ca))
        term.expect("(Y/n) [y]: ")  # mutual TLS: take the default
        term.send("")
        term.expect("may be empty): ")
        term.send("0x1234")
        assert "is not an Ethereum address" in term.expect("may be empty): ")
        term.send(OPERATOR)
        term.expect("draft file (f)? [s]: ")
        term.send("t")
        term.expect("host:port: ")
        term.send(meter)
        term.expect("Unit ids [1-247]: ")
        term.send("1-2")
        shown = term.expect("main meter? ('none': no main meter) [eastron_sdm630_1]: ")
        assert "devices: eastron_sdm630_1" in shown
        term.send("")
        term.expect("DR chain? (y/N) [n]: ")
        term.send("")
        term.expect("keys now? (Y/n) [y]: ")
        term.send("")
        steps = term.expect(". drgw install-service")
    finally:
        code = term.close()
    assert code == 0, term.seen
    assert "send " in steps and "gateway.csr" in steps
    config = _load(tmp_path / "etc" / "drgw.toml")
    assert config.operators == (OPERATOR,) and config.devices.devices[0].role == "main"
    assert config.mqtt.ca is not None and config.mqtt.ca.read_bytes() == tls.ca.read_bytes()
    assert csr_cn(tmp_path / "etc" / "gateway.csr") == load_key(config.key).address.lower()


# ---------------------------------------------------------------------------------------------
# Provisioning bundles


def bundle_text(meter: str, ca: Path, **extra: str) -> str:
    ca_pem = ca.read_text()
    text = f"""version = 1

[mqtt]
broker = "mqtts://127.0.0.1:8883"
ca = \"\"\"{ca_pem}\"\"\"

[operators]
allow = ["{OPERATOR}"]

[chain]
rpc = "http://127.0.0.1:8545"
market = "{MARKET}"
household = "{HOUSEHOLD}"

[devices]
scan_tcp = "{meter}"
units = "1-2"
main = "eastron_sdm630_1"
"""
    for old, new in extra.items():
        text = text.replace(old, new)
    return text


@pytest.fixture
def provision(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return drgw("provision", "--bundle", str(bundle), "--config", str(tmp_path / "etc" / "drgw.toml"),
                    "--state-dir", str(tmp_path / "var"), *extra)

    return run


def test_provisioning_consumes_a_bundle_once(meter: str, tls: Pki, tmp_path: Path,
                                             provision: Callable[..., subprocess.CompletedProcess[str]]
                                             ) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    bundle = boot / "drgw-provision.toml"
    bundle.write_text(bundle_text(meter, tls.ca))
    out = provision(bundle, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    config_path = tmp_path / "etc" / "drgw.toml"
    config = _load(config_path)
    gateway_id = load_key(config.key).address.lower()
    assert result["gateway_id"] == gateway_id
    assert config.devices.devices[0].role == "main" and config.chain is not None
    assert csr_cn(tmp_path / "etc" / "gateway.csr") == gateway_id
    assert not bundle.exists()
    applied = sorted(p.name for p in boot.iterdir())
    assert len(applied) == 2 and applied[1].startswith("drgw-provision.toml.applied-")
    assert applied[0] == f"drgw-{gateway_id}.csr"  # for an installer without SSH
    text = config_path.read_text()

    again = provision(bundle)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    # The rename did not happen (power cut after applying): the same bundle is recognised, not redone.
    shutil.copy(boot / applied[1], bundle)
    again = provision(bundle)
    assert again.returncode == 0, again.stderr
    assert "already applied" in again.stdout and not bundle.exists()
    assert config_path.read_text() == text
    # A different bundle does not overwrite a config it did not write.
    bundle.write_text(bundle_text(meter, tls.ca, **{'units = "1-2"': 'units = "1-3"'}))
    again = provision(bundle)
    assert again.returncode == 2
    assert f"{config_path} exists and was not written from this bundle" in again.stderr
    assert config_path.read_text() == text


@pytest.mark.parametrize(("change", "message"), [
    ({"broker =": "brokr ="},
     "drgw-provision.toml: mqtt: option 'brokr' is not valid; did you mean 'broker'?"),
    ({"version = 1": "version = 1\n[wifi]\nssid = \"home\""}, "drgw-provision.toml: wifi: Wi-Fi is not"),
    ({'units = "1-2"': 'units = "1-2"\nscan_serial = "/dev/ttyUSB0"'},
     "drgw-provision.toml: devices: draft/draft_file/scan_serial/scan_tcp: give exactly one of"),
    ({f'market = "{MARKET}"': 'market = "0x22"'},
     "drgw-provision.toml: chain: market: '0x22' is not an Ethereum address"),
])
def test_a_bad_bundle_is_named_and_set_aside(
        meter: str, tls: Pki, tmp_path: Path, change: dict[str, str], message: str,
        provision: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    bundle = tmp_path / "drgw-provision.toml"
    bundle.write_text(bundle_text(meter, tls.ca, **change))
    out = provision(bundle)
    assert out.returncode == 2
    assert message in out.stderr
    failed = [p for p in tmp_path.iterdir() if p.name.startswith("drgw-provision.toml.failed-")]
    assert len(failed) == 2 and not bundle.exists()  # the bundle and its .txt
    error = next(p for p in failed if p.suffix == ".txt")
    assert message in error.read_text()
    assert not (tmp_path / "etc").exists() and not (tmp_path / "var").exists()


@pytest.mark.parametrize(("change", "where"), [
    ({"[operators]": "[operators]\nkey = \"\"\"-----BEGIN EC PRIVATE KEY-----\nMHcC\n"
                     "-----END EC PRIVATE KEY-----\"\"\""}, "operators: key: holds a PEM private key"),
    ({"[operators]": "[gateway]\nkey = \"0x" + "ab" * 32 + "\"\n[operators]"},
     "gateway: key: 64 hex digits look like a private key"),
])
def test_a_bundle_with_a_private_key_is_refused(
        meter: str, tls: Pki, tmp_path: Path, change: dict[str, str], where: str,
        provision: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    bundle = tmp_path / "drgw-provision.toml"
    bundle.write_text(bundle_text(meter, tls.ca, **change))
    out = provision(bundle)
    assert out.returncode == 2
    assert f"drgw-provision.toml: {where}" in out.stderr
    assert "a gateway makes its own key" in out.stderr or "generates its own keys" in out.stderr
    assert not bundle.exists() and not (tmp_path / "var").exists()


def test_a_bundle_with_files_beside_it_and_a_plain_broker(
        tmp_path: Path, tls: Pki, provision: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    write_draft(tmp_path)
    shutil.copy(tls.ca, tmp_path / "esco-ca.pem")
    bundle = tmp_path / "drgw-provision.toml"
    bundle.write_text('version = 1\n[mqtt]\nbroker = "mqtts://127.0.0.1:8883"\nca_file = "esco-ca.pem"\n'
                      'client_cert = false\n[devices]\ndraft_file = "draft.toml"\nmain = "m"\n')
    out = provision(bundle, "--json")
    assert out.returncode == 0, out.stderr
    config = _load(tmp_path / "etc" / "drgw.toml")
    assert config.mqtt.ca is not None and config.mqtt.ca.read_bytes() == tls.ca.read_bytes()
    assert config.mqtt.cert is None and not (tmp_path / "etc" / "gateway.csr").exists()
    assert [d.role for d in config.devices.devices] == ["main"]
    assert json.loads(out.stdout)["csr"] is None

    # A CA file that carries a private key is refused as well, naming the file.
    (tmp_path / "etc" / "drgw.toml").unlink()
    (tmp_path / "esco-ca.pem").write_text(tls.files.server_key.read_text() + tls.ca.read_text())
    bundle.write_text('version = 1\n[mqtt]\nbroker = "mqtts://127.0.0.1:8883"\nca_file = "esco-ca.pem"\n'
                      '[devices]\ndraft_file = "draft.toml"\n')
    out = provision(bundle)
    assert out.returncode == 2
    assert f"mqtt: ca_file ({tmp_path / 'esco-ca.pem'}): holds a PEM private key" in out.stderr


@given(st.text())
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"v = {toml_str(text)}")["v"] == text
