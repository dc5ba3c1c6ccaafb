"""sd_notify and the watchdog against a real AF_UNIX datagram socket (what systemd listens on)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ops import sdnotify
from gateway.ops.sdnotify import (
    FakeNotifier,
    PipelineProgress,
    SocketNotifier,
    StallLimits,
    Watchdog,
    watchdog_interval,
)


class Listener:
    """The service manager's end: a bound datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def notifier(self) -> SocketNotifier:
        return SocketNotifier.from_environment({"NOTIFY_SOCKET": self.env_value})

    def pending(self) -> list[list[str]]:
        """Every message received so far, each split into its assignments."""
        out: list[list[str]] = []
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(data.decode().split("\n"))

    def next(self, timeout: float = 10.0) -> list[str]:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield Listener(sock, str(path))
    sock.close()


# ------------------------------------------------------------------------------------- sd_notify


def test_sends_one_datagram_of_assignments_to_a_path_socket(listener: Listener) -> None:
    n = listener.notifier()
    assert n.enabled
    assert n.send(sdnotify.READY, sdnotify.status("devices 2/2 ok\nbacklog 0"))
    assert listener.next() == ["READY=1", "STATUS=devices 2/2 ok backlog 0"]
    assert n.send(sdnotify.WATCHDOG)
    assert n.send(sdnotify.STOPPING, sdnotify.mainpid(1234))
    assert listener.pending() == [["WATCHDOG=1"], ["STOPPING=1", "MAINPID=1234"]]
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"drgw-test-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = SocketNotifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert n.address == "\0" + name
        assert n.send(sdnotify.READY)
        sock.settimeout(10)
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_no_notify_socket_is_a_no_op() -> None:
    n = SocketNotifier.from_environment({})
    assert not n.enabled
    assert n.send(sdnotify.READY) is False


def test_unsupported_address_kind_disables_notification() -> None:
    n = SocketNotifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert n.send(sdnotify.READY) is False


def test_a_vanished_manager_socket_is_counted_not_raised(tmp_path: Path) -> None:
    n = SocketNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.send(sdnotify.READY) is False
    assert n.send(sdnotify.WATCHDOG) is False
    assert n.failures == 2


