"""The measurement pipeline: samples -> signed measurements -> one SQLite commit -> the publisher woken.

A sample becomes a signed measurement and is committed to the store before anything is published;
a commit that fails rewinds the measurement chain to what the store holds, so no seq is skipped or
used twice. Housekeeping closes the Merkle interval that ended, expires old rows and judges a config
that is on trial (gateway.agent.trial).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from gateway.agent import trial
from gateway.agent.lifetime import RESTART, StopRequest
from gateway.clock import clock_synchronised, wall_ms
from gateway.config.gateway import GatewayConfig
from gateway.measurement.eip712 import Domain
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain
from gateway.measurement.store.database import Store
from gateway.network.publisher import EventPublisher
from gateway.ops.sdnotify import PipelineProgress
from gateway.perception.readings import Quality, Sample

log = logging.getLogger(__name__)

BATCH_MAX = 500  # samples committed in one transaction
CLOCK_CHECK_S = 60.0  # how often the clock's NTP state is asked again
INTERVAL_GRACE_MS = 5_000  # a few seconds for samples still in flight before an interval closes
TRIAL_DEADLINE_S = 120.0


class SampleObserver(Protocol):
    """Sees every committed sample (the DR loop's measurements)."""

    def on_sample(self, sample: Sample) -> None: ...


class MeasurementPipeline:
    def __init__(self, *, key: GatewayKey, domain: Domain, topic: str, store: Store,
                 samples: asyncio.Queue[Sample], wake: asyncio.Event, progress: PipelineProgress,
                 observer: SampleObserver | None, states: EventPublisher | None) -> None:
        self.key, self.domain, self.topic, self.store = key, domain, topic, store
        self.samples, self.wake, self.progress = samples, wake, progress
        self.observer = observer
        self.states = states  # Home Assistant state topics, when discovery is on
        last_seq, last_hash = store.last_chain_state()
        self.chain = MeasurementChain(gateway=key.address, last_seq=last_seq, last_hash=last_hash)
        self.store_errors = 0
        self.clock_synced = clock_synchronised()
        self._synced_checked = time.monotonic()
        self.ok_devices: set[str] = set()  # devices that answered at least once

    def _clock_state(self) -> bool:
        now = time.monotonic()
        if now - self._synced_checked > CLOCK_CHECK_S:
            self.clock_synced, self._synced_checked = clock_synchronised(), now
        return self.clock_synced

    def commit(self, samples: Sequence[Sample]) -> None:
        synced = self._clock_state()
        signed = [self.chain.next_signed(self.key, self.domain, device=s.device,
                                         time_ms=int(s.time * 1000), clock_synced=synced,
                                         readings=s.readings) for s in samples]
        try:
            self.store.commit(signed, self.topic)
        except Exception:
            # Nothing of this batch is stored: rewind the chain so no seq is skipped or reused.
            seq, leaf = self.store.last_chain_state()
            self.chain = MeasurementChain(gateway=self.key.address, last_seq=seq, last_hash=leaf)
            raise
        self.progress.committed(time.monotonic())
        self.wake.set()
        self._committed(samples)

    def _committed(self, samples: Sequence[Sample]) -> None:
        if self.observer is not None:
            for s in samples:
                self.observer.on_sample(s)
        for s in samples:
            if s.ok:
                self.ok_devices.add(s.device)
            if self.states is not None:
                values = {r.name: float(r.value) for r in s.readings
                          if r.quality is Quality.OK and isinstance(r.value, int | float)}
                self.states.publish_state(s.device, values)

    async def run(self) -> None:
        while True:
            batch = [await self.samples.get()]
            while not self.samples.empty() and len(batch) < BATCH_MAX:
                batch.append(self.samples.get_nowait())
            while True:
                try:
                    self.commit(batch)
                    break
                except Exception as exc:  # disk full, I/O error: keep the samples, try again
                    self.store_errors += 1
                    log.error("store: cannot commit %d measurements (%s); retrying in 1 s",
                              len(batch), exc)
                    await asyncio.sleep(1.0)

    def drain(self) -> None:
        """Commit whatever is still queued (at shutdown, after polling ended)."""
        batch: list[Sample] = []
        while not self.samples.empty():
            batch.append(self.samples.get_nowait())
        if batch:
            self.commit(batch)


class Housekeeping:
    """Once a second: close the Merkle interval that ended, expire old rows, judge a config on trial."""

    def __init__(self, *, config: GatewayConfig, store: Store, pipeline: MeasurementPipeline,
                 connected: asyncio.Event, started: float, stop: StopRequest) -> None:
        self.config, self.store, self.pipeline = config, store, pipeline
        self.connected, self.started, self.stop = connected, started, stop

    async def run(self) -> None:
        interval_ms = int(self.config.store.merkle_interval_s * 1000)
        closed = self.store.intervals()
        next_end = (closed[-1].end_ms if closed else wall_ms() // interval_ms * interval_ms) \
            + interval_ms
        on_trial = trial.on_trial(self.config.path)
        while True:
            await asyncio.sleep(1.0)
            now = wall_ms()
            if now >= next_end + INTERVAL_GRACE_MS:
                self.store.close_interval(next_end - interval_ms, next_end)
                next_end += interval_ms
                self.store.expire(now)
            if on_trial:
                on_trial = self._check_trial()

    def _check_trial(self) -> bool:
        """Keep the new config once the broker and every device answered; roll it back when that
        does not happen in time. Returns whether the trial goes on."""
        wanted = {d.name for d in self.config.devices.devices}
        if self.connected.is_set() and wanted <= self.pipeline.ok_devices:
            trial.confirm(self.config.path)
            log.warning("config %s came up healthy: kept", self.config.config_hash)
            return False
        if time.monotonic() - self.started > TRIAL_DEADLINE_S:
            trial.rollback(self.config.path)
            log.error("new config did not come up within %.0f s: rolled back", TRIAL_DEADLINE_S)
            self.stop(RESTART)
            return False
        return True
