"""The measurement pipeline: samples -> signed measurements -> one SQLite commit -> the publisher woken.

A sample becomes a signed measurement and is committed to the store before anything is published;
a commit that fails rewinds the measurement chain to what the store holds, so no seq is skipped or
used twice. A store that refuses commits (disk full, I/O error) stops nothing: the batch is kept and
committed again with a growing pause, and the agent goes on by itself once the store takes it.

Memory stays bounded meanwhile: the samples wait in a `SampleQueue` of SAMPLE_QUEUE_MAX, which drops
its OLDEST sample (counted as `samples_dropped`) to take a new one. The newest readings are the ones
the DR loop and the aggregator need when the store works again, and a dropped sample was never
signed: no seq is consumed, the chain has a gap in time, never in seq.

Group commit: samples are committed at most once per `commit_interval_s`, all devices' samples of a
poll cycle in ONE transaction and so one fsync (docs/storage.md has the arithmetic). The interval is
the fastest poll interval, and never more than 1 s (`commit_timing`, with or without [dr]): one
commit per poll cycle, so at most one fsync a second at 1 Hz whatever the number of meters. After
the first sample of a batch arrives the pipeline waits for the other devices of the same cycle:
until every device of the previous commit has a sample in the batch (at most `gather_s`), and at
least until `commit_interval_s` after the previous commit, then commits everything queued. Nothing
is published, nor seen by the DR loop, before its commit: in steady state that costs the spread of
the devices' replies in a cycle (milliseconds over TCP); a device that stops answering costs
`gather_s` once.

Housekeeping closes a Merkle interval over the records committed since the previous one every
`merkle_interval_s` of monotonic time, applies the outbox caps, and judges a config that is on
trial (gateway.agent.trial).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Protocol

from gateway.agent import trial
from gateway.agent.lifetime import RESTART, StopRequest
from gateway.clock import clock_synchronised
from gateway.config.gateway import GatewayConfig
from gateway.measurement.eip712 import Domain
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain
from gateway.measurement.store.database import Store
from gateway.measurement.store.errors import StoreError
from gateway.network.publisher import EventPublisher
from gateway.network.views import CommittedView
from gateway.ops.sdnotify import PipelineProgress
from gateway.perception.readings import Quality, Sample

log = logging.getLogger(__name__)

BATCH_MAX = 500  # samples committed in one transaction
COMMIT_INTERVAL_S = 1.0  # the longest time between two commits (one fsync each): the module docstring
GATHER_S = 0.2  # the longest wait, after a batch's first sample, for the other devices of its cycle
SAMPLE_QUEUE_MAX = 2048  # samples waiting for the store: ~5 MB at 20 readings a sample
CLOCK_CHECK_S = 60.0  # how often the clock's NTP state is asked again
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 10.0  # pauses between commits the store refused (doubling)
STILL_FAILING_LOG_S = 300.0  # while the store refuses commits, one log line this often
HOUSEKEEPING_RETRY_S = 60.0  # a Merkle close or expiry the store refused is tried again after
CATCH_UP_ROOTS = 10  # roots of up to 100 000 records each closed in one housekeeping step at most
TRIAL_DEADLINE_S = 120.0


def commit_timing(config: GatewayConfig) -> tuple[float, float]:
    """(commit_interval_s, gather_s) for the configured devices: the fastest poll interval, at most
    COMMIT_INTERVAL_S, and a gather window of a quarter of it, at most GATHER_S. With [dr] too: the
    closed loop judges each sample by the time it was taken, however late and bunched it comes
    (gateway/loop/horizon.py, window.py), and builds the Report from what is committed at the
    window's end (`committed_leaves`): docs/storage.md."""
    interval = min([COMMIT_INTERVAL_S, *(d.intervals[p.poll] for d in config.devices.devices
                                          for p in d.profile.points)])
    return interval, min(GATHER_S, interval / 4)


class SampleQueue(asyncio.Queue[Sample]):
    """The samples between the device layer and the pipeline, at most `maxsize`. When it is full,
    `put_nowait` drops the oldest sample and counts it in `dropped` (see the module docstring)."""

    def __init__(self, maxsize: int = SAMPLE_QUEUE_MAX) -> None:
        if maxsize < 1:
            raise ValueError("SampleQueue: maxsize must be at least 1")
        super().__init__(maxsize)
        self.dropped = 0
        self.arrived = asyncio.Event()  # set by every put (the pipeline's gather waits on it)

    def put_nowait(self, item: Sample) -> None:
        if self.full():
            self.get_nowait()
            self.dropped += 1
        super().put_nowait(item)
        self.arrived.set()


