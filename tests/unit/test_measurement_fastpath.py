"""The measurement hot path's shortcuts agree with the plain definitions they replace.

each keccak backend vs pycryptodome's public API, string scaling vs Decimal, cached Reading frames vs the
field-by-field EIP-712 encoding, hand-written wire JSON vs json.dumps. The golden and eth-account
tests in test_measurement.py pin the format itself; these pin the equivalences on random input.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import struct
import threading
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.measurement.eip712 import (
    KECCAK_BACKEND,
    _public_keccak256,
    _pysha3_keccak256,
    _raw_keccak256,
    enc_address,
    enc_bool,
    enc_int,
    enc_uint,
    keccak256,
)
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    MEASUREMENT_TYPEHASH,
    READING_TYPEHASH,
    Measurement,
    MeasurementChain,
    ScaledReading,
    SignedMeasurement,
    measurement_domain,
    scale_readings,
    scale_value,
    sign,
    struct_hash,
)
from gateway.measurement.wire import MAX_TEXT, encode_batch, to_wire
from gateway.perception.readings import Quality, Reading

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


# Every backend this machine can load; each must equal the public API on every input.
BACKENDS = {name: fn for name, fn in (("safe-pysha3", _pysha3_keccak256()),
                                      ("pycryptodome-raw", _raw_keccak256())) if fn is not None}


def test_keccak_is_a_c_backend_and_matches_known_vectors() -> None:
    # keccak256("") and keccak256("abc"): the Ethereum (pre-FIPS padding) values.
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak256(b"abc").hex() == (
        "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45")
    assert keccak256 is not _public_keccak256, "no C path loaded: signing is 3x slower"
    assert KECCAK_BACKEND in BACKENDS
    assert "pycryptodome-raw" in BACKENDS, "pycryptodome's raw path is the fallback on armv7"
    if platform.machine() in ("x86_64", "aarch64"):  # setup.cfg installs safe-pysha3 there
        assert KECCAK_BACKEND == "safe-pysha3", "safe-pysha3 is missing: pip install -e .[test]"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
def test_each_keccak_backend_matches_public_api(backend: str, data: bytes) -> None:
    assert BACKENDS[backend](data) == _public_keccak256(data)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_keccak_backends_are_thread_safe(backend: str) -> None:
    keccak = BACKENDS[backend]
    inputs = [bytes([i]) * (i * 7 % 300) for i in range(256)]
    wrong: list[int] = []

    def work() -> None:
        for _ in range(20):
            wrong.extend(i for i, data in enumerate(inputs)
                         if keccak(data) != _public_keccak256(data))

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


def float32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]  # type: ignore[no-any-return]


# Values a hair either side of a tie (k + 0.5) / 1000, and exactly on it: where the float fast path
# must hand over to the decimal one.
near_ties = st.builds(lambda k, steps: functools.reduce(
    lambda v, _: math.nextafter(v, math.inf if steps > 0 else -math.inf), range(abs(steps)),
    (k + 0.5) / 1000), st.integers(-10**12, 10**12), st.integers(-4, 4))


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=32, allow_nan=False, allow_infinity=False),  # what a float32 register decodes to
    st.decimals(min_value=-10**7, max_value=10**7, places=4).map(float),
    st.decimals(min_value=-10**6, max_value=10**6, places=3).map(float).map(float32),
    st.integers(-10**9, 10**9).map(lambda n: n / 10_000),
    near_ties))
def test_scale_value_matches_decimal(value: float) -> None:
    assert scale_value(value) == decimal_scale(value)


# Ties either way, -0.0, both sides of the exact-integer shortcut (2^53), the exponent forms repr
# switches to (below 1e-4, from 1e16), and the int256 edge.
@pytest.mark.parametrize("value", [
    0.0025, 0.0035, -0.0005, 0.9995, 1.0005, -0.0, 2.0 ** 53, 2.0 ** 53 - 1, -(2.0 ** 53),
    1e16, 1e23, 5.7e76, 6e76, 1.5e-4, 5e-4, 9.99e-5, 5e-324, -5e-324, 2.0 ** 49 / 1000,
    -(2.0 ** 49) / 1000, 2.0 ** 49 / 1000 + 0.0005, 562949953421.3125, float32(230.17),
    float32(0.0025), 2.5e-3 + 2e-19, 2.5e-3 - 4e-19])
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


device_readings = st.builds(
    Reading, texts,
    st.one_of(st.none(), st.floats(), st.floats(width=32), st.integers(-10**30, 10**30),
              st.booleans(), texts, near_ties),
    texts, st.sampled_from(list(Quality)), st.just(0.0))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(device_readings, readings), max_size=8), min_size=1, max_size=4),
       texts)
def test_chain_scales_and_hashes_in_one_pass_like_the_plain_functions(
        samples: list[list[Reading | ScaledReading]], device: str) -> None:
    chain = MeasurementChain(gateway=KEY.address)
    for sample in samples:
        signed = chain.next_signed(KEY, DOMAIN, device=device, time_ms=7, clock_synced=True,
                                   readings=sample)
        assert signed.measurement.readings == scale_readings(sample)
        assert signed.leaf == struct_hash(signed.measurement) == chain.last_hash
        # The readings' JSON made while hashing is what the wire form would be without it.
        assert to_wire(signed) == dumps({"v": 1, "gw": KEY.address, **dumps_item(signed)})


def test_wire_json_made_while_hashing_is_not_used_for_other_readings() -> None:
    chain = MeasurementChain(gateway=KEY.address)
    signed = chain.next_signed(KEY, DOMAIN, device="d", time_ms=1, clock_synced=True,
                               readings=[ScaledReading("p", 1, "W", 0)])
    other = dataclasses.replace(signed, measurement=dataclasses.replace(
        signed.measurement, readings=(ScaledReading("p", 2, "W", 0),)))
    assert b'"r":[["p",1,"W",0]]' in to_wire(signed)
    assert b'"r":[["p",2,"W",0]]' in to_wire(other)


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
