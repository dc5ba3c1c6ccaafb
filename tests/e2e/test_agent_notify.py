"""`drgw run` under a service manager: READY=1, WATCHDOG=1 pings, no pings while the store is stuck.

The test plays systemd's part with a real AF_UNIX datagram socket named by $NOTIFY_SOCKET and a
1 s $WATCHDOG_USEC. The pipeline is made stuck for real: another connection holds the store's
SQLite write lock (BEGIN EXCLUSIVE), so every commit of the agent fails with "database is locked"
while the simulated meter keeps producing samples. Pings must stop (with a STATUS= saying why)
and come back once the lock is released; SIGTERM ends with STOPPING=1. A remote restart command
makes `drgw run --on-restart exit` (the unit's ExecStart) exit with 75 for systemd to restart it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.homes import sdm630_tcp
from tests.mosquitto import Broker

pytestmark = pytest.mark.slow

HOME = sdm630_tcp(1500)


class Manager:
    """The service manager's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.log: list[list[str]] = []

    def next(self, deadline: float) -> list[str]:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = self.sock.recv(4096).decode().split("\n")
        except TimeoutError:
            raise AssertionError(f"no notification in time; so far: {self.log[-5:]}") from None
        self.log.append(message)
        return message

    def until(self, predicate: Callable[[list[str]], bool], timeout: float = 60.0) -> list[list[str]]:
        """Messages up to and including the first one `predicate` accepts."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            message = self.next(deadline)
            seen.append(message)
            if predicate(message):
                return seen


def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def agent_dir(tmp_path: Path, mqtt_broker: Broker) -> Iterator[Path]:
    (tmp_path / "home.toml").write_text(HOME)
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate",
                            str(tmp_path / "home.toml"), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert sim.stdout is not None
        address = json.loads(sim.stdout.readline())["devices"][0]["address"]
        addresses = {}
        for name in ("gw", "operator"):
            keys = drgw("keys", "new", "--out", str(tmp_path / f"{name}.key"), "--json")
            assert keys.returncode == 0, keys.stderr
            addresses[name] = json.loads(keys.stdout)["address"]
        (tmp_path / "gateway.address").write_text(addresses["gw"])
        (tmp_path / "drgw.toml").write_text(f"""
[gateway]
key = "gw.key"
[mqtt]
broker = "{mqtt_broker.url}"
[operators]
allow = ["{addresses['operator']}"]
[poll]
fast = 0.2
normal = 1.0
slow = 2.0
[[bus]]
name = "main"
tcp = "{address}"
[[device]]
name = "main"
profile = "eastron_sdm630"
bus = "main"
unit = 1
""")
        yield tmp_path
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def test_ready_then_pings_which_stop_while_the_store_is_locked(agent_dir: Path) -> None:
    manager = Manager(agent_dir / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(manager.path), WATCHDOG_USEC="1000000")
    log = (agent_dir / "agent.log").open("w")
    agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(agent_dir / "drgw.toml")],
                             stdout=log, stderr=log, env=env)
    lock: sqlite3.Connection | None = None
    try:
        first = manager.next(time.monotonic() + 60)
        assert first[0] == "READY=1", first
        assert any(a.startswith("STATUS=devices ") for a in first), first
        manager.until(lambda m: "WATCHDOG=1" in m)
        manager.until(lambda m: "WATCHDOG=1" in m)

        lock = sqlite3.connect(agent_dir / "drgw.db", isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")  # the agent's commits now fail: "database is locked"
        withheld = manager.until(lambda m: any(
            a.startswith("STATUS=watchdog withheld: store: nothing committed") for a in m))
        assert "WATCHDOG=1" not in withheld[-1]
        time.sleep(3.0)  # three ping intervals' worth of being stuck
        lock.execute("ROLLBACK")
        lock.close()
        lock = None

        # Nothing pings between "withheld" and the recovery, which pings with the normal status.
        recovered = manager.until(lambda m: "WATCHDOG=1" in m)
        assert all("WATCHDOG=1" not in m for m in recovered[:-1]), recovered
        assert any(a.startswith("STATUS=devices 1/1 ok") for a in recovered[-1]), recovered
        manager.until(lambda m: "WATCHDOG=1" in m)  # and it keeps pinging

        agent.send_signal(signal.SIGTERM)
        manager.until(lambda m: "STOPPING=1" in m)
        assert agent.wait(timeout=60) == 0
    finally:
        if lock is not None:
            lock.close()
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()
        manager.sock.close()


def test_a_remote_restart_exits_75_for_systemd_to_start_it_again(agent_dir: Path,
                                                                  mqtt_broker: Broker) -> None:
    """ExecStart passes --on-restart exit: the agent stops cleanly and exits 75
    (RestartForceExitStatus=75) instead of re-executing itself behind systemd's back."""
    manager = Manager(agent_dir / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(manager.path))
    log = (agent_dir / "agent.log").open("w")
    agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--on-restart", "exit",
                              str(agent_dir / "drgw.toml")], stdout=log, stderr=log, env=env)
    try:
        assert manager.next(time.monotonic() + 60)[0] == "READY=1"
        gw = (agent_dir / "gateway.address").read_text()
        common = ["--operator-key", str(agent_dir / "operator.key"), "--broker", mqtt_broker.url,
                  "--json"]
        for _ in range(15):  # commands sent before the agent subscribed are lost: ping first
            out = drgw("fleet", "cmd", gw, "ping", *common, "--timeout", "2")
            if out.returncode == 0:
                break
        assert out.returncode == 0, out.stdout + out.stderr
        out = drgw("fleet", "cmd", gw, "restart", *common, "--timeout", "10")
        assert out.returncode == 0, out.stdout + out.stderr
        manager.until(lambda m: "STOPPING=1" in m)
        assert agent.wait(timeout=60) == 75
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()
        manager.sock.close()