class SampleObserver(Protocol):
    """Sees every committed sample (the DR loop's measurements)."""

    def on_sample(self, sample: Sample) -> None: ...


class MeasurementPipeline:
    def __init__(self, *, key: GatewayKey, domain: Domain, topic: str, store: Store,
                 samples: SampleQueue, wake: asyncio.Event, progress: PipelineProgress,
                 observer: SampleObserver | None, states: EventPublisher | None,
                 views: CommittedView | None = None, commit_interval_s: float = COMMIT_INTERVAL_S,
                 gather_s: float = GATHER_S) -> None:
        self.key, self.domain, self.topic, self.store = key, domain, topic, store
        self.views = views  # the plain and Sparkplug streams: fed what the store just committed
        self.samples, self.wake, self.progress = samples, wake, progress
        self.observer = observer
        self.states = states  # Home Assistant state topics, when discovery is on
        last_seq, last_hash = store.last_chain_state()
        self.chain = MeasurementChain(gateway=key.address, last_seq=last_seq, last_hash=last_hash)
        self.store_errors = 0
        self._holding: list[Sample] = []  # the batch being committed (kept while the store refuses)
        self._failing_since: float | None = None
        self._logged_at = 0.0
        self.clock_synced = clock_synchronised()
        self._synced_checked = time.monotonic()
        self.ok_devices: set[str] = set()  # devices that answered at least once
        self.commit_interval_s, self.gather_s = commit_interval_s, gather_s
        self._committed_at = -math.inf  # loop time of the last commit
        self._expected: set[str] | None = None  # the devices of the last commit (None: no commit yet)

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
        if self.views is not None:  # after the commit, the very records committed (never raises)
            self.views.committed([sm.measurement for sm in signed])
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
                self.states.publish_state(s.device, values, time_ms=int(s.time * 1000))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._holding = [await self.samples.get()]
            await self._gather(loop)
            pause = RETRY_FIRST_S
            while not self._try_commit():
                await asyncio.sleep(pause)
                pause = min(2 * pause, RETRY_MAX_S)
            self._committed_at = loop.time()
            if self._holding:  # empty when committed_leaves took the batch meanwhile
                self._expected = {s.device for s in self._holding}
            self._holding = []

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Add the rest of the poll cycle to the batch held: until every device of the previous
        commit is in it (or `gather_s` passed), and at least `commit_interval_s` after that commit.
        A complete cycle is committed at once, so the delay is the spread of the devices' replies."""
        deadline = loop.time() + self.gather_s
        while len(self._holding) < BATCH_MAX:
            self.samples.arrived.clear()  # before taking: a sample put after it sets it again
            while not self.samples.empty() and len(self._holding) < BATCH_MAX:
                self._holding.append(self.samples.get_nowait())
            expected = self._expected
            if expected is not None and expected <= {s.device for s in self._holding}:
                break
            if loop.time() >= deadline:
                break
            # An Event, not get(): no sample in flight is lost. asyncio.timeout, not wait_for,
            # which starts a Task per call on Python 3.11 (one a sample here).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await self.samples.arrived.wait()
        if len(self._holding) < BATCH_MAX:  # a backlog of a full batch goes at once
            await asyncio.sleep(self._committed_at + self.commit_interval_s - loop.time())
            while not self.samples.empty() and len(self._holding) < BATCH_MAX:
                self._holding.append(self.samples.get_nowait())

    def _try_commit(self) -> bool:
        """Commit the batch held; False (batch kept) when the store refused it."""
        try:
            self.commit(self._holding)
        except Exception as exc:  # StoreError (disk full, I/O error), or a bug: keep the samples
            self.store_errors += 1
            now = time.monotonic()
            if self._failing_since is None or now - self._logged_at > STILL_FAILING_LOG_S:
                log.error("store: cannot commit %d measurement(s) (%s); trying again, up to every "
                          "%.0f s; %d sample(s) dropped so far (oldest first)", len(self._holding),
                          exc, RETRY_MAX_S, self.samples.dropped)
                self._logged_at = now
            if self._failing_since is None:
                self._failing_since = now
            return False
        if self._failing_since is not None:
            log.warning("store: committing again after %.0f s; %d sample(s) dropped in all (never "
                        "signed: no seq used)", time.monotonic() - self._failing_since,
                        self.samples.dropped)
            self._failing_since = None
        return True

    def committed_leaves(self, start_ms: int, end_ms: int) -> list[tuple[int, bytes]]:
        """The store's (seq, leaf) of start_ms <= time < end_ms after committing every sample that
        waits for its group commit (the DR loop's Report must cover the window's last records). A
        store that refuses leaves them waiting, as the pipeline would."""
        batch = self._holding + [self.samples.get_nowait() for _ in range(self.samples.qsize())]
        self._holding = batch  # run() commits an empty batch harmlessly if this one goes through
        if batch and self._try_commit():
            self._holding = []
        return self.store.interval_leaves(start_ms, end_ms)

    def drain(self) -> None:
        """Commit the batch held and whatever is still queued (at shutdown, after polling ended)."""
        batch = self._holding
        self._holding = []
        while not self.samples.empty():
            batch.append(self.samples.get_nowait())
        if not batch:
            return
        try:
            self.commit(batch)
        except StoreError as exc:
            log.error("stopping: %d sample(s) not committed (%s); they were never signed, so no "
                      "seq is used", len(batch), exc)

    def stalled(self, now: float) -> str | None:
        """The watchdog's health check (gateway/ops/sdnotify.py): None while measurements reach the
        store. A full disk is not a stall: a restart cannot free space and would lose the samples
        in memory, and the pipeline goes on by itself once there is space again."""
        if self.store.disk_full:
            return None
        return self.progress.check(now=now, waiting=self.samples.qsize())


