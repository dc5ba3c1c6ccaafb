"""Real pymodbus 3.16 servers for simulated devices: one per TCP endpoint, one per RTU bus.

`TcpEndpoint` runs a ModbusTcpServer on host:port (port 0 picks a free port; `address` reports the
real one). `RtuBus` runs a ModbusSerialServer on the device end of a `PtyWire`, serving every unit
on that bus, and tells clients the path of the other end. Both install a frame tap (pymodbus's
trace_packet hook) that counts reply bytes per device and, on RTU, corrupts the CRC of replies from
a device told to send bad CRCs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from firmware_shims.context import DeviceContext
from firmware_shims.device import SimulatedDevice
from firmware_shims.wire import LineSettings, PtyWire
from gateway.errors import ConfigError

MBAP_UNIT_INDEX = 6  # Modbus Messaging on TCP/IP v1.0b, 3.1.3: the unit id is byte 6 of the MBAP


class FrameTap:
    """The trace_packet hook: sees every frame the server sends, and may rewrite it."""

    __slots__ = ("_context", "_rtu")

    def __init__(self, context: DeviceContext, *, rtu: bool) -> None:
        self._context = context
        self._rtu = rtu

    def __call__(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        index = 0 if self._rtu else MBAP_UNIT_INDEX
        if len(data) <= index:
            return data
        device = self._context.device(data[index])
        if device is None:
            return data
        device.count("bytes_sent", len(data))
        if self._rtu and device.faults.bad_crc:
            # Flip the last CRC byte: the frame arrives whole but fails its CRC-16 check.
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data


def _context(devices: Sequence[SimulatedDevice]) -> DeviceContext:
    return DeviceContext(devices, monotonic=asyncio.get_running_loop().time)


def split_host_port(text: str, *, where: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: address {text!r} is not host:port; write e.g. '127.0.0.1:0' "
                          "(port 0 picks a free port)")
    return host, int(port)


class TcpEndpoint:
    """A Modbus TCP server for the devices that share one host:port."""

    def __init__(self, host: str, port: int, devices: Sequence[SimulatedDevice]) -> None:
        self.host = host
        self.port = port
        self.devices = tuple(devices)
        self._server: ModbusTcpServer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        context = _context(self.devices)
        self._server = ModbusTcpServer(
            context, address=(self.host, self.port), ignore_missing_devices=True,
            trace_packet=FrameTap(context, rtu=False))
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {self.address} for "
                              f"{', '.join(d.name for d in self.devices)}: {exc}; is the port "
                              "in use? Use port 0 to pick a free one") from exc
        listener: Any = self._server.transport  # an asyncio.Server once listening
        self.port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None


class RtuBus:
    """A simulated RS-485 bus: a pty wire and one RTU server answering for every unit on it."""

    def __init__(self, name: str, line: LineSettings, devices: Sequence[SimulatedDevice], *,
                 wire_timing: bool = False) -> None:
        self.name = name
        self.line = line
        self.devices = tuple(devices)
        self.wire = PtyWire(line, timed=wire_timing)
        self._server: ModbusSerialServer | None = None

    @property
    def client_path(self) -> str:
        """The serial port a client (the gateway) opens to reach this bus."""
        return self.wire.client_path

    async def start(self) -> None:
        await self.wire.start()
        context = _context(self.devices)
        self._server = ModbusSerialServer(
            context, framer=FramerType.RTU, port=self.wire.server_path, baudrate=self.line.baud,
            # Linux ptys refuse PARENB (tcsetattr: EINVAL), so both ends of the simulated wire
            # run 8N1; the bus's parity still counts in the wire timing (one bit per character).
            parity="N", stopbits=self.line.stopbits, ignore_missing_devices=True,
            trace_packet=FrameTap(context, rtu=True))
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as exc:
            await self.wire.stop()
            raise ConfigError(f"bus {self.name}: cannot open the simulated serial port "
                              f"{self.wire.server_path}: {exc}") from exc

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        await self.wire.stop()
