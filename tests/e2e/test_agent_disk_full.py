"""Issue 12, fault 2 end to end: `drgw run` with its store on a real, small tmpfs that fills up.

Before the fix, `database or disk is full` raised out of the publisher's ack (or the housekeeping's
Merkle close) ended the agent with exit status 1, and every restart on the full disk crashed again.
Here the disk fills while the agent measures and publishes to a real mosquitto: it must stay up,
say `disk_full` in its health and retained status, and when space returns go on by itself; after a
clean stop the store holds seqs 1..N with no gap and no seq twice, and the subscriber has every one.

The tmpfs lives in a private mount namespace (`unshare -Urm`: no root needed where user namespaces
are allowed; skipped where they are not); the test fills and frees it through /proc/<agent>/root.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.measurement.record import struct_hash
from gateway.measurement.store.database import Store
from gateway.measurement.wire import decode_batch
from tests.homes import sdm630_tcp, simulated
from tests.mosquitto import Broker, broker_fixture

broker = pytest.fixture(broker_fixture())

HOME = sdm630_tcp(1800)
# Mounts the tmpfs, runs the agent (not exec'd: the shell copies the store out of the private
# namespace once the agent has stopped, and exits with the agent's status).
RUNNER = ('mount -t tmpfs -o size=16m tmpfs "$1" || exit 97; "$2" -m gateway.cli run "$3"; rc=$?; '
          'cp "$1"/drgw.db "$4"/ 2>/dev/null; exit $rc')


def user_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not user_namespaces(),
                                reason="needs `unshare -Urm` (user and mount namespaces) for a tmpfs")


@dataclass
class Tap:
    """Every meas batch, health message and retained status the broker carries."""

    port: int
    records: list[Any] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    status: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tap-disk-full",
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("drgw/v1/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        with self.lock:
            if msg.topic.endswith("/meas"):
                self.records.extend(decode_batch(payload))
            elif msg.topic.endswith("/health"):
                self.health.append(json.loads(payload))
            elif msg.topic.endswith("/status"):
                self.status.append(json.loads(payload))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def last_health(self) -> dict[str, Any]:
        with self.lock:
            return self.health[-1] if self.health else {}

    def max_seq(self) -> int:
        with self.lock:
            return max((r.measurement.seq for r in self.records), default=0)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 90.0,
             process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait for `predicate`; fail at once when `process` has ended meanwhile."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the agent ended (exit status {process.returncode}) while "
                                 f"waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[str]:
    with simulated(HOME, tmp_path) as devices:
        yield devices["main"]


def agent_of(runner: subprocess.Popen[bytes]) -> int:
    """The agent: the child of the runner's shell whose argv is `python -m gateway.cli run ...`
    (not `mount`, whose pid shows the shell's own command line for a moment before its exec)."""
    children = Path(f"/proc/{runner.pid}/task/{runner.pid}/children")

    def agents() -> list[int]:
        found = []
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):
                if b"\0-m\0gateway.cli\0run\0" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
        return found

    wait_for(lambda: bool(agents()), "the agent process", process=runner)
    return agents()[0]


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its filesystem has no byte left."""
    filler = folder / "filler"
    block = b"\0" * (1 << 16)
    with filler.open("wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(block)
        with contextlib.suppress(OSError):
            while True:  # the last partial block
                fh.write(b"\0" * 512)
    try:
        with (folder / "probe").open("wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_neither_crashes_nor_loses_and_the_agent_resumes(
        tmp_path: Path, broker: Broker, meter: str) -> None:
    assert drgw("keys", "new", "--out", str(tmp_path / "gw.key")).returncode == 0
    mnt, out = tmp_path / "tmpfs", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    config = tmp_path / "drgw.toml"
    config.write_text(f"""
