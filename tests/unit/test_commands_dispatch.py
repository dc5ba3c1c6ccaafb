"""The dispatcher with the shipped FakeAgent: replay cache, handler errors, and fuzzed payloads
that must each get a reply and never stop the dispatcher (no broker needed: handle() is the core)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.measurement.identity import GatewayKey
from gateway.network import command as c
from gateway.network.dispatcher import CommandDispatcher
from gateway.network.nonces import NonceCache
from gateway.testing.fake_agent import FakeAgent

OP = GatewayKey.from_secret(bytes([7]) * 32)
GW_KEY = GatewayKey.from_secret(bytes([3]) * 32)
GW = GW_KEY.address.lower()
NOW = 1_700_000_000_000


def dispatcher(nonces: NonceCache | None = None, agent: FakeAgent | None = None
               ) -> CommandDispatcher:
    return CommandDispatcher(policy=c.CommandPolicy.build(gw=GW, operators=[OP.address]),
                             agent=agent or FakeAgent(), nonces=nonces or NonceCache(":memory:"),
                             clock_ms=lambda: NOW, sign_digest=GW_KEY.sign_digest)


def signed(cmd: str = "ping", args: dict[str, object] | None = None, nonce: int = 1,
           id: str = "r-1") -> bytes:
    env = c.make(gw=GW, cmd=cmd, args=args or {}, op=OP.address, id=id, nonce=nonce,
                 exp_ms=NOW + 60_000)
    return json.dumps(c.sign(env, OP.sign_digest)).encode()


def run(d: CommandDispatcher, payload: bytes) -> dict[str, object]:
    body = json.loads(asyncio.run(d.handle(payload)))
    assert c.signer_of(body) == GW, "replies are signed by the gateway key"
    return body  # type: ignore[no-any-return]


def test_ok_reply_carries_the_correlation_id_and_result() -> None:
    body = run(dispatcher(), signed("ping", id="abc"))
    assert body["id"] == "abc" and body["ok"] is True and body["result"] == {"pong": True}


def test_replay_is_rejected_even_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "nonces.sqlite"
    assert run(dispatcher(NonceCache(path)), signed(nonce=42))["ok"] is True
    again = run(dispatcher(NonceCache(path)), signed(nonce=42))  # a new process, same file
    assert again["ok"] is False and again["error"]["code"] == "replayed"  # type: ignore[index]
    assert run(dispatcher(NonceCache(path)), signed(nonce=43))["ok"] is True


def test_nonces_are_purged_after_expiry() -> None:
    run_ms = [0]  # the cache's monotonic clock (injected): a nonce also waits out its lifetime there
    cache = NonceCache(":memory:", skew_ms=1000, elapsed_ms=lambda: run_ms[0])
    assert cache.claim("0xop", "0x1", exp_ms=NOW, now_ms=NOW)
    assert not cache.claim("0xop", "0x1", exp_ms=NOW, now_ms=NOW + 1000)
    run_ms[0] = 1001
    assert cache.claim("0xop", "0x2", exp_ms=NOW + 10_000, now_ms=NOW + 1001)
    assert cache.count() == 1


def test_agent_refusals_and_exceptions_become_error_replies() -> None:
    agent = FakeAgent()
    d = dispatcher(agent=agent)
    body = run(d, signed("write_point", {"device": "ev1", "name": "current_limit_a",
                                         "value": 40}, nonce=1))
    assert body["error"] == {"code": "bad_args", "message":  # type: ignore[comparison-overlap]
                             "ev1.current_limit_a = 40 is out of range 6..32"}
    body = run(d, signed("read_register", {"device": "meter1", "table": "input", "address": 0,
                                           "count": 1}, nonce=2))
    assert body["error"]["code"] == "failed"  # type: ignore[index]
    assert "exception code 1" in body["error"]["message"]  # type: ignore[index]
    body = run(d, signed("write_point", {"device": "ev1", "name": "current_limit_a",
                                         "value": 16}, nonce=3))
    assert body["ok"] is True and agent.written[("ev1", "current_limit_a")] == 16


def test_malformed_json_gets_a_reply_with_null_id() -> None:
    body = run(dispatcher(), b"{not json")
    assert body["id"] is None and body["error"]["code"] == "malformed"  # type: ignore[index]


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                 | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.sampled_from([*sorted(c.ENVELOPE_KEYS), "x"]), inner,
                                   max_size=9), max_leaves=20).map(lambda o: json.dumps(o).encode()),
)


@settings(max_examples=300, deadline=None)
@given(payload=payloads)
def test_fuzzed_payloads_always_get_an_error_reply_and_the_dispatcher_keeps_serving(
        payload: bytes) -> None:
    d = dispatcher()
    body = run(d, payload)
    assert body["ok"] is False and body["error"]["code"] in {  # type: ignore[index]
        "malformed", "too_large", "forged"}
    assert run(d, signed(nonce=7))["ok"] is True  # still serving


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(["gw", "cmd", "args", "nonce", "exp", "op", "id", "v"]),
       value=st.none() | st.integers() | st.text(max_size=10) | st.lists(st.integers(), max_size=2))
def test_any_tampered_field_of_a_signed_command_is_rejected(field: str, value: object) -> None:
    env = json.loads(signed(nonce=9))
    if env[field] == value:
        return
    env[field] = value
    body = run(dispatcher(), json.dumps(env).encode())
    assert body["ok"] is False
