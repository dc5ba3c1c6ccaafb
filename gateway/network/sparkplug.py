"""Sparkplug B edge node (opt-in, [mqtt.sparkplug]): the committed measurements as typed metrics on
`spBv1.0/<group>/<type>/<edge node>[/<device>]` (Sparkplug 3.0, chapter 4 "Topics"), over a session
of its own, because Sparkplug needs its NDEATH as the MQTT will and a client has one will.

- Each CONNECT carries the will NDEATH {bdSeq}, QoS 1, not retained; bdSeq starts at 0 and goes up by
  one per CONNECT, 255 -> 0 (spec tck-id-message-flow-edge-node-birth-publish-will-message-*).
- First on each session: NBIRTH (QoS 0, not retained, seq 0) with the same bdSeq and
  `Node Control/Rebirth` (tck-id-topics-nbirth-*). A clean stop publishes NDEATH before DISCONNECT
  (tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath).
- Per device: DBIRTH with every point of its profile (Double, or Int64 for whole-number registers;
  `is_null` until a value was committed), then DDATA per committed record without datatypes
  (tck-id-payloads-metric-datatype-not-req). Every message after NBIRTH takes seq + 1, 255 -> 0
  (tck-id-payloads-sequence-num-incrementing).
- NCMD `Node Control/Rebirth` = true: NBIRTH and every DBIRTH again, same bdSeq (5.x "Rebirth").

Metric values and timestamps are the committed record's (gateway.network.views); payload timestamps
are when the message is sent. A live view: records committed while this session is down are not
queued (the signed stream is the history); the DBIRTH after a reconnect carries each device's latest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.clock import wall_ms
from gateway.measurement.record import Measurement, ScaledReading
from gateway.network.link import Announcement, Connection, MqttLink
from gateway.network.sparkplug_codec import (
    DataType,
    Metric,
    SparkplugDecodeError,
    decode_metrics,
    encode_payload,
)
from gateway.network.views import OK, SparkplugSettings, json_number
from gateway.perception.codec import INTEGER_TYPES
from gateway.perception.profiles import Point

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"  # spec 4.1.1, "namespace Element"
REBIRTH = "Node Control/Rebirth"  # spec tck-id-topics-nbirth-rebirth-metric
MAX_QUEUED = 5000  # records waiting while a session is up but busy


@dataclass(frozen=True, slots=True)
class PointType:
    name: str
    datatype: DataType  # DOUBLE, INT64 or BOOLEAN


class SparkplugNode:
    """Presence (will, NBIRTH, NDEATH) of its own MqttLink, its SessionWorker, and a CommittedView.

    `points`: each device's points in profile order, typed (gateway.agent.wiring builds them)."""

    def __init__(self, *, settings: SparkplugSettings, edge_node: str,
                 points: Mapping[str, Sequence[PointType]],
                 clock_ms: Callable[[], int] = wall_ms) -> None:
        self.group, self.edge_node = settings.group, edge_node
        self.points = {device: list(p) for device, p in points.items()}
        self._clock_ms = clock_ms
        self.bd_seq = -1  # the first CONNECT makes it 0
        self.seq = 0
        self._latest: dict[str, dict[str, tuple[int, ScaledReading]]] = {}  # name -> (time, value)
        self._born: set[str] = set()  # devices with a DBIRTH in this session
        self._queue: collections.deque[Measurement] = collections.deque(maxlen=MAX_QUEUED)
        self._ready = asyncio.Event()
        self._rebirth = False
        self.sent = 0
        self.dropped = 0

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group}/{kind}/{self.edge_node}"
        return base if device is None else f"{base}/{device}"

    # --- Presence: asked by the link -------------------------------------------------------------

    def _death(self) -> Announcement:
        bd = Metric(name="bdSeq", timestamp=self._clock_ms(), value=self.bd_seq,
                    datatype=DataType.INT64)
        payload = encode_payload(timestamp=self._clock_ms(), metrics=[bd], seq=None)
        return Announcement(self.topic("NDEATH"), payload, 1, False)

    def will(self) -> Announcement:
        self.bd_seq = (self.bd_seq + 1) % 256
        return self._death()

    def birth(self) -> Announcement:
        now = self._clock_ms()
        self.seq = 0
        self._born.clear()
        self._queue.clear()  # superseded by the DBIRTHs with the latest values
        metrics = [Metric(name="bdSeq", timestamp=now, value=self.bd_seq, datatype=DataType.INT64),
                   Metric(name=REBIRTH, timestamp=now, value=False, datatype=DataType.BOOLEAN)]
        return Announcement(self.topic("NBIRTH"), encode_payload(
            timestamp=now, metrics=metrics, seq=0), 0, False)

    def goodbye(self) -> Announcement:
        return self._death()

    # --- CommittedView ---------------------------------------------------------------------------

    def committed(self, records: Sequence[Measurement]) -> None:
        for m in records:
            latest = self._latest.setdefault(m.device, {})
            for r in m.readings:
                latest[r.name] = (m.time_ms, r)
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(m)
        if records:
            self._ready.set()

    # --- SessionWorker ---------------------------------------------------------------------------

    def _on_ncmd(self, topic: str, payload: bytes) -> None:
        try:
            metrics = decode_metrics(payload)
        except SparkplugDecodeError as exc:
            log.warning("sparkplug: NCMD on %s is not a Sparkplug B payload (%s); ignored", topic, exc)
            return
        if (REBIRTH, True) in metrics:
            self._rebirth = True
            self._ready.set()

    async def run_session(self, conn: Connection) -> None:
        await conn.subscribe(self.topic("NCMD"), self._on_ncmd, qos=0)
        self._queue.clear()  # what waits is in _latest: the DBIRTHs below carry it
        for device in list(self._latest):
            await self._dbirth(conn, device)
        while True:
            self._ready.clear()
            if self._rebirth:
                await self._rebirth_all(conn)
            while self._queue and not self._rebirth:
                m = self._queue[0]
                if m.device not in self._born or self._unknown(m):
                    await self._dbirth(conn, m.device)
                else:
                    await self._ddata(conn, m)
                self._queue.popleft()
            if not self._queue and not self._rebirth:
                await self._ready.wait()

    async def _rebirth_all(self, conn: Connection) -> None:
        """Spec 5.x, rebirth: stop DATA, NBIRTH (seq 0, same bdSeq), then every DBIRTH."""
        self._rebirth = False
        birth = self.birth()
        await self._send(conn, birth.topic, birth.payload, counted=False)
        for device in list(self._latest):
            await self._dbirth(conn, device)

    def _unknown(self, m: Measurement) -> bool:
        known = {p.name for p in self.points.get(m.device, ())}
        return any(r.name not in known for r in m.readings)

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    async def _send(self, conn: Connection, topic: str, payload: bytes, *, counted: bool = True) -> None:
        await conn.publish(topic, payload, qos=0, retain=False)  # spec: DBIRTH/DDATA QoS 0
        self.sent += counted

    async def _dbirth(self, conn: Connection, device: str) -> None:
        latest = self._latest.get(device, {})
        points = self.points.setdefault(device, [])
        for name in latest:  # a reading the profile did not list: Double, born from now on
            if name not in {p.name for p in points}:
                points.append(PointType(name, DataType.DOUBLE))
        now = self._clock_ms()
        metrics = []
        for p in points:
            time_ms, reading = latest.get(p.name, (now, None))
            metrics.append(Metric(name=p.name, timestamp=time_ms, datatype=p.datatype,
                                  value=_value(reading, p.datatype)))
        payload = encode_payload(timestamp=now, metrics=metrics, seq=self._next_seq())
        await self._send(conn, self.topic("DBIRTH", device), payload)
        self._born.add(device)

    async def _ddata(self, conn: Connection, m: Measurement) -> None:
        types = {p.name: p.datatype for p in self.points[m.device]}
        metrics = [Metric(name=r.name, timestamp=m.time_ms, kind=types[r.name],
                          value=_value(r, types[r.name])) for r in m.readings]
        payload = encode_payload(timestamp=self._clock_ms(), metrics=metrics, seq=self._next_seq())
        await self._send(conn, self.topic("DDATA", m.device), payload)