def test_reloading_carries_monotonic_usec() -> None:
    assert sdnotify.monotonic_usec(5_000_123_456) == "MONOTONIC_USEC=5000123"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}, 2.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4243"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "main"}, None),
])
def test_watchdog_interval_follows_sd_watchdog_enabled(env: dict[str, str],
                                                      expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


# ------------------------------------------------------------------------------------ progress


def test_stall_limits_from_devices() -> None:
    # A device polled at 1 s and one only every 300 s: a failing device backs off to 60 s at most.
    limits = StallLimits.for_devices([({1.0, 5.0}, 1.0), ({300.0}, 2.0)])
    assert limits.idle_s == 3 * (300.0 + 2.0)
    assert StallLimits.for_devices([({0.2}, 0.5)]).idle_s == 3 * (60.0 + 0.5)
    assert StallLimits.for_devices([]).idle_s is None


def test_progress_store_stall_counts_from_when_samples_started_waiting() -> None:
    p = PipelineProgress(limits=StallLimits(store_s=10.0, idle_s=200.0), now=0.0)
    assert p.check(now=50.0, waiting=0) is None
    # Samples appear after a quiet minute: not a stall yet, the clock starts now.
    assert p.check(now=60.0, waiting=3) is None
    assert p.check(now=69.0, waiting=40) is None
    problem = p.check(now=71.0, waiting=55)
    assert problem is not None and problem.startswith("store: nothing committed for 11 s")
    p.committed(72.0)
    assert p.check(now=73.0, waiting=2) is None


def test_progress_idle_device_layer() -> None:
    p = PipelineProgress(limits=StallLimits(store_s=10.0, idle_s=200.0), now=0.0)
    assert p.check(now=199.0, waiting=0) is None
    assert p.check(now=201.0, waiting=0) == "devices: no sample for 201 s"
    p.committed(202.0)
    assert p.check(now=203.0, waiting=0) is None
    unlimited = PipelineProgress(limits=StallLimits(store_s=10.0, idle_s=None), now=0.0)
    assert unlimited.check(now=1e6, waiting=0) is None


# ------------------------------------------------------------------------------------ watchdog


class Health:
    def __init__(self) -> None:
        self.problem: str | None = None
        self.line = "devices 1/1 ok"

    def __call__(self, now: float) -> str | None:
        return self.problem


def test_watchdog_pings_at_half_the_timeout_only_while_healthy(listener: Listener) -> None:
    health = Health()
    dog = Watchdog(notifier=listener.notifier(), timeout_s=4.0, health=health,
                   status_line=lambda: health.line)
    assert dog.ping_s == 2.0 and dog.check_s == 1.0
    dog.ready()
    assert listener.next() == ["READY=1", "STATUS=devices 1/1 ok"]
    assert dog.tick(0.0) == 1.0
    assert listener.pending() == [["WATCHDOG=1"]]
    dog.tick(1.0)
    assert listener.pending() == []  # not due before 2 s
    dog.tick(2.0)
    assert listener.pending() == [["WATCHDOG=1"]]

    health.problem = "store: nothing committed for 12 s, 40 sample(s) waiting"
    dog.tick(3.0)
    assert listener.pending() == [[
        "STATUS=watchdog withheld: store: nothing committed for 12 s, 40 sample(s) waiting"]]
    for t in (4.0, 5.0, 6.0, 7.0):
        dog.tick(t)
    assert listener.pending() == []  # no pings, and the status is said once
    assert dog.withheld == 5

    health.problem = None
    dog.tick(7.5)  # recovery pings at once, with the normal status line
    assert listener.pending() == [["WATCHDOG=1", "STATUS=devices 1/1 ok"]]
    assert dog.pings == 3


def test_watchdog_status_repeats_only_when_it_changes(listener: Listener) -> None:
    health = Health()
    dog = Watchdog(notifier=listener.notifier(), timeout_s=None, health=health,
                   status_line=lambda: health.line, clock=lambda: 95.0)
    dog.ready()
    listener.pending()
    dog.tick(100.0)
    dog.tick(105.0)
    assert listener.pending() == []  # unchanged and no watchdog: nothing to say
    health.line = "devices 0/1 ok"
    dog.tick(110.0)
    assert listener.pending() == []  # at most one status every 10 s
    dog.tick(115.0)
    assert listener.pending() == [["STATUS=devices 0/1 ok"]]
    dog.stopping("stopping: draining")
    assert listener.pending() == [["STOPPING=1", "STATUS=stopping: draining"]]


def test_watchdog_run_sends_ready_then_pings_from_the_event_loop(listener: Listener) -> None:
    async def scenario() -> list[list[str]]:
        dog = Watchdog(notifier=listener.notifier(), timeout_s=0.1, health=Health(),
                       status_line=lambda: "ok")
        task = asyncio.create_task(dog.run())
        got: list[list[str]] = []
        loop = asyncio.get_running_loop()
        while sum(m == ["WATCHDOG=1"] for m in got) < 3:
            got.append(await loop.run_in_executor(None, listener.next))
        task.cancel()
        return got

    got = asyncio.run(scenario())
    assert got[0] == ["READY=1", "STATUS=ok"]
    assert ["WATCHDOG=1"] in got[1:]


def test_watchdog_without_a_manager_stays_quiet() -> None:
    async def scenario() -> bool:
        fake = FakeNotifier(enabled=False)
        dog = Watchdog(notifier=fake, timeout_s=1.0, health=Health(), status_line=lambda: "ok")
        task = asyncio.create_task(dog.run())
        for _ in range(10):
            await asyncio.sleep(0)
        done = task.done()
        task.cancel()
        assert fake.messages == []
        return done

    assert asyncio.run(scenario()) is False  # waits forever instead of ending the agent's task set


def test_fake_notifier_records_messages() -> None:
    fake = FakeNotifier()
    dog = Watchdog(notifier=fake, timeout_s=2.0, health=Health(), status_line=lambda: "ok")
    dog.ready()
    dog.tick(0.0)
    assert fake.sent(sdnotify.READY) == 1 and fake.sent(sdnotify.WATCHDOG) == 1
