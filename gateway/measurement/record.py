"""The signed measurement: an EIP-712 struct per poll sample, hash-chained and signed.

Types (docs/measurements.md has the full contract):

    Reading(string name,int256 value,string unit,uint8 quality)
    Measurement(address gateway,string device,uint64 seq,uint64 time,bool clockSynced,
                Reading[] readings,bytes32 prevHash)

`seq` rises by exactly 1 per gateway (the first record is seq 1) and `prevHash` is the struct hash of
the record with seq - 1 (32 zero bytes for seq 1). A record's struct hash is its Merkle leaf. Values
are fixed-point: value x 10^3, rounded half-to-even from the value's shortest decimal form.

Everything here is pure: time is an argument, and `MeasurementChain` is the only state (last seq and
last hash), handed in from the store at start-up. The wire form (JSON records and batches, and their
strict parsing) is gateway/measurement/wire.py; only the readings' JSON is written here, because the
signing hot path writes it while it hashes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from gateway.measurement.eip712 import (
    ZERO32,
    Domain,
    address_bytes,
    enc_address,
    enc_bool,
    enc_bytes32,
    enc_uint,
    hash_text,
    keccak256,
    keccak_new,
    type_hash,
    typed_digest,
)
from gateway.measurement.identity import GatewayKey, recover_address
from gateway.perception.readings import Quality, Reading

READING_TYPE = "Reading(string name,int256 value,string unit,uint8 quality)"
# encodeType lists the primary type, then referenced struct types sorted by name (EIP-712,
# "Definition of encodeType").
MEASUREMENT_TYPE = ("Measurement(address gateway,string device,uint64 seq,uint64 time,"
                    "bool clockSynced,Reading[] readings,bytes32 prevHash)" + READING_TYPE)
READING_TYPEHASH = type_hash(READING_TYPE)
MEASUREMENT_TYPEHASH = type_hash(MEASUREMENT_TYPE)

DOMAIN_NAME = "drgw"
DOMAIN_VERSION = "1"
DEFAULT_CHAIN_ID = 1
VALUE_DECIMALS = 3  # int256 value = round_half_even(value x 10^3)
QUALITY_CODES = {Quality.OK: 0, Quality.STALE: 1, Quality.ERROR: 2}
INT256_MIN, INT256_MAX = -(1 << 255), (1 << 255) - 1  # the range of a Reading's value


def measurement_domain(chain_id: int = DEFAULT_CHAIN_ID) -> Domain:
    """The EIP-712 domain of measurements: ("drgw", "1", chainId), no verifyingContract."""
    return Domain.create(name=DOMAIN_NAME, version=DOMAIN_VERSION, chain_id=chain_id)


class ScaledReading(NamedTuple):
    """One Reading struct: a named fixed-point value (x 10^3) with its unit and quality code.

    A NamedTuple (like core.readings.Reading) because one is built per reading of every record."""

    name: str
    value: int
    unit: str
    quality: int  # 0 ok, 1 stale, 2 error


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    gateway: str  # checksum address
    device: str
    seq: int
    time_ms: int
    clock_synced: bool
    readings: tuple[ScaledReading, ...]
    prev_hash: bytes
    # The wire JSON of `readings`, made while they were hashed (MeasurementChain): (the tuple it was
    # made from, the text). Used only while that very tuple is still `readings`, so a record built
    # or replaced any other way is written from its fields.
    readings_json: tuple[tuple[ScaledReading, ...], str] | None = field(
        default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedMeasurement:
    """A record, its 65-byte signature (r || s || v) and its struct hash (`leaf`), computed when it
    was signed or decoded. Verification recomputes the hash rather than trusting `leaf`."""

    measurement: Measurement
    signature: bytes
    leaf: bytes


def scale_value(value: float | int) -> int | None:
    """value x 10^3 rounded half-to-even, from the shortest decimal that reads back as `value`
    (so 0.0025 -> 2, 0.0035 -> 4). None for NaN, infinities and values outside int256."""
    if isinstance(value, int):  # bool is an int: True -> 1000
        scaled = int(value) * 1000
    elif not math.isfinite(value):
        return None
    else:
        y = value * 1000.0
        if -_FAST_LIMIT < y < _FAST_LIMIT:
            whole = math.floor(y)
            frac = y - whole  # exact: a float's fractional part is a float
            # y is within 2^-51 |y| of 1000 x (shortest decimal of value): half an ulp of value
            # scaled by 1000, plus the product's own rounding. Unless that puts a tie within reach,
            # both round to the same integer; a near-tie takes the exact decimal path.
            if abs(frac - 0.5) > abs(y) * _TIE_SLACK:
                return whole + (frac > 0.5)
        scaled = _scale_decimal_text(repr(value))
    return scaled if INT256_MIN <= scaled <= INT256_MAX else None


# Below 2^49 the slack stays far under 1/2, so only the half-integer between floor(y) and
# floor(y) + 1 can lie within it; 2^-50 is twice the bound worked out above.
_FAST_LIMIT = float(1 << 49)
_FAST_VALUE = _FAST_LIMIT / 1000
_TIE_SLACK = 2.0 ** -50


def _scale_decimal_text(text: str) -> int:
    """round_half_even(Decimal(text) x 10^3) by string arithmetic: ~3x faster than Decimal for the
    plain "-123.4567" form that repr gives between 1e-4 and 1e16; the exponent form goes to Decimal."""
    if "e" in text:
        from decimal import ROUND_HALF_EVEN, Decimal  # rare (|value| < 1e-4 or >= 1e16): load late

        return int(Decimal(text).scaleb(VALUE_DECIMALS).to_integral_value(ROUND_HALF_EVEN))
    negative = text[0] == "-"
    whole, _, frac = text.lstrip("-").partition(".")
    scaled = int(whole + frac[:VALUE_DECIMALS].ljust(VALUE_DECIMALS, "0"))
    rest = frac[VALUE_DECIMALS:].rstrip("0")
    # Past the kept digits: above one half rounds up, exactly one half rounds to even.
    if rest and (rest > "5" or (rest == "5" and scaled & 1)):
        scaled += 1
    return -scaled if negative else scaled


def scale_reading(reading: Reading) -> ScaledReading:
    """A device Reading as a Reading struct. A missing or unrepresentable value becomes 0 with
    quality error; text values (serial numbers, firmware) are not measurements and raise ValueError."""
    value = reading.value
    if isinstance(value, str):
        raise ValueError(f"reading {reading.name!r} is text; only numeric readings are measured")
    quality = QUALITY_CODES[reading.quality]
    scaled = None if value is None else scale_value(value)
    if scaled is None:
        return ScaledReading(reading.name, 0, reading.unit, QUALITY_CODES[Quality.ERROR])
    return ScaledReading(reading.name, scaled, reading.unit, quality)


def scale_readings(readings: Iterable[Reading | ScaledReading]) -> tuple[ScaledReading, ...]:
    """Reading structs for a sample's readings; text-valued readings are left out."""
    out = []
    error = QUALITY_CODES[Quality.ERROR]
    for r in readings:  # scale_reading inlined: this runs for every reading of every record
        if isinstance(r, ScaledReading):
            out.append(r)
            continue
        value = r.value
        if isinstance(value, str):
            continue
        scaled = None if value is None else scale_value(value)
        out.append(ScaledReading(r.name, 0, r.unit, error) if scaled is None
                   else ScaledReading(r.name, scaled, r.unit, QUALITY_CODES[r.quality]))
    return tuple(out)


