"""A remote config that cannot start is rolled back: `drgw run` against a real mosquitto and a
simulated meter, with signed `config_set` commands sent the operator's way.

Two configs that parse but cannot come up: a `[metrics]` port the test already holds (the agent is
run as systemd runs it, `--on-restart exit`, and started again by the rules read from
systemd/drgw.service), and a store in a directory that does not exist (`drgw run` restarting itself
in place). Each time the agent comes back on the last good config by itself, the config file holds
the original text again, the status reply and the retained status name the config that failed and
why, the log says so at WARNING, and the store's seqs run on without a gap or a reuse.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.agent.lifetime import RESTART
from gateway.master.mqtt import connect
from gateway.master.operations import fleet_cmd
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key
from gateway.measurement.store.database import Store
from gateway.network import topics
from tests.homes import sdm630_tcp, simulated
from tests.mosquitto import Broker, free_port

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60.0  # generous: a loaded 2-core machine, an agent that starts three times
HOME = sdm630_tcp(1800)


@dataclass(frozen=True, slots=True)
class RestartRules:
    """What systemd does when the agent exits, from the unit's [Service] section (systemd.service(5))."""

    restart: str
    force: frozenset[int]
    prevent: frozenset[int]

    @classmethod
    def from_unit(cls, path: Path) -> RestartRules:
        values: dict[str, str] = {}
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                values[key.strip()] = value.strip()

        def codes(key: str) -> frozenset[int]:
            return frozenset(int(v) for v in values.get(key, "").split())

        return cls(restart=values["Restart"], force=codes("RestartForceExitStatus"),
                   prevent=codes("RestartPreventExitStatus"))

    def restarts(self, code: int) -> bool:
        """RestartForceExitStatus= restarts whatever Restart= says; RestartPreventExitStatus= keeps
        it down; Restart=on-failure restarts on a non-zero exit status or a signal."""
        assert self.restart == "on-failure", "the test models Restart=on-failure only"
        if code in self.force:
            return True
        if code in self.prevent:
            return False
        return code != 0


@dataclass
class Supervisor:
    """Runs `drgw run --on-restart exit CONFIG` and starts it again as the unit's rules say
    (RestartSec= shortened); the exit status of each run is kept in `exits`."""

    config: Path
    log: Path
    rules: RestartRules
    exits: list[int] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            with self.lock, self.log.open("ab") as out:
                if self.stopping:
                    return
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli", "run", "--on-restart", "exit",
                     str(self.config)], stdout=out, stderr=out)
            code = self.proc.wait()
            self.exits.append(code)
            if self.stopping or not self.rules.restarts(code):
                return
            time.sleep(0.2)  # RestartSec=, shortened

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
        assert self.thread is not None
        self.thread.join(timeout=45)
        assert not self.thread.is_alive(), "the agent did not stop within 45 s of SIGTERM"


