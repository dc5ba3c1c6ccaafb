"""A serial port that comes back: a lost port is closed, reopened by its path with back-off, counted.

A USB RS-485 adapter that is unplugged and plugged in again (or a `/dev/serial/by-id/...` link that
now names another tty) leaves the open file descriptor dead: every read and write on it fails (EIO,
ENXIO, ENODEV, EBADF) and it never recovers. `ReopeningLink` wraps the port's Link for a bus owner:
- the first failure of a read or a write (a LinkError; silence is a timeout, not a failure) closes
  the port and marks it lost, with one WARNING for the whole outage;
- while it is lost, requests fail at once without touching the port (the devices' cycles still
  yield error samples, so the agent's watchdog sees the pipeline alive);
- the owner calls `reopen()` at `retry_at`: the port is opened again by its configured path, so a
  symlink is resolved again; a failed attempt waits longer (jittered exponential back-off, bounded),
  a good one is counted in `reconnects`, logged once, and polling resumes at once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.device.transport import Link, LinkError, SerialLink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delays between reopen attempts: `initial_s` doubling up to `max_s`, each drawn from
    [1 - jitter, 1] of that, so that gateways that lost a shared thing do not retry in step."""

    initial_s: float = 0.5  # udev re-creates a re-plugged adapter's node within about a second
    max_s: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, draw: float) -> float:
        """The wait after failed attempt number `attempt` (0 = the loss itself); `draw` in [0, 1)."""
        # capped exponent: a month-long outage counts ~10^5 attempts, and 2.0 ** 1024 overflows
        nominal = min(self.initial_s * 2.0 ** min(attempt, 60), self.max_s)
        return nominal * (1.0 - self.jitter * draw)


DEFAULT_BACKOFF = Backoff()


class PortLost(LinkError):
    """The port is lost: the request did not reach the wire."""


@dataclass(frozen=True, slots=True)
class PortHealth:
    """A bus port's state for health and diagnostics."""

    up: bool
    reconnects: int  # times the port was opened again after a loss
    outages: int  # times it was lost
    attempts: int  # reopen attempts that failed in this outage (0 once the port works again)
    down_s: float  # how long the current outage has lasted (0 while up)
    reason: str  # what lost it ("" while up)


class ReopeningLink:
    """A Link that treats an I/O failure as a lost port (see the module docstring).

    An outage ends when a read completes on the reopened port (an answer or a timeout: the port
    carried a request and was still there). A port that opens but fails again before that (a
    half-enumerated adapter) is the same outage, backing off further, not logged again.
    """

    def __init__(self, link: Link, *, backoff: Backoff = DEFAULT_BACKOFF,
                 clock: Callable[[], float] = time.monotonic,
                 draw: Callable[[], float] = random.random) -> None:
        self.link = link
        self.description = link.description
        self.backoff = backoff
        self._clock, self._draw = clock, draw
        self.retry_at = math.inf  # when the owner should call reopen(); inf while the port is up
        self.reconnects = 0
        self.outages = 0
        self._lost_at: float | None = None  # requests are refused while set
        self._outage_at: float | None = None  # the outage began; cleared once the port works
        self._reason = ""
        self._attempts = 0  # failed reopen attempts (and re-losses) in this outage
        self._announced = False  # "port back" logged for this outage

    @property
    def is_open(self) -> bool:
        return self.link.is_open

    @property
    def lost(self) -> bool:
        return self._lost_at is not None

    def health(self) -> PortHealth:
        lost = self._lost_at is not None and self._outage_at is not None
        down = self._clock() - self._outage_at if lost and self._outage_at is not None else 0.0
        return PortHealth(up=not lost, reconnects=self.reconnects, outages=self.outages,
                          attempts=self._attempts, down_s=round(down, 1),
                          reason=self._reason if lost else "")

    async def open(self) -> None:
        self._refuse_while_lost()
        try:
            await self.link.open()
        except LinkError as exc:
            raise await self._lose(exc) from exc

    async def close(self) -> None:
        await self.link.close()

    async def write(self, data: bytes) -> None:
        self._refuse_while_lost()
        try:
            await self.link.write(data)
        except LinkError as exc:
            raise await self._lose(exc) from exc

    async def read(self, timeout: float) -> bytes:
        self._refuse_while_lost()
        try:
            data = await self.link.read(timeout)
        except LinkError as exc:
            raise await self._lose(exc) from exc
        if self._outage_at is not None:  # a request went out and the port is still there
            self._outage_at, self._reason, self._attempts, self._announced = None, "", 0, False
        return data

    def discard_input(self) -> None:
        self.link.discard_input()

    @property
    def last_heard(self) -> float:
        return self.link.last_heard

    def _refuse_while_lost(self) -> None:
        if self._lost_at is not None:
            raise PortLost(self._lost_message())

    def _lost_message(self) -> str:
        return f"{self.description}: port lost ({self._reason}); reopening it with back-off"

    async def _lose(self, exc: LinkError) -> PortLost:
        await self.link.close()
        now = self._clock()
        self._lost_at = now
        if self._outage_at is None:
            self._outage_at, self._reason, self._attempts = now, str(exc), 0
            self.outages += 1
            # state changes pass the log's repeat filter (gateway/ops/logs.py): each outage is news
            log.warning("%s: port lost (%s): closed; reopening it by its path, back-off up to %g s",
                        self.description, exc, self.backoff.max_s, extra={"state_change": True})
        else:  # failed again before it carried a request: the same outage
            self._attempts += 1
            log.debug("%s: lost again (%s)", self.description, exc)
        self.retry_at = now + self.backoff.delay(self._attempts, self._draw())
        return PortLost(self._lost_message())

    async def reopen(self) -> bool:
        """One attempt to open the lost port again; True when it is back (or was never lost)."""
        if self._lost_at is None:
            return True
        try:
            await self.link.open()
        except LinkError as exc:
            self._attempts += 1
            self.retry_at = self._clock() + self.backoff.delay(self._attempts, self._draw())
            log.debug("%s: still lost (%s); next attempt in %.1f s", self.description, exc,
                      self.retry_at - self._clock())
            return False
        self.reconnects += 1
        self._lost_at, self.retry_at = None, math.inf
        if not self._announced:
            self._announced = True
            down = self._clock() - (self._outage_at or self._clock())
            log.warning("%s: port back after %.1f s (%d failed reopen attempt(s))%s",
                        self.description, down, self._attempts, _target(self.link),
                        extra={"state_change": True})
        return True


def _target(link: Link) -> str:
    """ ", now /dev/ttyUSB1" when the configured path is a symlink (say /dev/serial/by-id/...)."""
    if not isinstance(link, SerialLink):
        return ""
    real = os.path.realpath(link.port)
    return f", now {real}" if real != link.port else ""
