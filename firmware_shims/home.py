"""A simulated home: every device of a scenario served by real pymodbus servers (async context).

    async with SimulatedHome("examples/homes/ev_home.toml") as home:
        for info in home.devices:            # name, profile, transport, address, unit
            ...
        home.device("ev").set_value("ev_current_limit_a", 8)
        home.device("main").inject(NoReply())

Devices on TCP share a server when they share an explicit host:port (port 0 always gets its own
server); devices on RTU share one server per bus; DL/T 645 meters share one simulated line per bus
(firmware_shims.dlt645). `SimulatedHome` is reusable but not re-entrant.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from firmware_shims.clock import ScaledClock
from firmware_shims.device import Clock, DeviceCounters, SimulatedDevice
from firmware_shims.dlt645 import Dlt645Bus, SimulatedMeter
from firmware_shims.faults import BadCrc, Fault
from firmware_shims.loads import LoadModel
from firmware_shims.registers import Value
from firmware_shims.scenario import Scenario, load_scenario
from firmware_shims.servers import RtuBus, TcpEndpoint, split_host_port
from gateway.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Where a client finds one simulated device."""

    name: str
    profile: str
    transport: str
    address: str  # TCP "host:port", or the serial port (pty path) a client opens for RTU/DL/T 645
    unit: int
    meter_address: str | None = None  # transport dlt645: the meter's 12-digit address

    def as_json(self) -> dict[str, Any]:
        out = {"name": self.name, "profile": self.profile, "transport": self.transport,
               "address": self.address, "unit": self.unit}
        if self.meter_address is not None:
            out["meter_address"] = self.meter_address
        return out


class DeviceHandle:
    """Control of one running simulated device: values, load, faults, counters."""

    __slots__ = ("_monotonic", "device", "transport")

    def __init__(self, device: SimulatedDevice, *, transport: str,
                 monotonic: Callable[[], float]) -> None:
        self.device = device
        self.transport = transport
        self._monotonic = monotonic

    def set_value(self, name: str, value: Value) -> None:
        self.device.set_value(name, value)

    def clear_value(self, name: str) -> None:
        self.device.clear_value(name)

    def set_load(self, load: LoadModel | None) -> None:
        self.device.set_load(load)

    def inject(self, fault: Fault) -> None:
        if isinstance(fault, BadCrc) and self.transport not in ("rtu", "dlt645"):
            raise ConfigError(f"{self.device.name}: bad CRC applies to rtu devices only: "
                              "Modbus TCP frames carry no CRC")
        self.device.inject(fault, now_monotonic=self._monotonic())

    def clear_faults(self) -> None:
        self.device.clear_faults()

    def values(self) -> dict[str, Value]:
        return self.device.values()

    @property
    def counters(self) -> DeviceCounters:
        return self.device.counters


class SimulatedHome:
    """Runs a scenario's devices on real Modbus servers while the context is entered."""

    def __init__(self, scenario: Scenario | str | Path, *, clock: Clock | None = None) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self._clock = clock
        self._devices: dict[str, SimulatedDevice] = {}
        self._handles: dict[str, DeviceHandle] = {}
        self._infos: list[DeviceInfo] = []
        self._servers: list[TcpEndpoint | RtuBus | Dlt645Bus] = []
        self._running = False

    @property
    def devices(self) -> list[DeviceInfo]:
        return list(self._infos)

    @property
    def buses(self) -> list[RtuBus]:
        return [s for s in self._servers if isinstance(s, RtuBus)]

    def device(self, name: str) -> DeviceHandle:
        try:
            return self._handles[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._handles), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"no simulated device named {name!r}{hint}") from None

    async def __aenter__(self) -> SimulatedHome:
        if self._running:
            raise RuntimeError("SimulatedHome is already running; it is not re-entrant")
        self._running = True
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stop()

    async def _start(self) -> None:
        scenario = self.scenario
        clock = self._clock or ScaledClock.starting_now(speed=scenario.speed, start=scenario.start)
        monotonic = asyncio.get_running_loop().time
        self._devices = {
            spec.name: SimulatedDevice(name=spec.name, profile=spec.profile, unit=spec.unit,
                                       clock=clock, load=spec.load, settings=spec.settings)
            for spec in scenario.devices}
        for spec in scenario.devices:
            device = self._devices[spec.name]
            if spec.feeds is not None:
                self._devices[spec.feeds].attach(device)
            for name, value in spec.values.items():
                device.set_value(name, value)
            self._handles[spec.name] = DeviceHandle(device, transport=spec.transport,
                                                    monotonic=monotonic)
        addresses = await self._start_servers()
        self._infos = [DeviceInfo(name=s.name, profile=s.profile.name, transport=s.transport,
                                  address=addresses[s.name], unit=s.unit,
                                  meter_address=s.meter_address)
                       for s in scenario.devices]
        for spec in scenario.devices:  # faults last, so that a reboot counts from now
            for fault in spec.faults:
                self._handles[spec.name].inject(fault)

    async def _start_servers(self) -> dict[str, str]:
        """Start one server per TCP endpoint and per RTU bus; returns device name -> address."""
        scenario = self.scenario
        tcp_groups: dict[str, list[SimulatedDevice]] = {}
        rtu_groups: dict[str, list[SimulatedDevice]] = {}
        dlt645_groups: dict[str, list[SimulatedMeter]] = {}
        for spec in scenario.devices:
            device = self._devices[spec.name]
            if spec.transport == "dlt645":
                meter = SimulatedMeter(device, spec.meter_address or "")
                dlt645_groups.setdefault(spec.address, []).append(meter)
            elif spec.transport == "rtu":
                rtu_groups.setdefault(spec.address, []).append(device)
            elif spec.address.endswith(":0"):
                tcp_groups[f"{spec.address}#{spec.name}"] = [device]
            else:
                tcp_groups.setdefault(spec.address, []).append(device)
        addresses: dict[str, str] = {}
        for key, devices in tcp_groups.items():
            host, port = split_host_port(key.split("#")[0], where=devices[0].name)
            endpoint = TcpEndpoint(host, port, devices)
            self._servers.append(endpoint)
            await endpoint.start()
            addresses.update((d.name, endpoint.address) for d in devices)
        for name, devices in rtu_groups.items():
            bus_spec = scenario.bus(name)
            bus = RtuBus(name, bus_spec.line, devices, wire_timing=bus_spec.wire_timing)
            self._servers.append(bus)
            await bus.start()
            addresses.update((d.name, bus.client_path) for d in devices)
        for name, meters in dlt645_groups.items():
            bus_spec = scenario.bus(name)
            line = Dlt645Bus(name, bus_spec.line, meters, wire_timing=bus_spec.wire_timing)
            self._servers.append(line)
            await line.start()
            addresses.update((m.device.name, line.client_path) for m in meters)
        return addresses

    async def _stop(self) -> None:
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):
                await server.stop()
        self._servers.clear()
        self._running = False
