"""The agent behind `drgw run`: devices -> signed measurements -> SQLite outbox -> MQTT.

`Agent` builds its parts through gateway.agent.wiring and runs them for its lifetime
(gateway.agent.lifetime): one TaskGroup for the tasks, one AsyncExitStack for the order they stop in.
On SIGTERM, a restart request or a failed part, polling ends, what was read is committed, the
publisher gets a moment to drain the outbox, the link publishes the retained offline status, and
the DR journal and the store are closed. Remote commands reach it through gateway.agent.control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from gateway.agent import wiring
from gateway.agent.lifetime import STOP_TIMEOUT_S, StopRequest, lifetime
from gateway.config.gateway import GatewayConfig
from gateway.measurement.identity import GatewayKey

if TYPE_CHECKING:
    from gateway.chain.market_types import MarketPort
    from gateway.loop.runner import DrLoop

log = logging.getLogger(__name__)


class Agent:
    """One gateway, built from `config`; the keyword arguments after `key` are for embedding programs
    (the demo): the DR loop's market, its chain thread, its market poll interval, and a reader that
    sees every DR event body the loop publishes."""

    def __init__(self, config: GatewayConfig, *, key: GatewayKey, market: MarketPort | None = None,
                 executor: Executor | None = None, poll_interval_s: float | None = None,
                 on_dr_event: Callable[[wiring.EventBody], None] | None = None) -> None:
        self.config = config
        self.stop = StopRequest()
        self.parts = wiring.build(config, key=key, stop=self.stop, loop=wiring.LoopOptions(
            market=market, executor=executor, poll_interval_s=poll_interval_s, on_event=on_dr_event))

    @property
    def dr(self) -> DrLoop | None:
        return self.parts.dr

    def request_stop(self, code: int = 0) -> None:
        self.stop(code)

    async def run(self) -> int:
        """Run until stopped; returns the exit status (RESTART when a restart was asked for)."""
        p = self.parts
        async with lifetime(self.stop) as life:
            # Started in this order, stopped in the reverse one (see _stopping for the sequence).
            life.on_stop(self._close)
            life.start("mqtt", p.link.run(p.workers), stop=self._stop_link)
            if p.sparkplug is not None:  # its own session; a clean stop publishes NDEATH
                life.start("sparkplug", p.sparkplug.run(), stop=p.sparkplug.stop)
            life.on_stop(self._commit_the_rest)
            if p.metrics is not None:
                life.start("metrics", p.metrics())
            if p.web is not None:
                life.start("web", p.web.serve())
            life.start("measure", p.pipeline.run())
            life.start("housekeeping", p.housekeeping.run())
            life.start("devices", p.layer.run())
            if p.dr is not None:
                life.start("dr", p.dr.run())
            if p.ven is not None:
                life.start("openadr", p.ven.run())
            if p.bidder is not None:
                life.start("bidder", p.bidder.run())
            life.start("watchdog", p.watchdog.run())  # last: READY=1 once the rest has started
            life.on_stop(self._stopping)
            await self.stop.requested.wait()
        return self.stop.code

    # The stop sequence, in the order the exit stack unwinds it.

    def _stopping(self) -> None:
        """First: say so. Then the watchdog, DR loop, devices, housekeeping, measuring and metrics
        tasks are cancelled, newest first."""
        log.info("stopping: polling ends")
        self.parts.watchdog.stopping("stopping: committing what was read, draining the outbox")

    def _commit_the_rest(self) -> None:
        """What was read is committed before we go."""
        self.parts.pipeline.drain()
        log.info("stopping: committed up to seq %d; draining the outbox",
                 self.parts.pipeline.chain.last_seq)

    async def _stop_link(self, task: asyncio.Task[None]) -> None:
        """The publisher gets a moment to flush; then the link publishes the offline status."""
        p = self.parts
        if p.link.connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.publisher.flushed(), STOP_TIMEOUT_S)
        p.link.stop()  # publishes the retained offline status
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, STOP_TIMEOUT_S)

    def _close(self) -> None:
        """Last: the DR journal and the store."""
        p = self.parts
        rows, _ = p.store.outbox_depth()
        if p.dr is not None:
            p.dr.journal.close()
        if p.bidder is not None:
            p.bidder.recorder.flush()
            p.bidder.journal.close()
        p.store.close()
        log.warning("stopped at seq %d, %d batch(es) left in the outbox", p.pipeline.chain.last_seq, rows)
