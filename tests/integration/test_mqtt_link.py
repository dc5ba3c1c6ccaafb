"""MqttLink against a real mosquitto: retained birth, last will after SIGKILL, clean offline,
mutual TLS accepted with a client cert and refused without one."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiomqtt
import pytest

from gateway.network import payloads, topics
from gateway.network.errors import BrokerUnreachable
from gateway.network.link import MqttLink
from gateway.network.pacing import BackoffPolicy
from gateway.network.settings import LinkSettings
from tests.mosquitto import Broker, broker_fixture
from tests.waits import until

broker = pytest.fixture(broker_fixture())
tls_broker = pytest.fixture(broker_fixture(tls=True))

ROOT = Path(__file__).resolve().parents[2]
GW = "0x" + "ab" * 20
INFO = payloads.StatusInfo(version="1.2.3", config_hash="cafe", devices=("meter1",))


async def retained_status(broker: Broker, gw: str, *, want_online: bool, timeout: float = 10.0,
                          **tls: object) -> dict[str, object]:
    """Subscribe to the status topic and return the first message whose `online` matches."""
    async with aiomqtt.Client(broker.host, broker.port, **tls) as sub:  # type: ignore[arg-type]
        await sub.subscribe(topics.topic(gw, topics.Kind.STATUS), qos=1)
        async with asyncio.timeout(timeout):
            async for msg in sub.messages:
                body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                if body["online"] is want_online:
                    return body  # type: ignore[no-any-return]
    raise AssertionError("unreachable")


def test_birth_is_retained_and_shutdown_publishes_offline(broker: Broker) -> None:
    async def main() -> None:
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-birth"),
                        gateway=GW, status=lambda: INFO)
        task = asyncio.create_task(link.run())
        await asyncio.wait_for(link.connected.wait(), 10)
        # A subscriber that arrives later still gets the birth: it is retained.
        body = await retained_status(broker, GW, want_online=True)
        assert body["version"] == "1.2.3" and body["config_hash"] == "cafe"
        assert body["devices"] == ["meter1"] and body["gw"] == GW
        link.stop()
        await asyncio.wait_for(task, 10)
        body = await retained_status(broker, GW, want_online=False)
        assert body["reason"] == "shutdown"

    asyncio.run(main())


def test_last_will_after_sigkill_and_birth_again_on_restart(broker: Broker, tmp_path: Path) -> None:
    gw = "0x" + "cd" * 20
    script = textwrap.dedent(f"""
        import asyncio
        from gateway.network import payloads
        from gateway.network.link import MqttLink
        from gateway.network.settings import LinkSettings
        async def main():
            link = MqttLink(settings=LinkSettings.from_url({broker.url!r}, client_id="victim",
                            keepalive_s=5), gateway={gw!r},
                            status=lambda: payloads.StatusInfo(version="v", config_hash="h"))
            t = asyncio.create_task(link.run())
            await link.connected.wait()
            print("up", flush=True)
            await t
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"up"
        assert asyncio.run(retained_status(broker, gw, want_online=True))["version"] == "v"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The kernel closes the socket: mosquitto sees an unexpected drop and sends the will.
        body = asyncio.run(retained_status(broker, gw, want_online=False))
        assert body == {"v": 1, "online": False, "gw": gw, "reason": "lwt"}
    finally:
        proc.kill()
        proc.wait()


def test_reconnects_after_broker_restart_and_births_again(broker: Broker) -> None:
    async def main() -> None:
        link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw-re"),
                        gateway=GW, status=lambda: INFO,
                        backoff=BackoffPolicy(base_s=0.05, cap_s=0.3, stable_s=5))
        task = asyncio.create_task(link.run())
        await asyncio.wait_for(link.connected.wait(), 10)
        await asyncio.to_thread(broker.kill)  # no persistence: the retained birth is lost
        await until(lambda: not link.connected.is_set() and link.last_error is not None,
                    what="the link to notice the broker is gone")
        await asyncio.to_thread(broker.start)
        await until(lambda: link.sessions == 2 and link.connected.is_set(),
                    what="the second session")
        assert link.sessions == 2
        assert (await retained_status(broker, GW, want_online=True))["online"] is True
        link.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_mutual_tls_connects_with_client_cert(tls_broker: Broker) -> None:
    tls = tls_broker.tls
    assert tls is not None

    async def main() -> None:
        settings = LinkSettings.from_url(tls_broker.url, client_id="gw-tls", ca=tls.ca,
                                         cert=tls.client_cert, key=tls.client_key)
        link = MqttLink(settings=settings, gateway=GW, status=lambda: INFO)
        task = asyncio.create_task(link.run())
        await asyncio.wait_for(link.connected.wait(), 10)
        ctx = settings.tls.context()
        body = await retained_status(tls_broker, GW, want_online=True, tls_context=ctx)
        assert body["online"] is True
        link.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_mutual_tls_refuses_client_without_cert(tls_broker: Broker,
                                                caplog: pytest.LogCaptureFixture) -> None:
    tls = tls_broker.tls
    assert tls is not None

    caplog.set_level(logging.INFO, logger="gateway.network.link")

    def attempts() -> int:
        return sum(r.getMessage().startswith("reconnecting to") for r in caplog.records)

    async def main() -> None:
        settings = LinkSettings.from_url(tls_broker.url, client_id="gw-nocert", ca=tls.ca)
        link = MqttLink(settings=settings, gateway=GW, status=lambda: INFO,
                        backoff=BackoffPolicy(base_s=0.05, cap_s=0.1))
        task = asyncio.create_task(link.run())
        await until(lambda: attempts() >= 3, what="three refused connection attempts")
        assert not link.connected.is_set() and link.sessions == 0
        assert isinstance(link.last_error, BrokerUnreachable), link.last_error
        assert str(tls_broker.port) in str(link.last_error)
        link.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_plain_url_with_tls_files_is_a_config_error(tmp_path: Path) -> None:
    from gateway.network.errors import LinkConfigError
    with pytest.raises(LinkConfigError, match="mqtts://"):
        LinkSettings.from_url("mqtt://127.0.0.1:1883", client_id="x", ca=tmp_path / "ca.pem")
    with pytest.raises(LinkConfigError, match="mqtt://host:port"):
        LinkSettings.from_url("http://127.0.0.1", client_id="x")
