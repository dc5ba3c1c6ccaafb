"""A fleet `scan` on a running `drgw run`: simulated meters on an RTU bus the agent is polling.

- The scan finds and identifies every unit that answers (the configured one and one the agent does
  not know), returns a config draft, and the configured meter keeps being measured meanwhile.
- It is bounded: too many units or too long a deadline are refused with the limit; a scan that hits
  its deadline says how far it got.
- A second scan of the same bus while one runs is refused (BusOwner.scan, in process).

How evenly polling goes on during a scan (the longest gap between two polls against the scan's
length) is a wall-clock figure: bench/timing.py measures it; here the claim is a count.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firmware_shims.home import SimulatedHome
from gateway.config.profiles import load_all, load_profile
from gateway.device.bus import BusBusy, BusOwner
from gateway.device.config import BusConfig
from gateway.device.connect import make_link
from gateway.device.device import DeviceSpec
from gateway.device.probe import MAX_REMOTE_UNITS, scan_running_bus
from gateway.measurement.record import SignedMeasurement
from gateway.measurement.store.database import Store
from gateway.perception.readings import Sample
from tests.mosquitto import Broker
from tests.waits import wait_for

HOME = """
[[bus]]
name = "rs485"
baud = 19200

[[device]]
name = "heat"
profile = "carlogavazzi_em24"
transport = "rtu"
address = "rs485"
unit = 2
[device.load]
kind = "constant"
power_w = 1500

[[device]]
name = "sub"
profile = "eastron_sdm630"
transport = "rtu"
address = "rs485"
unit = 5
[device.load]
kind = "constant"
power_w = 700
"""

PROFILES = load_all()  # the probes the agent's fleet scan uses


def drgw(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Site:
    root: Path
    address: str
    port: str
    broker: Broker
    agent: subprocess.Popen[str]

    def cmd(self, cmd: str, *args: str, timeout: str = "60") -> tuple[int, dict[str, Any]]:
        out = drgw("fleet", "cmd", self.address, cmd, *[a for arg in args for a in ("--arg", arg)],
                   "--operator-key", str(self.root / "operator.key"), "--broker", self.broker.url,
                   "--timeout", timeout, "--json")
        return out.returncode, json.loads(out.stdout or "{}")


@pytest.fixture
def site(tmp_path: Path, mqtt_broker: Broker, scenario_file: Callable[[str], Path]
         ) -> Iterator[Site]:
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", str(scenario_file(HOME)),
                            "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    agent = None
    try:
        assert sim.stdout is not None
        port = json.loads(sim.stdout.readline())["devices"][0]["address"]
        address = json.loads(drgw("keys", "new", "--out", str(tmp_path / "gw.key"),
                                  "--json").stdout)["address"]
        operator = json.loads(drgw("keys", "new", "--out", str(tmp_path / "operator.key"),
                                   "--json").stdout)["address"]
        # Only unit 2 is configured: unit 5 is the meter an installer added and forgot to tell us.
        (tmp_path / "drgw.toml").write_text(f"""
