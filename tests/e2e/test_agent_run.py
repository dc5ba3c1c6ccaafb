"""`drgw run` end to end: simulated meters -> agent -> real mosquitto -> a subscriber.

- The broker is killed for several seconds mid-run and restarted: afterwards the subscriber holds every
  committed seq exactly once after de-duplication, first arrivals in order, all signatures valid.
- The agent is killed with SIGKILL mid-run and restarted: no seq is reused, nothing committed is lost.
- Signed commands reach the real agent: a write changes what the meter shows; a forged command is
  refused with a reason and the agent keeps running.

Each step waits for what it needs (records committed, records delivered), never for a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.measurement.record import measurement_domain, recover_signer
from gateway.measurement.store.database import Store
from gateway.measurement.wire import decode_batch
from tests.e2e.agent_site import meter_and_wallbox
from tests.homes import WALLBOX_TCP, sdm630_tcp
from tests.mosquitto import Broker, broker_fixture
from tests.waits import wait_for

persistent_broker = pytest.fixture(broker_fixture(persistence=True))

HOME = sdm630_tcp(1800) + WALLBOX_TCP


def drgw(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, **kw)  # type: ignore[call-overload]


@dataclass
class Subscriber:
    """A persistent-session QoS 1 subscriber to every gateway's meas topic."""

    url_port: int
    received: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("drgw/v1/+/meas", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.client.connect("127.0.0.1", self.url_port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append(bytes(msg.payload))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def records(self) -> list[object]:
        with self.lock:
            payloads = list(self.received)
        return [sm for p in payloads for sm in decode_batch(p)]


@dataclass
class Site:
    root: Path
    config: Path
    address: str
    sim: subprocess.Popen[str]
    devices: dict[str, str]
    agent: subprocess.Popen[str] | None = None

    def start_agent(self) -> None:
        log = (self.root / "agent.log").open("a")
        self.agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(self.config)],
                                      stdout=log, stderr=log, text=True)

    def stop_agent(self, sig: int = signal.SIGTERM) -> int:
        assert self.agent is not None
        self.agent.send_signal(sig)
        try:
            return self.agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stack = ""
            if shutil.which("py-spy"):  # where installed, show where it hangs
                dump = subprocess.run(["py-spy", "dump", "--pid", str(self.agent.pid)],
                                      capture_output=True, text=True)
                stack = dump.stdout + dump.stderr
            raise AssertionError("the agent did not stop within 30 s of the signal\n" + stack) from None


@pytest.fixture
def site(tmp_path: Path, persistent_broker: Broker) -> Iterator[Site]:
    (tmp_path / "home.toml").write_text(HOME)
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate",
                            str(tmp_path / "home.toml"), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert sim.stdout is not None
    devices = {d["name"]: d["address"] for d in json.loads(sim.stdout.readline())["devices"]}
    out = drgw("keys", "new", "--out", str(tmp_path / "gw.key"), "--json")
    assert out.returncode == 0, out.stderr
    address = json.loads(out.stdout)["address"]
    out = drgw("keys", "new", "--out", str(tmp_path / "operator.key"), "--json")
    operator = json.loads(out.stdout)["address"]
    config = tmp_path / "drgw.toml"
    config.write_text(f"""
[gateway]
key = "gw.key"
[mqtt]
broker = "{persistent_broker.url}"
batch_max = 20
health_interval = 2
[operators]
allow = ["{operator}"]
[poll]
fast = 0.2
normal = 1.0
slow = 2.0
{meter_and_wallbox(main=devices['main'], ev=devices['ev'])}""")
    s = Site(root=tmp_path, config=config, address=address, sim=sim, devices=devices)
    try:
        yield s
    finally:
        if s.agent is not None and s.agent.poll() is None:
            s.agent.kill()
            s.agent.wait()
        sim.terminate()
        sim.wait(timeout=10)


def stored(site: Site) -> list[object]:
    with Store(site.root / "drgw.db") as store:
        lo, hi = store.seq_bounds()
        return store.measurements_range(lo, hi)  # type: ignore[return-value]


def last_seq(site: Site) -> int:
    """The newest seq the running agent has committed (0 before its first commit); read-only."""
    path = site.root / "drgw.db"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.execute("PRAGMA busy_timeout=5000")
        try:
            row = db.execute("SELECT max(seq) FROM measurements").fetchone()
        except sqlite3.OperationalError:  # the agent has not created its tables yet
            return 0
    return int(row[0] or 0)


def delivered(sub: Subscriber) -> set[int]:
    return {r.measurement.seq for r in sub.records()}  # type: ignore[attr-defined]


def log_tail(site: Site) -> str:
    return (site.root / "agent.log").read_text()[-3000:]


def check_stream(site: Site, sub: Subscriber) -> tuple[int, int]:
    """Every stored seq reached the subscriber exactly once after de-duplication, in order."""
    records = stored(site)
    seqs = [r.measurement.seq for r in records]  # type: ignore[attr-defined]
    assert seqs == list(range(1, len(seqs) + 1)), "the store has a gap or a reused seq"
    by_seq = {r.measurement.seq: r for r in records}  # type: ignore[attr-defined]
    first: list[int] = []
    seen: set[int] = set()
    duplicates = 0
    domain = measurement_domain(1)
    for rec in sub.records():
        seq = rec.measurement.seq  # type: ignore[attr-defined]
        assert rec == by_seq[seq], f"seq {seq} arrived with different content"
        if seq in seen:
            duplicates += 1
            continue
        seen.add(seq)
        first.append(seq)
        assert recover_signer(rec, domain).lower() == site.address.lower()  # type: ignore[arg-type]
    assert seen == set(by_seq), f"missing seqs: {sorted(set(by_seq) - seen)[:10]}"
    assert first == sorted(first), "first arrivals out of order"
    return len(seqs), duplicates


