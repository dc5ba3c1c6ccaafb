"""The agent behind `drgw run`: devices -> signed measurements -> SQLite outbox -> MQTT.

Wiring only: the pure parts (codecs, planner, measurement chain) and the I/O parts (bus owners, the
store, the MQTT link) are built elsewhere. A sample becomes a signed measurement and is committed to
SQLite before anything is published; the publisher acks outbox rows only after the broker's PUBACK.
On SIGTERM the agent stops polling, commits what it read, lets the publisher drain for a moment and
publishes its offline status. Remote commands reach it through `AgentControl` (the methods below).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from gateway import __version__
from gateway.agent import trial
from gateway.clock import clock_synchronised, wall_ms
from gateway.config.gateway import GatewayConfig, parse_config
from gateway.device.device import DeviceError
from gateway.device.layer import DeviceLayer
from gateway.errors import ConfigError, DrgwError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, measurement_domain
from gateway.measurement.store.database import Store
from gateway.network import payloads, topics
from gateway.network.command import Code, CommandPolicy, CommandRejected
from gateway.network.dispatcher import CommandDispatcher
from gateway.network.link import MqttLink
from gateway.network.nonces import NonceCache
from gateway.network.publisher import EventPublisher, HealthPublisher, Publisher, PublishLimits
from gateway.network.settings import LinkSettings
from gateway.ops import health, sdnotify
from gateway.perception.readings import Quality, Sample
from gateway.protocol import modbus

log = logging.getLogger(__name__)

RESTART = 75  # exit status asking the caller (drgw run / systemd) to start the agent again
TRIAL_DEADLINE_S = 120.0


class Agent:
    def __init__(self, config: GatewayConfig, *, key: GatewayKey, market: Any = None) -> None:
        self.config = config
        self.key = key
        self.gw = topics.gw_id(key.address)
        self.meas_topic = topics.topic(self.gw, topics.Kind.MEAS)
        self.domain = measurement_domain(config.chain_id)
        s = config.store
        self.store = Store(s.path, batch_size=config.mqtt.batch_max,
                           outbox_max_rows=s.outbox_max_rows, outbox_max_bytes=s.outbox_max_bytes,
                           outbox_max_age_ms=int(s.outbox_max_age_s * 1000),
                           measurements_max_rows=s.measurements_max_rows)
        last_seq, last_hash = self.store.last_chain_state()
        self.chain = MeasurementChain(gateway=key.address, last_seq=last_seq, last_hash=last_hash)
        self.samples: asyncio.Queue[Sample] = asyncio.Queue()
        self.layer = DeviceLayer(config.devices, sink=self.samples.put_nowait)
        self.wake = asyncio.Event()
        m = config.mqtt
        self.link = MqttLink(
            settings=LinkSettings.from_url(m.broker, client_id=m.client_id or f"drgw-{self.gw[2:14]}",
                                           ca=m.ca, cert=m.cert, key=m.key, keepalive_s=m.keepalive),
            gateway=key.address, status=self._status_info)
        self.publisher = Publisher(store=self.store, wake=self.wake, limits=PublishLimits(
            messages_per_s=m.rate_messages, bytes_per_s=m.rate_bytes, window=m.inflight))
        self.events = EventPublisher(gw=key.address)
        self.health = HealthPublisher(link=self.link, counters=self, store=self.store,
                                      interval_s=m.health_interval, detail=self._health_detail)
        self.nonces = NonceCache(s.path.with_name(s.path.name + ".nonces"))
        self.dispatcher = CommandDispatcher(
            policy=CommandPolicy.build(gw=key.address, operators=config.operators),
            agent=self, nonces=self.nonces, sign_digest=key.sign_digest)
        self.stop_requested = asyncio.Event()
        self.exit_code = 0
        self.started = time.monotonic()
        self.sampler = health.HealthSampler(self.health_readings())
        self.store_errors = 0
        self._synced = clock_synchronised()
        self._synced_checked = time.monotonic()
        self._ok_devices: set[str] = set()
        self.dr = self._dr_loop(market) if config.dr is not None else None
        # systemd: READY=1 once running, WATCHDOG=1 only while measurements reach the store.
        limits = sdnotify.StallLimits.for_devices(
            ({d.intervals[p.poll] for p in d.profile.points}, d.timeout) for d in config.devices.devices)
        self.progress = sdnotify.PipelineProgress(limits=limits, now=time.monotonic())
        self.watchdog = sdnotify.Watchdog.from_environment(
            health=lambda now: self.progress.check(now=now, waiting=self.samples.qsize()),
            status_line=self._status_line)

    # ----------------------------------------------------------------------------- the pipeline

    def _clock_state(self) -> bool:
        now = time.monotonic()
        if now - self._synced_checked > 60:
            self._synced, self._synced_checked = clock_synchronised(), now
        return self._synced

    def commit_samples(self, samples: list[Sample]) -> None:
        synced = self._clock_state()
        signed = [self.chain.next_signed(self.key, self.domain, device=s.device,
                                         time_ms=int(s.time * 1000), clock_synced=synced,
                                         readings=s.readings) for s in samples]
        try:
            self.store.commit(signed, self.meas_topic)
        except Exception:
            # Nothing of this batch is stored: rewind the chain so no seq is skipped or reused.
            seq, leaf = self.store.last_chain_state()
            self.chain = MeasurementChain(gateway=self.key.address, last_seq=seq, last_hash=leaf)
            raise
        self.progress.committed(time.monotonic())
        self.wake.set()
        if self.dr is not None:
            for s in samples:
                self.dr.on_sample(s)
        for s in samples:
            if s.ok:
                self._ok_devices.add(s.device)
            if self.config.mqtt.ha_discovery:
                values = {r.name: float(r.value) for r in s.readings
                          if r.quality is Quality.OK and isinstance(r.value, int | float)}
                self.events.publish_state(s.device, values)

    async def _measure(self) -> None:
        while True:
            batch = [await self.samples.get()]
            while not self.samples.empty() and len(batch) < 500:
                batch.append(self.samples.get_nowait())
            while True:
                try:
                    self.commit_samples(batch)
                    break
                except Exception as exc:  # disk full, I/O error: keep the samples, try again
                    self.store_errors += 1
                    log.error("store: cannot commit %d measurements (%s); retrying in 1 s",
                              len(batch), exc)
                    await asyncio.sleep(1.0)

    def _drain_samples(self) -> None:
        batch: list[Sample] = []
        while not self.samples.empty():
            batch.append(self.samples.get_nowait())
        if batch:
            self.commit_samples(batch)

    async def _housekeeping(self) -> None:
        interval_ms = int(self.config.store.merkle_interval_s * 1000)
        closed = self.store.intervals()
        next_end = (closed[-1].end_ms if closed else wall_ms() // interval_ms * interval_ms) \
            + interval_ms
        on_trial = trial.on_trial(self.config.path)
        while True:
            await asyncio.sleep(1.0)
            now = wall_ms()
            if now >= next_end + 5_000:  # a few seconds' grace for samples still in flight
                self.store.close_interval(next_end - interval_ms, next_end)
                next_end += interval_ms
                self.store.expire(now)
            if on_trial:
                on_trial = self._check_trial()

    def _check_trial(self) -> bool:
        wanted = {d.name for d in self.config.devices.devices}
        if self.link.connected.is_set() and wanted <= self._ok_devices:
            trial.confirm(self.config.path)
            log.warning("config %s came up healthy: kept", self.config.config_hash)
            return False
        if time.monotonic() - self.started > TRIAL_DEADLINE_S:
            trial.rollback(self.config.path)
            log.error("new config did not come up within %.0f s: rolled back", TRIAL_DEADLINE_S)
            self.request_stop(RESTART)
            return False
        return True

    # ----------------------------------------------------------------------------- run / stop

    def request_stop(self, code: int = 0) -> None:
        self.exit_code = code
        self.stop_requested.set()

    async def run(self) -> int:
        workers: list[Any] = [self.publisher, self.health, self.events, self.dispatcher]
        if self.config.mqtt.ha_discovery:
            from gateway.network.discovery import Discovery

            workers.append(Discovery(gw=self.gw, version=__version__, devices=[
                (d.name, d.profile.name) for d in self.config.devices.devices
                if d.profile.kind == "meter"]))
        tasks = {
            asyncio.create_task(self.layer.run(), name="devices"),
            asyncio.create_task(self._measure(), name="measure"),
            asyncio.create_task(self.link.run(workers), name="mqtt"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        }
        if self.config.metrics is not None:  # the optional Prometheus endpoint
            from gateway.ops import metrics

            collector = metrics.AgentCollector(
                readings=self.health_readings, counters=self.counters, started=self.started,
                info={"gw": self.gw, "version": __version__, "config_hash": self.config.config_hash})
            tasks.add(asyncio.create_task(metrics.serve(self.config.metrics, collector=collector),
                                          name="metrics"))
        if self.dr is not None:
            tasks.add(asyncio.create_task(self.dr.run(), name="dr"))
        tasks.add(asyncio.create_task(self.watchdog.run(), name="watchdog"))  # last: READY=1
        stopper = asyncio.create_task(self.stop_requested.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(tasks | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopper}:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            await self._shutdown(tasks, stopper)
        return self.exit_code

    async def _shutdown(self, tasks: set[asyncio.Task[Any]], stopper: asyncio.Task[Any]) -> None:
        log.info("stopping: polling ends")
        self.watchdog.stopping("stopping: committing what was read, draining the outbox")
        by_name = {t.get_name(): t for t in tasks}
        for name in ("watchdog", "dr", "devices", "housekeeping", "measure", "metrics"):
            if name not in by_name:
                continue
            by_name[name].cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(by_name[name], 5.0)
        self._drain_samples()  # what was read is committed before we go
        log.info("stopping: committed up to seq %d; draining the outbox", self.chain.last_seq)
        if self.link.connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.publisher.flushed(), 5.0)
        self.link.stop()  # publishes the retained offline status
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(by_name["mqtt"], 5.0)
        stopper.cancel()
        rows, _ = self.store.outbox_depth()
        if self.dr is not None:
            self.dr.journal.close()
        self.store.close()
        log.warning("stopped at seq %d, %d batch(es) left in the outbox", self.chain.last_seq, rows)

    # ----------------------------------------------------------------------------- status, health

    def _status_info(self) -> payloads.StatusInfo:
        return payloads.StatusInfo(
            version=__version__, config_hash=self.config.config_hash,
            devices=[d.name for d in self.config.devices.devices],
            extra={"seq": self.chain.last_seq, "clock_synced": self._synced})

    def _status_line(self) -> str:
        """One line for `systemctl status`: devices answering, backlog, last seq."""
        states = [st for owner in self.layer.owners.values() for st in owner.devices.values()]
        ok = sum(st.cycles > 0 and st.failures == 0 for st in states)
        rows, nbytes = self.store.outbox_depth()
        mqtt = "connected" if self.link.connected.is_set() else "broker down"
        return (f"devices {ok}/{len(states)} ok, backlog {rows} batch(es) {nbytes // 1024} KiB, "
                f"MQTT {mqtt}, seq {self.chain.last_seq}")

    def counters(self) -> Mapping[str, int]:
        out = dict(self.store.counters())
        for owner in self.layer.owners.values():
            for name, state in owner.devices.items():
                out[f"device.{name}.requests"] = state.requests
                out[f"device.{name}.timeouts"] = state.timeouts
                out[f"device.{name}.failed_cycles"] = state.failed_cycles
                out[f"device.{name}.cycles"] = state.cycles
        out["store_errors"] = self.store_errors
        out["published"] = self.publisher.published
        return out

    def health_readings(self) -> health.HealthReadings:
        """Raw counters and gauges for the health topic and the Prometheus endpoint."""
        return health.HealthReadings(
            now=time.monotonic(), process=health.read_process(), sample_queue=self.samples.qsize(),
            devices=health.read_devices(st for owner in self.layer.owners.values()
                                        for st in owner.devices.values()),
            store=health.read_store(path=self.store.path, outbox=self.store.outbox_depth(),
                                    counters=self.store.counters()))

    def _health_detail(self) -> Mapping[str, Any]:
        return self.sampler.sample(self.health_readings())

    # ----------------------------------------------------------------------------- the DR loop

    def _dr_loop(self, market: Any) -> Any:
        from gateway.loop.journal import Journal
        from gateway.loop.runner import DrLoop

        dr, chain = self.config.dr, self.config.chain
        assert dr is not None
        if market is None and chain is not None:
            from gateway.chain.port import LazyMarketPort

            market = LazyMarketPort(chain, gateway_secret=self.key.secret())
        main = next((d.name for d in self.config.devices.devices if d.role == "main"), None)
        if main is None:
            log.error("[dr] is configured but no device has role = \"main\": the loop cannot "
                      "measure the household's load")
        return DrLoop(config=dr, journal=Journal(self.config.store.path), main_device=main,
                      io=_LayerIO(self.layer), publish=self.events.publish_event,
                      leaves=self.store.interval_leaves, market=market,
                      market_address=getattr(market, "market_address", chain.market if chain else ""),
                      poll_interval_s=chain.poll_interval if chain else 15.0)

    async def dr_event(self, args: Mapping[str, Any]) -> Any:
        from gateway.loop.events import EventRejected

        if self.dr is None:
            raise CommandRejected(Code.FAILED, "this gateway has no [dr] section in its config: "
                                  "add one (docs/config.md) to take part in DR events")
        try:
            return self.dr.accept(self.dr.from_command(args))
        except EventRejected as exc:
            raise CommandRejected(Code.BAD_ARGS, str(exc)) from None

    # ----------------------------------------------------------------------------- AgentControl

    async def ping(self) -> Any:
        return {"pong": True, "time_ms": wall_ms()}

    async def status(self) -> Any:
        rows, nbytes = self.store.outbox_depth()
        return {"version": __version__, "config_hash": self.config.config_hash,
                "seq": self.chain.last_seq, "backlog": {"rows": rows, "bytes": nbytes},
                "devices": sorted(self._ok_devices), "clock_synced": self._synced,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "dr": None if self.dr is None else self.dr.status()}

    async def diagnostics(self) -> Any:
        devices = {}
        for owner in self.layer.owners.values():
            for name, st in owner.devices.items():
                devices[name] = {"requests": st.requests, "timeouts": st.timeouts,
                                 "protocol_errors": st.protocol_errors, "cycles": st.cycles,
                                 "failed_cycles": st.failed_cycles, "overruns": st.overruns,
                                 "splits": st.splits, "unsupported": sorted(st.planner.unsupported)}
        return {"devices": devices, "counters": dict(self.counters()),
                "health": self.sampler.sample(self.health_readings(), advance=False)}

    def _device(self, device: str) -> tuple[Any, Any]:
        try:
            owner = self.layer.owner_of(device)
        except ConfigError as exc:
            raise CommandRejected(Code.BAD_ARGS, str(exc)) from None
        return owner, owner.devices[device]

    async def read_register(self, device: str, table: str, address: int, count: int) -> Any:
        owner, state = self._device(device)
        if table not in modbus.READ_FUNCTION:
            raise CommandRejected(Code.BAD_ARGS, f"table {table!r}: use input, holding, coil or discrete")
        request = modbus.ReadRequest(unit=state.spec.unit, function=modbus.READ_FUNCTION[table],
                                     address=address, count=count)
        try:
            answer = await owner.submit(lambda: owner.transact(state, request))
        except (DeviceError, modbus.LocalProtocolError) as exc:
            raise CommandRejected(Code.FAILED, f"{device}: {exc}") from None
        if isinstance(answer, modbus.ExceptionResponse):
            raise CommandRejected(Code.FAILED, f"{device} answered: {answer.message}")
        return {"device": device, "table": table, "address": address, "values": list(answer.values)}

    async def write_point(self, device: str, name: str, value: float) -> Any:
        self._device(device)
        try:
            await self.layer.write(device, name, value)
        except DeviceError as exc:
            raise CommandRejected(Code.FAILED, str(exc)) from None
        except DrgwError as exc:  # not writable, out of range: the profile says no
            raise CommandRejected(Code.BAD_ARGS, str(exc)) from None
        log.warning("command: wrote %s.%s = %g", device, name, value)
        return {"device": device, "name": name, "value": value}

    async def scan(self, args: Mapping[str, Any]) -> Any:
        """Probe a unit range on a running Modbus bus (gateway.device.probe.scan_running_bus)."""
        from gateway.device.bus import BusBusy, BusOwner
        from gateway.device.probe import scan_running_bus  # rare: not on the agent's start-up path
        from gateway.perception.profiles import load_all

        buses = {b.name: b for b in self.config.devices.buses if b.name in self.layer.owners}
        name = args.get("bus") or (next(iter(buses)) if len(buses) == 1 else None)
        if name not in buses:
            what = f"no polled bus is named {name!r}" if name else "give the bus to scan"
            raise CommandRejected(Code.BAD_ARGS, f"scan: {what}; buses: "
                                  f"{', '.join(sorted(buses)) or '(none)'}")
        owner = self.layer.owners[name]
        if not isinstance(owner, BusOwner):
            raise CommandRejected(Code.BAD_ARGS, f"scan: bus {name!r} is DL/T 645 (one meter per "
                                  "line): stop the agent and run `drgw scan --protocol dlt645`")
        try:
            return await scan_running_bus(owner, buses[name], args, profiles=load_all())
        except ConfigError as exc:
            raise CommandRejected(Code.BAD_ARGS, str(exc)) from None
        except BusBusy as exc:
            raise CommandRejected(Code.BUSY, f"scan: bus {name!r}: {exc}") from None

    async def resend(self, seq_from: int, seq_to: int) -> Any:
        if seq_to < seq_from or seq_to - seq_from > 100_000:
            raise CommandRejected(Code.BAD_ARGS, "resend: seq_from <= seq_to, at most 100000")
        queued = self.store.requeue(seq_from, seq_to, self.meas_topic)
        self.wake.set()
        return {"queued": queued, "seq_from": seq_from, "seq_to": seq_to}

    async def config_get(self) -> Any:
        return {"text": self.config.text, "config_hash": self.config.config_hash}

    async def config_set(self, text: str, dry_run: bool) -> Any:
        try:
            new = parse_config(text, path=self.config.path)
        except ConfigError as exc:
            raise CommandRejected(Code.BAD_ARGS, f"config rejected: {exc}") from None
        if new.key != self.config.key:
            raise CommandRejected(Code.BAD_ARGS, "config: [gateway] key cannot change remotely")
        result = {"valid": True, "config_hash": new.config_hash, "dry_run": dry_run,
                  "devices": [d.name for d in new.devices.devices]}
        if not dry_run:
            trial.apply(self.config.path, text)
            asyncio.get_running_loop().call_later(0.5, self.request_stop, RESTART)
            result["restarting"] = True
        return result

    async def restart(self) -> Any:
        asyncio.get_running_loop().call_later(0.5, self.request_stop, RESTART)
        return {"restarting": True}

    async def set_log_level(self, level: str) -> Any:
        if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise CommandRejected(Code.BAD_ARGS, "log level: DEBUG, INFO, WARNING or ERROR")
        logging.getLogger().setLevel(level.upper())
        return {"level": level.upper()}


class _LayerIO:
    """The DR loop's view of the devices: write a point, read its present value."""

    def __init__(self, layer: DeviceLayer) -> None:
        self.layer = layer

    async def write(self, device: str, name: str, value: float) -> None:
        await self.layer.write(device, name, value)

    async def read(self, device: str, name: str) -> float | None:
        for reading in await self.layer.read_now(device, [name]):
            if reading.name == name and reading.quality is Quality.OK \
                    and isinstance(reading.value, int | float):
                return float(reading.value)
        return None