@dataclass(frozen=True, slots=True)
class SparkplugEdge:
    """The edge node with its own link, run as one part of the agent (gateway.agent.agent)."""

    node: SparkplugNode
    link: MqttLink
    stop_timeout_s: float = 5.0

    async def run(self) -> None:
        await self.link.run([self.node])

    async def stop(self, task: asyncio.Task[None]) -> None:
        """A clean stop: NDEATH, then DISCONNECT (MqttLink.stop publishes the goodbye)."""
        self.link.stop()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, self.stop_timeout_s)


def point_type(point: Point) -> PointType | None:
    """A profile point's metric type, None for text points (not measured): Boolean for bits,
    Int64 where the codec yields whole numbers (gateway.perception.codec.decode_point), else Double."""
    if point.type == "string":
        return None
    if point.type == "bool":
        return PointType(point.name, DataType.BOOLEAN)
    whole = (point.type in INTEGER_TYPES and point.scale == 1 and point.offset == 0
             and point.scale_factor is None)
    return PointType(point.name, DataType.INT64 if whole else DataType.DOUBLE)


def _value(reading: ScaledReading | None, datatype: DataType) -> int | float | bool | None:
    """The committed value in the metric's type; None (is_null) without a good value, or when it
    does not fit the type (a fraction in an Int64 point, a u64 counter past 2^63)."""
    if reading is None or reading.quality != OK:
        return None
    number = json_number(reading.value)
    if datatype is DataType.BOOLEAN:
        return number != 0
    if datatype is DataType.INT64:
        fits = isinstance(number, int) and -(1 << 63) <= number < (1 << 63)
        return number if fits else None
    return float(number)
