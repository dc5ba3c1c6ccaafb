"""The master's fast verification path (gateway/master/verify.py, ingest.py) against independent
references: records built and signed by eth-account's EIP-712 encoder from the types written in
docs/measurements.md, wire payloads written with json.dumps from the wire contract, and the
verdicts of `drgw fleet watch`'s `signature_problem` (the path the master used before).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.master import verify
from gateway.master.ingest import Verifier
from gateway.master.watch import signature_problem
from gateway.measurement.record import measurement_domain
from gateway.measurement.wire import decode_batch

# secp256k1's group order n (SEC 2 v2, section 2.4.1)
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
KEY = "0x" + "4c" * 32  # a test-only key
ACCOUNT = Account.from_key(KEY)
GW = ACCOUNT.address.lower()
# docs/measurements.md, "EIP-712 types" and "Domain"
TYPES = {
    "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                     {"name": "chainId", "type": "uint256"}],
    "Reading": [{"name": "name", "type": "string"}, {"name": "value", "type": "int256"},
                {"name": "unit", "type": "string"}, {"name": "quality", "type": "uint8"}],
    "Measurement": [{"name": "gateway", "type": "address"}, {"name": "device", "type": "string"},
                    {"name": "seq", "type": "uint64"}, {"name": "time", "type": "uint64"},
                    {"name": "clockSynced", "type": "bool"},
                    {"name": "readings", "type": "Reading[]"},
                    {"name": "prevHash", "type": "bytes32"}],
}
DOMAIN = {"name": "drgw", "version": "1", "chainId": 1}


def _signable(seq: int, prev: bytes, readings: list[list[Any]], device: str = "meter") -> Any:
    message = {"gateway": ACCOUNT.address, "device": device, "seq": seq, "time": 1_700_000_000_000 + seq,
               "clockSynced": True, "prevHash": prev,
               "readings": [{"name": n, "value": v, "unit": u, "quality": q}
                            for n, v, u, q in readings]}
    return encode_typed_data(full_message={"types": TYPES, "primaryType": "Measurement",
                                           "domain": DOMAIN, "message": message})


def _chain(count: int, *, device: str = "meter") -> list[dict[str, Any]]:
    """`count` records of the test key, hash-chained: struct hash = eth-account's message body."""
    out, prev = [], bytes(32)
    for seq in range(1, count + 1):
        readings = [["power_w", 1000 * seq, "W", 0], ["energy_wh", -5 * seq, "Wh", 1]]
        signable = _signable(seq, prev, readings, device)
        sig = ACCOUNT.sign_message(signable).signature
        out.append({"dev": device, "seq": seq, "t": 1_700_000_000_000 + seq, "sync": True,
                    "r": readings, "prev": prev.hex(), "sig": bytes(sig).hex(),
                    "_leaf": bytes(signable.body), "_signable": signable})
        prev = bytes(signable.body)
    return out


def _payload(records: list[dict[str, Any]], gw: str = ACCOUNT.address) -> bytes:
    """The wire batch of docs/measurements.md, {"v":1,"gw":…,"m":[…]}, written by json.dumps."""
    items = [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]
    return json.dumps({"v": 1, "gw": gw, "m": items}, separators=(",", ":")).encode()


def _with_sig(record: dict[str, Any], r: int, s: int, v: int) -> dict[str, Any]:
    return {**record, "sig": (r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v,))).hex()}


def _rsv(record: dict[str, Any]) -> tuple[int, int, int]:
    sig = bytes.fromhex(record["sig"])
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]


def test_records_signed_by_eth_account_are_accepted_with_its_struct_hashes() -> None:
    records = _chain(4)
    check = verify.check_batch(GW, _payload(records), measurement_domain())
    assert check.rejected == []
    assert [(a.seq, a.leaf, a.prev) for a in check.accepted] == [
        (r["seq"], r["_leaf"], bytes.fromhex(r["prev"])) for r in records]


def test_each_forgery_gets_the_signer_eth_account_recovers_and_watchs_words() -> None:
    good = _chain(8)
    r, s, v = _rsv(good[6])
    other = Account.from_key("0x" + "5d" * 32)
    foreign = bytes(other.sign_message(good[4]["_signable"]).signature).hex()
    bad = [
        {**good[0], "r": [["power_w", 1001, "W", 0], good[0]["r"][1]]},  # altered after signing
        good[1],
        {**good[2], "sig": good[3]["sig"]},                   # another record's signature
        good[3],
        {**good[4], "sig": foreign},                          # an impostor's key
        _with_sig(good[5], *_rsv(good[5])[:2], 29),           # v outside 27/28
        _with_sig(good[6], r, N - s, 55 - v),                 # the malleated twin: high s (EIP-2)
        _with_sig(good[7], 0, _rsv(good[7])[1], 27),          # r = 0
    ]
    payload = _payload(bad)
    check = verify.check_batch(GW, payload, measurement_domain())
    reasons = {x.seq: x.reason for x in check.rejected if x.seq is not None}
    assert sorted(reasons) == [1, 3, 5, 6, 7, 8]
    assert [a.seq for a in check.accepted] == [2, 4]
    for seq in (1, 3, 5):  # the address eth-account recovers from the (wrong) digest, lower case
        record = bad[seq - 1]
        signer = Account.recover_message(good[seq - 1]["_signable"] if seq != 1 else
                                         _signable(1, bytes(32), record["r"]),
                                         signature=bytes.fromhex(record["sig"]))
        assert f"signed by {signer.lower()}," in reasons[seq]
    assert reasons[6] == "bad signature: signature v must be 27 or 28, got 29"
    assert reasons[7] == reasons[8] == ("bad signature: signature r or s out of range (high s is "
                                        "rejected, EIP-2)")
    # the twin is a valid ECDSA signature of the same key, which only the low-s rule refuses
    assert Account.recover_message(good[6]["_signable"],
                                   signature=bytes.fromhex(bad[6]["sig"])) == ACCOUNT.address
    # the same words as drgw fleet watch's check, record by record
    watch = {sm.measurement.seq: signature_problem(GW, sm, measurement_domain())
             for sm in decode_batch(payload)}
    assert {q: p for q, p in watch.items() if p is not None} == reasons


