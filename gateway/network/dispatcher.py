"""Fleet command dispatcher: receives drgw/v1/<gw>/cmd, admits each command before it may wait
(size, verification: gateway.network.command; nonce claim: gateway.network.nonces), runs admitted
commands one at a time through the AgentControl Protocol, and publishes the replies (QoS 1).

Admission runs in the message callback, so junk never takes a queue slot from a signed command:
the queue holds only commands that passed every check, and each check costs a bounded amount (a
payload over the size limit is not parsed; at most one signature recovery). Refusals are counted
(`counters()`, in the health topic's counters) and answered within a reply budget (a token bucket
on the monotonic clock), so a flood of junk cannot make the gateway publish a flood of replies;
replies to admitted commands always go out. Nothing a peer sends can crash it: a bug in
verification becomes an `internal` refusal, a handler exception an error reply. Commands run one at
a time, in arrival order (a restart or a config_set must not interleave with another command).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.clock import wall_ms
from gateway.network import command as core
from gateway.network import topics
from gateway.network.command import Code, Command, CommandPolicy, CommandRejected
from gateway.network.link import Connection
from gateway.network.nonces import NonceCache
from gateway.network.pacing import TokenBucket
from gateway.network.payloads import dumps

log = logging.getLogger(__name__)

JSON = Any


class AgentControl(Protocol):
    """What fleet commands may do to the agent. Raise CommandRejected(code, message) for a
    refusal the operator should see verbatim (e.g. Code.BAD_ARGS for a point not writable)."""

    async def ping(self) -> JSON: ...
    async def status(self) -> JSON: ...
    async def diagnostics(self) -> JSON: ...
    async def read_register(self, device: str, table: str, address: int, count: int) -> JSON: ...
    async def write_point(self, device: str, name: str, value: float) -> JSON: ...
    async def scan(self, args: Mapping[str, Any]) -> JSON: ...
    async def resend(self, seq_from: int, seq_to: int) -> JSON: ...
    async def config_get(self) -> JSON: ...
    async def config_set(self, text: str, dry_run: bool) -> JSON: ...
    async def restart(self) -> JSON: ...
    async def set_log_level(self, level: str) -> JSON: ...
    async def dr_event(self, args: Mapping[str, Any]) -> JSON: ...


# Per-command time limits (seconds); a handler that overruns gets a `timeout` error reply.
TIMEOUTS: Mapping[str, float] = {"scan": 600.0, "resend": 120.0, "config_set": 120.0}
DEFAULT_TIMEOUT = 30.0


async def call(agent: AgentControl, command: Command) -> JSON:
    a = command.args
    match command.cmd:
        case "read_register":
            return await agent.read_register(a["device"], a["table"], a["address"], a["count"])
        case "write_point":
            return await agent.write_point(a["device"], a["name"], a["value"])
        case "scan":
            return await agent.scan(a)
        case "dr_event":
            return await agent.dr_event(a)
        case "resend":
            return await agent.resend(a["seq_from"], a["seq_to"])
        case "config_set":
            return await agent.config_set(a["text"], bool(a.get("dry_run", False)))
        case "set_log_level":
            return await agent.set_log_level(a["level"])
        case "ping" | "status" | "diagnostics" | "config_get" | "restart":
            return await getattr(agent, command.cmd)()
    raise CommandRejected(Code.UNKNOWN_COMMAND, f"no handler for {command.cmd!r}", id=command.id)


@dataclass(frozen=True, slots=True)
class ReplyBudget:
    """How many refusals get a reply: `burst` at once, then `per_s` (the rest are only counted).

    Enough for an operator whose tool sends a bad command now and then; a flood of junk gets
    `burst` replies and then one a second, so the gateway's uplink stays free.
    """

    burst: int = 20
    per_s: float = 1.0


# The health counters, cumulative since start: payloads received, replies by outcome (ok or an
# error code), and refusals left unanswered by the reply budget. Every name is always present.
OUTCOMES = ("received", "ok", *(v for k, v in vars(Code).items() if k.isupper()), "unanswered")


class CommandDispatcher:
    """A SessionWorker: subscribes to the cmd topic each session and answers on the reply topic.

    `clock_ms` is the wall clock (command expiry; docs/mqtt.md "Clocks of the command path"),
    `monotonic` (seconds) paces the reply budget.
    """

    def __init__(self, *, policy: CommandPolicy, agent: AgentControl, nonces: NonceCache,
                 clock_ms: Callable[[], int] = wall_ms, max_queued: int = 32,
                 sign_digest: Callable[[bytes], bytes] | None = None,
                 budget: ReplyBudget = ReplyBudget(),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.agent = agent
        self.nonces = nonces
        self.clock_ms = clock_ms
        self.sign_digest = sign_digest
        self.gw = topics.gw_id(policy.gw)
        self.cmd_topic = topics.topic(self.gw, topics.Kind.CMD)
        self.reply_topic = topics.topic(self.gw, topics.Kind.REPLY)
        self._queue: asyncio.Queue[Command] = asyncio.Queue(maxsize=max_queued)
        # Replies to refusals and `busy`, waiting for the session: bounded by the budget and the
        # queue; should the broker stall, the oldest is dropped (and counted unanswered).
        self._replies: collections.deque[bytes] = collections.deque(maxlen=budget.burst + max_queued)
        self._reply_ready = asyncio.Event()
        self._budget = TokenBucket(rate=budget.per_s, burst=budget.burst)
        self._monotonic = monotonic
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def counters(self) -> Mapping[str, int]:
        """The health counters (`commands_<outcome>`, see OUTCOMES)."""
        return {f"commands_{name}": n for name, n in self.counts.items()}

    def on_message(self, topic: str, payload: bytes) -> None:
        """The link's callback: admit or refuse at once (no await); never raises."""
        self.counts["received"] += 1
        try:
            command = self.admit(payload)
        except CommandRejected as exc:
            self._refuse(exc)
            return
        try:
            self._queue.put_nowait(command)
        except asyncio.QueueFull:
            self.counts[Code.BUSY] += 1
            self._post(core.reply(id=command.id, gw=self.gw, error=CommandRejected(
                Code.BUSY, f"{self._queue.maxsize} commands are waiting: send it again later, "
                "signed with a new nonce")))

    def admit(self, payload: bytes) -> Command:
        """Verify a payload and claim its nonce; CommandRejected otherwise (bugs included)."""
        now = self.clock_ms()
        try:
            command = core.verify(payload, self.policy, now_ms=now)
        except CommandRejected:
            raise
        except Exception as exc:  # a bug in verification must not take the agent down
            log.exception("command verification failed")
            raise CommandRejected(Code.INTERNAL, f"internal error while verifying: "
                                  f"{type(exc).__name__}", id=core.peek_id(payload)) from None
        try:
            fresh = self.nonces.claim(command.op, command.nonce, exp_ms=command.exp_ms, now_ms=now)
        except Exception as exc:  # e.g. a full disk: never run a command whose nonce is not kept
            log.error("cannot record command nonce in %s: %s", self.nonces.path, exc)
            raise CommandRejected(Code.FAILED, f"not run: cannot record its nonce in "
                                  f"{self.nonces.path} ({exc}); free disk space on the gateway "
                                  "and send it again", id=command.id) from None
        if not fresh:
            raise CommandRejected(Code.REPLAYED, f"nonce {command.nonce} of operator "
                                  f"{command.op} was already used: sign a new command",
                                  id=command.id)
        return command

    def _refuse(self, exc: CommandRejected) -> None:
        """Count a refusal; answer it if the reply budget allows."""
        self.counts[exc.code] = self.counts.get(exc.code, 0) + 1
        log.warning("command rejected (%s): %s", exc.code, exc.message)
        now = self._monotonic()
        if self._budget.wait_time(1, now) > 0:
            self.counts["unanswered"] += 1
            return
        self._budget.take(1, now)
        self._post(core.reply(id=exc.id, gw=self.gw, error=exc))

    def _post(self, body: dict[str, Any]) -> None:
        if len(self._replies) == self._replies.maxlen:
            self.counts["unanswered"] += 1  # the oldest waiting reply falls out
        self._replies.append(self._encode(body))
        self._reply_ready.set()

    async def run_session(self, conn: Connection) -> None:
        await conn.subscribe(self.cmd_topic, self.on_message, qos=1)
        loops = [asyncio.create_task(self._send_replies(conn), name="command-replies"),
                 asyncio.create_task(self._run_commands(conn), name="commands")]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            failures = [exc for task in done if (exc := task.exception()) is not None]
            if failures:
                raise failures[0]  # the session failed (MqttLinkError): the link reconnects
        finally:
            for task in loops:
                task.cancel()
            await asyncio.wait(loops)

    async def _send_replies(self, conn: Connection) -> None:
        while True:
            while self._replies:
                await conn.publish(self.reply_topic, self._replies[0], qos=1)
                self._replies.popleft()
            self._reply_ready.clear()
            await self._reply_ready.wait()

    async def _run_commands(self, conn: Connection) -> None:
        while True:
            command = await self._queue.get()
            await conn.publish(self.reply_topic, await self.run(command), qos=1)

    async def handle(self, payload: bytes) -> bytes:
        """Admit and run one payload; always returns the encoded reply (refusals too: no budget).
        The core of on_message + run_session, for tests and tools without a broker."""
        self.counts["received"] += 1
        try:
            command = self.admit(payload)
        except CommandRejected as exc:
            self.counts[exc.code] = self.counts.get(exc.code, 0) + 1
            return self._encode(core.reply(id=exc.id, gw=self.gw, error=exc))
        return await self.run(command)

    async def run(self, command: Command) -> bytes:
        """Execute one admitted command; returns the encoded reply."""
        body = await self.execute(command)
        outcome = "ok" if body["ok"] else str(body["error"]["code"])
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return self._encode(body)

    async def execute(self, command: Command) -> dict[str, Any]:
        try:  # it may have waited behind a long command (a scan): still within its expiry?
            core.check_expiry(command.exp_ms, self.policy, now_ms=self.clock_ms(), cid=command.id)
        except CommandRejected as exc:
            return core.reply(id=command.id, gw=self.gw, error=exc)
        log.info("command %s %s from %s", command.id, command.cmd, command.op)
        limit = TIMEOUTS.get(command.cmd, DEFAULT_TIMEOUT)
        try:
            result = await asyncio.wait_for(call(self.agent, command), limit)
            dumps(result)  # a result that is not JSON is our bug: report it, don't crash
        except CommandRejected as exc:
            return core.reply(id=command.id, gw=self.gw, error=exc)
        except TimeoutError:
            return core.reply(id=command.id, gw=self.gw, error=CommandRejected(
                Code.TIMEOUT, f"{command.cmd} did not finish in {limit:g} s"))
        except Exception as exc:
            log.exception("command %s failed", command.cmd)
            return core.reply(id=command.id, gw=self.gw, error=CommandRejected(
                Code.FAILED, f"{command.cmd} failed: {type(exc).__name__}: {exc}"[:500]))
        return core.reply(id=command.id, gw=self.gw, result=result)

    def _encode(self, body: dict[str, Any]) -> bytes:
        if self.sign_digest is not None:
            body = core.sign(body, self.sign_digest)
        return dumps(body)