[gateway]
key = "gw.key"
[mqtt]
broker = "{broker.url}"
batch_max = 20
health_interval = 1
[poll]
fast = 0.1
normal = 0.2
slow = 0.5
[store]
path = "{mnt / 'drgw.db'}"
merkle_interval_s = 2
[[bus]]
name = "main"
tcp = "{meter}"
[[device]]
name = "main"
profile = "eastron_sdm630"
bus = "main"
unit = 1
""")
    tap = Tap(broker.port)
    tap.start()
    log = (tmp_path / "agent.log").open("wb")
    runner = subprocess.Popen(["unshare", "-Urm", "sh", "-c", RUNNER, "sh", str(mnt),
                               sys.executable, str(config), str(out)], stdout=log, stderr=log)
    try:
        agent = agent_of(runner)
        inside = Path(f"/proc/{agent}/root") / str(mnt).lstrip("/")
        wait_for(lambda: tap.max_seq() >= 50, "measurements flowing", process=runner)
        filler = fill(inside)
        wait_for(lambda: tap.last_health().get("disk_full") is True, "health saying disk_full",
                 process=runner)
        wait_for(lambda: tap.last_health().get("counters", {}).get("store_errors", 0) >= 3,
                 "the store refusing several commits", process=runner)
        assert runner.poll() is None, "the agent died on the full disk"
        with tap.lock:
            assert any(s.get("disk_full") is True for s in tap.status), "status without disk_full"
        before = tap.max_seq()
        filler.unlink()  # space again
        wait_for(lambda: tap.last_health().get("disk_full") is False and tap.max_seq() > before + 20,
                 "the agent measuring and publishing again by itself", process=runner)
        assert runner.poll() is None
        os.kill(agent, signal.SIGTERM)
        assert runner.wait(timeout=60) == 0, (tmp_path / "agent.log").read_text()[-3000:]
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        tap.stop()
        log.close()
    with Store(out / "drgw.db") as store:
        low, high = store.seq_bounds()
        stored = store.measurements_range(low, high)
    assert [r.measurement.seq for r in stored] == list(range(1, high + 1)), "a gap or a reused seq"
    assert all(b.measurement.prev_hash == struct_hash(a.measurement)
               for a, b in itertools.pairwise(stored))
    by_seq = {r.measurement.seq: r for r in stored}
    with tap.lock:
        delivered = list(tap.records)
    for record in delivered:
        assert record == by_seq[record.measurement.seq], "a seq delivered with other content"
    assert {r.measurement.seq for r in delivered} == set(by_seq), "committed but never delivered"


# Run inside the namespace, on the full tmpfs: a store closed cleanly (its -shm is gone) opens again,
# refuses commits while the disk is full, and takes them once a file is removed.
REOPEN = '''
import contextlib, json, os, sys
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain
from gateway.errors import DrgwError
from gateway.measurement.store import Store
from gateway.network.nonces import NonceCache
folder = sys.argv[1]
key = GatewayKey.from_secret(bytes(range(1, 33)))  # TEST-ONLY key

def records(store, n):
    seq, leaf = store.last_chain_state()
    chain = MeasurementChain(gateway=key.address, last_seq=seq, last_hash=leaf)
    return [chain.next_signed(key, measurement_domain(), device="m", time_ms=seq + i,
                              clock_synced=True, readings=[ScaledReading("p", i, "W", 0)])
            for i in range(n)]

path = os.path.join(folder, "drgw.db")
with Store(path) as store:
    store.commit(records(store, 200), "t")
nonces = NonceCache(path + ".nonces")
nonces.claim("0xop", "0x1", exp_ms=10**13, now_ms=10**13 - 60_000)
nonces.close()
with open(os.path.join(folder, "filler"), "wb", buffering=0) as fh:
    for size in (1 << 16, 512):
        with contextlib.suppress(OSError):
            while True:
                fh.write(bytes(size))
out = {"shm_before": os.path.exists(path + "-shm")}
nonces = NonceCache(path + ".nonces")  # the agent opens its replay cache too: it must open
out["nonces_opened"] = True
nonces.close()
store = Store(path)
out["opened_at"] = store.last_chain_state()[0]
try:
    store.commit(records(store, 200), "t")
except DrgwError as exc:
    out["refused"] = getattr(exc, "reason", str(exc))
os.remove(os.path.join(folder, "filler"))
store.commit(records(store, 200), "t")
out["after"] = store.last_chain_state()[0]
out["seqs"] = [r.measurement.seq for r in store.measurements_range(1, 10**6)]
store.close()
print(json.dumps(out))
'''


def test_the_store_opens_on_a_full_disk_after_a_clean_stop(tmp_path: Path) -> None:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    run = subprocess.run(["unshare", "-Urm", "sh", "-c",
                          'mount -t tmpfs -o size=2m tmpfs "$1" && exec "$2" -c "$3" "$1"', "sh",
                          str(mnt), sys.executable, REOPEN], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["shm_before"] is False  # closed cleanly: SQLite must make a new WAL index
    assert out["nonces_opened"] is True  # and so must the replay cache beside it
    assert out["opened_at"] == 200 and out["refused"] == "disk_full"
    assert out["after"] == 400 and out["seqs"] == list(range(1, 401))
