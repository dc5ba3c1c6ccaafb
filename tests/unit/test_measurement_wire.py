"""Wire form and batches: round trips, field-naming errors, and fuzzed garbage."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import RemoteError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    Measurement,
    ScaledReading,
    SignedMeasurement,
    measurement_domain,
    recover_signer,
    sign,
)
from gateway.measurement.wire import (
    MAX_TEXT,
    MeasurementFormatError,
    decode_batch,
    encode_batch,
    from_wire,
    to_wire,
)

TEST_SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY = GatewayKey.from_secret(TEST_SECRET)  # TEST-ONLY key
DOMAIN = measurement_domain()

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=MAX_TEXT)
readings = st.builds(ScaledReading, texts, st.integers(-(1 << 255), (1 << 255) - 1), texts,
                     st.sampled_from([0, 1, 2]))
records = st.builds(
    lambda dev, seq, t, sync, rs, prev: Measurement(
        gateway=KEY.address, device=dev, seq=seq, time_ms=t, clock_synced=sync,
        readings=tuple(rs), prev_hash=prev),
    texts, st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1), st.booleans(),
    st.lists(readings, max_size=5), st.binary(min_size=32, max_size=32))


@settings(max_examples=150, deadline=None)
@given(records)
def test_wire_round_trip(m: Measurement) -> None:
    sm = sign(m, KEY, DOMAIN)
    back = from_wire(to_wire(sm))
    assert back == sm
    assert recover_signer(back, DOMAIN) == KEY.address


@settings(max_examples=50, deadline=None)
@given(st.lists(records, min_size=1, max_size=8))
def test_batch_round_trip(ms: list[Measurement]) -> None:
    signed = [sign(m, KEY, DOMAIN) for m in ms]
    assert decode_batch(encode_batch(signed)) == signed


def sample() -> SignedMeasurement:
    return sign(Measurement(gateway=KEY.address, device="m", seq=7, time_ms=9, clock_synced=False,
                            readings=(ScaledReading("p", 1, "W", 0),), prev_hash=bytes(32)),
                KEY, DOMAIN)


@pytest.mark.parametrize(("patch", "message"), [
    ({"seq": -1}, "'seq' is out of range"),
    ({"seq": True}, "'seq' has the wrong type"),
    ({"t": "5"}, "'t' has the wrong type"),
    ({"sig": "00"}, "'sig' must be 130 hex digits"),
    ({"prev": "zz" * 32}, "'prev' must be 64 hex digits"),
    ({"gw": KEY.address.lower()}, "'gw' must be the EIP-55 checksum"),
    ({"gw": "0x12"}, "'gw' is not an address"),
    ({"v": 2}, "'v' must be 1"),
    ({"v": True}, "'v' must be 1"),
    ({"r": [["p", 1.5, "W", 0]]}, "reading 0: value must be an int256"),
    ({"r": [["p", 1, "W", 3]]}, "reading 0: quality must be"),
    ({"r": [["p", 1, "W"]]}, "reading 0: a reading is"),
    ({"dev": "x" * (MAX_TEXT + 1)}, "'dev'"),
    ({"dev": "\ud800"}, "not valid Unicode"),
])
def test_errors_name_the_field(patch: dict[str, object], message: str) -> None:
    obj = json.loads(to_wire(sample()))
    obj.update(patch)
    with pytest.raises(MeasurementFormatError, match=message):
        from_wire(json.dumps(obj))


def test_missing_field_is_named() -> None:
    obj = json.loads(to_wire(sample()))
    del obj["sync"]
    with pytest.raises(MeasurementFormatError, match=r"seq 7.*'sync' is missing"):
        from_wire(obj)


def test_batch_errors_name_the_record() -> None:
    batch = json.loads(encode_batch([sample(), sample()]))
    batch["m"][1]["t"] = -5
    with pytest.raises(MeasurementFormatError, match=r"batch record 1 .*'t'"):
        decode_batch(json.dumps(batch).encode())
    with pytest.raises(MeasurementFormatError, match="'m' must hold"):
        decode_batch(b'{"v":1,"gw":"%s","m":[]}' % KEY.address.encode())


def test_tampered_record_recovers_another_signer() -> None:
    obj = json.loads(to_wire(sample()))
    obj["r"][0][1] = 2
    assert recover_signer(from_wire(obj), DOMAIN) != KEY.address


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["v", "gw", "m", "dev", "seq", "t", "sync", "r", "prev", "sig", "x"]),
        inner, max_size=9), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_garbage_raises_only_our_error(data: bytes) -> None:
    for parse in (from_wire, decode_batch):
        with contextlib.suppress(RemoteError):
            parse(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_payloads_raise_only_our_error(data: st.DataObject) -> None:
    payload = bytearray(encode_batch([sample(), sample()]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(RemoteError):
        decode_batch(bytes(payload))


def test_deep_nesting_is_our_error() -> None:
    with pytest.raises(MeasurementFormatError):
        decode_batch(b"[" * 100_000)


@pytest.mark.parametrize(("reading", "message"), [
    (["p", 1, "W" * (MAX_TEXT + 1), 0],
     "batch record 1 (seq 7) reading 1 unit: expected a string of at most 64 characters"),
    (["\ud800", 1, "W", 0], "batch record 1 (seq 7) reading 1 name: string is not valid Unicode"),
    ([7, 1, "W", 0], "batch record 1 (seq 7) reading 1 name: expected a string of at most 64"),
])
def test_a_bad_name_or_unit_is_placed_by_record_seq_and_reading(reading: list[object],
                                                                message: str) -> None:
    batch = json.loads(encode_batch([sample(), sample()]))
    batch["m"][1]["r"].append(reading)
    with pytest.raises(MeasurementFormatError) as caught:
        decode_batch(json.dumps(batch).encode())
    assert str(caught.value).startswith(message)
