"""Where a link's received bytes wait for the bus owner: one preallocated buffer per connection.

asyncio's StreamReader path reads a socket with `sock.recv(256 KiB)`: every Modbus reply (a few
dozen bytes) costs a fresh 256 KiB bytes object, which glibc serves with mmap and munmap, three
extra system calls per reply. An `Inbox` is received into in place instead (`recv_into` through
`InboxProtocol`, an asyncio.BufferedProtocol; `os.readv` for a serial port), and the one reader
waits on a future with a timer of its own: no Task per request as `asyncio.wait_for` makes on
Python 3.11, no StreamReader, no queue.

`last_heard` is stamped with the loop time as the bytes come off the socket or port, before any
task wakes: the RTU silent interval runs from there (gateway.device.bus.BusOwner.transact).
"""

from __future__ import annotations

import asyncio
import contextlib

SIZE = 4096  # a Modbus ADU is at most 260 bytes (Modbus Application Protocol V1.1b3, 4.1)
LIMIT = 64 * 1024  # unread bytes beyond this pause a socket's reading (StreamReader's default)


class Inbox:
    """Bytes received and not yet read, the end of the input, and at most one waiting reader."""

    def __init__(self, last_heard: float = 0.0) -> None:
        self._buf = bytearray(SIZE)
        self._view = memoryview(self._buf)
        self._filled = 0
        self._spilled: list[bytes] = []  # full buffers' worth, when the reader fell behind
        self._spilled_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # of the first wait
        self.ended = False  # end of input: end of file, connection lost, port failed
        self.reason = ""  # why, when known
        self.last_heard = last_heard  # loop time the last bytes arrived (carried across reopens)

    @property
    def pending(self) -> int:
        return self._spilled_bytes + self._filled

    def space(self) -> memoryview:
        """The free part of the buffer, to receive into (never empty)."""
        if self._filled == SIZE:
            self._spilled.append(bytes(self._buf))
            self._spilled_bytes += SIZE
            self._filled = 0
        return self._view[self._filled:]

    def received(self, nbytes: int, now: float) -> None:
        """`nbytes` were written at the start of `space()`, at loop time `now`."""
        if nbytes:
            self._filled += nbytes
            self.last_heard = now
            self._wake()

    def end(self, reason: str = "") -> None:
        self.ended = True
        self.reason = self.reason or reason
        self._wake()

    def take(self) -> bytes:
        """Everything received so far (b"" for nothing)."""
        data = bytes(self._view[:self._filled])
        if self._spilled:
            data = b"".join([*self._spilled, data])
        self.discard()
        return data

    def discard(self) -> None:
        """Drop what was received; the end mark stays."""
        self._filled, self._spilled, self._spilled_bytes = 0, [], 0

    async def wait(self, timeout: float) -> None:
        """Until there are bytes or the input ended, at most `timeout` seconds. A timer on a future
        of our own: cheaper than asyncio.wait_for or asyncio.timeout, which cancel the task."""
        if self._filled or self._spilled or self.ended or timeout <= 0:
            return
        if self._waiter is not None:
            raise RuntimeError("two reads at once on one link: the bus owner serialises them")
        loop = self._loop
        if loop is None:  # asked once: Python 3.11's get_running_loop() calls getpid() each time
            loop = self._loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class InboxProtocol(asyncio.BufferedProtocol):
    """A TCP connection's receiving side: the event loop's `recv_into` fills the inbox directly."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._paused = False
        self._lost: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.inbox.space()

    def buffer_updated(self, nbytes: int) -> None:
        self.inbox.received(nbytes, self._loop.time())
        if self.inbox.pending > LIMIT and self.transport is not None and not self._paused:
            self._paused = True  # resumed by `drained` once the reader has taken the bytes
            self.transport.pause_reading()

    def drained(self) -> None:
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.inbox.end("the peer closed the connection")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.end(f"connection lost ({exc})" if exc else "the peer closed the connection")
        if not self._lost.done():
            self._lost.set_result(None)

    async def close(self) -> None:
        """Close, and wait (at most a second) until the loop has let go of the socket."""
        if self.transport is not None:
            self.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._lost), 1.0)
