"""Home Assistant discovery payloads against HA's documented schema, and the latest-values map the
state topics are built from.

The schema facts below are written out from Home Assistant's docs, not from drgw's code:
- MQTT Discovery, https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery : the config topic
  `<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`, node_id and object_id of
  [a-zA-Z0-9_-]; the device keys; `origin` with a required `name`.
- MQTT Sensor, https://www.home-assistant.io/integrations/sensor.mqtt/ : the sensor's configuration
  variables; `default_entity_id` replaces the deprecated `object_id` (which HA stops accepting in
  2026.4); `options` only for the enum device class.
- Sensor entity, https://developers.home-assistant.io/docs/core/entity/sensor/#available-device-classes
  and #available-state-classes : the units and state classes each device class allows.
- Entity ids (homeassistant.core.valid_entity_id): `<domain>.<object>` of a-z, 0-9 and single
  underscores, none leading or trailing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jinja2
import jinja2.sandbox
import pytest

from gateway.config.profiles import load_all, load_profile
from gateway.network import discovery, ha_gateway
from gateway.network.discovery import Announced, configs

GW = "0x" + "ab" * 20

# https://www.home-assistant.io/integrations/sensor.mqtt/ ("Configuration Variables")
SENSOR_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
    "entity_category", "entity_picture", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "last_reset_value_template", "name",
    "options", "origin", "payload_available", "payload_not_available", "platform",
    "suggested_display_precision", "qos", "state_class", "state_topic", "unique_id",
    "unit_of_measurement", "value_template",
}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
               "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
               "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
# developers.home-assistant.io/docs/core/entity/sensor/ : device class -> allowed units (None: no
# unit) and allowed state classes (empty: none may be set)
UNITS: dict[str | None, set[str | None]] = {
    "power": {"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"},
    "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal", "Mcal", "Gcal"},
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "current": {"A", "mA"},
    "frequency": {"Hz", "kHz", "MHz", "GHz"},
    "power_factor": {"%", None},
    "enum": {None},
}
STATE_CLASSES: dict[str | None, set[str]] = {
    "power": {"measurement"}, "energy": {"total", "total_increasing"}, "voltage": {"measurement"},
    "current": {"measurement"}, "frequency": {"measurement"}, "power_factor": {"measurement"},
    "enum": set(), None: {"measurement", "total", "total_increasing"},
}
CONFIG_TOPIC = re.compile(r"^homeassistant/sensor/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$")
ENTITY_ID = re.compile(r"^sensor\.(?!_)(?!.*__)[a-z0-9_]+(?<!_)$")


def announced(*names: str, dr: bool = True, market: bool = True) -> Announced:
    return Announced(meters=[(f"m{i}", load_profile(n)) for i, n in enumerate(names)], dr=dr, market=market)


def payloads(a: Announced) -> dict[str, dict[str, Any]]:
    return {topic: json.loads(body) for topic, body in configs(GW, a, version="1.2.3")}


def check_schema(topic: str, body: dict[str, Any]) -> None:
    assert CONFIG_TOPIC.match(topic), topic
    assert set(body) <= SENSOR_KEYS, set(body) - SENSOR_KEYS
    assert "object_id" not in body  # deprecated, refused from 2026.4
    assert ENTITY_ID.match(body["default_entity_id"]), body["default_entity_id"]
    assert set(body["device"]) <= DEVICE_KEYS and body["device"]["identifiers"]
    assert set(body["origin"]) <= ORIGIN_KEYS and body["origin"]["name"]
    cls = body.get("device_class")
    assert body.get("unit_of_measurement") in UNITS.get(cls, {body.get("unit_of_measurement")})
    if "state_class" in body:
        assert body["state_class"] in STATE_CLASSES[cls], (cls, body["state_class"])
    else:
        assert cls == "enum"  # every numeric sensor says how HA should keep its statistics
    assert ("options" in body) == (cls == "enum")


@pytest.mark.parametrize("profile", [p.name for p in load_all() if p.kind == "meter"])
def test_every_meter_profile_gives_configs_in_has_schema(profile: str) -> None:
    found = payloads(announced(profile))
    assert found
    for topic, body in found.items():
        check_schema(topic, body)


def test_sdm630_offers_what_its_register_table_has_with_vendor_and_model() -> None:
    # device_profiles/meters/eastron_sdm630.yaml: vendor "Eastron", model "SDM630-Modbus V2"; its
    # register table has total power, import and export energy, three voltages and currents,
    # frequency and total power factor
    found = payloads(announced("eastron_sdm630", dr=False, market=False))
    by_name = {b["name"]: b for b in found.values()}
    assert set(by_name) == {"Power", "Energy import", "Energy export", "Voltage L1", "Voltage L2",
                            "Voltage L3", "Current L1", "Current L2", "Current L3", "Frequency",
                            "Power factor"}
    assert (by_name["Energy export"]["device_class"], by_name["Energy export"]["state_class"],
            by_name["Energy export"]["unit_of_measurement"]) == ("energy", "total_increasing", "Wh")
    assert "unit_of_measurement" not in by_name["Power factor"]  # a -1..1 ratio: unitless
    device = by_name["Power"]["device"]
    assert (device["manufacturer"], device["model"]) == ("Eastron", "SDM630-Modbus V2")
    assert "via_device" not in device  # no gateway sensors: no gateway device to hang it from
    assert by_name["Power"]["default_entity_id"] == "sensor.m0_abababab_power_active_total_w"


def test_one_phase_meter_names_voltage_and_current_without_phase() -> None:
    # eastron_sdm120.yaml: phases 1, voltage_l1_v and current_l1_a
    names = {b["name"] for b in payloads(announced("eastron_sdm120", dr=False, market=False)).values()}
    assert {"Voltage", "Current"} <= names and not {"Voltage L1", "Current L1"} & names


def test_device_tree_is_valid_each_via_device_is_announced() -> None:
    found = payloads(announced("eastron_sdm630", "eastron_sdm120", dr=True, market=False)).values()
    devices = {d["identifiers"][0]: d for d in (b["device"] for b in found)}
    vias = {d["via_device"] for d in devices.values() if "via_device" in d}
    assert vias == {f"drgw_{GW[2:]}"} and vias <= devices.keys()
    gateway = devices[f"drgw_{GW[2:]}"]
    assert "via_device" not in gateway and gateway["sw_version"] == "1.2.3"
    assert len(devices) == 3  # the gateway and two meters


def test_gateway_sensors_follow_dr_and_market() -> None:
    def names(a: Announced) -> set[str]:
        return {b["name"] for b in payloads(a).values() if b["state_topic"].endswith("/_gateway")}

    assert names(announced(dr=False, market=False)) == set()
    dr = {"DR event state", "DR award", "DR delivered", "DR required", "DR projected", "DR verdict"}
    assert names(announced(dr=True, market=False)) == dr
    assert names(announced(dr=True, market=True)) == dr | {"DR earnings", "DR net earnings", "Deposits held"}
    state = next(b for b in payloads(announced()).values() if b["name"] == "DR event state")
    # every state the event topic's dr_state carries (docs/mqtt.md), and "idle" before any event
    assert set(state["options"]) == {"idle", "pending", "near", "active", "completed", "cancelled"}


def test_gateway_sensors_a_config_dropped_are_removed() -> None:
    # HA's MQTT Discovery docs: an empty retained payload on a config topic removes the entity
    node = f"homeassistant/sensor/drgw_{GW[2:]}"
    assert set(discovery.retired(GW, announced(dr=True, market=True))) == set()
    assert set(discovery.retired(GW, announced(dr=True, market=False))) == {
        f"{node}/gateway_{p}/config" for p in ("earned_tokens", "net_earned_tokens", "deposit_held_tokens")}
    gone = set(discovery.retired(GW, announced(dr=False, market=False)))
    assert len(gone) == 9 and f"{node}/gateway_dr_state/config" in gone
    assert gone.isdisjoint(payloads(announced("eastron_sdm630", dr=False, market=False)))


def render(template: str, message: dict[str, Any]) -> str:
    """Render as HA does (a Jinja sandbox, value_json = the parsed message), but with StrictUndefined:
    any touch of a missing key raises here where HA would log a template warning."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(value_json=message, value=json.dumps(message))


