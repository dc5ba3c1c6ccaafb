"""MqttLink: one aiomqtt session at a time to the broker, TLS/mutual TLS, LWT, retained birth on
every (re)connect, and reconnects with jittered exponential backoff.

It speaks MQTT 5 so that it can tell the broker the largest packet it takes (Maximum Packet Size in
CONNECT): the broker then drops anything larger instead of making us hold it in memory (the
command topic is open to junk). A broker that speaks only 3.1.1 gets 3.1.1 (see _fall_back).

Work that needs the broker (outbox publisher, command dispatcher, health) is a `SessionWorker`: the
link starts its `run_session(conn)` in a TaskGroup for each session and cancels it when the session
drops, so a worker never sees a stale connection. The link is the only place that talks to aiomqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import aiomqtt
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.clock import wall_ms
from gateway.network import payloads, topics
from gateway.network.errors import (
    BrokerRefused,
    BrokerUnreachable,
    ConnectionLost,
    MqttLinkError,
    translate,
)
from gateway.network.pacing import Backoff, BackoffPolicy
from gateway.network.settings import LinkSettings

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]

# The largest packet the broker may send us (MQTT 5 section 3.1.2.11.4, Maximum Packet Size). The
# gateway receives only commands (16 KiB, gateway.network.command.MAX_BYTES): 64 KiB lets a slightly
# oversized one arrive and get its `too_large` reply with its id, while the broker drops a larger
# one without sending it [MQTT-3.1.2-25], so a 100 MB payload never reaches this process.
RECEIVE_MAX_BYTES = 64 * 1024


class Connection:
    """One live session. Methods raise MqttLinkError subclasses, never aiomqtt's own errors."""

    def __init__(self, client: aiomqtt.Client, *, broker: str) -> None:
        self._client = client
        self._broker = broker
        self._routes: list[tuple[str, MessageHandler]] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        """Publish and, for QoS 1, return only after the broker's PUBACK.

        aiomqtt 2.5 `Client.publish` waits on an Event set by paho's on_publish, which paho calls
        for QoS 1 when the PUBACK arrives (paho client.py `_handle_pubackcomp`). No timeout: a dead
        connection is found by keepalive, and the link then cancels this call with the session.
        """
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf)
        except aiomqtt.MqttError as exc:
            raise translate(exc, broker=self._broker, connecting=False) from exc

    async def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> None:
        """Route messages matching `topic_filter` to `handler` (a quick, non-blocking callable)."""
        self._routes.append((topic_filter, handler))
        try:
            await self._client.subscribe(topic_filter, qos=qos)
        except aiomqtt.MqttError as exc:
            raise translate(exc, broker=self._broker, connecting=False) from exc

    def route(self, topic: str, payload: bytes) -> None:
        for topic_filter, handler in self._routes:
            if topic_matches_sub(topic_filter, topic):
                handler(topic, payload)


class SessionWorker(Protocol):
    """Something that works while a session is up; cancelled when it drops."""

    async def run_session(self, conn: Connection) -> None: ...


