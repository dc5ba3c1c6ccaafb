"""Fleet command dispatcher: receives drgw/v1/<gw>/cmd, verifies (gateway.network.command), claims
the nonce, calls the agent through the AgentControl Protocol, publishes the reply (QoS 1).

Nothing a peer sends can crash it: every payload ends in a reply, and a handler exception becomes
an error reply. Commands run one at a time, in arrival order (a restart or a config_set must not
interleave with another command).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.clock import wall_ms
from gateway.network import command as core
from gateway.network import topics
from gateway.network.command import Code, Command, CommandPolicy, CommandRejected
from gateway.network.link import Connection
from gateway.network.nonces import NonceCache
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


class CommandDispatcher:
    """A SessionWorker: subscribes to the cmd topic each session and answers on the reply topic."""

    def __init__(self, *, policy: CommandPolicy, agent: AgentControl, nonces: NonceCache,
                 clock_ms: Callable[[], int] = wall_ms, max_queued: int = 32,
                 sign_digest: Callable[[bytes], bytes] | None = None) -> None:
        self.policy = policy
        self.agent = agent
        self.nonces = nonces
        self.clock_ms = clock_ms
        self.sign_digest = sign_digest
        self.gw = topics.gw_id(policy.gw)
        self.cmd_topic = topics.topic(self.gw, topics.Kind.CMD)
        self.reply_topic = topics.topic(self.gw, topics.Kind.REPLY)
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=max_queued)
        self._busy_replies: list[bytes] = []
        self.counts: dict[str, int] = {}

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            self._inbox.put_nowait(payload)
        except asyncio.QueueFull:
            self._busy_replies.append(self._encode(core.reply(
                id=_peek_id(payload), gw=self.gw,
                error=CommandRejected(Code.BUSY, "command queue full: retry later"))))

    async def run_session(self, conn: Connection) -> None:
        await conn.subscribe(self.cmd_topic, self.on_message, qos=1)
        while True:
            while self._busy_replies:
                await conn.publish(self.reply_topic, self._busy_replies.pop(0), qos=1)
            payload = await self._inbox.get()
            await conn.publish(self.reply_topic, await self.handle(payload), qos=1)

    async def handle(self, payload: bytes) -> bytes:
        """Verify and execute one command; always returns the encoded reply."""
        body = await self.execute(payload)
        outcome = "ok" if body["ok"] else str(body["error"]["code"])
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return self._encode(body)

    async def execute(self, payload: bytes) -> dict[str, Any]:
        now = self.clock_ms()
        try:
            command = core.verify(payload, self.policy, now_ms=now)
            if not self.nonces.claim(command.op, command.nonce, exp_ms=command.exp_ms, now_ms=now):
                raise CommandRejected(Code.REPLAYED, f"nonce {command.nonce} of operator "
                                      f"{command.op} was already used: sign a new command",
                                      id=command.id)
        except CommandRejected as exc:
            log.warning("command rejected (%s): %s", exc.code, exc.message)
            return core.reply(id=exc.id, gw=self.gw, error=exc)
        except Exception as exc:  # a bug in verification must not take the agent down
            log.exception("command verification failed")
            return core.reply(id=_peek_id(payload), gw=self.gw, error=CommandRejected(
                Code.INTERNAL, f"internal error while verifying: {type(exc).__name__}"))
        log.info("command %s %s from %s", command.id, command.cmd, command.op)
        try:
            result = await asyncio.wait_for(call(self.agent, command),
                                            TIMEOUTS.get(command.cmd, DEFAULT_TIMEOUT))
            dumps(result)  # a result that is not JSON is our bug: report it, don't crash
        except CommandRejected as exc:
            return core.reply(id=command.id, gw=self.gw, error=exc)
        except TimeoutError:
            return core.reply(id=command.id, gw=self.gw, error=CommandRejected(
                Code.TIMEOUT, f"{command.cmd} did not finish in "
                f"{TIMEOUTS.get(command.cmd, DEFAULT_TIMEOUT):g} s"))
        except Exception as exc:
            log.exception("command %s failed", command.cmd)
            return core.reply(id=command.id, gw=self.gw, error=CommandRejected(
                Code.FAILED, f"{command.cmd} failed: {type(exc).__name__}: {exc}"[:500]))
        return core.reply(id=command.id, gw=self.gw, result=result)

    def _encode(self, body: dict[str, Any]) -> bytes:
        if self.sign_digest is not None:
            body = core.sign(body, self.sign_digest)
        return dumps(body)


def _peek_id(payload: bytes) -> str | None:
    """The correlation id of a payload we could not verify, if it is readable at all."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    cid = obj.get("id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) and 0 < len(cid) <= 64 else None