[gateway]
key = "gw.key"
[mqtt]
broker = "{mqtt_broker.url}"
batch_max = 5
[operators]
allow = ["{operator}"]
[poll]
fast = 0.5
normal = 2.0
slow = 5.0
[[bus]]
name = "rs485"
serial = "{port}"
baud = 19200
[[device]]
name = "heat"
profile = "carlogavazzi_em24"
bus = "rs485"
unit = 2
""")
        log = (tmp_path / "agent.log").open("a")
        agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run",
                                  str(tmp_path / "drgw.toml")], stdout=log, stderr=log, text=True)
        s = Site(root=tmp_path, address=address, port=port, broker=mqtt_broker, agent=agent)
        for _ in range(15):  # commands sent before the agent subscribed are dropped: ping first
            code, _ = s.cmd("ping", timeout="2")
            if code == 0:
                break
        assert code == 0, (tmp_path / "agent.log").read_text()
        yield s
        assert agent.poll() is None, "the agent died during the test"
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
        sim.terminate()
        sim.wait(timeout=10)


def heat_records(site: Site, t0: float, t1: float) -> list[SignedMeasurement]:
    with Store(site.root / "drgw.db") as store:
        lo, hi = store.seq_bounds()
        records = store.measurements_range(lo, hi)
    return [r for r in records if r.measurement.device == "heat"
            and t0 * 1000 <= r.measurement.time_ms <= t1 * 1000]


def test_scan_of_a_running_bus_finds_both_meters_and_polling_goes_on(site: Site) -> None:
    # Units 1..40: 38 silent units at 0.15 s each keep the bus busy for several poll periods.
    sent = time.time()
    code, reply = site.cmd("scan", "bus=rs485", "unit_from=1", "unit_to=40")
    replied = time.time()
    assert code == 0, reply
    result = reply["result"]
    assert (result["probed"], result["complete"], result["next_unit"]) == (40, True, None)
    found = {d["unit"]: d for d in result["devices"]}
    assert sorted(found) == [2, 5]
    assert found[2]["profile"] == "carlogavazzi_em24" and found[2]["configured_as"] == "heat"
    assert "eastron_sdm630" in found[5]["candidates"] and found[5]["configured_as"] is None
    assert found[5]["transport"] == "rtu" and found[5]["address"] == site.port
    assert found[5]["baud"] == 19200
    assert f'serial = "{site.port}"' in result["config"] and "unit = 5" in result["config"]
    # The scan shared the bus one unit at a time: the configured meter was measured all along.
    # Everything read up to the reply is committed once a later reading is.
    wait_for(lambda: heat_records(site, replied, float("inf")), what="a reading of heat after the reply")
    # The scan itself ran for elapsed_s and ended before the reply reached us: readings taken in
    # that span, several of them, were taken while it ran (had it paused polling, only the moments
    # between its end and our clock reading could hold any).
    during = heat_records(site, max(sent, replied - result["elapsed_s"]), replied)
    assert len(during) >= 3, f"only {len(during)} record(s) of heat while the scan ran"
    assert all(r.measurement.readings and all(x.quality == 0 for x in r.measurement.readings)
               for r in during)


def test_scan_is_bounded(site: Site) -> None:
    code, reply = site.cmd("scan", "unit_from=1", "unit_to=247")
    assert code != 0 and reply["error"]["code"] == "bad_args"
    assert f"at most {MAX_REMOTE_UNITS} per command" in reply["error"]["message"]
    code, reply = site.cmd("scan", "unit_from=1", "unit_to=2", "timeout_s=500")
    assert code != 0 and "timeout_s 500" in reply["error"]["message"]
    code, reply = site.cmd("scan", "bus=nope", "unit_from=1", "unit_to=2")
    assert code != 0 and "no polled bus is named 'nope'" in reply["error"]["message"]
    # 64 silent units take ~10 s; a 1 s deadline stops the scan early and says where to go on.
    code, reply = site.cmd("scan", "unit_from=100", "unit_to=163", "timeout_s=1")
    assert code == 0, reply
    result = reply["result"]
    assert result["complete"] is False and 0 < result["probed"] < 64
    assert result["next_unit"] == 100 + result["probed"] and result["devices"] == []
    code, reply = site.cmd("status")  # and the agent is still fine
    assert code == 0


def test_a_second_scan_of_the_same_bus_is_refused(scenario_file: Callable[[str], Path]) -> None:
    samples: list[Sample] = []

    async def main() -> tuple[str, dict[str, Any]]:
        async with SimulatedHome(scenario_file(HOME)) as home:
            port = home.devices[0].address
            bus = BusConfig(name="rs485", tcp=None, serial=port, baud=19200, parity="N",
                            stopbits=1, frame_gap=None)
            link, settings = make_link(tcp=None, serial=port, baud=19200, parity="N", stopbits=1,
                                       frame_gap=None)
            heat = DeviceSpec(name="heat", profile=load_profile("carlogavazzi_em24"), unit=2,
                              intervals={"fast": 0.5, "normal": 2.0, "slow": 5.0})
            owner = BusOwner(link=link, settings=settings, devices=[heat], sink=samples.append)
            task = asyncio.create_task(owner.run())
            try:
                first = asyncio.create_task(scan_running_bus(
                    owner, bus, {"unit_from": 1, "unit_to": 12}, profiles=PROFILES))
                while owner.scanning is None:
                    await asyncio.sleep(0.01)
                with pytest.raises(BusBusy) as refused:
                    await scan_running_bus(owner, bus, {"unit_from": 20, "unit_to": 21},
                                           profiles=PROFILES)
                result = await first
                again = await scan_running_bus(owner, bus, {"unit_from": 5, "unit_to": 5},
                                               profiles=PROFILES)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert [d["unit"] for d in again["devices"]] == [5]
            return str(refused.value), result

    message, result = asyncio.run(main())
    assert "units 1-12 is already running" in message
    assert [d["unit"] for d in result["devices"]] == [2, 5]
    assert any(s.ok for s in samples)  # the configured meter was polled around the scans
