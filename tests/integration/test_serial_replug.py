"""A serial port that vanishes and comes back under another tty: the bus owner recovers by itself.

As a USB RS-485 adapter re-plugged behind `/dev/serial/by-id/...`: the config names a symlink to the
pty of a simulated bus (firmware_shims: a pymodbus RTU server, or DL/T 645 meters); that bus is
stopped, which closes the pty's master, so the gateway's open port reads and writes EIO from then
on; a new simulated bus comes up on another pty and the symlink is pointed at it. The owner must
close the dead port, reopen it by its path, count the reconnect, log the outage once, and samples
with values must flow again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_shims.home import SimulatedHome
from gateway.config.gateway import parse_config
from gateway.device.layer import DeviceLayer
from gateway.device.reopen import Backoff
from gateway.perception.readings import Sample

WAIT_S = 30.0  # generous: a loaded 2-core machine
FAST = Backoff(initial_s=0.05, max_s=0.5)  # the shape of the default, scaled for a test

MODBUS_HOME = """
[[bus]]
name = "rs485"
baud = 19200

[[device]]
name = "main"
profile = "eastron_sdm630"
transport = "rtu"
address = "rs485"
unit = 1
[device.load]
kind = "constant"
power_w = 2300
"""
MODBUS_GATEWAY = """
[[bus]]
name = "rs485"
serial = "{port}"
baud = 19200
[[device]]
name = "main"
profile = "eastron_sdm630"
bus = "rs485"
unit = 1
timeout = 0.3
"""
DLT645_HOME = """
[[bus]]
name = "line"
baud = 2400
parity = "E"

[[device]]
name = "main"
profile = "dlt645_three_phase"
transport = "dlt645"
address = "line"
meter_address = "000000000001"
[device.load]
kind = "constant"
power_w = 4600
"""
DLT645_GATEWAY = """
[[bus]]
name = "line"
protocol = "dlt645"
serial = "{port}"
[[device]]
name = "main"
profile = "dlt645_three_phase"
bus = "line"
address = "000000000001"
timeout = 0.5
"""


class Samples:
    """The layer's sink: every sample kept, and a wake-up for whoever waits on them."""

    def __init__(self) -> None:
        self.all: list[Sample] = []
        self.arrived = asyncio.Event()

    def __call__(self, sample: Sample) -> None:
        self.all.append(sample)
        self.arrived.set()

    async def until(self, what: str, ok: Callable[[list[Sample]], bool]) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                while not ok(self.all):
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {WAIT_S:.0f} s; last: {self.all[-3:]}") from None


def point(link: Path, target: str) -> None:
    """Atomically re-point the symlink, as udev does for /dev/serial/by-id/..."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def port_lost(sample: Sample) -> bool:
    return any("port lost" in (r.error or "") for r in sample.readings)


def replug(home_text: str, gateway_text: str, *, power_w: float,
           scenario_file: Callable[[str], Path], tmp_path: Path) -> None:
    link = tmp_path / "usb-FTDI_RS485-if00-port0"

    async def main() -> None:
        samples = Samples()
        first = SimulatedHome(scenario_file(home_text))
        await first.__aenter__()
        second = SimulatedHome(scenario_file(home_text))  # started now: it gets another tty
        await second.__aenter__()
        assert first.devices[0].address != second.devices[0].address
        point(link, first.devices[0].address)
        config = parse_config('[gateway]\nkey = "k"\n' + gateway_text.format(port=link),
                              path=tmp_path / "drgw.toml")
        layer = DeviceLayer(config.devices, sink=samples, reopen=FAST)
        owner = next(iter(layer.owners.values()))
        polling = asyncio.create_task(layer.run())
        try:
            await samples.until("sample with values", lambda s: any(x.ok for x in s))
            # The adapter is pulled: udev removes its by-id link, then its pty master closes. (Link
            # first: a stopped shim's pty may stay openable for a moment, and a reopen through the
            # old link would count a reconnect that a pulled adapter never gives.)
            link.unlink()
            await first.__aexit__(None, None, None)
            # Three cycles fail while the link is gone (the second and third without touching
            # the port), and reopening it fails in between.
            await samples.until("three cycles refused", lambda s: sum(map(port_lost, s)) >= 3)
            health = owner.port_health()
            assert health is not None and not health.up and health.outages == 1
            assert "Input/output error" in health.reason or "hung up" in health.reason
            assert health.attempts >= 1 and health.reconnects == 0
            point(link, second.devices[0].address)  # plugged in again, under another tty
            back = len(samples.all)
            await samples.until("values after the re-plug", lambda s: any(
                x.ok and x.value("power_active_total_w") is not None for x in s[back:]))
            health = owner.port_health()
            assert health is not None and health.up
            assert (health.outages, health.reconnects) == (1, 1)
            power = next(x.value("power_active_total_w") for x in samples.all[back:] if x.ok
                         and x.value("power_active_total_w") is not None)
            assert power == pytest.approx(power_w)  # what the shim's load says
        finally:
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)
            await first.__aexit__(None, None, None)  # no-op when already stopped
            await second.__aexit__(None, None, None)

    asyncio.run(main())


@pytest.mark.parametrize(("home", "gateway", "power_w"), [(MODBUS_HOME, MODBUS_GATEWAY, 2300.0),
                                                          (DLT645_HOME, DLT645_GATEWAY, 4600.0)],
                         ids=["modbus-rtu", "dlt645"])
def test_a_replugged_adapter_behind_a_symlink_is_reopened_and_polled_again(
        home: str, gateway: str, power_w: float, scenario_file: Callable[[str], Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.device")
    replug(home, gateway, power_w=power_w, scenario_file=scenario_file, tmp_path=tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # One line when the port is lost and one when it is back, not one per failed poll.
    assert sum("port lost" in m for m in warnings) == 1, warnings
    assert sum("port back" in m for m in warnings) == 1, warnings
    assert not any("main: " in m and "port lost" in m for m in warnings), warnings
