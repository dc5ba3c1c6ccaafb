"""Byte transports for the device layer: Modbus TCP sockets and serial ports (RS-485), asyncio.

A `Link` only moves bytes; framing lives in gateway.protocol.modbus. The serial link opens the port with
pyserial (which sets baud, parity and raw mode through termios) and then waits for readability with
the event loop's `add_reader`: no polling loop, no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Protocol

from gateway.device.inbox import Inbox, InboxProtocol
from gateway.errors import ConfigError, DrgwError


class LinkError(DrgwError):
    """The transport itself failed: connection refused or lost, port missing."""


class Link(Protocol):
    """What a bus owner needs from a transport."""

    description: str

    @property
    def last_heard(self) -> float:
        """Loop time the port last handed over received bytes (0.0 before any): the silent interval
        before the next request runs from here (gateway.device.bus.BusOwner.transact)."""
        ...
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def write(self, data: bytes) -> None: ...
    async def read(self, timeout: float) -> bytes:
        """Wait at most `timeout` seconds for some bytes; return b"" when none arrived."""
        ...
    def discard_input(self) -> None: ...
    @property
    def is_open(self) -> bool: ...


def parse_host_port(text: str, *, default_port: int = 502) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{text!r}: the port must be a number 1..65535, as in 127.0.0.1:502")
    return host.strip("[]"), int(port)


class TcpLink:
    """A Modbus TCP connection, reopened on demand after a failure. Replies are received in place
    into a small buffer (gateway.device.inbox), not through a StreamReader."""

    scheme = "tcp"
    peer = "device"
    connect_hint = "is the device powered and the address right?"

    def __init__(self, host: str, port: int, *, connect_timeout: float = 3.0) -> None:
        self.host, self.port = host, port
        self.description = f"{self.scheme}://{host}:{port}"
        self._connect_timeout = connect_timeout
        self._protocol: InboxProtocol | None = None
        self._inbox = Inbox()

    @property
    def last_heard(self) -> float:
        return self._inbox.last_heard

    @property
    def is_open(self) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.transport is not None \
            and not protocol.transport.is_closing()

    async def open(self) -> None:
        inbox = Inbox(self._inbox.last_heard)  # a new connection starts with nothing stale
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: InboxProtocol(inbox), self.host, self.port),
                self._connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise LinkError(f"{self.description}: cannot connect ({exc or 'timeout'}); "
                            f"{self.connect_hint}") from exc
        self._protocol, self._inbox = protocol, inbox

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            await protocol.close()

    async def write(self, data: bytes) -> None:
        if self._protocol is None:
            await self.open()
        assert self._protocol is not None
        transport = self._protocol.transport
        try:
            if transport is None or transport.is_closing():
                raise ConnectionResetError("Connection lost")
            transport.write(data)  # a frame is at most 260 bytes: the socket buffer takes it
        except (OSError, RuntimeError) as exc:
            await self.close()
            raise LinkError(f"{self.description}: connection lost while sending ({exc})") from exc

    async def read(self, timeout: float) -> bytes:
        protocol = self._protocol
        if protocol is None:
            raise LinkError(f"{self.description}: not connected")
        inbox = self._inbox
        await inbox.wait(timeout)
        if inbox.pending:  # bytes that came before an end are handed over first
            data = inbox.take()
            protocol.drained()
            return data
        if not inbox.ended:
            return b""
        await self.close()
        reason = inbox.reason if inbox.reason.startswith("connection lost") \
            else f"the {self.peer} closed the connection"
        raise LinkError(f"{self.description}: {reason}")

    def discard_input(self) -> None:
        # TCP frames carry transaction ids; stale answers are dropped by the codec instead.
        return


class SerialLink:
    """An RS-485 serial port (or a pty standing in for one). A read or write that fails with an
    OSError (EIO, ENXIO, ENODEV, EBADF: the adapter went away) closes the port and raises LinkError;
    the next write opens it again by its path (gateway.device.reopen paces that for bus owners)."""

    def __init__(self, port: str, *, baud: int = 9600, parity: str = "N", stopbits: int = 1) -> None:
        self.port, self.baud, self.parity, self.stopbits = port, baud, parity, stopbits
        self.description = f"serial://{port}@{baud}{parity}{stopbits}"
        self._serial: object | None = None
        self._fd = -1
        # What the port received and why it failed under the event loop's reader, until closed;
        # its last_heard is stamped as the bytes come off the port, before any task wakes.
        self._inbox = Inbox()

    @property
    def last_heard(self) -> float:
        return self._inbox.last_heard

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    async def open(self) -> None:
        import serial  # pyserial: imported here so TCP-only installs never load it

        try:
            port = serial.Serial(self.port, baudrate=self.baud, parity=self.parity,
                                 stopbits=self.stopbits, bytesize=8, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            hint = ("add the user to the 'dialout' group" if "ermission" in str(exc)
                    else "check the port name with `ls /dev/serial/by-id/`")
            raise LinkError(f"{self.port}: cannot open the serial port ({exc}); {hint}") from exc
        self._serial = port
        self._fd = port.fileno()
        self._inbox = Inbox(self._inbox.last_heard)
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        inbox = self._inbox
        try:
            n = os.readv(self._fd, [inbox.space()])  # into the inbox's buffer: no bytes object
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed(f"read failed ({exc})")
            return
        if n:
            inbox.received(n, asyncio.get_running_loop().time())
        else:  # end of file: the other end of a pty closed
            self._failed("the port hung up")

    def _failed(self, reason: str) -> None:
        """Kept apart from the data (discard_input must not drop it); a waiting read wakes up."""
        asyncio.get_running_loop().remove_reader(self._fd)
        self._inbox.end(reason)

    async def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._fd)
        if self._serial is not None:
            with contextlib.suppress(OSError):  # closing a vanished device can fail too
                self._serial.close()  # type: ignore[attr-defined]
        self._serial, self._fd = None, -1
        self._inbox = Inbox(self._inbox.last_heard)

    async def write(self, data: bytes) -> None:
        if self._fd < 0:
            await self.open()
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                fut: asyncio.Future[None] = loop.create_future()
                loop.add_writer(self._fd, fut.set_result, None)
                try:
                    await fut
                finally:
                    loop.remove_writer(self._fd)
                continue
            except OSError as exc:
                await self.close()
                raise LinkError(f"{self.port}: write failed ({exc})") from exc
            view = view[n:]

    async def read(self, timeout: float) -> bytes:
        if self._fd < 0:
            raise LinkError(f"{self.port}: not open")
        inbox = self._inbox
        if not inbox.ended:
            await inbox.wait(timeout)
            if inbox.pending:
                return inbox.take()
            if not inbox.ended:
                return b""
        reason = inbox.reason or "the port hung up"
        await self.close()
        raise LinkError(f"{self.port}: {reason}")

    def discard_input(self) -> None:
        self._inbox.discard()
