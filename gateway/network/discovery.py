"""Home Assistant MQTT discovery (behind the config flag): retained sensor configs for each
device's power and energy, pointing at the plain-value topic drgw/v1/<gw>/state/<device>.

HA docs, "MQTT Sensor" and "MQTT Discovery": config topic <prefix>/sensor/<node_id>/<object_id>/config;
node_id and object_id allow [a-zA-Z0-9_-] only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.network import payloads, topics
from gateway.network.link import Connection


@dataclass(frozen=True, slots=True)
class SensorKind:
    point: str
    device_class: str
    state_class: str
    unit: str
    label: str


SENSORS = (
    SensorKind("power_active_total_w", "power", "measurement", "W", "Power"),
    SensorKind("energy_import_total_wh", "energy", "total_increasing", "Wh", "Energy import"),
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def configs(gw: str, device: str, *, model: str = "", version: str = ""
            ) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for each sensor of one device."""
    gw = topics.gw_id(gw)
    node = f"drgw_{gw[2:]}"
    out = []
    for s in SENSORS:
        object_id = _slug(f"{device}_{s.point}")
        body = {
            "name": s.label, "unique_id": f"{node}_{object_id}", "object_id": object_id,
            "device_class": s.device_class, "state_class": s.state_class,
            "unit_of_measurement": s.unit, "state_topic": topics.state_topic(gw, device),
            "value_template": f"{{{{ value_json.{s.point} }}}}",
            "availability_topic": topics.topic(gw, topics.Kind.STATUS),
            "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
            "device": {"identifiers": [f"{node}_{_slug(device)}"], "name": f"{device} ({gw[:10]})",
                       "manufacturer": "drgw", "model": model or device,
                       "sw_version": version, "via_device": node},
        }
        out.append((topics.ha_config_topic(node, object_id), payloads.dumps(body)))
    return out


class Discovery:
    """A SessionWorker: (re)publishes the retained configs on every session (HA may have been
    restarted with a clean broker) and returns."""

    def __init__(self, *, gw: str, devices: Sequence[tuple[str, str]], version: str = "") -> None:
        self.gw = gw
        self.devices = tuple(devices)  # (device name, model/profile)
        self.version = version

    async def run_session(self, conn: Connection) -> None:
        for device, model in self.devices:
            for topic, body in configs(self.gw, device, model=model, version=self.version):
                await conn.publish(topic, body, qos=1, retain=True)
