"""`drgw master run`: one worker of the master station, a long-running asyncio service.

One TaskGroup runs the named parts: `mqtt` (the broker session, reconnecting with jittered backoff,
routing each message), `ingest` (verify + store runs of meas payloads), `repair` (gap scan, leases,
signed resends), `watchdog` (sd_notify READY/WATCHDOG) and `metrics` (Prometheus, optional). All
database work runs on one thread (`db`), one connection, so the event loop never waits on a disk or
a server. Later parts of the master (Report relay, market operation, the dashboard) join the same
TaskGroup as further named tasks over the same `MasterParts` (docs/master.md, "Adding a part").

Measurement and health topics are SHARED subscriptions (`$share/<group>/…`, MQTT 5 §4.8.2): the
broker hands each message to one worker of the group, so N workers split the stream. Status and
reply topics are ordinary subscriptions on every worker: a shared subscription gets no retained
messages (MQTT 5 §4.8.2, "retained messages are not sent"), and a reply must reach whichever worker
can match it; both are idempotent writes in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Callable
from typing import TypeVar

import aiomqtt

from gateway.clock import wall_ms
from gateway.errors import DrgwError
from gateway.master.fleet_state import parse_status
from gateway.master.mqtt import (
    RECEIVE_MAXIMUM,
    acknowledge,
    acknowledge_when_taken,
    connect_properties,
    worker_link_settings,
)
from gateway.master.mqtt_ingest import RECONNECT, keep_ingesting
from gateway.master.parts import MasterParts, build
from gateway.master.repair import on_reply, run_repair
from gateway.master.settings import MasterSettings
from gateway.master.verify import BatchCheck
from gateway.network import topics
from gateway.network.settings import LinkSettings
from gateway.ops.sdnotify import Watchdog

__all__ = ["MasterParts", "MasterService", "build", "serve"]  # MasterParts and build: from .parts

log = logging.getLogger(__name__)
T = TypeVar("T")
INGEST_RUN = 200  # payloads stored in one transaction at most
QUEUE_MAX = 10_000  # payloads waiting for the database; the broker queues the rest (QoS 1)
STALE_LINK_S = 60.0  # the watchdog stops pinging after this long without a broker session


class MasterService:
    """One worker: `run()` until `stop()` (or SIGTERM), then close the database."""

    def __init__(self, parts: MasterParts, *, watchdog: Watchdog | None = None,
                 queue_max: int = QUEUE_MAX) -> None:
        self.parts = parts
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(queue_max)
        self.stopped = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._subscribed_links: set[str] = set()
        self.meas_down_since: float | None = 0.0  # loop time the ingest connection went (None: up)
        self.watchdog = watchdog or Watchdog.from_environment(health=self.health,
                                                              status_line=self.status_line)

    def stop(self) -> None:
        self.stopped.set()

    def health(self, now: float) -> str | None:
        c = self.parts.counters
        if c.db_error is not None:
            return f"database: {c.db_error}"
        if not c.connected and now - c.disconnected_at > STALE_LINK_S:
            return f"no broker session for {now - c.disconnected_at:.0f} s"
        down = self.meas_down_since
        if down is not None and now - down > STALE_LINK_S:
            return f"no ingest connection to the broker for {now - down:.0f} s"
        return None

    def status_line(self) -> str:
        c = self.parts.counters
        return (f"worker {self.parts.worker}: {c.stored} stored, {c.duplicates} duplicate(s), "
                f"{c.quarantined} quarantined, {c.resends} resend(s)")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        self.parts.counters.disconnected_at = self.meas_down_since = loop.time()
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._link(), name="mqtt"),
                         group.create_task(self._meas_link(), name="mqtt ingest"),
                         group.create_task(self._ingest(), name="ingest"),
                         group.create_task(run_repair(self.parts, self.stopped), name="repair"),
                         group.create_task(self._watchdog(), name="watchdog")]
                tasks.extend(self._market_tasks(group))
                if self.parts.settings.prometheus is not None:
                    from gateway.master.metrics import serve_metrics

                    tasks.append(group.create_task(serve_metrics(self.parts), name="metrics"))
                if self.parts.settings.dashboard is not None:
                    from gateway.master.dashboard import market_view, serve_dashboard

                    tasks.append(group.create_task(serve_dashboard(
                        self.parts, self.parts.settings.dashboard, market=market_view(self.parts)),
                        name="dashboard"))
                await self.stopped.wait()
                self.watchdog.stopping("stopping: storing what was received")
                await self._drain()
                for task in reversed(tasks):
                    task.cancel()
        finally:
            await self.parts.close()
        return 0

    def _market_tasks(self, group: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        """[chain]: the Report relay; [market]: windows operated from the price feed."""
        tasks = []
        if self.parts.chain is not None:
            from gateway.master.relay import run_relay

            tasks.append(group.create_task(run_relay(self.parts, self.stopped), name="relay"))
        if self.parts.chain is not None and self.parts.settings.market is not None:
            from gateway.master.market_ops import run_market

            tasks.append(group.create_task(run_market(self.parts, self.stopped), name="market"))
        return tasks

    async def _watchdog(self) -> None:
        """READY=1 once the first broker session is subscribed: a worker that cannot receive is
        not started (systemd's TimeoutStartSec then restarts it), and a test or an orchestrator
        waiting for READY knows that what is published from then on reaches the group."""
        await self.subscribed.wait()
        await self.watchdog.run()

    async def _drain(self) -> None:
        """What reached the queue is stored before the worker goes (what did not, the broker
        or a resend gives again)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), 10.0)

    # ---- the broker session ----

    async def _link(self) -> None:
        attempt = 0
        while not self.stopped.is_set():
            try:
                async with self._client() as client:
                    attempt = 0
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                log.warning("broker %s: %s; reconnecting", self._broker_shown(), exc)
            finally:
                self.parts.client = None
                self.parts.counters.connected = False
                self.parts.counters.disconnected_at = asyncio.get_running_loop().time()
            attempt += 1
            # equal jitter, as the agent's link (docs/mqtt.md, "Connection")
            await asyncio.sleep(RECONNECT.delay(attempt, random.random()))

    def _ready(self, which: str) -> None:
        """`subscribed` once both connections are: what is published from then on is received."""
        self._subscribed_links.add(which)
        if self._subscribed_links >= {"session", "meas"}:
            self.subscribed.set()

    async def _meas_link(self) -> None:
        """The measurement subscription on a connection of its own (gateway/master/mqtt_ingest.py)."""
        group = self.parts.settings.broker.share_group

        def up() -> None:
            self.meas_down_since = None
            self._ready("meas")

        def down() -> None:
            if self.meas_down_since is None:
                self.meas_down_since = asyncio.get_running_loop().time()

        await keep_ingesting(lambda: self._link_settings("-ingest"),
                             f"$share/{group}/{topics.fleet_filter(topics.Kind.MEAS)}",
                             self._take_meas, receive_maximum=RECEIVE_MAXIMUM, stopped=self.stopped,
                             on_up=up, on_down=down)

    async def _take_meas(self, name: str, payload: bytes) -> None:
        parsed = topics.parse(name)
        if parsed is not None and parsed.kind is topics.Kind.MEAS:
            await self.queue.put((parsed.gw, payload))
            self.parts.counters.queued = self.queue.qsize()

    def _broker_shown(self) -> str:
        return self.parts.settings.broker.url.rpartition("@")[2]

    def _link_settings(self, suffix: str = "") -> LinkSettings:
        return worker_link_settings(self.parts.settings.broker, self.parts.worker, suffix)

    def _client(self) -> aiomqtt.Client:
        s = self._link_settings()
        # flow control: gateway/master/mqtt.py (unbounded here, bounded by Receive Maximum)
        client = aiomqtt.Client(
            s.broker.host, s.broker.port, identifier=s.client_id, username=s.username,
            password=s.password, protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
            tls_context=s.tls.context() if s.broker.tls else None, timeout=s.timeout_s,
            keepalive=30, max_queued_incoming_messages=0, properties=connect_properties())
        acknowledge_when_taken(client)
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        group = self.parts.settings.broker.share_group
        # measurements: on their own connection (_meas_link)
        await client.subscribe(f"$share/{group}/{topics.fleet_filter(topics.Kind.HEALTH)}", qos=0)
        await client.subscribe(topics.fleet_filter(topics.Kind.STATUS), qos=1)
        await client.subscribe(topics.fleet_filter(topics.Kind.REPLY), qos=1)
        if self.parts.chain is not None:  # Reports and commitments to relay (one worker each)
            await client.subscribe(f"$share/{group}/{topics.fleet_filter(topics.Kind.CHAIN)}", qos=1)
        if self.parts.price_topic is not None:  # every worker: whichever holds the market lease
            await client.subscribe(self.parts.price_topic.topic, qos=1)
        self.parts.client = client
        self.parts.counters.connected = True
        self._ready("session")
        log.warning("worker %s: subscribed at %s (share group %s)", self.parts.worker,
                    self._broker_shown(), group)
        async for message in client.messages:
            await self._route(str(message.topic), _payload(message))
            acknowledge(client, message)  # taken: queued for ingest (bounded) or written

    async def _route(self, name: str, payload: bytes) -> None:
        feed = self.parts.price_topic
        if feed is not None and name == feed.topic:
            feed.take(payload)
            return
        parsed = topics.parse(name)
        if parsed is None:
            return
        if parsed.kind is topics.Kind.STATUS:
            await self._status(parsed.gw, payload)
        elif parsed.kind is topics.Kind.HEALTH:
            body = payload.decode("utf-8", "replace")[:16_384]
            await self._db(lambda: self.parts.ledger.record_health(parsed.gw, body,
                                                                   now_ms=wall_ms()))
        elif parsed.kind is topics.Kind.REPLY:
            await on_reply(self.parts, parsed.gw, payload)
        elif parsed.kind is topics.Kind.CHAIN and self.parts.chain is not None:
            from gateway.master.relay import on_chain_message

            try:
                await on_chain_message(self.parts, parsed.gw, payload)
            except Exception as exc:  # the database went away: the gateway publishes it again
                log.error("relay: %s", exc)

    async def _status(self, gw: str, payload: bytes) -> None:
        update = parse_status(payload)
        if update is None:
            log.info("status of %s is not a JSON object: ignored", gw)
            return
        alerts = await self._db(lambda: self.parts.ledger.record_status(gw, update,
                                                                        now_ms=wall_ms()))
        self.parts.counters.alerted([a.kind for a in alerts or []])

    async def _db(self, work: Callable[[], T]) -> T | None:
        """Database work whose failure is logged and shown by the watchdog, not fatal: a
        database restart must not end the worker (the broker and resends give the data again)."""
        try:
            result = await self.parts.in_db(work)
        except Exception as exc:  # psycopg/sqlite3 errors of a server or disk that went away
            if self.parts.counters.db_error is None:
                log.error("database %s: %s", self.parts.sql.name, exc)
            self.parts.counters.db_error = str(exc)[:200]
            return None
        self.parts.counters.db_error = None
        return result

    # ---- ingest ----

    async def _ingest(self) -> None:
        """Verify a run while the run before is being stored (gateway/master/ingest.py); a run's
        payloads count as done (queue.join, the drain) once it is stored."""
        storing: asyncio.Task[None] | None = None
        try:
            while True:
                run = [await self.queue.get()]
                while len(run) < INGEST_RUN and not self.queue.empty():
                    run.append(self.queue.get_nowait())
                try:
                    checks = await self.parts.verifier.check(run)
                finally:
                    if storing is not None:  # one run stored at a time, in order
                        await asyncio.shield(storing)
                storing = asyncio.create_task(self._store(run, checks), name="ingest-store")
        finally:
            if storing is not None:  # cancelled: the run being stored is stored first
                await asyncio.shield(storing)

    async def _store(self, run: list[tuple[str, bytes]], checks: list[BatchCheck]) -> None:
        try:
            await self._store_checks(len(run), checks)
        finally:
            for _ in run:
                self.queue.task_done()
            self.parts.counters.queued = self.queue.qsize()

    async def _store_checks(self, payloads: int, checks: list[BatchCheck]) -> None:
        parts = self.parts
        result = await self._db(lambda: parts.ledger.store(checks, now_ms=wall_ms()))
        c = parts.counters
        c.payloads += payloads
        if result is not None:
            c.stored += result.inserted
            c.duplicates += result.duplicates
            c.quarantined += result.quarantined
            c.alerted([a.kind for a in result.alerts])


def _payload(message: aiomqtt.Message) -> bytes:
    p = message.payload
    return p if isinstance(p, bytes) else str(p).encode()


async def serve(settings: MasterSettings, *, worker: str | None = None) -> int:
    """Build and run one worker. A part that fails (a metrics port taken, a bug) ends the worker
    with that part's error, not the TaskGroup's wrapper, so the CLI prints it as one line."""
    parts = build(settings, worker=worker)
    try:
        return await MasterService(parts).run()
    except ExceptionGroup as group:
        first = group.exceptions[0]
        if isinstance(first, DrgwError):
            raise first from None
        raise