class Announcement(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Presence(Protocol):
    """What a link says about its client instead of the drgw status topic (the Sparkplug B edge
    node, gateway.network.sparkplug): the will of each CONNECT, the first message of each session
    and the message of a clean stop. `will` is asked once per CONNECT, `birth` once per session."""

    def will(self) -> Announcement: ...
    def birth(self) -> Announcement: ...
    def goodbye(self) -> Announcement: ...


class _Stop(Exception):
    """Raised inside the session TaskGroup to end it on request."""


class MqttLink:
    """Keeps a session to the broker up until `stop()`; see the module docstring."""

    def __init__(self, *, settings: LinkSettings, gateway: str,
                 status: Callable[[], payloads.StatusInfo],
                 backoff: BackoffPolicy | None = None, rng: random.Random | None = None,
                 clock_ms: Callable[[], int] = wall_ms,
                 receive_max_bytes: int = RECEIVE_MAX_BYTES, presence: Presence | None = None) -> None:
        self.settings = settings
        self.presence = presence
        self.receive_max_bytes = receive_max_bytes
        self.protocol = aiomqtt.ProtocolVersion.V5
        self.gw = topics.gw_id(gateway)
        self.status_info = status
        self._backoff = Backoff(backoff or BackoffPolicy())
        self._rng = rng or random.Random()
        self._clock_ms = clock_ms
        self._stop = asyncio.Event()
        self.connected = asyncio.Event()
        self.sessions = 0
        self.last_error: MqttLinkError | None = None
        self.status_topic = topics.topic(self.gw, topics.Kind.STATUS)
        self._up_since: float | None = None

    def stop(self) -> None:
        """End the session: publish offline status (retained), disconnect cleanly, return from run."""
        self._stop.set()

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        session: dict[str, Any] = {"clean_session": True}
        if self.protocol is aiomqtt.ProtocolVersion.V5:
            # clean start with the default session expiry (0) is 3.1.1's clean session
            connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no hints
            connect.MaximumPacketSize = self.receive_max_bytes
            session = {"clean_start": True, "properties": connect}
        return aiomqtt.Client(
            s.broker.host, s.broker.port, identifier=s.client_id, keepalive=s.keepalive_s,
            timeout=s.timeout_s, username=s.username, password=s.password,
            protocol=self.protocol, **session,
            tls_context=s.tls.context() if s.broker.tls else None,
            will=aiomqtt.Will(*self._will()),
        )

    def _will(self) -> Announcement:
        if self.presence is not None:
            return self.presence.will()
        return Announcement(self.status_topic, payloads.offline(gw=self.gw, reason="lwt"), 1, True)

    def _fail_fast_before_connack(self, client: aiomqtt.Client) -> None:
        """Make a connection that the broker closes before CONNACK fail at once.

        With TLS 1.3 a broker that requires a client certificate rejects us after the handshake;
        paho then closes the socket, but aiomqtt ignores disconnects before CONNACK and waits out
        its whole timeout. We fail its pending CONNACK future instead (private, hence here only).
        """
        paho = client._client
        original = paho.on_disconnect

        def on_disconnect(*args: Any) -> None:
            pending = client._connected
            if not pending.done():
                hint = (" during the TLS session: the broker may require a client certificate "
                        "([mqtt] cert and key) or not trust ours") if self.settings.broker.tls else ""
                pending.set_exception(BrokerUnreachable(
                    f"connection closed before CONNACK{hint}", broker=str(self.settings.broker)))
            if original is not None:
                original(*args)

        paho.on_disconnect = on_disconnect

    def _fall_back(self, err: MqttLinkError) -> None:
        """A broker that speaks only MQTT 3.1.1 refuses our v5 CONNECT with return code 1 (MQTT
        3.1.1 section 3.1.2.2; paho reports it as v5 reason 132, Unsupported Protocol Version):
        speak 3.1.1 to it from then on. It cannot be asked to cap packet sizes, so the warning
        names the broker's own setting (docs/mqtt.md)."""
        if (self.protocol is aiomqtt.ProtocolVersion.V5 and isinstance(err, BrokerRefused)
                and err.reason_code in (1, 132)):
            self.protocol = aiomqtt.ProtocolVersion.V311
            log.warning("broker %s does not speak MQTT 5: using MQTT 3.1.1, which cannot ask it to "
                        "drop oversized commands; set max_packet_size %d in its configuration "
                        "(mosquitto.conf)", self.settings.broker, self.receive_max_bytes)

    def birth_payload(self) -> bytes:
        return payloads.birth(self.status_info(), gw=self.gw, now_ms=self._clock_ms())

    def _birth(self) -> Announcement:
        if self.presence is not None:
            return self.presence.birth()
        return Announcement(self.status_topic, self.birth_payload(), 1, True)

    def _goodbye(self) -> Announcement:
        if self.presence is not None:
            return self.presence.goodbye()
        return Announcement(self.status_topic, payloads.offline(
            gw=self.gw, reason="shutdown", now_ms=self._clock_ms()), 1, True)

    async def run(self, workers: Sequence[SessionWorker] = ()) -> None:
        """Connect, run the workers, reconnect with backoff; return after stop()."""
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            self._up_since = None
            try:
                await self._session(workers, loop)
            except* MqttLinkError as group:
                err = group.exceptions[0]
                assert isinstance(err, MqttLinkError)
                self.last_error = err
                log.warning("%s", err)
                self._fall_back(err)
            finally:
                self.connected.clear()
            if self._stop.is_set():
                return
            self._backoff.after_session(up_since=self._up_since, now=loop.time())
            delay = self._backoff.next_delay(self._rng.random())
            log.info("reconnecting to %s in %.2fs", self.settings.broker, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _session(self, workers: Sequence[SessionWorker],
                       loop: asyncio.AbstractEventLoop) -> None:
        broker = str(self.settings.broker)
        client = self._client()
        self._fail_fast_before_connack(client)
        try:
            await client.__aenter__()
        except BrokerUnreachable:
            self._abandon(client)
            raise
        except (aiomqtt.MqttError, OSError) as exc:
            raise translate(exc, broker=broker, connecting=True) from exc
        self._up_since = loop.time()
        clean = False
        try:
            conn = Connection(client, broker=broker)
            birth = self._birth()
            await conn.publish(birth.topic, birth.payload, qos=birth.qos, retain=birth.retain)
            self.sessions += 1
            self.connected.set()
            log.info("connected to %s as %s", broker, self.gw)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._pump(client, conn, broker), name="mqtt-pump")
                    tg.create_task(self._wait_stop(conn), name="mqtt-stop")
                    for worker in workers:
                        tg.create_task(worker.run_session(conn), name=type(worker).__name__)
            except* _Stop:
                clean = True
        finally:
            self.connected.clear()
            if clean:
                with contextlib.suppress(aiomqtt.MqttError, OSError):
                    await client.__aexit__(None, None, None)
            else:
                self._abandon(client)

    @staticmethod
    def _abandon(client: aiomqtt.Client) -> None:
        """Drop a broken session's socket without a DISCONNECT packet (a DISCONNECT would make a
        broker that still sees us discard our last will). aiomqtt has no abort(), hence the
        private calls; the client object is discarded afterwards."""
        paho = client._client
        with contextlib.suppress(Exception):
            paho._sock_close()
        gone = client._disconnected
        if gone.done() and not gone.cancelled():
            gone.exception()  # mark retrieved: no "exception never retrieved" noise
        if client._lock.locked():
            client._lock.release()

    async def _wait_stop(self, conn: Connection) -> None:
        await self._stop.wait()
        goodbye = self._goodbye()
        with contextlib.suppress(MqttLinkError):
            await asyncio.wait_for(conn.publish(goodbye.topic, goodbye.payload, qos=goodbye.qos,
                                                retain=goodbye.retain), self.settings.timeout_s)
        raise _Stop

    async def _pump(self, client: aiomqtt.Client, conn: Connection, broker: str) -> None:
        try:
            async for message in client.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                conn.route(str(message.topic), data)
        except aiomqtt.MqttError as exc:
            raise translate(exc, broker=broker, connecting=False) from exc
        raise ConnectionLost("message stream ended", broker=broker)


__all__ = ["BrokerRefused", "Connection", "MqttLink", "SessionWorker"]
