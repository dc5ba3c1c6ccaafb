"""`drgw doctor` against real parts: a simulated meter over Modbus TCP, mosquitto (plain and mutual
TLS), anvil with the DR market deployed, a real SQLite store. One passing run, then one broken
thing at a time: dead meter, stopped broker, key readable by others, wrong CA, unregistered
household, household registered with another gateway, damaged store.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.measurement.identity import GatewayKey
from gateway.measurement.store.database import Store
from tests.homes import sdm630_tcp
from tests.mosquitto import Broker, broker_fixture, make_tls_files

tls_broker = pytest.fixture(broker_fixture(tls=True))

GW_SECRET = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
WALLET = "0x00000000000000000000000000000000000a11ce"  # registered with this gateway
STRANGER_WALLET = "0x0000000000000000000000000000000000000b0b"  # registered with another gateway
NEW_WALLET = "0x0000000000000000000000000000000000000c0c"  # not registered
HOME = sdm630_tcp(900)


@pytest.fixture(scope="module")
def meter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a simulated SDM630 (unit 1) served by `drgw simulate`."""
    home = tmp_path_factory.mktemp("home") / "home.toml"
    home.write_text(HOME)
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", str(home), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert sim.stdout is not None
        yield str(json.loads(sim.stdout.readline())["devices"][0]["address"])
    finally:
        sim.terminate()
        sim.wait(timeout=10)


@dataclass(frozen=True, slots=True)
class Chain:
    rpc: str
    market: str


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """anvil with the market deployed; WALLET is registered with this test's gateway key."""
    from gateway.chain.outbox import ChainOutbox
    from tests.integration.chain.conftest import Anvil, Market, anvil_binary, missing

    binary = anvil_binary()
    if binary is None or not binary.exists():
        missing("the anvil binary (npm package @foundry-rs/anvil)")
    assert binary is not None
    anvil = Anvil(binary, tmp_path_factory.mktemp("anvil") / "state.json")
    anvil.start()
    outbox = ChainOutbox(":memory:")
    try:
        market = Market(anvil.node(), outbox)
        gateway = GatewayKey.from_secret(bytes.fromhex(GW_SECRET)).address
        for wallet, gw in ((WALLET, gateway), (STRANGER_WALLET, market.stranger.address)):
            market.client.register_household(market.op, wallet=_checksum(wallet), gateway=gw,
                                             aggregator=market.aggregator.address)
        yield Chain(rpc=anvil.url, market=market.deployment.market)
    finally:
        outbox.close()
        anvil.kill()


def _checksum(address: str) -> str:
    from web3 import Web3

    return str(Web3.to_checksum_address(address))


class Site:
    """A gateway's files in a tmp dir; `config(...)` writes drgw.toml, `doctor()` runs the CLI."""

    def __init__(self, root: Path, broker: Broker, meter: str) -> None:
        self.root, self.broker, self.meter = root, broker, meter
        self.key = root / "gw.key"
        self.key.write_text(GW_SECRET + "\n")
        self.key.chmod(0o600)
        self.path = root / "drgw.toml"

    def config(self, *, mqtt: str = "", chain: Chain | None = None, household: str = WALLET,
               extra_device: str = "") -> Site:
        text = f"""
[gateway]
key = "gw.key"
[mqtt]
broker = "{self.broker.url}"
{mqtt}
[[bus]]
name = "main"
tcp = "{self.meter}"
[[device]]
name = "main"
profile = "eastron_sdm630"
bus = "main"
unit = 1
timeout = 0.5
{extra_device}
"""
        if chain is not None:
            text += f'[chain]\nrpc = "{chain.rpc}"\nmarket = "{chain.market}"\nhousehold = "{household}"\n'
        self.path.write_text(text)
        return self

    def doctor(self, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "doctor", str(self.path), "--json",
                              "--timeout", "2", *extra], capture_output=True, text=True, timeout=120)
        assert out.stdout, out.stderr
        report = json.loads(out.stdout)
        checks = {c["name"]: c for c in report["checks"]}
        assert report["ok"] == (out.returncode == 0)
        return out.returncode, checks


@pytest.fixture
def site(tmp_path: Path, mqtt_broker: Broker, meter: str) -> Site:
    return Site(tmp_path, mqtt_broker, meter)


def levels(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: c["level"] for name, c in checks.items()}


@pytest.mark.anvil
def test_a_healthy_installation_passes(site: Site, chain: Chain) -> None:
    Store(site.root / "drgw.db").close()  # a real, empty store at the current schema
    code, checks = site.config(chain=chain).doctor()
    assert code == 0, checks
    got = levels(checks)
    for name in ("config", "key", "device main", "broker tcp", "broker mqtt", "chain", "household",
                 "disk", "store"):
        assert got.pop(name) == "OK", checks[name]
    assert got.pop("clock") in ("OK", "WARN")  # depends on the host's NTP, never a failure
    assert got == {}
    assert re.search(r": voltage_l1_v = [0-9.]+ V in \d+ ms$", checks["device main"]["detail"])
    assert GatewayKey.from_secret(bytes.fromhex(GW_SECRET)).address in checks["key"]["detail"]
    assert "intact, schema version" in checks["store"]["detail"]


