"""A simulated RS-485 wire: two pty pairs joined by a relay, optionally as slow as the real line.

The simulated devices' pymodbus serial server opens one pty's slave end; the gateway (or a test's
client) opens the other pty's slave end; the relay copies bytes between the two master ends. With
wire timing on, the relay delivers each frame only when its last byte would have arrived at the
configured baud rate, and keeps the 3.5-character silent interval between frames that Modbus RTU
requires (Modbus over Serial Line v1.02, 2.5.1.1), so a round trip takes as long as it would on a
real bus.

`WireSchedule` is the pure timing rule; `PtyWire` is the asyncio shell around it. Delivery times are
computed from absolute monotonic times, so waiting never accumulates drift, and nothing polls.

The schedule also keeps a log of the last frames (`Frame`, `gaps`): when each writer began and when
the other side was handed the previous frame, by the relay's own clock. It is the independent
witness of the silent interval: the tests and bench/bus_efficiency.py read it, not the gateway's
idea of its own timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import termios
import time
import tty
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import ConfigError

PARITIES = ("N", "E", "O")
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
# Above 19200 baud the spec fixes t3.5 at 1.750 ms instead of 3.5 characters (ibid., 2.5.1.1).
FIXED_GAP_ABOVE_BAUD = 19200
FIXED_GAP_S = 0.00175
SERVER_SIDE, CLIENT_SIDE = "server", "client"
FRAME_LOG = 10_000  # frames kept for timing checks (a few minutes of a saturated 9600-baud bus)
# asyncio's timers are whole milliseconds under epoll (selectors.EpollSelector rounds the timeout up),
# so a delivery waits on the loop until this long before its time and sleeps the rest in time.sleep.
FINE_WAIT_S = 0.001


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


@dataclass(slots=True)
class Frame:
    """One frame on the simulated wire; times are the relay's monotonic clock."""

    side: str  # who wrote it
    written_at: float  # the relay read its first bytes: the writer had begun sending by then
    start: float  # its first bit on the wire
    end: float  # its last bit on the wire
    nbytes: int
    delivered_at: float = math.nan  # the relay began handing its last bytes to the other side


@dataclass(frozen=True, slots=True)
class Gap:
    """The quiet line before a frame (seconds)."""

    side: str  # who wrote the frame after the gap
    silence: float  # what its writer left: from when it last heard the line busy to its first byte
    idle: float  # how long the wire was idle (start minus the previous frame's end)


def gaps(frames: Sequence[Frame]) -> list[Gap]:
    """The gap before each frame but the first. A writer last heard the line busy when the relay
    handed it the other side's frame (it cannot have heard that frame's end any earlier), or when
    its own previous frame's last bit left. A frame written before the previous one was handed
    over has a negative silence: it talked over a frame it had not heard."""
    out = []
    for before, frame in itertools.pairwise(frames):
        heard = before.end if before.side == frame.side else before.delivered_at
        silence = frame.written_at - heard if not math.isnan(heard) else -math.inf
        out.append(Gap(side=frame.side, silence=silence, idle=frame.start - before.end))
    return out


class WireSchedule:
    """When each chunk of bytes written by one side arrives at the other, on a half-duplex line.

    A chunk from the side that is still transmitting continues its frame back to back; any other
    chunk starts a new frame no earlier than one silent interval after the line went quiet.
    `frames` logs the last FRAME_LOG frames (see `gaps`).
    """

    __slots__ = ("_busy_until", "_last_side", "frames", "line")

    def __init__(self, line: LineSettings) -> None:
        self.line = line
        self._busy_until = float("-inf")
        self._last_side: str | None = None
        self.frames: deque[Frame] = deque(maxlen=FRAME_LOG)

    def deliver_at(self, *, now: float, nbytes: int, side: str) -> float:
        """The time the last byte of this chunk has crossed the wire."""
        if side == self._last_side and now < self._busy_until:
            start = self._busy_until
            frame = self.frames[-1]
            frame.nbytes += nbytes
        else:
            start = max(now, self._busy_until + self.line.gap_s)
            frame = Frame(side=side, written_at=now, start=start, end=start, nbytes=nbytes)
            self.frames.append(frame)
        self._busy_until = frame.end = start + self.line.frame_s(nbytes)
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
        self._queues: dict[str, asyncio.Queue[tuple[float, bytes, Frame | None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bytes_relayed = 0
        self.bytes_dropped = 0

    @property
    def frames(self) -> list[Frame]:
        """The last frames on the wire (wire timing only; empty without it)."""
        return list(self._schedule.frames)

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
        self._queues[other].put_nowait((at, data, self._schedule.frames[-1] if self.timed else None))

    async def _deliver(self, side: str) -> None:
        """Write chunks into `side`'s master at their delivery times, in order."""
        assert self._loop is not None
        queue = self._queues[side]
        master = self._fds[side][0]
        while True:
            at, data, frame = await queue.get()
            await _sleep_until(self._loop, at)
            if frame is not None:
                frame.delivered_at = self._loop.time()
            try:
                written = os.write(master, data)
            except (BlockingIOError, OSError):
                written = 0
            self.bytes_relayed += written
            self.bytes_dropped += len(data) - written


async def _sleep_until(loop: asyncio.AbstractEventLoop, at: float) -> None:
    """Wait until loop time `at`, to within about 0.1 ms: on the loop while more than FINE_WAIT_S
    remains (its timer may be up to a millisecond late), then a short blocking sleep for the rest."""
    coarse = at - loop.time() - FINE_WAIT_S
    if coarse > 0:
        await asyncio.sleep(coarse)
    fine = at - loop.time()
    if fine > 0:
        time.sleep(fine)
