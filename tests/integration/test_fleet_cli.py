"""`drgw fleet list|watch|cmd` end to end: a gateway (real Store, MqttLink, Publisher, command
dispatcher with the FakeAgent) and the CLI as a separate process, against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain
from gateway.measurement.store.database import Store
from gateway.measurement.wire import encode_batch
from gateway.network import payloads, topics
from gateway.network.command import CommandPolicy
from gateway.network.dispatcher import CommandDispatcher
from gateway.network.link import MqttLink
from gateway.network.nonces import NonceCache
from gateway.network.pacing import BackoffPolicy
from gateway.network.publisher import HealthPublisher, Publisher
from gateway.network.settings import LinkSettings
from gateway.testing.fake_agent import FakeAgent
from tests.mosquitto import Broker, broker_fixture

broker = pytest.fixture(broker_fixture())

ROOT = Path(__file__).resolve().parents[2]
GW_KEY = GatewayKey.from_secret(bytes([5]) * 32)
GW = GW_KEY.address.lower()
OPERATOR = GatewayKey.from_secret(bytes([6]) * 32)
STRANGER = GatewayKey.from_secret(bytes([8]) * 32)
DOMAIN = measurement_domain()
READING = (ScaledReading(name="power_active_total_w", value=1_500_000, unit="W", quality=0),)


class Gateway:
    """The network side of a gateway in a thread with its own event loop."""

    def __init__(self, broker: Broker, tmp: Path) -> None:
        self.broker, self.tmp = broker, tmp
        self.agent = FakeAgent()
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.link: MqttLink | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _produce(self, store: Store, wake: asyncio.Event) -> None:
        chain = MeasurementChain(gateway=GW_KEY.address)
        while True:
            signed = [chain.next_signed(GW_KEY, DOMAIN, device="meter1", time_ms=1_000 + i,
                                        clock_synced=True, readings=READING) for i in range(3)]
            store.commit(signed, topics.topic(GW, topics.Kind.MEAS), now_ms=1)
            wake.set()
            await asyncio.sleep(0.05)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        store, wake = Store(self.tmp / "store.sqlite", batch_size=2), asyncio.Event()
        self.link = MqttLink(
            settings=LinkSettings.from_url(self.broker.url, client_id="gw-fleet"), gateway=GW,
            status=lambda: payloads.StatusInfo(version="9.9.9", config_hash="c0ffee",
                                               devices=("meter1",)),
            backoff=BackoffPolicy(base_s=0.05, cap_s=0.5))
        dispatcher = CommandDispatcher(
            policy=CommandPolicy.build(gw=GW, operators=[OPERATOR.address]), agent=self.agent,
            nonces=NonceCache(self.tmp / "nonces.sqlite"), sign_digest=GW_KEY.sign_digest)
        workers = [Publisher(store=store, wake=wake), dispatcher,
                   HealthPublisher(link=self.link, counters=store, store=store, interval_s=0.5)]
        producer = asyncio.create_task(self._produce(store, wake))
        run = asyncio.create_task(self.link.run(workers))
        await self.link.connected.wait()
        self.ready.set()
        await run
        producer.cancel()

    def __enter__(self) -> Gateway:
        self.thread.start()
        assert self.ready.wait(10), "gateway did not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self.link is not None
        self.loop.call_soon_threadsafe(self.link.stop)
        self.thread.join(10)


# `drgw` itself, with the fleet commands registered even before cli.py lists them.
DRGW = ("import sys, gateway.cli as c; "
        "c.COMMAND_MODULES += ('gateway.commands.fleet',) "
        "if 'gateway.commands.fleet' not in c.COMMAND_MODULES else (); "
        "sys.exit(c.main(sys.argv[1:]))")


def drgw(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", DRGW, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                           "DRGW_KEY_PASSWORD": ""})


@pytest.fixture
def gateway(broker: Broker, tmp_path: Path) -> Iterator[Gateway]:
    with Gateway(broker, tmp_path) as gw:
        yield gw


@pytest.fixture
def operator_key(tmp_path: Path) -> Path:
    path = tmp_path / "operator.key"
    write_key(path, OPERATOR)
    return path


def test_fleet_list_shows_the_gateway_online_with_version_and_backlog(
        gateway: Gateway, broker: Broker) -> None:
    out = drgw("fleet", "list", "--broker", broker.url, "--wait", "1.5", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["gw"]: r for r in json.loads(out.stdout)}
    row = rows[GW]
    assert row["online"] is True and row["version"] == "9.9.9" and row["config_hash"] == "c0ffee"
    assert isinstance(row["backlog_rows"], int) and row["last_seen_ms"]
    text = drgw("fleet", "list", "--broker", broker.url, "--wait", "1")
    assert GW in text.stdout and "online" in text.stdout


def test_fleet_cmd_round_trip_and_rejection(gateway: Gateway, broker: Broker,
                                            operator_key: Path, tmp_path: Path) -> None:
    out = drgw("fleet", "cmd", GW, "set_log_level", "--arg", "level=INFO", "--operator-key",
               str(operator_key), "--broker", broker.url, "--json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["ok"] is True and reply["signed_by_gateway"] is True
    assert gateway.agent.log_level == "INFO"
    out = drgw("fleet", "cmd", GW, "write_point", "--arg", "device=ev1", "--arg",
               "name=current_limit_a", "--arg", "value=99", "--operator-key", str(operator_key),
               "--broker", broker.url)
    assert out.returncode == 1 and "bad_args" in out.stderr and "out of range" in out.stderr
    stranger = tmp_path / "stranger.key"
    write_key(stranger, STRANGER)
    out = drgw("fleet", "cmd", GW, "ping", "--operator-key", str(stranger), "--broker", broker.url)
    assert out.returncode == 1 and "unknown_operator" in out.stderr
    out = drgw("fleet", "cmd", "0x" + "00" * 20, "ping", "--operator-key", str(operator_key),
               "--broker", broker.url, "--timeout", "1")
    assert out.returncode == 3 and "no reply" in out.stderr


def test_fleet_watch_clean_stream_then_forgeries_and_duplicates(gateway: Gateway,
                                                               broker: Broker) -> None:
    out = drgw("fleet", "watch", "--broker", broker.url, "--gateway", GW, "--seconds", "2",
               "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout.splitlines()[-1])["summary"][GW]
    assert summary["valid"] > 10 and summary["forgeries"] == summary["missing"] == 0

    meas = topics.topic(GW, topics.Kind.MEAS)

    async def publish(payload: bytes, *, retain: bool = False) -> None:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(meas, payload, qos=1, retain=retain)

    forger = MeasurementChain(gateway=STRANGER.address, last_seq=0)
    forged = [forger.next_signed(STRANGER, DOMAIN, device="meter1", time_ms=1,
                                 clock_synced=True, readings=READING)]
    # Retained, so the watcher gets it whenever it subscribes: no guessing when that is.
    asyncio.run(publish(encode_batch(forged), retain=True))
    proc = subprocess.Popen(
        [sys.executable, "-c", DRGW, "fleet", "watch",
         "--broker", broker.url, "--gateway", GW, "--seconds", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the watcher is subscribed once it has reported the forgery
    assert first.startswith("FORGERY"), first + proc.stderr.read() if proc.stderr else first
    asyncio.run(publish(b"not a batch"))
    rest, stderr = proc.communicate(timeout=30)
    stdout = first + rest
    assert proc.returncode == 1, stdout + stderr
    assert "FORGERY" in stdout and STRANGER.address.lower() in stdout, stdout + stderr
    assert "MALFORMED" in stdout
    assert "1 forgery(ies)" in stdout
