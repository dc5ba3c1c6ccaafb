"""TcpLink on a real TCP socket: replies are received in place into a small buffer (no 256 KiB
bytes object per reply, as asyncio's StreamReader path allocates), stamped with the loop time as
they arrive, and a read that times out starts no Task (Python 3.11's asyncio.wait_for does).

The peer is a plain blocking socket in a thread (not an asyncio server, whose own reads would
allocate 256 KiB in this process), answering every request with one fixed frame.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.device.transport import TcpLink
from tests.waits import until

# Read Input Registers, unit 1, address 0, 2 registers, transaction 1 (Modbus Messaging on TCP/IP
# V1.0b 3.1.3: MBAP = transaction 2 bytes, protocol 0, length 6 = unit + PDU of 5 bytes).
REQUEST = bytes([0, 1, 0, 0, 0, 6, 1, 4, 0, 0, 0, 2])
# Its answer: length 7 = unit + function + byte count 4 + two registers (1 and 2).
REPLY = bytes([0, 1, 0, 0, 0, 7, 1, 4, 4, 0, 1, 0, 2])


@contextmanager
def peer(*, answer: bool = True) -> Iterator[int]:
    """A device on 127.0.0.1 that answers each request with REPLY (or stays silent); its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while request := conn.recv(512):
                if answer and request == REQUEST:
                    conn.sendall(REPLY)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()


def test_a_reply_is_stamped_when_it_arrives_before_anyone_reads_it() -> None:
    async def main() -> None:
        with peer() as port:
            link = TcpLink("127.0.0.1", port)
            await link.open()
            sent_at = asyncio.get_running_loop().time()
            await link.write(REQUEST)
            await until(lambda: link.last_heard >= sent_at, what="the reply's arrival stamp",
                        timeout=5)
            heard = link.last_heard
            assert await link.read(5.0) == REPLY
            assert link.last_heard == heard  # taking the bytes later does not move the stamp
            await link.close()

    asyncio.run(main())


def test_replies_are_received_without_a_large_buffer_each() -> None:
    async def main() -> int:
        with peer() as port:
            link = TcpLink("127.0.0.1", port)
            await link.open()
            tracemalloc.start()
            try:
                for _ in range(20):
                    await link.write(REQUEST)
                    assert await link.read(5.0) == REPLY
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            await link.close()
            return peak

    # asyncio's StreamReader path takes each reply with sock.recv(262144): a 256 KiB bytes object.
    assert asyncio.run(main()) < 64 * 1024


def test_a_read_that_times_out_returns_nothing_and_starts_no_task() -> None:
    async def main() -> tuple[bytes, list[int]]:
        with peer(answer=False) as port:
            link = TcpLink("127.0.0.1", port)
            await link.open()
            await link.write(REQUEST)
            tasks: list[int] = []
            # Runs once the read below is waiting: only this test's own task should exist.
            asyncio.get_running_loop().call_soon(lambda: tasks.append(len(asyncio.all_tasks())))
            data = await link.read(0.05)
            await link.close()
            return data, tasks

    data, tasks = asyncio.run(main())
    assert data == b""
    assert tasks == [1]
