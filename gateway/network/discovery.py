"""Home Assistant MQTT discovery (behind the config flag `ha_discovery`): retained sensor configs for
each meter's points that its profile has, and for the gateway's own DR and market figures.

The facts used here, from the Home Assistant docs:
- "MQTT Discovery" (home-assistant.io/integrations/mqtt/#mqtt-discovery): the config topic is
  <prefix>/<component>/[<node_id>/]<object_id>/config, node_id and object_id of [a-zA-Z0-9_-];
  a shared `device` block (identifiers, name, manufacturer, model, sw_version, via_device) makes
  one device of many entities, and `via_device` names the identifier of another announced device;
  `origin` names the software that sent the config.
- "MQTT Sensor" (home-assistant.io/integrations/sensor.mqtt/): `default_entity_id` (replaces the
  deprecated `object_id`, which stops working in 2026.4) is the full entity id, `sensor.<id>`;
  `value_template` renders the state; a rendered "None" makes the state unknown.
- "Sensor entity" (developers.home-assistant.io/docs/core/entity/sensor/): device class ->
  allowed units and state classes (power W, measurement; energy Wh, total_increasing; voltage V;
  current A; frequency Hz; power_factor unitless or %; enum with `options`, no unit).

Every state topic carries the latest value of every point (gateway.network.latest), and every
template is safe anyway: a key not (yet) in the message renders "None" (state unknown) instead of
touching an undefined variable, which is what Home Assistant warns about.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.network import ha_gateway, payloads, topics
from gateway.network.link import Connection
from gateway.perception.profiles import Profile


@dataclass(frozen=True, slots=True)
class SensorKind:
    """One sensor: the key in the state message, its name in HA, and HA's classes for it."""

    point: str
    label: str
    device_class: str | None
    state_class: str | None
    unit: str | None
    precision: int | None = None  # suggested_display_precision: decimals HA shows
    options: tuple[str, ...] = ()  # an enum sensor's states


METER_SENSORS = (
    SensorKind("power_active_total_w", "Power", "power", "measurement", "W", 0),
    SensorKind("energy_import_total_wh", "Energy import", "energy", "total_increasing", "Wh", 0),
    SensorKind("energy_export_total_wh", "Energy export", "energy", "total_increasing", "Wh", 0),
    *(SensorKind(f"voltage_l{n}_v", f"Voltage L{n}", "voltage", "measurement", "V", 1) for n in (1, 2, 3)),
    *(SensorKind(f"current_l{n}_a", f"Current L{n}", "current", "measurement", "A", 2) for n in (1, 2, 3)),
    SensorKind("frequency_hz", "Frequency", "frequency", "measurement", "Hz", 2),
    # a ratio of -1..1 in our profiles: unitless (HA allows % or none for power_factor)
    SensorKind("power_factor_total", "Power factor", "power_factor", "measurement", None, 2),
)

