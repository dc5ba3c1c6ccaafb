"""Admission of fleet commands (issue 12, fault 7), without a broker: the id of a refused payload,
the order of the checks, and the dispatcher's message callback (queue, busy, reply budget).

on_message is what the link calls for every message on the cmd topic; here it is called directly,
and the replies it posts are read back from the dispatcher's reply queue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.measurement.identity import GatewayKey
from gateway.network import command as c
from gateway.network.dispatcher import CommandDispatcher, ReplyBudget
from gateway.network.nonces import NonceCache
from gateway.testing.fake_agent import FakeAgent

OP = GatewayKey.from_secret(bytes([7]) * 32)
STRANGER = GatewayKey.from_secret(bytes([9]) * 32)
GW = GatewayKey.from_secret(bytes([3]) * 32).address.lower()
NOW = 1_700_000_000_000
POLICY = c.CommandPolicy.build(gw=GW, operators=[OP.address])
IDS = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z")


def envelope(*, id: str = "r-1", nonce: int = 1, **over: Any) -> dict[str, Any]:
    env = c.make(gw=GW, cmd="ping", args={}, op=OP.address, id=id, nonce=nonce, exp_ms=NOW + 60_000)
    return {**c.sign(env, OP.sign_digest), **over}


def refusal(payload: bytes) -> c.CommandRejected:
    try:
        c.verify(payload, POLICY, now_ms=NOW)
    except c.CommandRejected as exc:
        return exc
    raise AssertionError("accepted")


# ---- the id of a payload that is refused ------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(cid=IDS, order=st.permutations(sorted(c.ENVELOPE_KEYS)), text_len=st.integers(0, 40_000),
       tail=st.binary(max_size=50))
def test_the_id_of_an_oversized_payload_is_read_in_any_key_order(
        cid: str, order: list[str], text_len: int, tail: bytes) -> None:
    env = envelope(id=cid, cmd="config_set", args={"text": "x" * text_len})
    text = json.dumps({k: env[k] for k in order}).encode()
    cut = text[:text.index(json.dumps(cid).encode(), text.index(b'"id"')) + len(cid) + 2] + tail
    # The id is the last complete member, and what follows it is anything at all.
    assert c.peek_id(cut) == cid
    assert c.peek_id(text) == cid


def test_a_nested_id_is_never_taken_for_the_envelopes() -> None:
    assert c.peek_id(b'{"args":{"id":"inner"},"cmd":"x"}') is None
    assert c.peek_id(b'{"args":{"id":"inner"},"id":"outer"}') == "outer"
    assert c.peek_id(b'{"text":"\\"id\\":\\"inner\\"","id":"outer"') == "outer"


def test_no_id_when_none_can_be_read() -> None:
    for payload in (b"", b"[]", b'{"id":5}', b'{"id":"has space"}', b'{"a":NaN,"id":"x"}',
                    b'{"a" 1, "id":"x"}', b"{" * 100_000, b'{"a":"' + b"x" * c.PEEK_BYTES + b'","id":"x"}'):
        assert c.peek_id(payload) is None, payload[:40]


def test_an_oversized_payload_is_refused_before_parsing_and_keeps_its_id() -> None:
    not_json = b'{"id":"big-1","args":' + b"\xff" * c.MAX_BYTES
    exc = refusal(not_json)  # parsing it would say malformed
    assert (exc.code, exc.id) == (c.Code.TOO_LARGE, "big-1")
    assert str(c.MAX_BYTES) in exc.message


def test_a_payload_that_is_not_json_after_its_id_keeps_the_id() -> None:
    exc = refusal(b'{"id":"x","v":1,"a":NaN}')
    assert (exc.code, exc.id) == (c.Code.MALFORMED, "x")


# ---- the order of the checks: the cheap ones before the signature recovery --------------------

def test_claims_that_cost_nothing_are_checked_before_the_signature() -> None:
    garbage = "0x" + "00" * 65  # would be `forged`, were the signature checked first
    exc = refusal(json.dumps(envelope(op=STRANGER.address.lower(), sig=garbage)).encode())
    assert exc.code == c.Code.UNKNOWN_OPERATOR
    assert refusal(json.dumps(envelope(gw="0x" + "cd" * 20, sig=garbage)).encode()).code == \
        c.Code.WRONG_TARGET
    assert refusal(json.dumps(envelope(exp=NOW - 60_000, sig=garbage)).encode()).code == \
        c.Code.EXPIRED
    # and command and args only after it: a forger learns nothing about them
    exc = refusal(json.dumps(envelope(cmd="format_disk", sig=garbage)).encode())
    assert exc.code == c.Code.FORGED


# ---- the message callback ---------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.s = 0.0

    def __call__(self) -> float:
        return self.s


def dispatcher(tmp: Path, *, monotonic: Clock | None = None, max_queued: int = 32,
               nonces: NonceCache | None = None) -> CommandDispatcher:
    return CommandDispatcher(policy=POLICY, agent=FakeAgent(), clock_ms=lambda: NOW,
                             nonces=nonces or NonceCache(tmp / "nonces.sqlite"),
                             max_queued=max_queued, budget=ReplyBudget(burst=5, per_s=1.0),
                             monotonic=monotonic or Clock())


def posted(d: CommandDispatcher) -> list[dict[str, Any]]:
    return [json.loads(reply) for reply in d._replies]


def test_junk_never_takes_a_queue_slot(tmp_path: Path) -> None:
    d = dispatcher(tmp_path, max_queued=2)
    for i in range(1000):
        d.on_message("cmd", b"junk %d" % i)
        if i == 500:
            d.on_message("cmd", json.dumps(envelope(id="valid", nonce=1)).encode())
    assert d._queue.qsize() == 1 and d._queue.get_nowait().id == "valid"
    assert d.counts["malformed"] == 1000 and d.counts["busy"] == 0


def test_busy_only_when_signed_commands_fill_the_queue(tmp_path: Path) -> None:
    d = dispatcher(tmp_path, max_queued=2)
    for nonce in range(3):
        d.on_message("cmd", json.dumps(envelope(id=f"c-{nonce}", nonce=nonce)).encode())
    assert d._queue.qsize() == 2 and d.counts["busy"] == 1
    (busy,) = posted(d)
    assert (busy["id"], busy["error"]["code"]) == ("c-2", "busy")
    assert "new nonce" in busy["error"]["message"]


def test_refusals_are_answered_within_the_budget_and_all_counted(tmp_path: Path) -> None:
    clock = Clock()
    d = dispatcher(tmp_path, monotonic=clock)
    for i in range(100):
        d.on_message("cmd", json.dumps({"id": f"j-{i}"}).encode())
    assert [r["id"] for r in posted(d)] == [f"j-{i}" for i in range(5)]  # the burst
    assert d.counts["malformed"] == 100 and d.counts["unanswered"] == 95
    clock.s = 3.0  # three more tokens
    for i in range(100, 110):
        d.on_message("cmd", json.dumps({"id": f"j-{i}"}).encode())
    assert len(posted(d)) == 8 and d.counts["unanswered"] == 102
    assert d.counters()["commands_unanswered"] == 102 and d.counters()["commands_received"] == 110


def test_a_replay_is_refused_before_the_queue(tmp_path: Path) -> None:
    d = dispatcher(tmp_path)
    payload = json.dumps(envelope(id="once", nonce=42)).encode()
    for _ in range(50):
        d.on_message("cmd", payload)
    assert d._queue.qsize() == 1 and d.counts["replayed"] == 49


def test_a_nonce_that_cannot_be_recorded_refuses_the_command(tmp_path: Path) -> None:
    broken = NonceCache(tmp_path / "nonces.sqlite")
    broken.close()  # every write now fails, as on a full disk
    d = dispatcher(tmp_path, nonces=broken)
    d.on_message("cmd", json.dumps(envelope(id="c-1")).encode())
    assert d._queue.qsize() == 0
    (reply,) = posted(d)
    assert reply["id"] == "c-1" and reply["error"]["code"] == "failed"
    assert "nonces.sqlite" in reply["error"]["message"] and "not run" in reply["error"]["message"]