def test_a_dead_meter_fails_and_says_what_to_check(site: Site) -> None:
    ghost = """
[[device]]
name = "ghost"
profile = "eastron_sdm630"
bus = "main"
unit = 7
timeout = 0.3
"""
    code, checks = site.config(extra_device=ghost).doctor()
    assert code == 1
    assert checks["device main"]["level"] == "OK"
    dead = checks["device ghost"]
    assert dead["level"] == "FAIL"
    assert "unit 7" in dead["detail"] and "no answer" in dead["detail"]
    assert f"drgw read --tcp {site.meter} --profile eastron_sdm630 --unit 7" in dead["fix"]


def test_a_stopped_broker_fails(site: Site) -> None:
    site.broker.stop()
    code, checks = site.config().doctor()
    assert code == 1
    assert checks["broker tcp"]["level"] == "FAIL"
    assert "cannot connect" in checks["broker tcp"]["detail"]
    assert "broker mqtt" not in checks  # nothing further to try


def test_a_key_readable_by_others_fails_with_chmod(site: Site) -> None:
    site.key.chmod(0o644)
    code, checks = site.config().doctor()
    assert code == 1
    assert checks["key"]["level"] == "FAIL"
    assert "mode 0644" in checks["key"]["detail"]
    assert checks["key"]["fix"] == f"chmod 600 {site.key}"


def test_a_damaged_store_fails(site: Site) -> None:
    (site.root / "drgw.db").write_bytes(b"this is not a database" * 100)
    code, checks = site.config().doctor()
    assert code == 1
    assert checks["store"]["level"] == "FAIL"
    assert "damaged" in checks["store"]["detail"]  # issue 12: not "cannot read it" (paths)
    assert "drgw store salvage" in checks["store"]["fix"]


def test_mutual_tls_broker_passes_and_a_wrong_ca_fails(tmp_path: Path, tls_broker: Broker,
                                                       meter: str) -> None:
    tls = tls_broker.tls
    assert tls is not None
    site = Site(tmp_path, tls_broker, meter)
    mtls = f'ca = "{tls.ca}"\ncert = "{tls.client_cert}"\nkey = "{tls.client_key}"'
    code, checks = site.config(mqtt=mtls).doctor()
    assert code == 0, checks
    assert [checks[n]["level"] for n in ("broker tcp", "broker tls", "broker mqtt")] == ["OK"] * 3

    other = make_tls_files(tmp_path / "other")
    code, checks = site.config(mqtt=mtls.replace(str(tls.ca), str(other.ca))).doctor()
    assert code == 1
    assert checks["broker tls"]["level"] == "FAIL"
    assert "certificate verify failed" in checks["broker tls"]["detail"]
    assert "CA that signed" in checks["broker tls"]["fix"]


@pytest.mark.anvil
def test_an_unregistered_household_fails_with_the_register_command(site: Site, chain: Chain) -> None:
    code, checks = site.config(chain=chain, household=NEW_WALLET).doctor()
    assert code == 1
    assert checks["chain"]["level"] == "OK"
    h = checks["household"]
    assert h["level"] == "FAIL" and "is not registered" in h["detail"]
    gateway = GatewayKey.from_secret(bytes.fromhex(GW_SECRET)).address
    assert f"drgw market register --household {_checksum(NEW_WALLET)} --gateway {gateway}" in h["fix"]


@pytest.mark.anvil
def test_a_household_of_another_gateway_fails(site: Site, chain: Chain) -> None:
    code, checks = site.config(chain=chain, household=STRANGER_WALLET).doctor()
    assert code == 1
    h = checks["household"]
    assert h["level"] == "FAIL" and "not with this gateway" in h["detail"]


def test_files_the_service_user_cannot_read_are_warned_about(site: Site) -> None:
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to stand in for the service user")
    if nobody.pw_uid == os.getuid():
        pytest.skip("the tests run as 'nobody'")
    site.config()
    site.path.chmod(0o600)
    code, checks = site.doctor("--user", "nobody")
    assert code == 0  # the agent as this user is fine; the installed service would not be
    for name, path in (("config owner", site.path), ("key owner", site.key)):
        assert checks[name]["level"] == "WARN"
        assert "the service user nobody cannot read it" in checks[name]["detail"]
        assert checks[name]["fix"].startswith(f"chown nobody:nobody {path}")
    site.path.chmod(0o644)
    _, checks = site.doctor("--user", "nobody")
    assert "config owner" not in checks and checks["key owner"]["level"] == "WARN"
