"""The installer's view of the local page, as JSON-ready values: each device with the quality of its
newest readings, its error counters and poll rates; each bus with its traffic and port state; the
agent's own state (seq, backlog, MQTT, CPU, memory, store); and the last `drgw doctor` result.

The counters are the ones the health topic, `diagnostics` and the Prometheus endpoint report
(gateway/agent/readout.py, gateway/ops/health.py): the page adds no counting of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gateway.agent.readout import Readout, device_states
from gateway.agent.web.live import LiveState
from gateway.config.gateway import GatewayConfig
from gateway.device.config import BusConfig


def devices(config: GatewayConfig, readout: Readout, live: LiveState,
            health: Mapping[str, Any]) -> list[dict[str, Any]]:
    configured = {d.name: d for d in config.devices.devices}
    rates = health.get("devices", {})
    out = []
    for name, st in device_states(readout.layer):
        d = configured.get(name)
        used = sorted({p.poll for p in st.spec.profile.points})
        q = live.quality.get(name)
        out.append({
            "name": name, "profile": st.spec.profile.name, "bus": None if d is None else d.bus,
            "unit": st.spec.unit, "role": None if d is None else d.role,
            "online": st.cycles > 0 and st.failures == 0, "consecutive_failures": st.failures,
            "requests": st.requests, "cycles": st.cycles, "failed_cycles": st.failed_cycles,
            "timeouts": st.timeouts, "protocol_errors": st.protocol_errors,
            "exceptions": st.exceptions, "link_errors": st.link_errors, "overruns": st.overruns,
            "splits": st.splits, "writes": st.writes,
            "intervals_s": {c: st.spec.intervals[c] for c in used if c in st.spec.intervals},
            "reads_per_s": rates.get(name, {}).get("reads_per_s"),
            "quality": None if q is None else {"ok": q.ok, "stale": q.stale, "error": q.error,
                                               "time_ms": int(q.time * 1000),
                                               "errors": list(q.errors)},
            "model": None if st.model is None else f"{st.model.fit.value}: {st.model.evidence}",
        })
    return out


def _where(bus: BusConfig) -> str:
    if bus.tcp:
        return f"tcp {bus.tcp} ({bus.framing})"
    return f"serial {bus.serial} {bus.baud} baud 8{bus.parity}{bus.stopbits}"


def buses(config: GatewayConfig, readout: Readout) -> list[dict[str, Any]]:
    out = []
    for bus in config.devices.buses:
        owner = readout.layer.owners.get(bus.name)
        port = None if owner is None else owner.port_health()
        states = [] if owner is None else list(owner.devices.values())
        out.append({
            "name": bus.name, "protocol": bus.protocol, "where": _where(bus),
            "devices": [st.spec.name for st in states],
            "requests": None if owner is None else owner.requests,
            "timeouts": None if owner is None else owner.timeouts,
            "errors": sum(st.protocol_errors + st.link_errors for st in states),  # not the
            # exceptions: a device saying no (an unsupported register) is no fault of the bus
            "port": None if port is None else dataclasses.asdict(port),
        })
    return out


def agent(readout: Readout, health: Mapping[str, Any]) -> dict[str, Any]:
    rows, nbytes = readout.store.outbox_depth()
    failure = readout.store.failure
    return {"seq": readout.pipeline.chain.last_seq, "backlog_rows": rows, "backlog_bytes": nbytes,
            "mqtt": readout.link.connected.is_set(), "clock_synced": readout.pipeline.clock_synced,
            "store_error": None if failure is None else failure.reason,
            "samples_dropped": readout.pipeline.samples.dropped,
            "store_errors": readout.pipeline.store_errors,
            "published": readout.publisher.published, "uptime_s": health.get("uptime_s"),
            "process": health.get("process"), "store": health.get("store"),
            "status_line": readout.status_line()}