# A pure memo, like hash_text's: a Reading's encoding around its value depends only on (name, unit,
# quality), which repeat in every record of a device; only the 32 value bytes change.
@lru_cache(maxsize=4096)
def _reading_frame(name: str, unit: str, quality: int) -> tuple[bytes, bytes]:
    """(typeHash || keccak(name), keccak(unit) || uint8 quality): the bytes either side of `value`."""
    return READING_TYPEHASH + hash_text(name), hash_text(unit) + enc_uint(quality, 8)


@lru_cache(maxsize=1024)
def _record_head(gateway: str, device: str) -> bytes:
    """typeHash || address || keccak(device): the first three fields of a device's records."""
    return MEASUREMENT_TYPEHASH + enc_address(address_bytes(gateway)) + hash_text(device)


def struct_hash(m: Measurement) -> bytes:
    """hashStruct(Measurement): the record's Merkle leaf. Raises ValueError for out-of-range fields."""
    items = []
    for name, value, unit, quality in m.readings:  # hashStruct(Reading) of each, then keccak of them all
        head, tail = _reading_frame(name, unit, quality)
        items.append(keccak256(head + _int256(name, value) + tail))
    return record_hash(m, keccak256(b"".join(items)))


def _int256(name: str, value: int) -> bytes:
    try:
        return value.to_bytes(32, "big", signed=True)
    except OverflowError:
        raise ValueError(f"reading {name!r}: {value} does not fit int256") from None


