"""Fleet command envelopes: signing, verification and every rejection reason (pure, no broker)."""

from __future__ import annotations

import json

import pytest

from gateway.measurement.identity import GatewayKey
from gateway.network import command as c

OP = GatewayKey.from_secret(bytes([7]) * 32)
OTHER = GatewayKey.from_secret(bytes([9]) * 32)
GW = "0x" + "ab" * 20
NOW = 1_700_000_000_000
POLICY = c.CommandPolicy.build(gw=GW, operators=[OP.address])


def envelope(key: GatewayKey = OP, **over: object) -> dict[str, object]:
    env = c.make(gw=GW, cmd="ping", args={}, op=key.address, id="c-1", nonce=1,
                 exp_ms=NOW + 60_000)
    env.update(over)
    return c.sign(env, key.sign_digest)


def raw(env: dict[str, object]) -> bytes:
    return json.dumps(env).encode()


def reject(payload: bytes, code: str) -> c.CommandRejected:
    with pytest.raises(c.CommandRejected) as info:
        c.verify(payload, POLICY, now_ms=NOW)
    assert info.value.code == code, info.value.message
    return info.value


def test_a_signed_command_verifies() -> None:
    cmd = c.verify(raw(envelope(cmd="read_register", args={
        "device": "meter1", "table": "holding", "address": 0, "count": 2})), POLICY, now_ms=NOW)
    assert (cmd.cmd, cmd.op, cmd.nonce, cmd.id) == ("read_register", OP.address.lower(), "0x1",
                                                    "c-1")


def test_golden_canonical_bytes_and_digest() -> None:
    env = c.make(gw=GW, cmd="ping", args={}, op="0x" + "11" * 20, id="a", nonce=5, exp_ms=10)
    assert c.canonical(env) == (
        b'{"args":{},"cmd":"ping","exp":10,"gw":"0x' + b"ab" * 20 + b'","id":"a","nonce":5,'
        b'"op":"0x' + b"11" * 20 + b'","v":1}')
    # Same digest as eth-account's encode_defunct + personal_sign, the operator wallets' path.
    from eth_account import Account
    from eth_account.messages import encode_defunct
    signed = Account.sign_message(encode_defunct(c.canonical(env)), OP.secret())
    assert c.sign(env, OP.sign_digest)["sig"] == "0x" + bytes(signed.signature).hex()


def test_altered_command_is_forged() -> None:
    env = envelope()
    env["cmd"] = "restart"
    assert "altered" in reject(raw(env), c.Code.FORGED).message


def test_signed_by_someone_else_claiming_the_operator_is_forged() -> None:
    env = envelope(key=OTHER, op=OP.address.lower())
    reject(raw(env), c.Code.FORGED)


def test_garbage_signature_is_forged() -> None:
    env = envelope()
    env["sig"] = "0x" + "00" * 65
    reject(raw(env), c.Code.FORGED)


def test_unknown_operator() -> None:
    err = reject(raw(envelope(key=OTHER)), c.Code.UNKNOWN_OPERATOR)
    assert OTHER.address.lower() in err.message and err.id == "c-1"


def test_wrong_target() -> None:
    reject(raw(envelope(gw="0x" + "cd" * 20)), c.Code.WRONG_TARGET)


def test_expired_allows_clock_skew_but_not_more() -> None:
    c.verify(raw(envelope(exp=NOW - 10_000)), POLICY, now_ms=NOW)  # within 30 s skew
    assert "expired" in reject(raw(envelope(exp=NOW - 31_000)), c.Code.EXPIRED).message


def test_lifetime_too_long() -> None:
    reject(raw(envelope(exp=NOW + 3_600_000)), c.Code.LIFETIME)


def test_unknown_command_and_bad_args() -> None:
    reject(raw(envelope(cmd="format_disk")), c.Code.UNKNOWN_COMMAND)
    reject(raw(envelope(cmd="set_log_level", args={"level": "TRACE"})), c.Code.BAD_ARGS)
    reject(raw(envelope(cmd="read_register", args={"device": "m", "table": "holding",
                                                   "address": 0, "count": 126})), c.Code.BAD_ARGS)
    reject(raw(envelope(cmd="resend", args={"seq_from": 5, "seq_to": 4})), c.Code.BAD_ARGS)
    reject(raw(envelope(cmd="ping", args={"x": 1})), c.Code.BAD_ARGS)
    reject(raw(envelope(cmd="write_point", args={"device": "d", "name": "n"})), c.Code.BAD_ARGS)


@pytest.mark.parametrize("payload", [
    b"", b"\xff\xfe", b"[]", b"null", b'{"id": 5}', b"{" * 100_000, b'{"v":1,"a":NaN,"id":"x"}',
])
def test_malformed_without_readable_id(payload: bytes) -> None:
    with pytest.raises(c.CommandRejected) as info:
        c.verify(payload, POLICY, now_ms=NOW)
    assert info.value.code in (c.Code.MALFORMED, c.Code.TOO_LARGE) and info.value.id is None


def test_malformed_keeps_a_readable_id() -> None:
    env = envelope()
    del env["exp"]
    assert reject(raw(env), c.Code.MALFORMED).id == "c-1"


def test_too_large() -> None:
    reject(b" " * (c.MAX_BYTES + 1), c.Code.TOO_LARGE)


def test_hex_and_int_nonces_normalise_to_the_same_key() -> None:
    assert c.nonce_key(255) == c.nonce_key("0xFF") == "0xff"
    with pytest.raises(ValueError):
        c.nonce_key(-1)
