"""A running `drgw run` for command tests: a simulated home, a real mosquitto, a tap, an operator.

Not a test module: tests/e2e/test_agent_commands.py builds one `Site` per module (`open_site`).
The simulated home (firmware_shims.SimulatedHome: pymodbus servers) and the tap live on an asyncio
loop in a thread of the test process, so the tests themselves stay synchronous and can read the
simulator's own state; the agent is a `drgw run` subprocess in its default restart mode
(re-executing itself in place). Commands go through the operator's path,
gateway.master.operations.fleet_cmd; `send_raw` publishes an envelope as an attacker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from firmware_shims.home import DeviceHandle, SimulatedHome
from gateway.errors import RemoteError
from gateway.master.mqtt import connect
from gateway.master.operations import fleet_cmd
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key
from gateway.network import command as core
from gateway.network import topics
from tests.homes import WALLBOX_TCP, sdm630_tcp
from tests.mosquitto import Broker

T = TypeVar("T")
WAIT_S = 30.0  # generous: a loaded 2-core CI machine, several agents at once

HOME = sdm630_tcp(1800) + WALLBOX_TCP


def config_text(*, broker: str, operator: str, main: str, ev: str) -> str:
    return f"""[gateway]
key = "gw.key"
log_level = "INFO"
[mqtt]
broker = "{broker}"
batch_max = 5
health_interval = 30
[operators]
allow = ["{operator}"]
[poll]
fast = 0.5
normal = 1.0
slow = 2.0
""" + meter_and_wallbox(main=main, ev=ev)


def meter_and_wallbox(*, main: str, ev: str) -> str:
    """The [[bus]] and [[device]] tables of HOME: an SDM630 main meter and a wallbox, each on its
    own TCP endpoint (`main`, `ev` as host:port)."""
    return f"""[[bus]]