def record_hash(m: Measurement, readings_hash: bytes) -> bytes:
    """hashStruct(Measurement) given the hash of its Reading[] (keccak of the element hashes)."""
    return keccak256(
        _record_head(m.gateway, m.device) + enc_uint(m.seq, 64) + enc_uint(m.time_ms, 64)
        + enc_bool(m.clock_synced) + readings_hash + enc_bytes32(m.prev_hash))


def _scale_and_hash(readings: Iterable[Reading | ScaledReading]) -> tuple[
        tuple[ScaledReading, ...], bytes, str]:
    """scale_readings, the Reading[] hash of struct_hash and the readings' wire JSON in one pass: the
    signing hot path, with scale_value's float case and _int256 written out inline (a call costs
    ~0.1 us, x 2 a reading). The fast-path tests check that a chain's records, leaves and wire bytes
    equal the plain functions' results."""
    out: list[ScaledReading] = []
    items: list[bytes] = []
    wire: list[str] = []
    append, text, hash_, make = items.append, wire.append, keccak_new, tuple.__new__
    codes, error = QUALITY_CODES, QUALITY_CODES[Quality.ERROR]
    for r in readings:
        if isinstance(r, ScaledReading):
            name, scaled, unit, quality = r
        else:
            name, value, unit, q = r[:4]
            if value.__class__ is float and -_FAST_VALUE < value < _FAST_VALUE:
                y = value * 1000.0  # scale_value's float case
                whole = math.floor(y)
                frac = y - whole
                scaled = (whole + (frac > 0.5) if abs(frac - 0.5) > abs(y) * _TIE_SLACK
                          else _scale_decimal_text(repr(value)))
                quality = codes[q]
            elif isinstance(value, str):
                continue
            elif value is None or (exact := scale_value(value)) is None:
                scaled, quality = 0, error
            else:
                scaled, quality = exact, codes[q]
            r = make(ScaledReading, (name, scaled, unit, quality))  # ScaledReading(...) minus a frame
        out.append(r)
        head, tail, json_head, json_tail = reading_frames(name, unit, quality)
        try:
            append(hash_(head + scaled.to_bytes(32, "big", signed=True) + tail).digest())
        except OverflowError:
            raise ValueError(f"reading {name!r}: {scaled} does not fit int256") from None
        text(f"{json_head}{scaled:d}{json_tail}")
    return tuple(out), keccak256(b"".join(items)), ",".join(wire)


@lru_cache(maxsize=4096)
def reading_frames(name: str, unit: str, quality: int) -> tuple[bytes, bytes, str, str]:
    """_reading_frame and reading_json_frame in one lookup."""
    return _reading_frame(name, unit, quality) + reading_json_frame(name, unit, quality)


