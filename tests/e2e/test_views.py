"""`drgw run` with [mqtt.plain] and [mqtt.sparkplug]: the views equal the committed measurements.

A simulated SDM630 (constant 1800 W at 231.5 V, no noise) -> the agent -> a real mosquitto, read by
clients that share no code with the agent: `mosquitto_sub` for the plain stream and a paho host that
decodes Sparkplug B with pysparkplug. Each value and time is compared with the store read by plain
sqlite3 (the records' wire JSON) and with the register values the simulator was given. Killing the
agent (SIGKILL) makes the broker publish the NDEATH will with the bdSeq of the NBIRTH.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.homes import simulated
from tests.mosquitto import Broker
from tests.sparkplug_host import Host, decode_all
from tests.waits import wait_for

pytest.importorskip("pysparkplug")  # scripts/setup --test installs it (--no-deps)
if shutil.which("mosquitto_sub") is None:
    pytest.skip("mosquitto_sub missing: apt-get install mosquitto-clients (scripts/setup --test)",
                allow_module_level=True)

HOME = """
[[device]]
name = "main"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
voltage_v = 231.5
[device.load]
kind = "constant"
power_w = 1800
"""
RECORDS = 25  # committed records to compare


def committed(db: Path) -> dict[int, tuple[str, int, dict[str, Decimal]]]:
    """seq -> (device, time_ms, {name: value in natural units}) of the quality-ok readings, read
    from the store's wire JSON with plain sqlite3 (docs/measurements.md, "Wire form")."""
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.execute("PRAGMA busy_timeout=5000")
        try:
            rows = conn.execute("SELECT seq, wire FROM measurements").fetchall()
        except sqlite3.OperationalError:
            return {}
    out = {}
    for seq, wire in rows:
        rec = json.loads(wire)
        values = {n: Decimal(v) / 1000 for n, v, _unit, q in rec["r"] if q == 0}
        out[seq] = (rec["dev"], rec["t"], values)
    return out


@pytest.fixture
def agent_dir(tmp_path: Path, mqtt_broker: Broker) -> Iterator[tuple[Path, Broker]]:
    with simulated(HOME, tmp_path) as devices:
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "new", "--out",
                              str(tmp_path / "gw.key"), "--json"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        (tmp_path / "drgw.toml").write_text(f"""
[gateway]
key = "gw.key"
[mqtt]
broker = "{mqtt_broker.url}"
[mqtt.plain]
enabled = true
modes = ["values", "json"]
prefix = "plain/{{gw}}"
[mqtt.sparkplug]
enabled = true
group = "site"
edge_node = "house1"
[poll]
fast = 0.2
normal = 0.4
slow = 1.0
[[bus]]
name = "main"
tcp = "{devices['main']}"
[[device]]
name = "main"
profile = "eastron_sdm630"
bus = "main"
unit = 1
""")
        yield tmp_path, mqtt_broker


def test_plain_and_sparkplug_views_equal_the_committed_measurements(
        agent_dir: tuple[Path, Broker]) -> None:
    root, broker = agent_dir
    sub = subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-v",
                            "-t", "plain/#"], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    with Host(broker.port) as host:
        log = (root / "agent.log").open("w")
        agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(root / "drgw.toml")],
                                 stdout=log, stderr=log)
        try:
            wait_for(lambda: len(committed(root / "drgw.db")) >= RECORDS and
                     host.kinds().count("DDATA") >= RECORDS, what=f"{RECORDS} records in the "
                     "store and as DDATA", timeout=60,
                     detail=lambda: (root / "agent.log").read_text()[-2000:])
            agent.send_signal(signal.SIGKILL)  # ungraceful: the broker sends the will
            agent.wait(10)
            wait_for(lambda: "NDEATH" in host.kinds(), what="the NDEATH will after SIGKILL")
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            sub.terminate()
            out, _ = sub.communicate(timeout=10)
            lines = out.splitlines()
        spb = decode_all(host.messages())
    store = committed(root / "drgw.db")
    check_plain(lines, store)
    check_sparkplug(spb, store)


def check_plain(lines: list[str], store: dict[int, tuple[str, int, dict[str, Decimal]]]) -> None:
    jsons = [json.loads(line.split(" ", 1)[1]) for line in lines if line.count("/") == 2]
    values = [line.split(" ", 1) for line in lines if line.count("/") == 3]
    assert len(jsons) >= RECORDS and len(values) >= RECORDS, lines[:5]
    for body in jsons:
        device, time_ms, readings = store[body["seq"]]  # every JSON is a committed record
        assert body["device"] == device and body["unix_ms"] == time_ms
        # ISO 8601 UTC of the same instant, parsed back by the standard library
        when = dt.datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        assert when.utcoffset() == dt.timedelta(0)
        assert round(when.timestamp() * 1000) == time_ms
        got = {k: Decimal(repr(v)) for k, v in body.items() if k in readings}
        assert got == readings  # every ok reading, same value
        assert set(body["units"]) == set(readings)
    for topic, payload in values:
        point = topic.split("/")[3]
        seen = {r[2][point] for r in store.values() if point in r[2]}
        assert Decimal(payload) in seen, (topic, payload)
    # what the simulator was given: 1800 W, 231.5 V on each phase (no noise)
    assert {v for t, v in values if t.endswith("/power_active_total_w")} == {"1800"}
    assert {v for t, v in values if t.endswith("/voltage_l1_v")} == {"231.5"}


def check_sparkplug(spb: list[tuple[str, object]],
                    store: dict[int, tuple[str, int, dict[str, Decimal]]]) -> None:
    kinds = [k for k, _ in spb]
    assert kinds[0] == "NBIRTH" and kinds[1] == "DBIRTH" and kinds[-1] == "NDEATH"
    nbirth, death = spb[0][1], spb[-1][1]
    bd_seq = {m.name: m.value for m in nbirth.metrics}["bdSeq"]
    assert death.bd_seq_metric.value == bd_seq
    seqs = [m.seq for k, m in spb[:-1]]
    assert seqs == [n % 256 for n in range(len(seqs))]
    by_time = {(dev, t): vals for dev, t, vals in store.values()}
    for kind, msg in spb[1:-1]:
        metrics = [m for m in msg.metrics if not m.is_null]
        assert kind in ("DBIRTH", "DDATA") and metrics
        for m in metrics:
            readings = by_time[("main", m.timestamp)]  # the metric's time is a record's time
            assert Decimal(repr(float(m.value))) == readings[m.name], m.name
    values = [m.value for _, msg in spb[1:-1] for m in msg.metrics
              if m.name == "power_active_total_w" and not m.is_null]
    assert values and set(values) == {1800.0}