@dataclass
class Site:
    root: Path
    config: Path
    broker: Broker
    gw: str
    operator: GatewayKey

    def command(self, cmd: str, timeout_s: float = 5.0, **args: Any) -> dict[str, Any]:
        return asyncio.run(fleet_cmd(self.broker.url, gw=self.gw, cmd=cmd, args=args,
                                     sign_digest=self.operator.sign_digest,
                                     operator=self.operator.address, timeout_s=timeout_s, tls={}))

    def status_when(self, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first status reply `ok` accepts (the agent may be restarting in between)."""
        deadline = time.monotonic() + WAIT_S
        last: object = None
        while time.monotonic() < deadline:
            try:
                reply = self.command("status", timeout_s=2.0)
            except Exception as exc:  # no reply while the agent restarts: ask again
                last = exc
                continue
            last = reply
            if reply.get("ok") and ok(reply["result"]):
                return reply["result"]  # type: ignore[no-any-return]
        raise AssertionError(f"no such status within {WAIT_S:.0f} s; last: {last}")

    def retained_status(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            async with connect(self.broker.url) as client:
                await client.subscribe(topics.topic(self.gw, topics.Kind.STATUS), qos=1)
                async with asyncio.timeout(10):
                    message: aiomqtt.Message
                    async for message in client.messages:
                        return json.loads(bytes(message.payload))  # type: ignore[no-any-return]
            raise AssertionError("no retained status")

        return asyncio.run(read())


@pytest.fixture
def site(tmp_path: Path, mqtt_broker: Broker) -> Iterator[Site]:
    with simulated(HOME, tmp_path) as devices:
        main = devices["main"]
        key, operator = GatewayKey.generate(), GatewayKey.generate()
        write_key(tmp_path / "gw.key", key)
        config = tmp_path / "drgw.toml"
        config.write_text(f"""[gateway]
key = "gw.key"
[mqtt]
broker = "{mqtt_broker.url}"
batch_max = 5
health_interval = 1
[operators]
allow = ["{operator.address}"]
[poll]
fast = 0.2
normal = 1.0
slow = 2.0
[[bus]]
name = "main"
tcp = "{main}"
[[device]]
name = "main"
profile = "eastron_sdm630"
bus = "main"
unit = 1
""")
        yield Site(root=tmp_path, config=config, broker=mqtt_broker, gw=key.address,
                   operator=operator)


def check_rolled_back(site: Site, *, original: str, before: dict[str, Any], sent: dict[str, Any],
                      because: str) -> dict[str, Any]:
    """The agent runs the original config again and says which config failed and why."""
    assert sent["ok"] and sent["result"]["restarting"] is True, sent
    bad = sent["result"]["config_hash"]
    assert bad != before["config_hash"]
    status = site.status_when(lambda s: s["config_rollback"] is not None)
    assert status["config_hash"] == before["config_hash"]
    assert status["config_trial"] is False
    note = status["config_rollback"]
    assert note["config_hash"] == bad and note["restored_hash"] == before["config_hash"]
    assert because in note["reason"], note
    assert site.config.read_text() == original
    assert not (site.root / "drgw.toml.trial").exists()
    retained = site.retained_status()
    assert retained["online"] is True and retained["config_hash"] == before["config_hash"]
    assert retained["config_rollback"] == note
    log = (site.root / "agent.log").read_text()
    assert f"WARNING gateway.commands.run: config {bad} on trial rolled back" in log, log
    return status


def check_seqs(site: Site, *, after: int) -> None:
    """Measurements went on after the rollback, and the store's seqs run 1..n: none skipped or reused."""
    with Store(site.root / "drgw.db") as store:
        lo, hi = store.seq_bounds()
        seqs = [r.measurement.seq for r in store.measurements_range(lo, hi)]
    assert hi > after
    assert seqs == list(range(1, hi + 1))
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "verify", "--db",
                          str(site.root / "drgw.db")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_metrics_port_in_use_is_rolled_back_under_the_units_restart_rules(site: Site) -> None:
    rules = RestartRules.from_unit(ROOT / "systemd" / "drgw.service")
    agent = Supervisor(config=site.config, log=site.root / "agent.log", rules=rules)
    original = site.config.read_text()
    agent.start()
    try:
        before = site.status_when(lambda s: s["seq"] > 0)
        with socket.socket() as taken:
            port = free_port()
            taken.bind(("127.0.0.1", port))
            taken.listen()
            sent = site.command("config_set", timeout_s=10.0, dry_run=False,
                                text=original + f'[metrics]\nprometheus = "127.0.0.1:{port}"\n')
            status = check_rolled_back(site, original=original, before=before, sent=sent,
                                       because=f'prometheus = "127.0.0.1:{port}": cannot listen')
        # Started for the trial (75), rolled back and asked to be started again (75): never 2.
        assert RESTART in rules.force and agent.exits == [RESTART, RESTART]
        seq = status["seq"]
        site.status_when(lambda s: s["seq"] > seq)
    finally:
        agent.stop()
    assert agent.exits[-1] == 0
    check_seqs(site, after=before["seq"])


def test_a_store_in_a_missing_directory_is_rolled_back_in_place(site: Site) -> None:
    original = site.config.read_text()
    with (site.root / "agent.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(site.config)],
                                stdout=out, stderr=out)
    try:
        before = site.status_when(lambda s: s["seq"] > 0)
        missing = site.root / "no-such-dir" / "drgw.db"
        sent = site.command("config_set", timeout_s=10.0, dry_run=False,
                            text=original + f'[store]\npath = "{missing}"\n')
        status = check_rolled_back(site, original=original, before=before, sent=sent,
                                   because=f"cannot open store {missing}")
        assert proc.poll() is None  # the same process throughout: it re-executed itself
        seq = status["seq"]
        site.status_when(lambda s: s["seq"] > seq)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=45) == 0
    assert not missing.parent.exists()
    check_seqs(site, after=before["seq"])


def test_a_store_moved_to_an_empty_path_is_rolled_back_before_a_seq_is_reused(site: Site) -> None:
    # The directory exists, so the new store would open: empty, it would issue seqs from 1 again
    # under the same key. `drgw run` refuses to start the trial there, and rolls it back.
    original = site.config.read_text()
    with (site.root / "agent.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(site.config)],
                                stdout=out, stderr=out)
    try:
        before = site.status_when(lambda s: s["seq"] > 0)
        moved = site.root / "elsewhere"
        moved.mkdir()
        sent = site.command("config_set", timeout_s=10.0, dry_run=False,
                            text=original + f'[store]\npath = "{moved / "drgw.db"}"\n')
        status = check_rolled_back(site, original=original, before=before, sent=sent,
                                   because="would issue seqs again")
        seq = status["seq"]
        site.status_when(lambda s: s["seq"] > seq)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=45) == 0
    assert not (moved / "drgw.db").exists()  # nothing was ever signed into the empty store
    check_seqs(site, after=before["seq"])


def test_a_trial_killed_before_its_verdict_is_rolled_back_at_the_next_start(site: Site) -> None:
    rules = RestartRules.from_unit(ROOT / "systemd" / "drgw.service")
    agent = Supervisor(config=site.config, log=site.root / "agent.log", rules=rules)
    original = site.config.read_text()
    agent.start()
    try:
        before = site.status_when(lambda s: s["seq"] > 0)
        # A second meter that never answers: the trial waits for it (up to 120 s), undecided.
        silent = f"127.0.0.1:{free_port()}"
        sent = site.command("config_set", timeout_s=10.0, dry_run=False, text=original + f"""
[[bus]]
name = "ghost"
tcp = "{silent}"
[[device]]
name = "ghost"
profile = "eastron_sdm630"
bus = "ghost"
unit = 1
""")
        bad = sent["result"]["config_hash"]
        site.status_when(lambda s: s["config_hash"] == bad and s["config_trial"])
        with agent.lock:  # the watchdog's SIGKILL, or an OOM kill, in the middle of the trial
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGKILL)
        check_rolled_back(site, original=original, before=before, sent=sent,
                          because="stopped before a verdict")
    finally:
        agent.stop()
    assert agent.exits == [RESTART, -signal.SIGKILL, 0]
    check_seqs(site, after=before["seq"])
