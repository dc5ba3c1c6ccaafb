"""`drgw run` with Home Assistant discovery: simulated SDM630 -> agent -> real mosquitto -> what HA
would read. Every discovery config's template, rendered as HA renders it (a Jinja sandbox) but with
StrictUndefined, must find its key in the retained state message of its topic: the state carries the
latest value of every point, not only the last poll cycle's, so no template in HA warns.

(A real Home Assistant is driven by bench/interop_ha.sh, outside CI.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import paho.mqtt.client as mqtt

from tests.e2e.agent_site import meter_and_wallbox
from tests.homes import WALLBOX_TCP, sdm630_tcp, simulated
from tests.mosquitto import Broker
from tests.waits import wait_for

# eastron_sdm630.yaml's points that HA has a sensor class for (power, import and export energy,
# three voltages and currents, frequency, power factor) + the six DR sensors of a gateway with [dr]
EXPECTED_CONFIGS = 11 + 6


class Retained:
    """Every message on the discovery and state topics, latest per topic."""

    def __init__(self, port: int) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-like")
        self.client.on_connect = lambda c, *_: (c.subscribe("homeassistant/#"),
                                                c.subscribe("drgw/v1/+/state/#"))
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.payload:
                self.messages[msg.topic] = json.loads(msg.payload)
            else:  # an empty config removes an entity ([market] sensors here: no [market])
                self.messages.pop(msg.topic, None)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self.messages)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def render(template: str, message: dict[str, Any]) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(value_json=message)


def every_template_has_its_value(seen: dict[str, dict[str, Any]]) -> bool:
    """Each template's key is in its state message: a meter's with a number, the gateway's DR figures
    at least as null (no event yet: HA shows "unknown", and warns about nothing)."""
    configs = [b for t, b in seen.items() if t.startswith("homeassistant/")]
    if len(configs) < EXPECTED_CONFIGS:
        return False
    for body in configs:
        state = seen.get(body["state_topic"])
        key = re.search(r"value_json\.(\w+)", body["value_template"])
        if state is None or key is None:
            return False
        try:  # the plain template HA would warn about if the key were missing
            value = render(f"{{{{ value_json.{key.group(1)} }}}}", state)
        except jinja2.UndefinedError:
            return False
        if value == "None" and not body["state_topic"].endswith("/_gateway"):
            return False
    return True


def test_state_topics_carry_every_point_each_template_reads(tmp_path: Path, mqtt_broker: Broker) -> None:
    with simulated(sdm630_tcp(1800) + WALLBOX_TCP, tmp_path) as devices:
        key = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "new", "--out",
                              str(tmp_path / "gw.key"), "--json"], capture_output=True, text=True, check=True)
        gw = json.loads(key.stdout)["address"].lower()
        (tmp_path / "drgw.toml").write_text(f"""[gateway]
key = "gw.key"
[mqtt]
broker = "{mqtt_broker.url}"
ha_discovery = true
[poll]
fast = 0.2
normal = 1.0
slow = 2.0
{meter_and_wallbox(main=devices['main'], ev=devices['ev'])}[dr]
baseline = "pre_event"
[[dr.lever]]
device = "ev"
point = "ev_current_limit_a"
kind = "setpoint"
min = 6
priority = 1
expected_w = 2760
""")
        ha = Retained(mqtt_broker.port)
        log = (tmp_path / "agent.log").open("w")
        agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(tmp_path / "drgw.toml")],
                                 stdout=log, stderr=log)
        try:
            wait_for(lambda: every_template_has_its_value(ha.snapshot()),
                     what="every discovery template's key in its state message",
                     detail=lambda: json.dumps(ha.snapshot(), indent=1)[-3000:])
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            ha.stop()
    seen = ha.snapshot()
    main = seen[f"drgw/v1/{gw}/state/main"]
    assert main["ts"] > 1_600_000_000_000  # unix ms of the newest sample in it
    assert main["power_active_total_w"] > 1700 and main["voltage_l3_v"] > 0  # 1.8 kW + the wallbox
    assert seen[f"drgw/v1/{gw}/state/_gateway"]["dr_state"] == "idle"  # no event yet
    power = seen[f"homeassistant/sensor/drgw_{gw[2:]}/main_power_active_total_w/config"]
    assert power["device"]["via_device"] == f"drgw_{gw[2:]}"  # the gateway device, announced too
