"""The measurement hot path's shortcuts agree with the plain definitions they replace.

raw keccak vs pycryptodome's public API, string scaling vs Decimal, cached Reading frames vs the
field-by-field EIP-712 encoding, hand-written wire JSON vs json.dumps. The golden and eth-account
tests in test_measurement.py pin the format itself; these pin the equivalences on random input.
"""

from __future__ import annotations

import json
import math
import threading
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.eip712 import (
    _public_keccak256,
    enc_address,
    enc_bool,
    enc_int,
    enc_uint,
    keccak256,
)
from gateway.core.identity import GatewayKey
from gateway.core.measurement import (
    MAX_TEXT,
    MEASUREMENT_TYPEHASH,
    READING_TYPEHASH,
    Measurement,
    ScaledReading,
    SignedMeasurement,
    encode_batch,
    measurement_domain,
    scale_value,
    sign,
    struct_hash,
    to_wire,
)

KEY = GatewayKey.from_secret(bytes.fromhex(
    "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))  # TEST-ONLY key
DOMAIN = measurement_domain()

texts = st.text(st.characters(codec="utf-8"), max_size=MAX_TEXT)  # no lone surrogates
readings = st.builds(ScaledReading, texts, st.integers(-(1 << 255), (1 << 255) - 1), texts,
                     st.sampled_from([0, 1, 2]))
records = st.builds(
    lambda dev, seq, t, sync, rs, prev: Measurement(
        gateway=KEY.address, device=dev, seq=seq, time_ms=t, clock_synced=sync,
        readings=tuple(rs), prev_hash=prev),
    texts, st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1), st.booleans(),
    st.lists(readings, max_size=6), st.binary(min_size=32, max_size=32))


def test_keccak_is_the_raw_path_and_matches_known_vectors() -> None:
    # keccak256("") and keccak256("abc"): the Ethereum (pre-FIPS padding) values.
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak256(b"abc").hex() == (
        "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45")
    assert keccak256 is not _public_keccak256, "the raw C path did not load: signing is 2x slower"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_raw_keccak_matches_public_api(data: bytes) -> None:
    assert keccak256(data) == _public_keccak256(data)


def test_raw_keccak_state_is_per_thread() -> None:
    inputs = [bytes([i]) * (i * 7 % 300) for i in range(256)]
    wrong: list[int] = []

    def work() -> None:
        for _ in range(20):
            wrong.extend(i for i, data in enumerate(inputs)
                         if keccak256(data) != _public_keccak256(data))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def decimal_scale(value: float) -> int | None:
    """The definition in docs/measurements.md, the slow way."""
    if not math.isfinite(value):
        return None
    scaled = int(Decimal(repr(value)).scaleb(3).to_integral_value(ROUND_HALF_EVEN))
    return scaled if -(1 << 255) <= scaled < (1 << 255) else None


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-10**7, max_value=10**7, places=4).map(float),
    st.integers(-10**9, 10**9).map(lambda n: n / 10_000)))
def test_scale_value_matches_decimal(value: float) -> None:
    assert scale_value(value) == decimal_scale(value)


# Ties either way, -0.0, both sides of the exact-integer shortcut (2^53), the exponent forms repr
# switches to (below 1e-4, from 1e16), and the int256 edge.
@pytest.mark.parametrize("value", [
    0.0025, 0.0035, -0.0005, 0.9995, 1.0005, -0.0, 2.0 ** 53, 2.0 ** 53 - 1, -(2.0 ** 53),
    1e16, 1e23, 5.7e76, 6e76, 1.5e-4, 5e-4, 9.99e-5])
def test_scale_value_edges_match_decimal(value: float) -> None:
    assert scale_value(value) == decimal_scale(value)


def reference_struct_hash(m: Measurement) -> bytes:
    """hashStruct(Measurement) field by field, every keccak through the public API."""
    k = _public_keccak256

    def text(s: str) -> bytes:
        return k(s.encode("utf-8"))

    items = b"".join(k(READING_TYPEHASH + text(r.name) + enc_int(r.value) + text(r.unit)
                       + enc_uint(r.quality, 8)) for r in m.readings)
    return k(MEASUREMENT_TYPEHASH + enc_address(bytes.fromhex(m.gateway[2:])) + text(m.device)
             + enc_uint(m.seq, 64) + enc_uint(m.time_ms, 64) + enc_bool(m.clock_synced)
             + k(items) + m.prev_hash)


@settings(max_examples=200, deadline=None)
@given(records)
def test_struct_hash_matches_field_by_field_encoding(m: Measurement) -> None:
    assert struct_hash(m) == reference_struct_hash(m)


@pytest.mark.parametrize("value", [1 << 255, -(1 << 255) - 1])
def test_reading_value_outside_int256_is_a_value_error(value: int) -> None:
    m = Measurement(gateway=KEY.address, device="d", seq=1, time_ms=0, clock_synced=True,
                    readings=(ScaledReading("p", value, "W", 0),), prev_hash=bytes(32))
    with pytest.raises(ValueError, match=r"'p'.*int256"):
        struct_hash(m)


def dumps_item(sm: SignedMeasurement) -> dict[str, object]:
    m = sm.measurement
    return {"dev": m.device, "seq": m.seq, "t": m.time_ms, "sync": m.clock_synced,
            "r": [[r.name, r.value, r.unit, r.quality] for r in m.readings],
            "prev": m.prev_hash.hex(), "sig": sm.signature.hex()}


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@settings(max_examples=150, deadline=None)
@given(st.lists(records, min_size=1, max_size=5))
def test_wire_bytes_are_those_of_json_dumps(ms: list[Measurement]) -> None:
    signed = [sign(m, KEY, DOMAIN) for m in ms]
    for sm in signed:
        assert to_wire(sm) == dumps({"v": 1, "gw": KEY.address, **dumps_item(sm)})
    assert encode_batch(signed) == dumps({"v": 1, "gw": KEY.address,
                                          "m": [dumps_item(sm) for sm in signed]})