name = "main"
tcp = "{main}"
[[bus]]
name = "ev"
tcp = "{ev}"
[[device]]
name = "main"
profile = "eastron_sdm630"
bus = "main"
unit = 1
role = "main"
[[device]]
name = "ev"
profile = "heidelberg_energycontrol"
bus = "ev"
unit = 1
"""


class LoopThread:
    """An asyncio loop in a daemon thread; `run` hands it a coroutine and waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="site loop", daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on the loop's thread (the simulator's state belongs to it)."""
        async def inside() -> T:
            return fn()
        return self.run(inside())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Tap:
    """A QoS 1 subscriber to the gateway's meas, status and cmd topics (the last as an eavesdropper
    would): every payload in arrival order. Lists only grow; readers take copies."""

    port: int
    gw: str
    meas: list[bytes] = field(default_factory=list)
    status: list[dict[str, Any]] = field(default_factory=list)
    cmd: list[bytes] = field(default_factory=list)

    async def run(self, subscribed: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"tap-{secrets.token_hex(4)}",
                                  clean_session=True) as client:
            for wanted in (topics.Kind.MEAS, topics.Kind.STATUS, topics.Kind.CMD):
                await client.subscribe(topics.topic(self.gw, wanted), qos=1)
            subscribed.set()
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                parsed = topics.parse(str(msg.topic))
                kind = parsed.kind if parsed is not None else None
                if kind is topics.Kind.MEAS:
                    self.meas.append(msg.payload)
                elif kind is topics.Kind.STATUS:
                    self.status.append(json.loads(msg.payload))
                elif kind is topics.Kind.CMD:
                    self.cmd.append(msg.payload)

    def seqs(self) -> list[tuple[str, int]]:
        """(device, seq) of every record received, duplicates included (plain JSON, docs/mqtt.md)."""
        return [(r["dev"], r["seq"]) for p in list(self.meas) for r in json.loads(p)["m"]]


@dataclass(kw_only=True)
class Site:
    """The running site of one module: its parts, and the operator's way to command the agent."""

    root: Path
    loop: LoopThread
    home: SimulatedHome
    broker: Broker
    gw: str  # lower case, as in topics
    operator: GatewayKey
    tap: Tap
    agent: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "drgw.toml"

    @property
    def log(self) -> Path:
        return self.root / "agent.log"

    def device(self, name: str) -> DeviceHandle:
        return self.home.device(name)

    def start_agent(self) -> None:
        with self.log.open("ab") as log:
            self.agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(self.config)],
                                          stdout=log, stderr=log, cwd=self.root)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"

    def until(self, done: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
        """Wait until `done()` is true (checked every 50 ms), or fail naming `what`."""
        deadline = time.monotonic() + timeout
        while not done():
            if self.agent is not None and self.agent.poll() is not None:
                raise AssertionError(f"the agent exited ({self.agent.returncode}) while waiting for "
                                     f"{what}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:g} s for {what}\n{self.log_tail()}")
            time.sleep(0.05)

    def cmd(self, cmd: str, *, signer: GatewayKey | None = None, op: str | None = None,
            lifetime_ms: int = 60_000, timeout_s: float = 15.0, **args: Any) -> dict[str, Any]:
        """One command through fleet_cmd, signed by `signer` (default: the operator) in the name
        of `op` (default: the signer); every reply must be signed by this gateway."""
        key = signer or self.operator
        reply = self.loop.run(fleet_cmd(
            self.broker.url, gw=self.gw, cmd=cmd, args=args, sign_digest=key.sign_digest,
            operator=op or key.address, timeout_s=timeout_s, tls={}, lifetime_ms=lifetime_ms))
        assert reply.get("signed_by_gateway") is True and reply["gw"] == self.gw, reply
        return reply

    def ok(self, cmd: str, **args: Any) -> Any:
        reply = self.cmd(cmd, **args)
        assert reply["ok"] is True, reply
        return reply["result"]

    def refusal(self, cmd: str, **args: Any) -> dict[str, Any]:
        """The reply to a command the gateway refuses (the whole body)."""
        reply = answered(lambda wait_s: self.cmd(cmd, timeout_s=wait_s, **args))
        assert reply["ok"] is False and "result" not in reply, reply
        return reply

    def refused(self, cmd: str, **args: Any) -> tuple[str, str]:
        error = self.refusal(cmd, **args)["error"]
        return error["code"], error["message"]

    def online(self) -> None:
        """Wait for a ping's answer: a command sent before the agent subscribed is lost (cmd is
        never retained, docs/mqtt.md), so each try is a new command."""
        def answers() -> bool:
            with contextlib.suppress(Exception):
                return bool(self.cmd("ping", timeout_s=1.0)["ok"])
            return False
        self.until(answers, "the agent to answer a ping", timeout=60.0)

    def send_raw(self, payload: bytes, cid: str | None) -> dict[str, Any]:
        """Publish `payload` on the cmd topic as is (a refused one); the reply whose id is `cid`."""
        return answered(lambda wait_s: self.loop.run(self._send_raw(payload, cid, wait_s)))

    async def _send_raw(self, payload: bytes, cid: str | None, wait_s: float) -> dict[str, Any]:
        async with connect(self.broker.url) as client:
            await client.subscribe(topics.topic(self.gw, topics.Kind.REPLY), qos=1)
            await client.publish(topics.topic(self.gw, topics.Kind.CMD), payload, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    async for msg in client.messages:
                        body = json.loads(msg.payload if isinstance(msg.payload, bytes) else b"{}")
                        if body.get("id") == cid:
                            assert core.signer_of(body) == self.gw, body  # not a spoof
                            return dict(body)
        raise RemoteError(f"no reply to {payload[:60]!r} within {wait_s:g} s")

    def stop_agent(self) -> int:
        assert self.agent is not None
        if self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
                raise AssertionError("the agent did not stop within 30 s of SIGTERM") from None
        return self.agent.returncode


def answered(send: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
    """The reply to a refused command, sent again while unanswered (each try waits 2 s).

    A gateway may answer refusals within a budget only (a flood of junk must not become a flood of
    replies), and the refusal tests here send more than a handful in a row: a refusal left
    unanswered is sent again until one is answered. A refused command changes nothing, so sending
    it twice is harmless; commands that are run are never sent twice (`Site.cmd`).
    """
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return send(2.0)
        except RemoteError:
            if time.monotonic() > deadline:
                raise


@contextlib.contextmanager
def open_site(root: Path) -> Iterator[Site]:
    """Broker, simulated home, tap (subscribed before the agent starts, so it sees every batch),
    keys, config and a running agent that answers commands. Left newest part first; the agent is
    killed only if the caller did not stop it."""
    key, operator = GatewayKey.generate(), GatewayKey.generate()
    write_key(root / "gw.key", key)
    (root / "home.toml").write_text(HOME)
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(Broker(root / "mosquitto"))
        loop = LoopThread()
        stack.callback(loop.close)
        home = SimulatedHome(root / "home.toml")
        loop.run(home.__aenter__())
        stack.callback(lambda: loop.run(home.__aexit__(None, None, None)))
        where = {d.name: d.address for d in home.devices}
        (root / "drgw.toml").write_text(config_text(
            broker=broker.url, operator=operator.address, main=where["main"], ev=where["ev"]))
        tap = Tap(broker.port, topics.gw_id(key.address))
        subscribed = asyncio.Event()

        async def start_tap() -> asyncio.Task[None]:
            return asyncio.create_task(tap.run(subscribed), name="tap")

        async def stop_tap() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task

        task = loop.run(start_tap())
        stack.callback(lambda: loop.run(stop_tap()))
        site = Site(root=root, loop=loop, home=home, broker=broker, gw=tap.gw, operator=operator,
                    tap=tap)
        site.until(lambda: subscribed.is_set() or task.done(), "the tap's subscription")
        site.start_agent()

        def kill_agent() -> None:  # only when the caller did not stop it (a failed start-up)
            if site.agent is not None and site.agent.poll() is None:
                site.agent.kill()
                site.agent.wait()

        stack.callback(kill_agent)
        site.online()
        yield site
