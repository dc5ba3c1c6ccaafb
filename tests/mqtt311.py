"""Test helper: a broker that speaks only MQTT 3.1.1, made of a small front and the real mosquitto
behind it (for the link's fallback from MQTT 5; mosquitto itself always accepts MQTT 5).

The front reads the first packet (CONNECT). A protocol level other than 4 gets CONNACK with return
code 1, "unacceptable protocol version", and the connection is closed, as MQTT 3.1.1 section
3.1.2.2 requires of a 3.1.1 server [MQTT-3.1.2-2]; a 3.1.1 connection is piped to mosquitto as is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol


class _Upstream(Protocol):
    host: str
    port: int


class V311Front:
    """`async with front.serving() as url:` a 3.1.1-only broker at `url`; `levels` lists the
    protocol level of every CONNECT it saw."""

    def __init__(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        self.levels: list[int] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fixed = await reader.readexactly(1)
        length, raw = 0, b""
        for shift in range(0, 28, 7):  # Remaining Length, MQTT 3.1.1 section 2.2.3
            byte = await reader.readexactly(1)
            raw += byte
            length |= (byte[0] & 0x7F) << shift
            if not byte[0] & 0x80:
                break
        body = await reader.readexactly(length)
        self.levels.append(body[6])  # after the protocol name: 00 04 "MQTT"
        if body[6] != 4:
            writer.write(b"\x20\x02\x00\x01")  # CONNACK, return code 1
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.upstream.host, self.upstream.port)
        up_writer.write(fixed + raw + body)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            yield f"mqtt://127.0.0.1:{port}"


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.close()
