"""The aggregator's MQTT client: broker URL + TLS files + login -> a connected aiomqtt client, with
errors translated to drgw's (the CLI prints them with the fix). The login comes from the URL
(`mqtt://user:pass@host`) or from `username`/`password`, as the agent's [mqtt] section."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from gateway.network.errors import translate
from gateway.network.settings import LinkSettings

if TYPE_CHECKING:
    from gateway.master.settings import BrokerSettings


@contextlib.asynccontextmanager
async def connect(url: str, *, ca: Path | None = None, cert: Path | None = None,
                  key: Path | None = None, client_id: str | None = None,
                  username: str | None = None, password: str | None = None
                  ) -> AsyncIterator[aiomqtt.Client]:
    settings = LinkSettings.from_url(url, client_id=client_id or f"drgw-fleet-{secrets.token_hex(4)}",
                                     ca=ca, cert=cert, key=key, username=username, password=password)
    client = aiomqtt.Client(
        settings.broker.host, settings.broker.port, identifier=settings.client_id,
        tls_context=settings.tls.context() if settings.broker.tls else None,
        timeout=settings.timeout_s, username=settings.username, password=settings.password)
    try:
        await client.__aenter__()
    except (aiomqtt.MqttError, OSError) as exc:
        raise translate(exc, broker=str(settings.broker), connecting=True) from None
    try:
        yield client
    finally:
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            await client.__aexit__(None, None, None)


# ---- flow control of a worker's session ----
#
# paho acknowledges a QoS 1 PUBLISH as soon as it has read it, and aiomqtt then drops a message
# its incoming queue has no room for ("Message queue is full. Discarding message."): a worker
# behind a backlog would lose records the broker counts as delivered (bench/fleet.py with
# 20,000 one-record payloads lost 3,333). Instead the worker acknowledges a message only once it
# has taken it (in its bounded ingest queue, or written it), and tells the broker in CONNECT how
# many unacknowledged QoS 1 messages it may have at once (MQTT 5 §3.1.2.11.3, Receive Maximum;
# the broker must not send more, §4.9): the backlog then waits in the broker, bounded by its
# max_queued_messages, and a gap beyond that is repaired by resend as any other.
RECEIVE_MAXIMUM = 1000


def connect_properties() -> Any:
    """CONNECT properties of a worker: Receive Maximum (MQTT 5 §3.1.2.11.3)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    return properties


def acknowledge_when_taken(client: aiomqtt.Client) -> None:
    """Switch the session to acknowledgements sent by `acknowledge`. aiomqtt 2.5 has no option for
    it, so this reaches its paho client (paho 2.x `manual_ack_set`, a public paho method)."""
    paho = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "manual_ack_set"):
        raise RuntimeError("this aiomqtt/paho cannot acknowledge messages after they are taken; "
                           "install the versions setup.cfg names")
    paho.manual_ack_set(True)


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """PUBACK a QoS 1 message the worker has taken (nothing to send for QoS 0)."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


def worker_link_settings(broker: BrokerSettings, worker: str, suffix: str = "") -> LinkSettings:
    """A worker's connection settings from its [broker] section; `suffix` tells its connections
    apart (client ids are unique per broker)."""
    password = None
    if broker.password_file is not None:
        from gateway.measurement.keyfile import read_password_file

        password = read_password_file(broker.password_file)
    return LinkSettings.from_url(broker.url, client_id=f"drgw-master-{worker}"[:56] + suffix,
                                 ca=broker.ca, cert=broker.cert, key=broker.key,
                                 username=broker.username, password=password)