def test_broker_outage_loses_nothing(site: Site, persistent_broker: Broker) -> None:
    sub = Subscriber(persistent_broker.port)
    sub.start()
    try:
        site.start_agent()
        wait_for(lambda: len(sub.records()) >= 20, what="20 records delivered",
                 detail=lambda: log_tail(site))
        persistent_broker.kill()
        at_kill = last_seq(site)
        # the agent keeps reading and committing while the broker is down
        wait_for(lambda: last_seq(site) >= at_kill + 20, what="20 records committed during the outage",
                 detail=lambda: log_tail(site))
        persistent_broker.start()
        at_restart = last_seq(site)
        wait_for(lambda: max(delivered(sub), default=0) > at_restart,
                 what="a record committed after the restart delivered", detail=lambda: log_tail(site))
        assert site.stop_agent() == 0
        wait_for(lambda: delivered(sub) >= {r.measurement.seq for r in stored(site)},  # type: ignore[attr-defined]
                 what="every stored record delivered")
        total, _dups = check_stream(site, sub)
        # the outage was mid-run: records were committed before, during and after it
        assert 0 < at_kill < at_restart < total
    finally:
        sub.stop()


def run_for_records(site: Site, n: int) -> None:
    """Start the agent and return once it has committed `n` more records."""
    before = last_seq(site)
    site.start_agent()
    wait_for(lambda: last_seq(site) >= before + n, what=f"{n} records committed",
             detail=lambda: log_tail(site))


def test_sigkill_of_the_agent_reuses_no_seq_and_loses_nothing(site: Site,
                                                               persistent_broker: Broker) -> None:
    sub = Subscriber(persistent_broker.port)
    sub.start()
    try:
        for _ in range(2):
            run_for_records(site, 10)
            assert site.stop_agent(signal.SIGKILL) == -signal.SIGKILL
        run_for_records(site, 10)
        assert site.stop_agent() == 0
        wait_for(lambda: delivered(sub) >= {r.measurement.seq for r in stored(site)},  # type: ignore[attr-defined]
                 what="every stored record delivered")
        total, _ = check_stream(site, sub)
        assert total >= 30
        out = drgw("verify", "--db", str(site.root / "drgw.db"))
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        sub.stop()


def test_signed_commands_reach_the_agent(site: Site, persistent_broker: Broker) -> None:
    site.start_agent()
    try:
        common = ["--broker", persistent_broker.url, "--timeout", "10", "--json"]
        key = ["--operator-key", str(site.root / "operator.key")]
        # Commands sent before the agent has subscribed are dropped by the broker (no retain on
        # cmd): wait until it answers a ping.
        for _ in range(15):
            out = drgw("fleet", "cmd", site.address, "ping", *key, "--broker",
                       persistent_broker.url, "--timeout", "2", "--json")
            if out.returncode == 0:
                break
        assert out.returncode == 0, out.stdout + out.stderr
        before = json.loads(drgw("read", "--profile", "eastron_sdm630", "--tcp",
                                 site.devices["main"], "--unit", "1", "--json").stdout)
        out = drgw("fleet", "cmd", site.address, "write_point", "--arg", "device=ev",
                   "--arg", "name=ev_current_limit_a", "--arg", "value=6", *key, *common)
        assert out.returncode == 0, out.stdout + out.stderr

        def main_power() -> float:
            return float(json.loads(drgw("read", "--profile", "eastron_sdm630", "--tcp",
                                         site.devices["main"], "--unit", "1", "--json").stdout)
                         ["power_active_total_w"]["value"])

        # each read is a subprocess of its own: that is the pace of this wait
        wait_for(lambda: main_power() < before["power_active_total_w"]["value"], poll_s=0,
                 what="the main meter to show the EV's lower current")
        # Out of the profile's range: refused before it reaches the wire.
        out = drgw("fleet", "cmd", site.address, "write_point", "--arg", "device=ev",
                   "--arg", "name=ev_current_limit_a", "--arg", "value=99", *key, *common)
        assert out.returncode != 0 and "bad_args" in out.stdout
        # A key that is not on the allow-list.
        drgw("keys", "new", "--out", str(site.root / "stranger.key"))
        out = drgw("fleet", "cmd", site.address, "ping", "--operator-key",
                   str(site.root / "stranger.key"), *common)
        assert out.returncode != 0 and "unknown_operator" in out.stdout
        # A config that does not validate, dry run: refused with the reason; the agent lives on.
        out = drgw("fleet", "cmd", site.address, "config_set", "--arg", "text=[gateway]\nkye = 1",
                   "--arg", "dry_run=true", *key, *common)
        assert out.returncode != 0 and "config rejected" in out.stdout
        out = drgw("fleet", "cmd", site.address, "status", *key, *common)
        assert out.returncode == 0, out.stdout + out.stderr
        assert site.agent is not None and site.agent.poll() is None
    finally:
        assert site.stop_agent() == 0
