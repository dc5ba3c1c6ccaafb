"""Telling systemd how the agent is doing: sd_notify(3) readiness/status/stopping and the watchdog.

No libsystemd: the protocol is one AF_UNIX datagram of newline-separated `KEY=VALUE` lines sent to
the socket named by $NOTIFY_SOCKET (sd_notify(3), "NOTES"); a name starting with '@' lives in the
abstract namespace, where the '@' stands for a leading NUL byte. Without $NOTIFY_SOCKET every send
is a no-op, so `drgw run` behaves the same outside systemd.

The watchdog (systemd.service(5) WatchdogSec=) restarts a service that stops sending WATCHDOG=1.
Pinging from a timer would only prove that the timer runs; `Watchdog` pings from the agent's asyncio
loop (never from a thread: a thread keeps running when the loop is wedged) and only while a health
check passes: measurements reach the store (`PipelineProgress`). A wedged loop, a store that cannot
commit or a device layer that stopped producing samples all end in missing pings, and systemd
restarts the agent after WatchdogSec.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

READY = "READY=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"
RELOADING = "RELOADING=1"


def status(text: str) -> str:
    """A STATUS= assignment; one line, as `systemctl status` shows it."""
    return "STATUS=" + " ".join(text.split())


def mainpid(pid: int) -> str:
    return f"MAINPID={pid}"


def monotonic_usec(now_ns: int | None = None) -> str:
    """MONOTONIC_USEC=, which systemd >= 253 wants beside RELOADING=1 (sd_notify(3))."""
    ns = time.monotonic_ns() if now_ns is None else now_ns
    return f"MONOTONIC_USEC={ns // 1000}"


class Notifier(Protocol):
    """Our narrow interface to the service manager; `SocketNotifier` and `FakeNotifier` implement it."""

    @property
    def enabled(self) -> bool: ...

    def send(self, *assignments: str) -> bool:
        """Send the assignments in one message; False when there is no manager or it failed."""
        ...


def socket_address(value: str) -> str | None:
    """The socket address for a $NOTIFY_SOCKET value; None when it is not one we can use."""
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace (unix(7))
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (systemd >= 254, for VMs): not a gateway's case


class SocketNotifier:
    """sd_notify over a real AF_UNIX datagram socket, non-blocking: a full queue drops a message
    (and says so) instead of stalling the agent."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.failures = 0
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> SocketNotifier:
        value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
        if not value:
            return cls(None)
        address = socket_address(value)
        if address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path or @name; not notifying systemd",
                        value)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        if self.address is None or not assignments:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("sd_notify to %r failed (%s); %d failure(s) so far",
                            self.address.replace("\0", "@"), exc, self.failures)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class FakeNotifier:
    """Records what would have been sent; for tests of code that notifies."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._enabled = enabled
        self.messages: list[tuple[str, ...]] = []

    @property
    def enabled(self) -> bool:
        return self._enabled

    def send(self, *assignments: str) -> bool:
        if self._enabled and assignments:
            self.messages.append(assignments)
        return self._enabled

    def sent(self, assignment: str) -> int:
        """How many messages carried this exact assignment."""
        return sum(assignment in m for m in self.messages)


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds, or None when the watchdog is off for this process.

    sd_watchdog_enabled(3): $WATCHDOG_USEC is the timeout in microseconds; when $WATCHDOG_PID is
    set the watchdog applies only to that process. Send WATCHDOG=1 at half this interval.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        if not owner.isdigit():
            log.warning("WATCHDOG_PID=%r is not a process id; watchdog off", owner)
            return None
        if int(owner) != (os.getpid() if pid is None else pid):
            return None  # meant for another process (we are a child of the service's main one)
    if not usec.isdigit() or int(usec) == 0:
        log.warning("WATCHDOG_USEC=%r is not a positive number of microseconds; watchdog off", usec)
        return None
    return int(usec) / 1e6


# ------------------------------------------------------------------------------------------ health


@dataclass(frozen=True, slots=True, kw_only=True)
class StallLimits:
    """How long the pipeline may go without committing before the watchdog stops pinging."""

    store_s: float = 10.0  # samples are waiting and nothing was committed for this long
    idle_s: float | None = None  # nothing at all was committed for this long (None: no check)

    @classmethod
    def for_devices(cls, devices: Iterable[tuple[Iterable[float], float]], *,
                    backoff_max_s: float = 60.0, store_s: float = 10.0) -> StallLimits:
        """From each device's poll intervals and timeout. A failing device still yields an error
        sample at least every backoff cap + timeout (gateway/device/device.py), so three of the
        longest such gaps without any commit means the device layer itself has stopped."""
        gaps = [max(min(intervals, default=backoff_max_s), backoff_max_s) + timeout
                for intervals, timeout in devices]
        return cls(store_s=store_s, idle_s=3 * max(gaps) if gaps else None)


class PipelineProgress:
    """Pure: when did the store last commit, and are samples waiting? Times are monotonic seconds."""

    def __init__(self, *, limits: StallLimits, now: float) -> None:
        self.limits = limits
        self.last_commit = now
        self._waiting_since: float | None = None

    def committed(self, now: float) -> None:
        self.last_commit = now
        self._waiting_since = None

    def check(self, *, now: float, waiting: int) -> str | None:
        """None when healthy, else what is wrong (for STATUS= and the log)."""
        if waiting > 0:
            if self._waiting_since is None:
                self._waiting_since = now
            stuck = now - max(self._waiting_since, self.last_commit)
            if stuck > self.limits.store_s:
                return f"store: nothing committed for {stuck:.0f} s, {waiting} sample(s) waiting"
        else:
            self._waiting_since = None
        idle = now - self.last_commit
        if self.limits.idle_s is not None and idle > self.limits.idle_s:
            return f"devices: no sample for {idle:.0f} s"
        return None


# ---------------------------------------------------------------------------------------- watchdog


class Watchdog:
    """READY=1 at start, WATCHDOG=1 while `health` says so, STATUS= when something changes.

    `health(now)` returns None when healthy or a one-line reason; `status_line()` summarises the
    agent (devices ok/total, backlog). `tick(now)` does one step and returns its next wake-up time;
    `run()` drives it from the asyncio loop.
    """

    STATUS_EVERY_S = 10.0

    def __init__(self, *, notifier: Notifier, timeout_s: float | None,
                 health: Callable[[float], str | None], status_line: Callable[[], str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.timeout_s = timeout_s
        self.ping_s = None if timeout_s is None else timeout_s / 2  # sd_watchdog_enabled(3)
        self._health = health
        self._status_line = status_line
        self._clock = clock
        self._last_ping = float("-inf")
        self._last_status = ""
        self._status_at = float("-inf")
        self.problem: str | None = None
        self.pings = 0
        self.withheld = 0

    @classmethod
    def from_environment(cls, *, health: Callable[[float], str | None],
                         status_line: Callable[[], str]) -> Watchdog:
        return cls(notifier=SocketNotifier.from_environment(), timeout_s=watchdog_interval(),
                   health=health, status_line=status_line)

    @property
    def check_s(self) -> float:
        """Health is checked more often than pings are due, so a recovery pings in time."""
        return self.STATUS_EVERY_S if self.ping_s is None else min(self.ping_s / 2, 5.0)

    def ready(self) -> None:
        self._last_status = self._status_line()
        self._status_at = self._clock()
        self.notifier.send(READY, status(self._last_status))

    def stopping(self, reason: str = "stopping") -> None:
        self.notifier.send(STOPPING, status(reason))

    def tick(self, now: float) -> float:
        problem = self._health(now)
        messages: list[str] = []
        if problem != self.problem:
            if problem is not None:
                log.error("watchdog: withholding pings: %s", problem)
            elif self.problem is not None:
                log.warning("watchdog: healthy again (%s)", self.problem)
            self.problem = problem
            self._status_at = float("-inf")  # say it now
        if self.ping_s is not None:
            if problem is None and now - self._last_ping >= 0.99 * self.ping_s:  # ticks may wake early
                messages.append(WATCHDOG)
                self._last_ping = now
                self.pings += 1
            elif problem is not None:
                self.withheld += 1
        if now - self._status_at >= self.STATUS_EVERY_S:
            line = (f"watchdog withheld: {problem}" if problem is not None
                    else self._status_line())
            if line != self._last_status or self._status_at == float("-inf"):
                messages.append(status(line))
                self._last_status = line
            self._status_at = now
        if messages:
            self.notifier.send(*messages)
        return now + self.check_s

    async def run(self) -> None:
        """READY=1, then ticks until cancelled. Without a service manager it only waits."""
        if not self.notifier.enabled:
            await asyncio.Event().wait()  # nothing to tell anyone; never returns
        await asyncio.sleep(0)  # let the tasks created before this one take their first step
        self.ready()
        while True:
            wake = self.tick(self._clock())
            await asyncio.sleep(max(0.0, wake - self._clock()))