class Housekeeping:
    """Once a second: judge a config on trial. Every `merkle_interval_s` of monotonic time (a step
    of the wall clock neither hurries nor holds it): close the Merkle interval over the records
    committed since the previous one, and apply the outbox caps."""

    def __init__(self, *, config: GatewayConfig, store: Store, pipeline: MeasurementPipeline,
                 connected: asyncio.Event, started: float, stop: StopRequest) -> None:
        self.config, self.store, self.pipeline = config, store, pipeline
        self.connected, self.started, self.stop = connected, started, stop

    async def run(self) -> None:
        period = self.config.store.merkle_interval_s
        due = time.monotonic() + period
        on_trial = trial.on_trial(self.config.path)
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if now >= due:
                due = now + (period if self._close_and_expire() else HOUSEKEEPING_RETRY_S)
            if on_trial:
                on_trial = self._check_trial()

    def _close_and_expire(self) -> bool:
        """False when the store refused (it said why; the next try is in HOUSEKEEPING_RETRY_S)."""
        try:
            for _ in range(CATCH_UP_ROOTS):  # more than one only after a long time without roots
                interval = self.store.close_next_interval()
                if interval is None or interval.last_seq >= self.store.last_chain_state()[0]:
                    break
            self.store.expire()
        except StoreError as exc:
            log.warning("housekeeping: %s; trying again in %.0f s", exc, HOUSEKEEPING_RETRY_S)
            return False
        return True

    def _check_trial(self) -> bool:
        """Keep the new config once the broker and every device answered; roll it back when that
        does not happen in time. Returns whether the trial goes on."""
        wanted = {d.name for d in self.config.devices.devices}
        if self.connected.is_set() and wanted <= self.pipeline.ok_devices:
            trial.confirm(self.config.path)
            log.warning("config %s came up healthy: kept", self.config.config_hash)
            return False
        if time.monotonic() - self.started > TRIAL_DEADLINE_S:
            missing = sorted(wanted - self.pipeline.ok_devices)
            reason = (f"not healthy within {TRIAL_DEADLINE_S:.0f} s: "
                      + "; ".join(([] if self.connected.is_set() else ["broker not connected"])
                                  + ([f"no answer from {', '.join(missing)}"] if missing else [])))
            trial.rollback(self.config.path, reason=reason, tried=self.config.config_hash)
            log.error("config %s rolled back: %s", self.config.config_hash, reason)
            self.stop(RESTART)
            return False
        return True
