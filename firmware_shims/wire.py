"""A simulated RS-485 wire: two pty pairs joined by a relay, optionally as slow as the real line.

The simulated devices' pymodbus serial server opens one pty's slave end; the gateway (or a test's
client) opens the other pty's slave end; the relay copies bytes between the two master ends. With
wire timing on, the relay delivers each frame only when its last byte would have arrived at the
configured baud rate, and keeps the 3.5-character silent interval between frames that Modbus RTU
requires (Modbus over Serial Line v1.02, 2.5.1.1), so a round trip takes as long as it would on a
real bus.

`WireSchedule` is the pure timing rule; `PtyWire` is the asyncio shell around it. Delivery times are
computed from absolute monotonic times, so waiting never accumulates drift, and nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from dataclasses import dataclass

from gateway.errors import ConfigError

PARITIES = ("N", "E", "O")
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
# Above 19200 baud the spec fixes t3.5 at 1.750 ms instead of 3.5 characters (ibid., 2.5.1.1).
FIXED_GAP_ABOVE_BAUD = 19200
FIXED_GAP_S = 0.00175
SERVER_SIDE, CLIENT_SIDE = "server", "client"


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Serial line settings of one RS-485 bus."""

    baud: int = 9600
    parity: str = "N"
    stopbits: int = 1

    def __post_init__(self) -> None:
        if self.baud not in BAUD_RATES:
            raise ConfigError(f"baud {self.baud} is not valid; use one of "
                              f"{', '.join(map(str, BAUD_RATES))}")
        if self.parity not in PARITIES:
            raise ConfigError(f"parity {self.parity!r} is not valid; use N, E or O")
        if self.stopbits not in (1, 2):
            raise ConfigError(f"stopbits {self.stopbits} is not valid; use 1 or 2")

    @property
    def bits_per_char(self) -> int:
        """1 start + 8 data + parity (if any) + stop bits."""
        return 1 + 8 + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_s(self) -> float:
        return self.bits_per_char / self.baud

    @property
    def gap_s(self) -> float:
        """The silent interval t3.5 that separates frames."""
        return FIXED_GAP_S if self.baud > FIXED_GAP_ABOVE_BAUD else 3.5 * self.char_s

    def frame_s(self, nbytes: int) -> float:
        return nbytes * self.char_s


class WireSchedule:
    """When each chunk of bytes written by one side arrives at the other, on a half-duplex line.

    A chunk from the side that is still transmitting continues its frame back to back; any other
    chunk starts a new frame no earlier than one silent interval after the line went quiet.
    """

    __slots__ = ("_busy_until", "_last_side", "line")

    def __init__(self, line: LineSettings) -> None:
        self.line = line
        self._busy_until = float("-inf")
        self._last_side: str | None = None

    def deliver_at(self, *, now: float, nbytes: int, side: str) -> float:
        """The time the last byte of this chunk has crossed the wire."""
        if side == self._last_side and now < self._busy_until:
            start = self._busy_until
        else:
            start = max(now, self._busy_until + self.line.gap_s)
        self._busy_until = start + self.line.frame_s(nbytes)
        self._last_side = side
        return self._busy_until


def _open_raw_pty() -> tuple[int, int, str]:
    """A pty pair, its slave in raw mode (no echo, no line editing): (master, slave, path)."""
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class PtyWire:
    """Two pty pairs and the relay between their masters (see the module docstring).

    We keep each slave end open ourselves: a pty master reads EIO while no one holds its slave,
    which would otherwise break the relay whenever a client closes and reopens its port.
    """

    def __init__(self, line: LineSettings, *, timed: bool) -> None:
        self.line = line
        self.timed = timed
        self._schedule = WireSchedule(line)
        self._fds: dict[str, tuple[int, int, str]] = {}
        self._queues: dict[str, asyncio.Queue[tuple[float, bytes]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bytes_relayed = 0
        self.bytes_dropped = 0

    @property
    def server_path(self) -> str:
        return self._fds[SERVER_SIDE][2]

    @property
    def client_path(self) -> str:
        return self._fds[CLIENT_SIDE][2]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for side in (SERVER_SIDE, CLIENT_SIDE):
            self._fds[side] = _open_raw_pty()
            self._queues[side] = asyncio.Queue()
        for side in (SERVER_SIDE, CLIENT_SIDE):
            self._loop.add_reader(self._fds[side][0], self._on_readable, side)
            other = CLIENT_SIDE if side == SERVER_SIDE else SERVER_SIDE
            self._tasks.append(asyncio.create_task(self._deliver(other), name=f"wire->{other}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for master, slave, _ in self._fds.values():
            if self._loop is not None:
                self._loop.remove_reader(master)
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fds.clear()

    def _on_readable(self, side: str) -> None:
        try:
            data = os.read(self._fds[side][0], 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the other end went away for a moment; nothing to relay
            return
        if not data:
            return
        other = CLIENT_SIDE if side == SERVER_SIDE else SERVER_SIDE
        assert self._loop is not None
        now = self._loop.time()
        at = self._schedule.deliver_at(now=now, nbytes=len(data), side=side) if self.timed else now
        self._queues[other].put_nowait((at, data))

    async def _deliver(self, side: str) -> None:
        """Write chunks into `side`'s master at their delivery times, in order."""
        assert self._loop is not None
        queue = self._queues[side]
        master = self._fds[side][0]
        while True:
            at, data = await queue.get()
            delay = at - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                written = os.write(master, data)
            except (BlockingIOError, OSError):
                written = 0
            self.bytes_relayed += written
            self.bytes_dropped += len(data) - written
