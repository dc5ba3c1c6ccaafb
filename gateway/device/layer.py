"""The device layer as a whole: one bus owner per bus of the config, run in one task group.

Samples from every owner go to one sink (a callable that must not block: the agent puts them on a
queue). Writes are routed to the owner of the device's bus. A serial port that fails is reopened
with the `reopen` back-off (gateway.device.reopen); None leaves that to each request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.device.bus import BusOwner
from gateway.device.config import BusConfig, DevicesConfig
from gateway.device.connect import make_link
from gateway.device.device import DeviceSpec
from gateway.device.dlt645 import Dlt645BusOwner, MeterSpec, serial_owner
from gateway.device.reopen import DEFAULT_BACKOFF, Backoff, ReopeningLink
from gateway.errors import ConfigError
from gateway.perception.identify import ModelCheck
from gateway.perception.readings import Reading, Sample


class DeviceLayer:
    def __init__(self, config: DevicesConfig, *, sink: Callable[[Sample], None],
                 wall_clock: Callable[[], float] | None = None,
                 reopen: Backoff | None = DEFAULT_BACKOFF) -> None:
        self.config = config
        self._reopen = reopen
        self.owners: dict[str, BusOwner | Dlt645BusOwner] = {}
        self._bus_of: dict[str, str] = {}
        for bus in config.buses:
            if bus.protocol == "dlt645":  # the owner follows the bus protocol (docs/dlt645.md)
                self._add_dlt645(bus, sink=sink, wall_clock=wall_clock)
                continue
            link, settings = make_link(tcp=bus.tcp, serial=bus.serial, baud=bus.baud,
                                       parity=bus.parity, stopbits=bus.stopbits,
                                       frame_gap=bus.frame_gap, framing=bus.framing)
            specs = [DeviceSpec(name=d.name, profile=d.profile, unit=d.unit, intervals=d.intervals,
                                timeout=d.timeout, check_model=d.check_model)
                     for d in config.devices if d.bus == bus.name]
            if not specs:
                continue
            if bus.serial is not None and reopen is not None:
                link = ReopeningLink(link, backoff=reopen)
            kwargs = {} if wall_clock is None else {"wall_clock": wall_clock}
            self.owners[bus.name] = BusOwner(link=link, settings=settings, devices=specs,
                                             sink=sink, **kwargs)
            self._bus_of.update((s.name, bus.name) for s in specs)

    def _add_dlt645(self, bus: BusConfig, *, sink: Callable[[Sample], None],
                    wall_clock: Callable[[], float] | None) -> None:
        meters = [MeterSpec(name=d.name, profile=d.profile, address=d.address or "",
                            intervals=d.intervals, timeout=d.timeout)
                  for d in self.config.devices if d.bus == bus.name]
        if meters and bus.serial is not None:
            self.owners[bus.name] = serial_owner(
                port=bus.serial, baud=bus.baud, parity=bus.parity, stopbits=bus.stopbits,
                frame_gap=bus.frame_gap, meters=meters, sink=sink, wall_clock=wall_clock,
                reopen=self._reopen)
            self._bus_of.update((m.name, bus.name) for m in meters)

    def owner_of(self, device: str) -> BusOwner | Dlt645BusOwner:
        try:
            return self.owners[self._bus_of[device]]
        except KeyError:
            raise ConfigError(f"no configured device is named {device!r}; known: "
                              f"{', '.join(sorted(self._bus_of))}") from None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name, owner in self.owners.items():
                group.create_task(owner.run(), name=f"bus:{name}")

    async def write(self, device: str, name: str, value: float) -> None:
        await self.owner_of(device).write(device, name, value)

    async def read_now(self, device: str, names: list[str] | None = None) -> list[Reading]:
        return await self.owner_of(device).read_now(device, names)

    async def verify_model(self, device: str) -> ModelCheck | None:
        """The device's model check now; None on a DL/T 645 bus (its profiles have no probe)."""
        owner = self.owner_of(device)
        if isinstance(owner, Dlt645BusOwner):
            return None
        return await owner.verify_model(device)
