"""Power cuts under `drgw run`: no published seq is missing from the store, no seq is used twice.

The agent (the real `drgw run`, two simulated SDM630 meters over TCP, a real mosquitto) runs with
tests/data/powercut.c preloaded: after every successful fsync/fdatasync of a file in the agent's
folder, the file's content is kept as "<file>.synced". A cut is SIGKILL at a random point (after a
random number of published batches), then every SQLite file of the folder is replaced by its last
synced copy (a file never synced is emptied; the -shm index is deleted, as a reboot may leave it
stale): the state a power cut leaves when every write not yet synced is lost. The agent then starts
again on what is left. An independent subscriber (mosquitto_sub, no drgw code) records every
measurement batch the broker delivered, and the checks read the records with json and sqlite3 only.

What this proves: a record is durable before it reaches the broker (group commit did not move a
publish ahead of its fsync), and the chain restarts from what survived without re-issuing a seq.
What it does not: torn sectors, disks that lie about flushes, or directory entries (see powercut.c);
the cut points are drawn from the publish rhythm, so a cut inside SQLite's own write path is likely
but not forced on every run.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.homes import simulated
from tests.mosquitto import Broker
from tests.waits import wait_for

HOME = "".join(f"""
[[device]]
name = "m{i}"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.load]
kind = "constant"
power_w = {900 + 300 * i}
""" for i in range(2))
CUTS = 4
SQLITE_SUFFIXES = (".db", ".db-wal", ".db-journal", ".nonces", ".nonces-wal", ".nonces-journal")

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_sub") is None or shutil.which("cc") is None,
                                reason="needs mosquitto_sub and a C compiler: scripts/setup --test "
                                       "installs mosquitto-clients and gcc")


class Subscriber:
    """mosquitto_sub on the measurement topics: every (seq, signature) the broker delivered."""

    def __init__(self, broker: Broker) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
             "-t", "drgw/v1/+/meas", "-t", "powercut/probe"], stdout=subprocess.PIPE, text=True)
        self.seen: list[tuple[int, str]] = []
        self.probed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.broker = broker
        wait_for(self._probe, what="mosquitto_sub subscribed (its probe came back)")

    def _probe(self) -> bool:
        """Publish a probe; True once one came back (a probe sent before the subscription is lost)."""
        subprocess.run(["mosquitto_pub", "-h", self.broker.host, "-p", str(self.broker.port), "-q",
                        "1", "-t", "powercut/probe", "-m", "probe"], check=True)
        return self.probed.wait(0.5)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "probe":
                self.probed.set()
                continue
            batch = json.loads(line)  # {"v":1,"gw":...,"m":[{"seq":..,"sig":..}, ...]}
            self.seen.extend((int(r["seq"]), str(r["sig"])) for r in batch["m"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def folder(tmp_path: Path, mqtt_broker: Broker) -> Iterator[Path]:
    library = tmp_path / "powercut.so"
    source = Path(__file__).parents[1] / "data" / "powercut.c"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
                   check=True)
    data = tmp_path / "agent"
    data.mkdir()
    with simulated(HOME, tmp_path) as devices:
        subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "new", "--out",
                        str(data / "gw.key")], check=True, capture_output=True)
        (data / "drgw.toml").write_text(
            f'[gateway]\nkey = "gw.key"\n[mqtt]\nbroker = "{mqtt_broker.url}"\n'
            "[poll]\nfast = 0.5\nnormal = 0.5\nslow = 1.0\n" + "".join(
                f'[[bus]]\nname = "{name}"\ntcp = "{address}"\n[[device]]\nname = "{name}"\n'
                f'profile = "eastron_sdm630"\nbus = "{name}"\nunit = 1\n'
                for name, address in devices.items()))
        yield data


def start(data: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LD_PRELOAD": str(data.parent / "powercut.so"), "POWERCUT_DIR": str(data)}
    log = (data / "agent.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(data / "drgw.toml")],
                            stdout=log, stderr=log, env=env)


def power_cut(data: Path) -> int:
    """Put every SQLite file back to its last synced content (empty when it was never synced); returns
    the bytes that were lost. Directory entries stay as they are (powercut.c): a file the agent
    deleted stays deleted, its old synced copy is dropped."""
    lost = 0
    for synced in data.glob("*.synced"):
        if not synced.with_name(synced.name.removesuffix(".synced")).exists():
            synced.unlink()
    for path in sorted(data.iterdir()):
        if path.name.endswith("-shm"):
            path.unlink()
        elif path.name.endswith(SQLITE_SUFFIXES):
            synced = path.with_name(path.name + ".synced")
            live = path.read_bytes()
            kept = synced.read_bytes() if synced.exists() else b""
            lost += sum(a != b for a, b in zip(live, kept, strict=False)) + abs(len(live) - len(kept))
            path.write_bytes(kept)  # and the .synced copy stays: this content is on the disk
    return lost


def stored(db: Path) -> dict[int, str]:
    conn = sqlite3.connect(db)
    try:
        return {int(seq): bytes(sig).hex() for seq, sig in
                conn.execute("SELECT seq, signature FROM measurements")}
    finally:
        conn.close()


def delivered(sub: Subscriber, count: int) -> bool:
    return len(sub.seen) >= count


def test_power_cuts_lose_no_published_seq_and_reuse_none(folder: Path, mqtt_broker: Broker) -> None:
    rng = random.Random(18)
    sub = Subscriber(mqtt_broker)
    lost_bytes = []

    def log() -> str:
        return (folder / "agent.log").read_text(errors="replace")[-3000:]

    try:
        for _ in range(CUTS):
            agent = start(folder)
            target = len(sub.seen) + rng.randint(2, 12)  # records delivered before the cut
            wait_for(functools.partial(delivered, sub, target), what=f"{target} records delivered",
                     timeout=60, detail=log)
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=10)
            lost_bytes.append(power_cut(folder))
        agent = start(folder)  # once more on what the last cut left, then a clean stop
        after = max(seq for seq, _ in sub.seen)
        wait_for(lambda: max(seq for seq, _ in sub.seen) > after + 2,
                 what="new seqs after the last cut", timeout=60, detail=log)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log()
    finally:
        if agent.poll() is None:
            agent.kill()
        sub.stop()
    in_store = stored(folder / "drgw.db")
    published: dict[int, set[str]] = {}
    for seq, sig in sub.seen:
        published.setdefault(seq, set()).add(sig)
    reused = {seq: sigs for seq, sigs in published.items() if len(sigs) > 1}
    assert not reused, f"seqs published with two different records (reused): {reused}"
    missing = sorted(seq for seq in published if seq not in in_store)
    assert not missing, f"published but not in the store after the cuts: {missing[:20]}"
    changed = sorted(seq for seq, sigs in published.items() if in_store[seq] not in sigs)
    assert not changed, f"stored record differs from the one published: {changed[:20]}"
    assert sorted(in_store) == list(range(1, max(in_store) + 1))  # a chain without holes
    # The cuts were real: at least one of them threw away writes that had not been synced.
    assert any(lost_bytes), f"no cut lost an unsynced write: {lost_bytes}"
