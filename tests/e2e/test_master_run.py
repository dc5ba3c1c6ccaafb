"""`drgw master run` as systemd runs it: two worker processes on one SQLite file share the stream
(MQTT 5 shared subscription on a real mosquitto), each tells its notify socket READY=1, WATCHDOG=1
and STOPPING=1; a fleet of virtual gateways with a gap and a forgery ends complete; `drgw master
status` shows it; a bad config is one clear line and exit 2."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key
from gateway.testing.virtual_fleet import FleetLink, make_fleet
from tests.mosquitto import Broker
from tests.waits import until, wait_for

pytestmark = pytest.mark.slow


def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


def notifications(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            out += sock.recv(4096).decode().split("\n")
        except BlockingIOError:
            return out


def test_two_worker_processes_ingest_repair_and_stop(tmp_path: Path, mqtt_broker: Broker) -> None:
    operator = GatewayKey.generate()
    write_key(tmp_path / "operator.key", operator)
    db = tmp_path / "master.sqlite"
    config = tmp_path / "master.toml"
    config.write_text(f'[broker]\nurl = "{mqtt_broker.url}"\n[database]\nsqlite = "{db}"\n'
                      '[operator]\nkey = "operator.key"\n'
                      "[repair]\ngrace_s = 0.3\nfirst_retry_s = 1\nscan_s = 0.1\n")
    sockets, procs = [], []
    for i in range(2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(tmp_path / f"notify{i}"))
        sockets.append(sock)
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / f"notify{i}"), WATCHDOG_USEC="2000000")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--log-level", "INFO", "master", "run",
             str(config), "--worker", f"p{i}"], env=env, stderr=subprocess.PIPE, text=True))
    seen: list[list[str]] = [[], []]
    try:
        def said(i: int, what: str) -> bool:
            seen[i] += notifications(sockets[i])
            return what in seen[i]

        for i in range(2):
            wait_for(lambda i=i: said(i, "READY=1") and said(i, "WATCHDOG=1"),  # type: ignore[misc]
                     what=f"worker {i}: READY=1 and WATCHDOG=1")
        fleet = make_fleet(3)

        async def publish() -> None:
            link = FleetLink(fleet, host=mqtt_broker.host, port=mqtt_broker.port,
                             operators=[operator.address])
            async with link.running():
                for g in fleet:
                    await link.birth(g)
                    records = g.make(40)
                    for k in range(0, 40, 4):
                        if g is fleet[0] and k == 8:
                            continue  # a gap: seq 9..12
                        chunk = records[k:k + 4]
                        if g is fleet[1] and k == 20:
                            chunk = [g.tampered(chunk[0]), *chunk[1:]]  # seq 21 forged
                        await link.publish(g, chunk)
                await until(lambda: _count(db) == 120, timeout=60,
                            what="all 120 honest records stored", detail=lambda: str(_count(db)))
                await until(lambda: _rows(db, "SELECT DISTINCT state FROM gaps") == [("filled",)],
                            what="the gaps marked filled")

        asyncio.run(publish())
        workers = {w for w, in _rows(db, "SELECT DISTINCT worker FROM measurements")}
        assert workers == {"p0", "p1"}
        assert _rows(db, "SELECT seq FROM quarantine") == [(21,)]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(procs):
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
            assert said(i, "STOPPING=1")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for sock in sockets:
            sock.close()
    out = drgw("master", "status", str(config), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert {g["gw"] for g in status["gateways"]} == {g.gw for g in fleet}
    assert all(g["online"] == 1 for g in status["gateways"])
    assert {(g["seq_from"], g["seq_to"], g["state"]) for g in status["gaps"]} == {
        (9, 12, "filled"), (21, 21, "filled")}


def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text('[broker]\nurl = "mqtt://127.0.0.1:1"\n[database]\nsqlite = "m.sqlite"\n'
                      "[repair]\ngrace = 5\n")
    out = drgw("master", "run", str(config))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "repair: option 'grace' is not valid; did you mean 'grace_s'?" in out.stderr
    config.write_text('[broker]\nurl = "mqtt://127.0.0.1:1"\n[database]\n')
    out = drgw("master", "run", str(config))
    assert out.returncode == 2 and "give exactly one of sqlite" in out.stderr, out.stderr


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _count(db: Path) -> int:
    (count,), = _rows(db, "SELECT COUNT(*) FROM measurements")
    return int(str(count))
