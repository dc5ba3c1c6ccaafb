"""`drgw run` health end to end: simulated meters (one healthy, one mute, one missing) -> the agent
with `[metrics] prometheus` on -> scraped over loopback HTTP, and its health message on a real
mosquitto; plus the `[metrics]` config rules and the rate-limited log of the missing meter.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config.gateway import parse_config
from gateway.errors import ConfigError
from tests.mosquitto import Broker, free_port
from tests.waits import wait_for

HOME = """
[[device]]
name = "main"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.load]
kind = "constant"
power_w = 1500

[[device]]
name = "mute"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.fault]
no_reply = true
"""

HEAD = '[gateway]\nkey = "gw.key"\n'


# ------------------------------------------------------------------------------ [metrics] config


def metrics_of(tmp_path: Path, table: str) -> Any:
    return parse_config(HEAD + table, path=tmp_path / "drgw.toml").metrics


def test_metrics_are_off_unless_configured(tmp_path: Path) -> None:
    assert metrics_of(tmp_path, "") is None
    assert metrics_of(tmp_path, "[metrics]\n") is None


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("127.0.0.1:9560", "127.0.0.1", 9560), ("localhost:9100", "localhost", 9100),
    ("[::1]:9560", "::1", 9560), ("127.0.0.53:1", "127.0.0.53", 1)])
def test_loopback_addresses_are_accepted(tmp_path: Path, listen: str, host: str, port: int) -> None:
    m = metrics_of(tmp_path, f'[metrics]\nprometheus = "{listen}"\n')
    assert (m.host, m.port, m.allow_remote) == (host, port, False)


def test_a_remote_address_needs_allow_remote(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"drgw.toml: metrics: prometheus: '0.0.0.0:9560' is not "
                       r"a loopback address.*allow_remote = true"):
        metrics_of(tmp_path, '[metrics]\nprometheus = "0.0.0.0:9560"\n')
    with pytest.raises(ConfigError, match="not a loopback address"):
        metrics_of(tmp_path, '[metrics]\nprometheus = "gateway.lan:9560"\n')
    m = metrics_of(tmp_path, '[metrics]\nprometheus = "0.0.0.0:9560"\nallow_remote = true\n')
    assert (m.host, m.port, m.allow_remote) == ("0.0.0.0", 9560, True)


@pytest.mark.parametrize("listen", ["9560", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000",
                                    "::1:9560", "127.0.0.1:http"])
def test_a_malformed_address_names_the_fix(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics: prometheus: .*write host:port"):
        metrics_of(tmp_path, f'[metrics]\nprometheus = "{listen}"\n')


def test_unknown_metrics_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="option 'prometeus' is not valid; did you mean "
                                          "'prometheus'"):
        metrics_of(tmp_path, '[metrics]\nprometeus = "127.0.0.1:9560"\n')


# ------------------------------------------------------------------------------ a running agent


def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


@dataclass
class Site:
    root: Path
    config: Path
    gw: str
    port: int  # the metrics endpoint


@pytest.fixture
def site(tmp_path: Path, mqtt_broker: Broker) -> Iterator[Site]:
    (tmp_path / "home.toml").write_text(HOME)
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate",
                            str(tmp_path / "home.toml"), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert sim.stdout is not None
        devices = {d["name"]: d["address"] for d in json.loads(sim.stdout.readline())["devices"]}
        out = drgw("keys", "new", "--out", str(tmp_path / "gw.key"), "--json")
        assert out.returncode == 0, out.stderr
        port = free_port()
        buses = dict(devices, ghost=f"127.0.0.1:{free_port()}")  # nothing listens there
        config = tmp_path / "drgw.toml"
        config.write_text(HEAD + f'[mqtt]\nbroker = "{mqtt_broker.url}"\nhealth_interval = 1\n'
                          f'[metrics]\nprometheus = "127.0.0.1:{port}"\n'
                          "[poll]\nfast = 0.2\nnormal = 1.0\nslow = 2.0\n" + "".join(
                              f'[[bus]]\nname = "{n}"\ntcp = "{a}"\n[[device]]\nname = "{n}"\n'
                              f'profile = "eastron_sdm630"\nbus = "{n}"\nunit = 1\ntimeout = 0.2\n'
                              for n, a in buses.items()))
        yield Site(root=tmp_path, config=config, gw=json.loads(out.stdout)["address"].lower(),
                   port=port)
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), -1.0)


class HealthListener:
    def __init__(self, broker: Broker, gw: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="health-test")
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"drgw/v1/{gw}/health")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(json.loads(msg.payload))

    def last(self) -> dict[str, Any] | None:
        with self.lock:
            return self.messages[-1] if self.messages else None

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_prometheus_endpoint_and_health_message_of_a_running_agent(
        site: Site, mqtt_broker: Broker) -> None:
    listener = HealthListener(mqtt_broker, site.gw)
    log = (site.root / "agent.log").open("w")
    agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(site.config)],
                             stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        def scraped_errors() -> bool:
            nonlocal parsed
            try:
                ctype, text = scrape(site.port)
            except OSError:  # not listening yet
                return False
            assert ctype.startswith("text/plain; version=")
            parsed = samples(text)
            return (value(parsed, "drgw_reads_total", device="main") >= 10
                    and value(parsed, "drgw_device_errors_total", device="mute", kind="timeout") >= 2
                    and value(parsed, "drgw_device_errors_total", device="ghost", kind="link") >= 2
                    and value(parsed, "drgw_measurements_committed_total") > 0)

        wait_for(scraped_errors, what="reads of main, timeouts of mute, link errors of ghost",
                 timeout=40, poll_s=0.2)
        assert value(parsed, "drgw_device_up", device="main") == 1
        assert value(parsed, "drgw_device_up", device="mute") == 0
        assert value(parsed, "drgw_device_up", device="ghost") == 0
        assert value(parsed, "drgw_device_errors_total", device="main", kind="timeout") == 0
        assert value(parsed, "drgw_outbox_evicted_rows_total", reason="rows_cap") == 0
        assert 10 << 20 < value(parsed, "drgw_process_resident_memory_bytes") < 1 << 30
        assert value(parsed, "drgw_process_cpu_seconds_total") > 0
        assert value(parsed, "drgw_store_file_bytes", file="db") > 0
        assert value(parsed, "drgw_store_filesystem_free_bytes") > 0
        assert value(parsed, "drgw_outbox_rows") >= 0 and value(parsed, "drgw_sample_queue_length") >= 0
        info = [k for k in parsed if k[0] == "drgw_info"]
        assert len(info) == 1 and ("gw", site.gw) in info[0][1]
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(site.port, "/nope")
        assert err.value.code == 404

        def health_with_devices() -> bool:
            msg = listener.last()  # the first message's interval runs from start-up to connect
            return bool(msg and len(listener.messages) >= 2 and msg["devices"]["main"]["reads"] > 0
                        and msg["devices"]["ghost"]["errors"]["link"] > 0)

        wait_for(health_with_devices, what="a health message with device counters", timeout=40)
        with listener.lock:
            prev, msg = listener.messages[-2:]
        assert msg["gw"] == site.gw and msg["v"] == 1
        assert {"interval_s", "uptime_s", "reads_per_s", "devices", "sample_queue", "evictions",
                "process", "store", "counters", "backlog"} <= msg.keys()
        # Rates are counts over the interval: the reads since the previous message, per second.
        reads = sum(d["reads"] for d in msg["devices"].values()) - sum(
            d["reads"] for d in prev["devices"].values())
        assert msg["interval_s"] > 0 and reads > 0
        assert msg["reads_per_s"] == pytest.approx(reads / msg["interval_s"], rel=0.01, abs=0.01)
        assert msg["devices"]["main"]["online"] is True and msg["devices"]["mute"]["online"] is False
        assert msg["devices"]["mute"]["errors"]["timeout"] > 0
        assert set(msg["evictions"]) == {"age", "rows_cap", "bytes_cap", "measurements"}
        assert msg["process"]["rss_bytes"] > 10 << 20 and msg["process"]["cpu_pct"] >= 0
        assert msg["store"]["db_bytes"] > 0 and msg["store"]["free_bytes"] > 0
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        listener.stop()
        log.close()
    # The missing meter failed every cycle, but within the 60 s window only its first error is
    # logged (plain format: stdout here is a file, not the journal).
    lines = (site.root / "agent.log").read_text().splitlines()
    ghost = [line for line in lines if "ghost: " in line and "cannot connect" in line]
    assert len(ghost) == 1, "\n".join(lines)
    assert " WARNING gateway.device.bus: ghost: tcp://127.0.0.1:" in ghost[0]
    assert not any(line.startswith("<") for line in lines)


def test_a_metrics_port_in_use_stops_the_agent_with_the_fix(site: Site) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", site.port))
        taken.listen()
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "run", str(site.config)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == ConfigError.exit_code, out.stdout + out.stderr
    assert (f'[metrics] prometheus = "127.0.0.1:{site.port}": cannot listen there (Address '
            "already in use); choose a free port or remove [metrics]") in out.stderr