def test_a_topic_gateway_other_than_the_signer_is_refused() -> None:
    other = "0x" + "ab" * 20
    check = verify.check_batch(other, _payload(_chain(2)), measurement_domain())
    assert check.accepted == []
    assert all(f"signed by {GW}, record names {GW}, topic gateway is {other}" in x.reason
               for x in check.rejected)


def test_a_broken_chain_inside_the_batch_is_refused() -> None:
    records = _chain(3)
    records[2] = {**records[2], "prev": "00" * 32}  # re-signed below, so only the link is wrong
    signable = _signable(3, bytes(32), records[2]["r"])
    records[2]["sig"] = bytes(ACCOUNT.sign_message(signable).signature).hex()
    check = verify.check_batch(GW, _payload(records), measurement_domain())
    assert [a.seq for a in check.accepted] == [1, 2]
    assert check.rejected[0].reason == ("prev hash of seq 3 does not match the struct hash of "
                                        "seq 2: the chain is broken")


@pytest.mark.parametrize("payload, words", [
    (b"[" * 100_000, "nests deeper than 8 levels"),
    (b'{"v":1,"gw":"x","m":[[[[[[[[[[1]]]]]]]]]]}', "nests deeper than 8 levels"),
    (b'{"v":1,"gw":"' + b"[" * 50, "nests deeper"),  # wire.py counts an unclosed string's tail
    (b'{"v":1,"gw":"x"', "not JSON"),
    (b'"just a string"', "must be a JSON object"),
])
def test_malformed_payloads_get_the_wire_contracts_words(payload: bytes, words: str) -> None:
    check = verify.check_batch(GW, payload, measurement_domain())
    assert check.accepted == [] and len(check.rejected) == 1
    assert check.rejected[0].seq is None and words in check.rejected[0].reason


@pytest.mark.parametrize("device", ['[[[[[[[[[[{{{{{{{{', 'quote " and \\ backslash', "Zähler ]]}"])
def test_brackets_and_escapes_inside_strings_are_not_nesting(device: str) -> None:
    records = _chain(2, device=device)
    check = verify.check_batch(GW, _payload(records), measurement_domain())
    assert check.rejected == [] and [a.device for a in check.accepted] == [device, device]


def test_a_pool_of_threads_gives_the_checks_in_the_runs_order() -> None:
    records = _chain(30)
    run = [(GW, _payload(records[i:i + 3])) for i in range(0, 30, 3)]
    run.insert(4, (GW, b"not json"))
    verifier = Verifier(measurement_domain(), threads=3)
    try:
        checks = asyncio.run(verifier.check(run))
    finally:
        verifier.close()
    assert [[a.seq for a in c.accepted] for c in checks] == (
        [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], []]
        + [[q, q + 1, q + 2] for q in range(13, 31, 3)])
    assert "malformed batch" in checks[4].rejected[0].reason


def test_a_payload_the_checker_fails_on_is_kept_as_evidence() -> None:
    """A checker fault (here a domain the code cannot use) must not drop the payload: it is kept
    apart with the error, and the worker goes on."""
    payload = _payload(_chain(1))
    verifier = Verifier(object(), threads=1)  # type: ignore[arg-type]
    try:
        (check,) = verifier.check_chunk([(GW, payload)])
    finally:
        verifier.close()
    assert check.accepted == []
    assert check.rejected[0].raw == payload
    assert check.rejected[0].reason.startswith("not verified: the checker failed (AttributeError")


def test_the_struct_hash_is_eth_accounts_and_the_digest_its_signed_hash() -> None:
    (record,) = _chain(1)
    parsed = verify.parse(GW, _payload([record]), measurement_domain())
    signable = record["_signable"]
    assert parsed.records[0].leaf == bytes(signable.body)
    assert parsed.digests[0] == keccak(b"\x19" + signable.version + signable.header + signable.body)


def _depth(raw: bytes) -> int:
    """The nesting json's scanner recurses on, by a plain walk (strings skipped; a string left
    open runs to the end): written here, independent of verify.py's byte tricks."""
    depth = deepest = 0
    in_string = escaped = False
    for c in raw.decode("utf-8", "replace"):
        if in_string:
            in_string, escaped = (escaped or c != '"'), (not escaped and c == "\\")
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


_bracket_texts = st.text(alphabet='ab[]{}:, "', max_size=6)
_nested = st.recursive(st.integers(0, 9) | _bracket_texts,
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_bracket_texts, inner, max_size=2), max_leaves=14)


@settings(max_examples=400, deadline=None)
@given(_nested, st.integers(0, 3))
def test_the_nesting_guard_agrees_with_a_plain_walk(value: Any, cut: int) -> None:
    payload = json.dumps({"v": 1, "m": value}, separators=(",", ":")).encode()
    if cut:  # a truncated payload: an unterminated string or unclosed brackets
        payload = payload[:-cut]
    got = verify._parsed_json(payload)
    if _depth(payload) > 8 or b"\\" in payload:
        assert got == payload  # left to decode_batch, which words the error
    else:
        try:
            expected: Any = json.loads(payload)
        except ValueError:
            expected = payload
        assert got == expected