def test_templates_are_safe_when_a_key_is_missing() -> None:
    for body in payloads(announced("eastron_sdm630")).values():
        point = re.split(r"_(?:m0|gateway)_", body["unique_id"])[-1]
        with pytest.raises(jinja2.UndefinedError):  # the plain template of before: HA warns
            render(f"{{{{ value_json.{point} }}}}", {"ts": 1})
        assert render(body["value_template"], {"ts": 1}) == "None"  # HA: state unknown, no warning
        assert render(body["value_template"], {point: 7, "ts": 1}) == "7"
    power = next(b for b in payloads(announced("eastron_sdm630")).values() if b["name"] == "Power")
    assert render(power["value_template"], {"power_active_total_w": 1830.5, "ts": 1}) == "1830.5"
    assert render(power["availability_template"], {"online": True}) == "online"


def test_safe_template_text() -> None:
    assert discovery.safe_template("frequency_hz") == (
        "{{ value_json.frequency_hz if 'frequency_hz' in value_json else None }}")


def test_gateway_state_device_name_is_kept_apart() -> None:
    from gateway.errors import ConfigError

    assert ha_gateway.GATEWAY_STATE.startswith("_")
    with pytest.raises(ConfigError, match="rename the device"):
        Announced(meters=[("_gateway", load_profile("eastron_sdm120"))])
    assert discovery.entity_slug("drgw_AB--c__d_") == "drgw_ab_c_d"
