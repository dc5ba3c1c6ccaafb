"""Store-and-forward publisher: drains the SQLite outbox over MQTT QoS 1, in order, rate-limited;
plus the health, event and Home Assistant state publishers. All are MqttLink SessionWorkers.

An outbox row leaves the store only after the broker's PUBACK (Connection.publish waits for it),
and rows are acked strictly in id order even with several publishes in flight: with a window > 1
the broker still delivers QoS 1 messages of one session in order (MQTT 3.1.1 section 4.6), but
PUBACKs may be processed out of order by us, so row N is acked only once every row before it is.
A session that drops leaves its unacked rows in the outbox; the next session republishes them
(at-least-once: consumers de-duplicate by seq).

A store that cannot take an ack (disk full, I/O error: `StoreError`) ends nothing: the PUBACKed ids
are kept (at most one batch of them) and written again with a growing pause, and no new row is read
until they are, so the same rows are not published over and over. Their rows stay in the outbox
meanwhile: a restart before the ack is written sends them once more (a duplicate, never a loss).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.clock import wall_ms
from gateway.measurement.store.errors import StoreError
from gateway.network import ha_gateway, payloads, topics
from gateway.network.latest import LatestValues, Value
from gateway.network.link import Connection, MqttLink
from gateway.network.pacing import TokenBucket
from gateway.network.ports import CounterSource, OutboxRow, OutboxStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishLimits:
    """Caps for backlog replay. rate <= 0 means uncapped. `window` = publishes awaiting PUBACK."""

    messages_per_s: float = 200.0
    bytes_per_s: float = 1_000_000.0
    burst_messages: float = 50.0
    burst_bytes: float = 256_000.0
    window: int = 16
    batch_rows: int = 256
    store_retry_s: float = 1.0  # first pause after the store refused an ack or a read; doubles
    store_retry_max_s: float = 10.0  # the longest pause: how late a freed disk is noticed


class Publisher:
    """Drains the outbox while a session is up; `wake` is set by whoever commits new rows.

    The rate caps run on `clock` (monotonic seconds; default: the event loop's) and wait with
    `sleep`: a test injects a clock of its own to count what the caps let through per second.
    """

    def __init__(self, *, store: OutboxStore, wake: asyncio.Event,
                 limits: PublishLimits | None = None, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self.wake = wake
        self.limits = limits or PublishLimits()
        self._clock = clock
        self._sleep = sleep
        if self.limits.window < 1 or self.limits.batch_rows < 1:
            raise ValueError("PublishLimits.window and batch_rows must be >= 1")
        self._msgs = TokenBucket(self.limits.messages_per_s, self.limits.burst_messages)
        self._bytes = TokenBucket(self.limits.bytes_per_s, self.limits.burst_bytes)
        self.published = 0
        self.acked_rows = 0
        self.last_seq = -1
        self.ack_failures = 0  # acks (and outbox reads) the store refused
        self._unwritten: list[int] = []  # PUBACKed row ids the store has not taken yet
        self._failing: str | None = None  # the store's reason while it refuses us
        self._retry_s = self.limits.store_retry_s
        self._empty = asyncio.Event()

    async def flushed(self) -> None:
        """Return once the outbox has been seen empty (for a clean shutdown)."""
        while self.store.outbox_depth()[0] > 0:
            self._empty.clear()
            await self._empty.wait()

    async def run_session(self, conn: Connection) -> None:
        while True:
            while self._unwritten and not self._write_acks():
                await self._pause()
            # Clear before reading: a commit after the read sets it again, so nothing is missed.
            self.wake.clear()
            try:
                rows = self.store.outbox_pending(self.limits.batch_rows)
            except StoreError as exc:
                self._refused(exc)
                await self._pause()
                continue
            if not rows:
                self._empty.set()
                await self.wake.wait()
                continue
            await self._publish_batch(conn, rows)

    def _write_acks(self) -> bool:
        """Hand the PUBACKed ids to the store; False (ids kept) when it refuses them."""
        try:
            self.store.outbox_ack(self._unwritten)
        except StoreError as exc:
            self._refused(exc)
            return False
        self._unwritten.clear()
        if self._failing is not None:
            log.warning("outbox: the store takes acks again")
        self._failing, self._retry_s = None, self.limits.store_retry_s
        return True

    def _refused(self, exc: StoreError) -> None:
        self.ack_failures += 1
        if self._failing != exc.reason:  # once per spell, not once per retry
            log.error("outbox: %s; %d PUBACKed batch(es) stay queued until it can be written "
                      "(a restart meanwhile sends them again: a duplicate, never a loss)",
                      exc, len(self._unwritten))
        self._failing = exc.reason

    async def _pause(self) -> None:
        await asyncio.sleep(self._retry_s)
        self._retry_s = min(2 * self._retry_s, self.limits.store_retry_max_s)

    async def _pace(self, size: int) -> None:
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            now = clock()
            delay = max(self._msgs.wait_time(1, now), self._bytes.wait_time(size, now))
            if delay <= 0:
                self._msgs.take(1, now)
                self._bytes.take(size, now)
                return
            await self._sleep(delay)

    async def _publish_batch(self, conn: Connection, rows: Sequence[OutboxRow]) -> None:
        inflight: collections.deque[tuple[OutboxRow, asyncio.Task[None]]] = collections.deque()
        try:
            for row in rows:
                while len(inflight) >= self.limits.window:
                    await self._ack_head(inflight, wait=True)
                await self._pace(len(row.payload))
                task = asyncio.create_task(conn.publish(row.topic, row.payload, qos=1))
                inflight.append((row, task))
                self.published += 1
                await self._ack_head(inflight, wait=False)
            while inflight:
                await self._ack_head(inflight, wait=True)
        finally:
            for _, task in inflight:
                task.cancel()

    async def _ack_head(self, inflight: collections.deque[tuple[OutboxRow, asyncio.Task[None]]],
                        *, wait: bool) -> None:
        """Ack the longest prefix of completed publishes in one store call (in id order)."""
        if wait and inflight:
            await inflight[0][1]
        done: list[OutboxRow] = []
        while inflight and inflight[0][1].done():
            row, task = inflight.popleft()
            task.result()  # re-raises a publish failure: the session ends, the row stays
            done.append(row)
        if done:
            self._unwritten.extend(r.id for r in done)
            if self._failing is None:  # while the store refuses, run_session retries with pauses
                self._write_acks()
            self.acked_rows += len(done)
            self.last_seq = done[-1].seq_last


class HealthPublisher:
    """Every `interval_s`: counters -> health topic (QoS 0, not retained), and a refresh of the
    retained status so `drgw fleet list` sees last-seen time and backlog."""

    def __init__(self, *, link: MqttLink, counters: CounterSource,
                 store: OutboxStore | None = None, interval_s: float = 30.0,
                 extra: Callable[[], Mapping[str, int | float]] | None = None,
                 detail: Callable[[], Mapping[str, Any]] | None = None,
                 clock_ms: Callable[[], int] = wall_ms) -> None:
        self.link = link
        self.counters = counters
        self.store = store
        self.interval_s = interval_s
        self.extra = extra
        self.detail = detail  # the structured snapshot (gateway.ops.health), once per message
        self.clock_ms = clock_ms
        self.topic = topics.topic(link.gw, topics.Kind.HEALTH)

    def snapshot(self) -> dict[str, int | float]:
        values: dict[str, int | float] = dict(self.counters.counters())
        if self.extra is not None:
            values.update(self.extra())
        return values

    async def run_session(self, conn: Connection) -> None:
        since = self.clock_ms()
        while True:
            now = self.clock_ms()
            backlog = self.store.outbox_depth() if self.store is not None else None
            detail = self.detail() if self.detail is not None else None
            await conn.publish(self.topic, payloads.health(
                self.snapshot(), gw=self.link.gw, now_ms=now, backlog=backlog, detail=detail), qos=0)
            await conn.publish(self.link.status_topic, payloads.birth(
                self.link.status_info(), gw=self.link.gw, now_ms=now,
                backlog=backlog, since_ms=since), qos=1, retain=True)
            await asyncio.sleep(self.interval_s)


class EventPublisher:
    """DR-loop events and Home Assistant plain values, queued while offline.

    `publish_event` never blocks: events wait in a bounded queue (oldest dropped and counted when
    full: the chain Report, not MQTT, is the evidence). `publish_state` keeps the latest value of
    every point per device (a gauge, not a log) and sends each changed device's whole map.
    """

    def __init__(self, *, gw: str, max_queued: int = 1000,
                 clock_ms: Callable[[], int] = wall_ms, latest: LatestValues | None = None,
                 dr_state: bool = False) -> None:
        self.gw = topics.gw_id(gw)
        self.event_topic = topics.topic(self.gw, topics.Kind.EVENT)
        self._events: collections.deque[bytes] = collections.deque(maxlen=max_queued)
        # every point's latest value per device (gateway.network.latest): a state message carries
        # them all, not only what the last cycle read, so no Home Assistant template misses a key
        self.latest = latest if latest is not None else LatestValues()
        self.dr_state = dr_state  # [dr] and discovery: the DR figures go to state/_gateway too
        self._ready = asyncio.Event()
        self._clock_ms = clock_ms
        self.dropped = 0
        self.sent = 0

    def publish_event(self, body: Mapping[str, Any]) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(payloads.event(body, gw=self.gw, now_ms=self._clock_ms()))
        self._ready.set()
        if self.dr_state and (figures := ha_gateway.dr_values(body)):
            self.publish_state(ha_gateway.GATEWAY_STATE, figures)

    def publish_state(self, device: str, values: Mapping[str, Value], *,
                      time_ms: int | None = None) -> None:
        """Merge `values` (measured at `time_ms`, default now) into the device's latest values;
        the device's whole state is sent at the next chance (QoS 0, retained)."""
        topics.state_topic(self.gw, device)  # validates the device name now, not at send time
        if self.dr_state and device == ha_gateway.GATEWAY_STATE and device not in self.latest.devices():
            values = {**ha_gateway.dr_initial(), **values}  # every DR key, from the first message
        self.latest.update(device, values, time_ms=self._clock_ms() if time_ms is None else time_ms)
        self._ready.set()

    async def run_session(self, conn: Connection) -> None:
        if self.dr_state and ha_gateway.GATEWAY_STATE not in self.latest.devices():
            self.publish_state(ha_gateway.GATEWAY_STATE, {})  # idle: the DR sensors start known
        # a new session sends every device's state again (the broker may have lost its retained ones)
        self.latest.mark_changed(self.latest.devices())
        while True:
            self._ready.clear()
            while self._events:
                await conn.publish(self.event_topic, self._events[0], qos=1)
                self._events.popleft()
                self.sent += 1
            for device in (changed := list(self.latest.take_changed())):
                try:
                    await conn.publish(topics.state_topic(self.gw, device),
                                       payloads.dumps(self.latest.payload(device)), qos=0, retain=True)
                except BaseException:
                    self.latest.mark_changed(changed[changed.index(device):])
                    raise
            if not self._events and not self._ready.is_set():
                await self._ready.wait()


__all__ = ["EventPublisher", "HealthPublisher", "MqttLink", "PublishLimits", "Publisher"]