# Delivered/required/projected Wh go up and down within an event and start again with the next: not
# HA's `energy` class (total or total_increasing only, for meters), so no class, a plain measurement.
DR_SENSORS = (
    SensorKind("dr_state", "DR event state", "enum", None, None, options=ha_gateway.DR_STATES),
    SensorKind("dr_award_w", "DR award", "power", "measurement", "W", 0),
    SensorKind("dr_delivered_wh", "DR delivered", None, "measurement", "Wh", 1),
    SensorKind("dr_required_wh", "DR required", None, "measurement", "Wh", 1),
    SensorKind("dr_projected_wh", "DR projected", None, "measurement", "Wh", 1),
    SensorKind("dr_verdict", "DR verdict", "enum", None, None, options=ha_gateway.VERDICTS),
)
# Market tokens are no ISO 4217 currency, so not HA's `monetary` class; `total` says the sum may
# fall (a forfeited deposit).
MARKET_SENSORS = (
    SensorKind("earned_tokens", "DR earnings", None, "total", "tokens", 3),
    SensorKind("net_earned_tokens", "DR net earnings", None, "total", "tokens", 3),
    SensorKind("deposit_held_tokens", "Deposits held", None, "measurement", "tokens", 3),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Announced:
    """What discovery announces: the meters (name and profile) and the gateway's own figures."""

    meters: Sequence[tuple[str, Profile]]
    dr: bool = False  # [dr]: the DR event sensors
    market: bool = False  # [market]: the earnings sensors

    def __post_init__(self) -> None:
        for name, _ in self.meters:
            if name == ha_gateway.GATEWAY_STATE:
                raise ConfigError(f"device name {name!r} is kept for the gateway's own Home Assistant "
                                  "state topic: rename the device in drgw.toml")

    @property
    def gateway_sensors(self) -> tuple[SensorKind, ...]:
        return (*(DR_SENSORS if self.dr else ()), *(MARKET_SENSORS if self.market else ()))


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def entity_slug(text: str) -> str:
    """An entity id's object part: lower-case a-z, 0-9 and single inner underscores (HA's
    `valid_entity_id`: no leading, trailing or double underscore)."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", text.lower())).strip("_")


def safe_template(key: str) -> str:
    """`value_json.key` when the message has it, else None (HA: state unknown), never undefined."""
    return f"{{{{ value_json.{key} if '{key}' in value_json else None }}}}"


def meter_sensors(profile: Profile) -> tuple[SensorKind, ...]:
    """The sensors of METER_SENSORS whose point the profile has; a one-phase meter's L1 voltage and
    current are plain "Voltage" and "Current"."""
    names = {p.name for p in profile.points}
    kinds = [s for s in METER_SENSORS if s.point in names]
    if profile.phases == 1:
        kinds = [dataclasses.replace(s, label=s.label.removesuffix(" L1")) for s in kinds]
    return tuple(kinds)


def _sensor(gw: str, node: str, sensor: SensorKind, *, state_device: str,
            device: dict[str, Any], version: str) -> tuple[str, bytes]:
    object_id = _slug(f"{state_device.lstrip('_')}_{sensor.point}")
    # e.g. sensor.main_8fb181d8_power_active_total_w, sensor.drgw_8fb181d8_dr_state
    who = "drgw" if state_device == ha_gateway.GATEWAY_STATE else state_device
    body: dict[str, Any] = {
        "name": sensor.label, "unique_id": f"{node}_{object_id}",
        "default_entity_id": f"sensor.{entity_slug(f'{who}_{gw[2:10]}_{sensor.point}')}",
        "state_topic": topics.state_topic(gw, state_device),
        "value_template": safe_template(sensor.point),
        "availability_topic": topics.topic(gw, topics.Kind.STATUS),
        "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
        "device": device, "origin": {"name": "drgw", "sw_version": version},
    }
    for key, value in (("device_class", sensor.device_class), ("state_class", sensor.state_class),
                       ("unit_of_measurement", sensor.unit),
                       ("suggested_display_precision", sensor.precision)):
        if value is not None:
            body[key] = value
    if sensor.options:
        body["options"] = list(sensor.options)
    return topics.ha_config_topic(node, object_id), payloads.dumps(body)


def configs(gw: str, announced: Announced, *, version: str = "") -> list[tuple[str, bytes]]:
    """(topic, retained payload) of every sensor: the gateway's own first (when it has any: it is
    the device the meters are `via_device` of), then each meter's."""
    gw = topics.gw_id(gw)
    node = f"drgw_{gw[2:]}"
    out = []
    gateway_sensors = announced.gateway_sensors
    gateway = {"identifiers": [node], "name": f"drgw gateway {gw[:10]}", "manufacturer": "drgw",
               "model": "drgw gateway", "sw_version": version}
    for sensor in gateway_sensors:
        out.append(_sensor(gw, node, sensor, state_device=ha_gateway.GATEWAY_STATE, device=gateway,
                           version=version))
    for name, profile in announced.meters:
        device: dict[str, Any] = {"identifiers": [f"{node}_{_slug(name)}"], "name": f"{name} ({gw[:10]})",
                                  "manufacturer": profile.vendor, "model": profile.model}
        if gateway_sensors:  # only a device that is itself announced can be the via_device
            device["via_device"] = node
        for sensor in meter_sensors(profile):
            out.append(_sensor(gw, node, sensor, state_device=name, device=device, version=version))
    return out


def retired(gw: str, announced: Announced) -> list[str]:
    """The config topics of the gateway sensors this config does not announce (no [dr], no
    [market]): an empty retained payload there removes an entity a former config announced (HA's
    MQTT Discovery docs: a zero-length retained config deletes the component)."""
    gw = topics.gw_id(gw)
    node = f"drgw_{gw[2:]}"
    kept = set(announced.gateway_sensors)
    return [topics.ha_config_topic(node, _slug(f"{ha_gateway.GATEWAY_STATE.lstrip('_')}_{s.point}"))
            for s in (*DR_SENSORS, *MARKET_SENSORS) if s not in kept]


class Discovery:
    """A SessionWorker: (re)publishes the retained configs on every session (HA may have been
    restarted with a clean broker) and returns."""

    def __init__(self, *, gw: str, announced: Announced, version: str = "") -> None:
        self.gw = gw
        self.announced = announced
        self.version = version

    async def run_session(self, conn: Connection) -> None:
        for topic, body in configs(self.gw, self.announced, version=self.version):
            await conn.publish(topic, body, qos=1, retain=True)
        for topic in retired(self.gw, self.announced):
            await conn.publish(topic, b"", qos=1, retain=True)


__all__ = ["DR_SENSORS", "MARKET_SENSORS", "METER_SENSORS", "Announced", "Discovery", "SensorKind",
           "configs", "entity_slug", "meter_sensors", "retired", "safe_template"]
