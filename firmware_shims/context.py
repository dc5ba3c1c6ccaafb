"""The pymodbus server context that puts simulated devices behind a real pymodbus 3.16 server.

pymodbus calls `async_getValues` / `async_setValues` for every request with the unit id. Here they
find the SimulatedDevice for that unit and apply its faults first: silence (raising
NoSuchIdException, which a server built with ignore_missing_devices=True answers with nothing), an
exception code, extra turnaround delay, or the silent period of a reboot.

We subclass ModbusServerContext only because ModbusBaseServer checks isinstance() and then uses a
context with `old_simulator` set as it is. Its __init__ is deliberately not called: it wants
datastore objects we do not use and logs a deprecation warning (pymodbus 3.16 server/base.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException

from firmware_shims.device import SimulatedDevice
from firmware_shims.registers import READ_FUNCTIONS


class DeviceContext(ModbusServerContext):
    """Unit id -> SimulatedDevice, for one server (a TCP endpoint or one RTU bus)."""

    def __init__(self, devices: Sequence[SimulatedDevice], *,
                 monotonic: Callable[[], float]) -> None:  # no super().__init__(): see module doc
        self.old_simulator = True
        self.simdevices = []
        self._units: dict[int, SimulatedDevice] = {d.unit: d for d in devices}
        self._monotonic = monotonic

    def device_ids(self) -> list[int]:
        return list(self._units)

    def device(self, unit: int) -> SimulatedDevice | None:
        return self._units.get(unit)

    async def _gate(self, unit: int, *, first_call: bool) -> SimulatedDevice | ExcCodes:
        """Apply the device's faults; returns the device to serve, or the exception to answer.
        `first_call` is False for the read-back pymodbus does after a write in the same request."""
        device = self._units.get(unit)
        if device is None:
            raise NoSuchIdException(f"no simulated device at unit {unit}")
        faults = device.faults
        if first_call:
            device.count("requests")
        if faults.reboot_until is not None:
            if self._monotonic() < faults.reboot_until:
                if first_call:
                    device.count("silent")
                raise NoSuchIdException(f"unit {unit} is rebooting")
            device.reboot_done()
        if faults.no_reply:
            if first_call:
                device.count("silent")
            raise NoSuchIdException(f"unit {unit} is told not to reply")
        if first_call and faults.delay_s > 0:
            await asyncio.sleep(faults.delay_s)
        if faults.exception is not None:
            if first_call:
                device.count("exceptions")
            return ExcCodes(faults.exception)
        return device

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        gated = await self._gate(device_id, first_call=func_code in READ_FUNCTIONS)
        if isinstance(gated, ExcCodes):
            return gated
        result = gated.read(func_code, address, count)
        if isinstance(result, ExcCodes) and func_code in READ_FUNCTIONS:
            gated.count("exceptions")
        return result

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        gated = await self._gate(device_id, first_call=True)
        if isinstance(gated, ExcCodes):
            return gated
        result = gated.write(func_code, address, [int(v) for v in values])
        if result is not None:
            gated.count("exceptions")
        return result
