"""The worker's measurement subscription over a small MQTT 5 client of its own: receive and acknowledge.

Measured through aiomqtt 2.5 / paho-mqtt 2.1, one QoS 1 message costs the receiving worker ~240 us
of CPU (20,000 messages of 3 KB, this project's 2-core test machine): paho builds a
threading.Condition and two Properties objects per message and reads the socket six times,
aiomqtt starts a Task per message, and every PUBACK registers and unregisters a writer with the
selector. A worker ingesting one-record payloads spent most of its time there. This connection does
only what ingest needs, in one asyncio.Protocol:

- CONNECT (MQTT 5.0 §3.1) with Clean Start, Receive Maximum (§3.1.2.11.3: the broker holds at most
  that many unacknowledged QoS 1 messages for us) and Maximum Packet Size (§3.1.2.11.4);
- one SUBSCRIBE (§3.8) of the shared measurement filter at QoS 1, checked by its SUBACK (§3.9);
- PUBLISH (§3.3) parsed in place from one buffer, topic and payload handed over in order; a PUBACK
  (§3.4, reason 0 omitted as §3.4.2.1 allows) once the worker has taken the message, all the
  acknowledgements of one loop turn in one write;
- PINGREQ every keepalive/2 (§3.1.2.10), and a connection silent for 1.5 keepalives is given up.
Anything else from the broker (a DISCONNECT, a packet we did not ask for, a malformed one) ends the
connection with an IngestLinkError naming it, and the worker reconnects. A message received and not
yet acknowledged then is the broker's to send again (to another worker of the group, MQTT 5.0
§4.8.2, where it does so); if it does not, its records are a gap, repaired by resend as any other.
The rest of the worker's traffic (status, health, replies, relay, commands) stays on its aiomqtt
session (gateway/master/service.py). bench/ingest_link.py measures both.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import struct
from collections.abc import Awaitable, Callable

from gateway.network.pacing import BackoffPolicy
from gateway.network.settings import LinkSettings

log = logging.getLogger(__name__)

MAX_PACKET = 16 * 1024 * 1024  # a 10,000-record batch is ~4 MB (gateway/measurement/wire.py)
RECONNECT = BackoffPolicy(cap_s=30.0)  # a worker's connections: equal jitter (docs/mqtt.md)
PAUSE_AT = 4096  # messages received and not yet taken before the socket is no longer read
PUBLISH, CONNACK, SUBACK, PINGRESP, DISCONNECT = 3, 2, 9, 13, 14
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"


class IngestLinkError(ConnectionError):
    """The ingest connection failed or the broker ended it; the message says why."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def connect_packet(client_id: str, *, keepalive: int, receive_maximum: int,
                   username: str | None = None, password: str | None = None) -> bytes:
    """CONNECT, MQTT 5.0 §3.1: Clean Start, Receive Maximum (0x21), Maximum Packet Size (0x27)."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    props = b"\x21" + struct.pack("!H", receive_maximum) + b"\x27" + struct.pack("!I", MAX_PACKET)
    body = (_text("MQTT") + b"\x05" + bytes((flags,)) + struct.pack("!H", keepalive)
            + _varint(len(props)) + props + _text(client_id))
    if username is not None:
        body += _text(username)
    if password is not None:
        raw = password.encode("utf-8")
        body += struct.pack("!H", len(raw)) + raw
    return _packet(0x10, body)


def subscribe_packet(packet_id: int, topic_filter: str) -> bytes:
    """SUBSCRIBE, §3.8: no properties, one filter at QoS 1 (options byte 0x01)."""
    return _packet(0x82, struct.pack("!H", packet_id) + b"\x00" + _text(topic_filter) + b"\x01")


def _read_varint(buf: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """(value, next offset), None when the bytes are not all here; ValueError past 4 bytes."""
    value = shift = 0
    for i in range(4):
        if at + i >= len(buf):
            return None
        byte = buf[at + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at + i + 1
        shift += 7
    raise ValueError("a variable byte integer longer than 4 bytes (MQTT 5.0 §1.5.5)")


class IngestProtocol(asyncio.Protocol):
    """The receiving side. `messages` holds (topic, payload, packet id or 0) in arrival order."""

    def __init__(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._buf = bytearray()
        self.messages: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self.arrived = asyncio.Event()
        self.connack: asyncio.Future[bytes] = loop.create_future()
        self.suback: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.heard = loop.time()
        self._acks: list[int] = []
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.end(f"connection lost ({exc})" if exc else "the broker closed the connection")

    def data_received(self, data: bytes) -> None:
        self.heard = self._loop.time()
        self._buf += data
        try:
            self._parse()
        except ValueError as exc:
            self.end(f"malformed packet from the broker: {exc}")

    def ack(self, packet_id: int) -> None:
        """PUBACK this message (sent with the others of this loop turn)."""
        if not self._acks:
            self._loop.call_soon(self._flush)
        self._acks.append(packet_id)

    def _flush(self) -> None:
        acks, self._acks = self._acks, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(b"\x40\x02" + struct.pack("!H", p) for p in acks))

    def end(self, reason: str) -> None:
        """Close the connection; `closed` says why (the first reason given)."""
        if not self.closed.done():
            self.closed.set_result(reason)
        for waiter in (self.connack, self.suback):
            if not waiter.done():
                waiter.set_exception(IngestLinkError(reason))
        self.arrived.set()
        if self.transport is not None:
            self.transport.close()

    def _parse(self) -> None:
        buf, at = self._buf, 0
        while len(buf) - at >= 2:
            head = _read_varint(buf, at + 1)
            if head is None:
                break
            length, start = head
            if length > MAX_PACKET:
                raise ValueError(f"a packet of {length} bytes, above our Maximum Packet Size")
            if start + length > len(buf):
                break
            self._packet(buf[at] >> 4, buf[at] & 0x0F, bytes(buf[start:start + length]))
            at = start + length
        del buf[:at]

    def _packet(self, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            self._publish(flags, body)
        elif kind == CONNACK and not self.connack.done():
            self.connack.set_result(body)
        elif kind == SUBACK and not self.suback.done():
            self.suback.set_result(body)
        elif kind == DISCONNECT:
            code = body[0] if body else 0
            self.end(f"the broker sent DISCONNECT, reason code 0x{code:02X}")
        elif kind != PINGRESP:
            raise ValueError(f"unexpected packet type {kind}")

    def _publish(self, flags: int, body: bytes) -> None:
        """§3.3: topic, packet id (QoS 1), properties (skipped: we allow no topic alias), payload."""
        qos = (flags >> 1) & 3
        if qos > 1 or len(body) < 2:
            raise ValueError(f"a PUBLISH with QoS {qos} or no topic (we subscribed at QoS 1)")
        (n,) = struct.unpack_from("!H", body)
        at = 2 + n
        packet_id = 0
        if qos:
            (packet_id,) = struct.unpack_from("!H", body, at)
            at += 2
        props = _read_varint(body, at)
        if props is None or props[1] + props[0] > len(body):
            raise ValueError("a PUBLISH cut short")
        topic = body[2:2 + n].decode("utf-8")  # UnicodeDecodeError is a ValueError
        self.messages.append((topic, body[props[1] + props[0]:], packet_id))
        self.arrived.set()
        if len(self.messages) > PAUSE_AT and self.transport is not None and not self.paused:
            self.paused = True  # QoS 0 floods are not bounded by Receive Maximum: stop reading
            self.transport.pause_reading()

    def taken(self) -> None:
        """The worker has taken what was queued: read again if a flood paused us."""
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()


Deliver = Callable[[str, bytes], Awaitable[None]]


async def ingest_session(settings: LinkSettings, topic_filter: str, deliver: Deliver, *,
                         receive_maximum: int, on_subscribed: Callable[[], None] = lambda: None
                         ) -> None:
    """Connect, subscribe and hand every message to `deliver`, acknowledging each once `deliver`
    returned (taken). Returns never; raises IngestLinkError (or OSError) when the link ends."""
    loop = asyncio.get_running_loop()
    protocol = await _open(settings, loop)
    keepalive = settings.keepalive_s
    try:
        await _handshake(protocol, settings, topic_filter, receive_maximum)
        on_subscribed()
        pinger = loop.create_task(_ping(protocol, keepalive), name="ingest ping")
        try:
            await _pump(protocol, deliver)
        finally:
            pinger.cancel()
    finally:
        if protocol.transport is not None and not protocol.transport.is_closing():
            protocol.transport.write(_DISCONNECT)
            protocol.transport.close()


async def _open(settings: LinkSettings, loop: asyncio.AbstractEventLoop) -> IngestProtocol:
    broker = settings.broker
    context: ssl.SSLContext | None = settings.tls.context() if broker.tls else None
    try:
        _, protocol = await asyncio.wait_for(loop.create_connection(
            IngestProtocol, broker.host, broker.port, ssl=context), settings.timeout_s)
    except (OSError, TimeoutError) as exc:
        raise IngestLinkError(f"cannot connect to {broker} ({exc or 'timeout'})") from None
    return protocol


async def _handshake(protocol: IngestProtocol, settings: LinkSettings, topic_filter: str,
                     receive_maximum: int) -> None:
    assert protocol.transport is not None
    protocol.transport.write(connect_packet(
        settings.client_id, keepalive=settings.keepalive_s, receive_maximum=receive_maximum,
        username=settings.username, password=settings.password))
    connack = await asyncio.wait_for(protocol.connack, settings.timeout_s)
    if len(connack) < 2 or connack[1] >= 0x80:
        code = connack[1] if len(connack) > 1 else -1
        raise IngestLinkError(f"the broker refused the ingest connection: CONNACK reason code "
                              f"0x{code:02X} (MQTT 5.0 §3.2.2.2)")
    protocol.transport.write(subscribe_packet(1, topic_filter))
    suback = await asyncio.wait_for(protocol.suback, settings.timeout_s)
    props = _read_varint(suback, 2)
    codes = suback[props[1] + props[0]:] if props is not None else b""
    if len(codes) != 1 or codes[0] >= 0x80:
        shown = f"0x{codes[0]:02X}" if codes else "none"
        raise IngestLinkError(f"the broker refused the subscription {topic_filter!r}: SUBACK "
                              f"reason code {shown} (MQTT 5.0 §3.9.3)")


async def _pump(protocol: IngestProtocol, deliver: Deliver) -> None:
    messages = protocol.messages
    while True:
        while messages:
            topic, payload, packet_id = messages.popleft()
            await deliver(topic, payload)
            if packet_id:
                protocol.ack(packet_id)
        protocol.taken()
        if protocol.closed.done():
            raise IngestLinkError(protocol.closed.result())
        protocol.arrived.clear()
        if not messages:
            await protocol.arrived.wait()


async def _ping(protocol: IngestProtocol, keepalive: int) -> None:
    """PINGREQ every keepalive/2; a broker silent for 1.5 keepalives is taken as gone."""
    loop = asyncio.get_running_loop()
    while protocol.transport is not None and not protocol.transport.is_closing():
        await asyncio.sleep(keepalive / 2)
        if loop.time() - protocol.heard > 1.5 * keepalive:
            protocol.end(f"no packet from the broker for {1.5 * keepalive:g} s")
            return
        with contextlib.suppress(RuntimeError):
            protocol.transport.write(_PINGREQ)


async def keep_ingesting(settings: Callable[[], LinkSettings], topic_filter: str, deliver: Deliver,
                         *, receive_maximum: int, stopped: asyncio.Event,
                         on_up: Callable[[], None], on_down: Callable[[], None]) -> None:
    """`ingest_session` again after each failure, with the worker session's backoff (RECONNECT),
    until `stopped`; `on_up` once subscribed, `on_down` when it ends."""
    attempt = 0

    def subscribed() -> None:
        nonlocal attempt
        attempt = 0
        on_up()

    while not stopped.is_set():
        s = settings()
        try:
            await ingest_session(s, topic_filter, deliver, receive_maximum=receive_maximum,
                                 on_subscribed=subscribed)
        except (IngestLinkError, OSError, TimeoutError) as exc:
            log.warning("broker %s, ingest connection: %s; reconnecting", s.broker, exc)
        on_down()
        attempt += 1
        await asyncio.sleep(RECONNECT.delay(attempt, random.random()))