# The readings' wire JSON is written by hand rather than by json.dumps (~2.5x faster for a 21-reading
# record): the bytes are what json.dumps(obj, separators=(",", ":"), ensure_ascii=False) gives for the
# same values (tests/unit/test_measurement_fastpath.py checks it). Strings go through json.dumps once
# each (names, units and devices repeat); numbers are ints, written with "%d".
@lru_cache(maxsize=4096)
def json_string(text: str) -> str:
    """`text` as a JSON string, as json.dumps(text, ensure_ascii=False) writes it. Printable ASCII
    without a quote or a backslash is written as it is (json.dumps escapes only those two and
    the control characters, RFC 8259 section 7): a gateway's address or a device's name, once a
    record, on the master's ingest path."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


@lru_cache(maxsize=4096)
def reading_json_frame(name: str, unit: str, quality: int) -> tuple[str, str]:
    """The JSON either side of a reading's value: ('["name",', ',"unit",quality]')."""
    return f"[{json_string(name)},", f",{json_string(unit)},{quality:d}]"


def readings_json(m: Measurement) -> str:
    """The JSON array members of a record's readings: the text made while they were hashed when
    `m.readings` is still the very tuple it was made from, else written from the fields."""
    made = m.readings_json
    if made is not None and made[0] is m.readings:
        return made[1]
    parts = []
    for name, value, unit, quality in m.readings:
        head, tail = reading_json_frame(name, unit, quality)
        parts.append(f"{head}{value:d}{tail}")
    return ",".join(parts)


def signing_digest(m: Measurement, domain: Domain) -> bytes:
    """The 32 bytes that get signed: keccak256(0x1901 || domainSeparator || hashStruct(m))."""
    return typed_digest(domain.separator, struct_hash(m))


def sign(m: Measurement, key: GatewayKey, domain: Domain) -> SignedMeasurement:
    if m.gateway != key.address:
        raise ValueError(f"record names gateway {m.gateway} but the key is {key.address}")
    leaf = struct_hash(m)
    return SignedMeasurement(measurement=m, signature=key.sign_digest(
        typed_digest(domain.separator, leaf)), leaf=leaf)


def recover_signer(sm: SignedMeasurement, domain: Domain) -> str:
    """The address that signed `sm` (recomputed from the record). Raises ValueError when the
    signature is malformed; compare the result with `sm.measurement.gateway`."""
    return recover_address(signing_digest(sm.measurement, domain), sm.signature)


class MeasurementChain:
    """Hands out the next record of one gateway's chain: seq + 1, prevHash = last struct hash.

    Start it from the store's last committed (seq, hash) so a restart never reuses a seq.
    """

    __slots__ = ("gateway", "last_hash", "last_seq")

    def __init__(self, *, gateway: str, last_seq: int = 0, last_hash: bytes = ZERO32) -> None:
        if (last_seq == 0) != (last_hash == ZERO32):
            raise ValueError("an empty chain has seq 0 and a zero hash, a started one neither")
        self.gateway = gateway
        self.last_seq = last_seq
        self.last_hash = last_hash

    def next(self, device: str, time_ms: int, clock_synced: bool,
             readings: Iterable[Reading | ScaledReading]) -> Measurement:
        return self._advance(device, time_ms, clock_synced, readings)[0]

    def next_signed(self, key: GatewayKey, domain: Domain, *, device: str, time_ms: int,
                    clock_synced: bool,
                    readings: Iterable[Reading | ScaledReading]) -> SignedMeasurement:
        """`next` and `sign` in one step, hashing the record once (the hot path)."""
        if key.address != self.gateway:
            raise ValueError(f"chain of gateway {self.gateway} can't be signed by {key.address}")
        m, leaf = self._advance(device, time_ms, clock_synced, readings)
        return SignedMeasurement(measurement=m, signature=key.sign_digest(
            typed_digest(domain.separator, leaf)), leaf=leaf)

    def _advance(self, device: str, time_ms: int, clock_synced: bool,
                 readings: Iterable[Reading | ScaledReading]) -> tuple[Measurement, bytes]:
        scaled, readings_hash, readings_json = _scale_and_hash(readings)
        m = Measurement(gateway=self.gateway, device=device, seq=self.last_seq + 1,
                        time_ms=time_ms, clock_synced=clock_synced,
                        readings=scaled, prev_hash=self.last_hash,
                        readings_json=(scaled, readings_json))
        leaf = record_hash(m, readings_hash)  # validates ranges before the chain moves on
        self.last_seq, self.last_hash = m.seq, leaf
        return m, leaf
