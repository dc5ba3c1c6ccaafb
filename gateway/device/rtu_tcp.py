"""RTU over TCP: Modbus RTU frames (unit id, PDU, CRC; no MBAP header) through a TCP socket, asyncio.

Serial-to-Ethernet converters in their transparent mode pass the bytes of a TCP connection to the
RS-485 line and back as they are, so the client frames RTU itself (Modbus over Serial Line V1.02,
2.5.1) and the converter's timer cuts the line into frames; mbmd and evcc call this mode "RTU over
TCP". The link only moves bytes, as `TcpLink` does (the bus owner frames with
gateway.protocol.modbus.RtuClientConnection). RTU has no transaction id, so a late answer to a
request given up on would pass for the next one: `discard_input` drops what has arrived, which the
bus owner does after a timeout, as on a serial line.
"""

from __future__ import annotations

import asyncio

from gateway.device.transport import LinkError


class _Receiver(asyncio.Protocol):
    """Puts what the socket receives on a queue; b"" marks the end of the connection."""

    def __init__(self, chunks: asyncio.Queue[bytes]) -> None:
        self._chunks = chunks

    def data_received(self, data: bytes) -> None:
        self._chunks.put_nowait(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._chunks.put_nowait(b"")


class RtuOverTcpLink:
    """A TCP connection to a serial-to-Ethernet converter in transparent (RTU over TCP) mode,
    reopened on demand after a failure."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 3.0) -> None:
        self.host, self.port = host, port
        self.description = f"rtu-over-tcp://{host}:{port}"
        self._connect_timeout = connect_timeout
        self._transport: asyncio.BaseTransport | None = None
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.last_heard = 0.0

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def open(self) -> None:
        chunks: asyncio.Queue[bytes] = asyncio.Queue()  # a new connection starts with nothing stale
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Receiver(chunks), self.host, self.port),
                self._connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise LinkError(f"{self.description}: cannot connect ({exc or 'timeout'}); is the "
                            "converter powered, the address right and its port in RTU over TCP "
                            "(transparent) mode?") from exc
        self._transport, self._chunks = transport, chunks

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    async def write(self, data: bytes) -> None:
        if self._transport is None:
            await self.open()
        transport = self._transport
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            await self.close()
            raise LinkError(f"{self.description}: connection lost before sending")
        try:
            transport.write(data)  # a frame is at most 256 bytes: the socket buffer takes it
        except (OSError, RuntimeError) as exc:
            await self.close()
            raise LinkError(f"{self.description}: connection lost while sending ({exc})") from exc

    async def read(self, timeout: float) -> bytes:
        if self._transport is None:
            raise LinkError(f"{self.description}: not connected")
        try:
            data = await asyncio.wait_for(self._chunks.get(), timeout)
        except TimeoutError:
            return b""
        if not data:
            await self.close()
            raise LinkError(f"{self.description}: the converter closed the connection")
        self.last_heard = asyncio.get_running_loop().time()
        return data

    def discard_input(self) -> None:
        while not self._chunks.empty():
            if not self._chunks.get_nowait():  # keep the end-of-connection mark for read()
                self._chunks.put_nowait(b"")
                return
