"""The Prometheus endpoint exports what issue 12 added to the health topic: the command path's
counters (gateway/network/dispatcher.py `counters()`) and the store's `disk_full` / `store_error` /
`samples_dropped` (docs/config.md, "Prometheus endpoint").

A real agent (`drgw run`'s Agent, in this process so that the test can fill its disk) polls a
simulated meter, talks to a real mosquitto and serves /metrics on loopback; the scrape goes over
HTTP from a thread and is parsed with prometheus_client's own parser. The disk is made full the way
tests/integration/test_store_disk_full.py does: `PRAGMA max_page_count` caps the store file at its
size (SQLite then answers SQLITE_FULL, as on ENOSPC), and lifting the cap is freeing space.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from firmware_shims.home import SimulatedHome
from gateway.agent.agent import Agent
from gateway.config.gateway import load_config
from gateway.measurement.identity import GatewayKey
from gateway.network import topics
from tests.mosquitto import Broker, free_port
from tests.waits import until

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
"""
# The command outcomes of docs/mqtt.md ("reply"): ok and every error code.
OUTCOMES = {"ok", "malformed", "too_large", "forged", "unknown_operator", "wrong_target", "expired",
            "lifetime_too_long", "replayed", "unknown_command", "bad_args", "failed", "timeout",
            "busy", "internal"}
NO_CAP = 1073741823  # SQLite's default max_page_count
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Series:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, tuple(sorted(labels.items()))))


class Scraper:
    """Scrapes from a thread (the endpoint is served on this test's own event loop)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.last: Series = {}

    async def until(self, check: Callable[[Series], bool], what: str) -> Series:
        async def ok() -> bool:
            try:
                self.last = await asyncio.to_thread(scrape, self.port)
            except OSError:  # not listening yet
                return False
            return check(self.last)

        deadline = time.monotonic() + 40
        while not await ok():
            assert time.monotonic() < deadline, f"waited 40 s for {what}; last scrape: {self.last}"
            await asyncio.sleep(0.2)
        return self.last


def test_command_counters_and_store_failure_are_exported(
        tmp_path: Path, mqtt_broker: Broker, scenario_file: Callable[[str], Path]) -> None:
    port, key = free_port(), GatewayKey.generate()

    async def main() -> None:
        async with SimulatedHome(scenario_file(HOME)) as home:
            config = tmp_path / "drgw.toml"
            config.write_text(
                f'[gateway]\nkey = "gw.key"\n[store]\npath = "drgw.db"\n'
                f'[mqtt]\nbroker = "{mqtt_broker.url}"\n[metrics]\nprometheus = "127.0.0.1:{port}"\n'
                f'[poll]\nfast = 0.2\nnormal = 0.5\nslow = 1.0\n'
                f'[[bus]]\nname = "lan"\ntcp = "{home.devices[0].address}"\n'
                '[[device]]\nname = "main"\nprofile = "eastron_sdm630"\nbus = "lan"\nunit = 1\n')
            agent = Agent(load_config(config), key=key)
            running = asyncio.create_task(agent.run())
            try:
                await scenario(agent, Scraper(port), gw=topics.gw_id(key.address),
                               broker=mqtt_broker)
            finally:
                agent.request_stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(running, 30)

    asyncio.run(main())


async def scenario(agent: Agent, scraper: Scraper, *, gw: str, broker: Broker) -> None:
    s = await scraper.until(lambda s: (value(s, "drgw_measurements_committed_total") or 0) > 0,
                            "measurements committed")
    # Every series is there before anything happened: an alert rule needs no "absent()".
    assert value(s, "drgw_commands_received_total") == 0
    assert {dict(k[1])["outcome"]: v for k, v in s.items() if k[0] == "drgw_commands_total"} == \
        dict.fromkeys(OUTCOMES, 0)
    assert value(s, "drgw_commands_unanswered_total") == 0
    assert value(s, "drgw_store_disk_full") == 0
    assert {dict(k[1])["reason"]: v for k, v in s.items() if k[0] == "drgw_store_failure"} == {
        "disk_full": 0, "io_error": 0, "corrupt": 0, "busy": 0}
    assert value(s, "drgw_samples_dropped_total") == 0
    assert value(s, "drgw_ack_failures_total") == 0

    # A payload that is not JSON: received, refused as malformed (docs/mqtt.md, "reply").
    await until(agent.parts.link.connected.is_set, what="the agent's MQTT session")
    def refused(s: Series) -> bool:
        return (value(s, "drgw_commands_total", outcome="malformed") or 0) >= 1

    async with aiomqtt.Client(broker.host, broker.port, identifier="metrics-test") as client:
        for _ in range(20):  # the agent subscribes just after it connects: send until it is seen
            await client.publish(f"drgw/v1/{gw}/cmd", b"not json", qos=1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(scraper.until(refused, "a malformed command"), 2)
                break
    s = await scraper.until(refused, "a malformed command counted")
    assert (value(s, "drgw_commands_received_total") or 0) >= 1
    assert value(s, "drgw_commands_total", outcome="ok") == 0

    store = agent.parts.store
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    s = await scraper.until(lambda s: value(s, "drgw_store_disk_full") == 1, "disk_full = 1")
    assert value(s, "drgw_store_failure", reason="disk_full") == 1
    assert value(s, "drgw_store_failure", reason="busy") == 0
    assert (value(s, "drgw_store_errors_total") or 0) >= 1

    store.db.execute(f"PRAGMA max_page_count = {NO_CAP}")  # space again: the agent resumes
    s = await scraper.until(lambda s: value(s, "drgw_store_disk_full") == 0, "disk_full = 0")
    assert value(s, "drgw_store_failure", reason="disk_full") == 0

