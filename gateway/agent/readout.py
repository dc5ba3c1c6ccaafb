"""What the agent says about itself: the birth/status payload, counters, health readings and snapshots,
and the one line `systemctl status` shows. Read-only over the running parts."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from gateway import __version__
from gateway.agent import trial
from gateway.agent.pipeline import MeasurementPipeline
from gateway.config.gateway import GatewayConfig
from gateway.device.device import DeviceState
from gateway.device.layer import DeviceLayer
from gateway.measurement.store.database import Store
from gateway.network import payloads
from gateway.network.link import MqttLink
from gateway.network.publisher import Publisher
from gateway.ops import health


def status_info(config: GatewayConfig, pipeline: MeasurementPipeline) -> payloads.StatusInfo:
    """The retained status (birth message) of this gateway."""
    return payloads.StatusInfo(
        version=__version__, config_hash=config.config_hash,
        devices=[d.name for d in config.devices.devices],
        extra={"seq": pipeline.chain.last_seq, "clock_synced": pipeline.clock_synced,
               "disk_full": pipeline.store.disk_full,
               **trial.status(config.path)})


def device_states(layer: DeviceLayer) -> Iterator[tuple[str, DeviceState]]:
    """Every polled device's live counters, bus by bus."""
    for owner in layer.owners.values():
        yield from owner.devices.items()


class Readout:
    def __init__(self, *, store: Store, layer: DeviceLayer, pipeline: MeasurementPipeline,
                 publisher: Publisher, link: MqttLink) -> None:
        self.store, self.layer, self.pipeline = store, layer, pipeline
        self.publisher, self.link = publisher, link
        self.sampler = health.HealthSampler(self.health_readings())

    def counters(self) -> Mapping[str, int]:
        out = dict(self.store.counters())
        for name, state in device_states(self.layer):
            out[f"device.{name}.requests"] = state.requests
            out[f"device.{name}.timeouts"] = state.timeouts
            out[f"device.{name}.failed_cycles"] = state.failed_cycles
            out[f"device.{name}.cycles"] = state.cycles
        for bus, owner in self.layer.owners.items():
            if (port := owner.port_health()) is not None:  # serial ports (gateway.device.reopen)
                out[f"bus.{bus}.port_outages"] = port.outages
                out[f"bus.{bus}.port_reconnects"] = port.reconnects
        out["store_errors"] = self.pipeline.store_errors
        out["samples_dropped"] = self.pipeline.samples.dropped
        out["ack_failures"] = self.publisher.ack_failures
        out["published"] = self.publisher.published
        return out

    def health_readings(self) -> health.HealthReadings:
        """Raw counters and gauges for the health topic and the Prometheus endpoint."""
        return health.HealthReadings(
            now=time.monotonic(), process=health.read_process(),
            sample_queue=self.pipeline.samples.qsize(), samples_dropped=self.pipeline.samples.dropped,
            devices=health.read_devices(st for _, st in device_states(self.layer)),
            store=health.read_store(path=self.store.path, outbox=self.store.outbox_depth(),
                                    counters=self.store.counters(),
                                    failure=None if self.store.failure is None
                                    else self.store.failure.reason))

    def detail(self) -> Mapping[str, Any]:
        """The health topic's snapshot: rates over the time since the previous one."""
        return self.sampler.sample(self.health_readings())

    def peek(self) -> Mapping[str, Any]:
        """The snapshot now, without starting a new interval (for the diagnostics command)."""
        return self.sampler.sample(self.health_readings(), advance=False)

    def status_line(self) -> str:
        """One line for `systemctl status`: devices answering, backlog, last seq."""
        states = [st for _, st in device_states(self.layer)]
        ok = sum(st.cycles > 0 and st.failures == 0 for st in states)
        rows, nbytes = self.store.outbox_depth()
        mqtt = "connected" if self.link.connected.is_set() else "broker down"
        failure = self.store.failure
        trouble = "" if failure is None else f"STORE {failure.reason.upper().replace('_', ' ')}: "
        return (f"{trouble}devices {ok}/{len(states)} ok, backlog {rows} batch(es) {nbytes // 1024} KiB, "
                f"MQTT {mqtt}, seq {self.pipeline.chain.last_seq}")
