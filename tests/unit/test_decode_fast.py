"""The compiled read decoder (decoders.ReadDecoder) gives exactly the readings of the reference decode.

For every Modbus profile in device_profiles/ and tests/data/profiles/, and a synthetic profile with
every register type in every byte/word order, scale factors, offsets, sentinels, overlapping points,
strings and coils: random register words (biased to sentinels, NaN and infinity patterns and small
scale factors) decode to the same values (bit for bit: type, and the sign of zero), qualities and error
texts through decode_read as through decode_read_reference, and leave the same scale factors behind.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.profiles import load_profile, profile_paths
from gateway.device.device import DeviceSpec, DeviceState
from gateway.perception.codec import decode_raw, packed_reader, response_packer
from gateway.perception.decoders import ReadDecoder, decode_read, decode_read_reference
from gateway.perception.planner import PlannedRead
from gateway.perception.profile_schema import profile_from_mapping
from gateway.perception.profiles import BIT_TABLES, REGISTER_COUNT, Point, Profile
from gateway.perception.readings import Reading

TEST_PROFILES = Path(__file__).resolve().parents[1] / "data" / "profiles"
NUMERIC = [t for t in REGISTER_COUNT if t != "bool"]
ORDERS = ("big", "little")


def synthetic_profile() -> Profile:
    """Every numeric type in every byte/word order, with the decode's special cases around them."""
    registers: list[dict[str, Any]] = []
    address = 0
    for rtype in NUMERIC:
        for bo in ORDERS:
            for wo in ORDERS:
                registers.append({"name": f"x_{rtype}_{bo}_{wo}", "table": "holding", "address": address,
                                  "type": rtype, "unit": "", "byte_order": bo, "word_order": wo,
                                  "scale": 0.1 if rtype != "s16" else 1, "offset": -3.5 if bo == wo else 0,
                                  "invalid": [0x8000, 0xFFFFFFFF, 0x7FC00000]})
                address += REGISTER_COUNT[rtype]
    registers += [
        {"name": "sf_current", "table": "holding", "address": address, "type": "s16", "unit": ""},
        {"name": "sf_power", "table": "holding", "address": address + 1, "type": "u16", "unit": ""},
        {"name": "current_l1_a", "table": "holding", "address": address + 2, "type": "s16", "unit": "A",
         "scale_factor": "sf_current"},
        {"name": "power_l1_w", "table": "holding", "address": address + 3, "type": "f32", "unit": "W",
         "scale_factor": "sf_power", "offset": 1.25},
        {"name": "energy_l1_wh", "table": "holding", "address": address + 5, "type": "u64", "unit": "Wh",
         "scale_factor": "sf_current", "invalid": [0xFFFF_FFFF_FFFF_FFFF]},
        # Overlapping points: the low half of the counter above, and a second view of one register.
        {"name": "energy_low_wh", "table": "holding", "address": address + 7, "type": "u32", "unit": "Wh"},
        {"name": "current_raw", "table": "holding", "address": address + 2, "type": "u16", "unit": ""},
        {"name": "model_big", "table": "holding", "address": address + 9, "type": "string", "length": 3,
         "unit": "", "invalid": [0x202020202020]},
        {"name": "model_little", "table": "holding", "address": address + 12, "type": "string",
         "length": 2, "unit": "", "byte_order": "little"},
        {"name": "relay_1_on", "table": "coil", "address": 0, "type": "bool", "unit": ""},
        {"name": "relay_3_on", "table": "coil", "address": 2, "type": "bool", "unit": ""},
        {"name": "alarm_on", "table": "discrete", "address": 5, "type": "bool", "unit": ""},
        # The scale factor of the temperature lives in another read (input table, read later).
        {"name": "temperature_c", "table": "input", "address": 0, "type": "s16", "unit": "C",
         "scale_factor": "sf_power"},
    ]
    return profile_from_mapping({"schema": 1, "kind": "meter", "vendor": "Test", "model": "decode",
                                 "source": "test data", "phases": 1, "transport": {},
                                 "registers": registers}, path=Path("synthetic_decode.yaml"))


def all_profiles() -> list[Profile]:
    paths = list(profile_paths()) + sorted(TEST_PROFILES.glob("*/*.yaml"))
    profiles = [load_profile(path) for path in paths] + [synthetic_profile()]
    # DL/T 645 meters are decoded by gateway.device.dlt645, not by decode_read.
    return [p for p in profiles if p.transport.protocol == "modbus"]


PROFILES = {p.name: p for p in all_profiles()}

# Word values worth hitting often: sentinels, sign edges, NaN and infinity of f32/f64, small scale
# factors (positive and negative, as s16), a few printable bytes.
SPECIAL = sorted({0, 1, 2, 3, 0x7FFF, 0x8000, 0xFFFF, 0x7FC0, 0x7F80, 0xFF80, 0x7FF8, 0x7FF0, 0xFFF0,
                  0x2020, 0x4142, *range(0, 12), *(0x10000 - k for k in range(1, 12))})
WORD = st.one_of(st.integers(0, 0xFFFF), st.sampled_from(SPECIAL))


def write_raw(read: PlannedRead, words: list[int], point: Point, raw: int) -> None:
    """Put a raw value over a point's words, high word first (as the "invalid" values are written)."""
    start = point.address - read.address
    for i in range(point.count):
        words[start + i] = (raw >> (16 * (point.count - 1 - i))) & 0xFFFF


def sentinel_words(read: PlannedRead, words: list[int], data: st.DataObject) -> None:
    """Write a point's own "not available" value over its words, sometimes."""
    for point in read.points:
        if point.invalid and data.draw(st.integers(0, 3)) == 0:
            write_raw(read, words, point, data.draw(st.sampled_from(point.invalid)))


def bits_of(value: object) -> object:
    """What "identical" means for a value: its type and, for a float, its IEEE 754 bit pattern."""
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))
    return (type(value).__name__, value)


def key(reading: Reading) -> tuple[object, ...]:
    return (reading.name, bits_of(reading.value), reading.unit, reading.quality, reading.time, reading.error)


@pytest.mark.parametrize("name", sorted(PROFILES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decoder_matches_reference(name: str, data: st.DataObject) -> None:
    profile = PROFILES[name]
    fast = DeviceState(DeviceSpec(name="d", profile=profile, unit=1))
    slow = DeviceState(DeviceSpec(name="d", profile=profile, unit=1))
    # Scale factors left by an earlier cycle, some far out of float range (10.0 ** 400 overflows).
    for sf in sorted(fast.sf_names):
        if data.draw(st.booleans()):
            fast.scale_factors[sf] = slow.scale_factors[sf] = data.draw(
                st.one_of(st.integers(-12, 12), st.integers(-32768, 32767)))
    reads = fast.planner.plan(profile.points).reads
    assert reads, f"{name}: nothing to read"
    for cycle in range(2):  # the second cycle runs the cached decoders
        for read in reads:
            if read.table in BIT_TABLES:
                words = data.draw(st.lists(st.integers(0, 1), min_size=read.count, max_size=read.count))
            else:
                words = data.draw(st.lists(WORD, min_size=read.count, max_size=read.count))
                sentinel_words(read, words, data)
            now = 1_700_000_000.0 + cycle
            expected = decode_read_reference(slow, read, words, now)
            got = decode_read(fast, read, words, now)
            assert [key(r) for r in got] == [key(r) for r in expected], (name, read, words)
            assert got == expected  # every field of Reading, whichever it has
            assert fast.scale_factors == slow.scale_factors
            assert isinstance(read.decoder, ReadDecoder)


def test_the_synthetic_profile_hits_every_case() -> None:
    """The random words above do reach sentinels, NaN, overflowing scale factors and strings."""
    profile = PROFILES["synthetic_decode"]
    state = DeviceState(DeviceSpec(name="d", profile=profile, unit=1))
    state.scale_factors["sf_power"] = 400
    errors: set[str] = set()
    for read in state.planner.plan(profile.points).reads:
        words = [0x7FC0 if read.table not in BIT_TABLES else 1] * read.count
        for point in read.points:
            if point.name.startswith("x_u64"):
                write_raw(read, words, point, 0xFFFFFFFF)
        errors.update(r.error for r in decode_read(state, read, words, 0.0))
    assert {"not available", "NaN", "(34, 'Numerical result out of range')"} <= errors


def test_the_decoder_is_compiled_once_per_read() -> None:
    profile = PROFILES["eastron_sdm630"]
    state = DeviceState(DeviceSpec(name="d", profile=profile, unit=1))
    read = state.planner.plan(profile.points).reads[0]
    decode_read(state, read, [0] * read.count, 0.0)
    first = read.decoder
    decode_read(state, read, [0] * read.count, 1.0)
    assert first is not None and read.decoder is first
    assert state.planner.plan(profile.points).reads[0] is read  # the planner hands out the same read


# Coils only: a missing bit is an error reading, never an exception.
@pytest.mark.parametrize(("name", "kinds"), [("eastron_sdm630", {"readings", "raised"}),
                                             ("synthetic_decode", {"readings", "raised"}),
                                             ("waveshare_relay8", {"readings"})])
def test_short_padded_and_bad_responses_match_reference(name: str, kinds: set[str]) -> None:
    profile = PROFILES[name]
    fast = DeviceState(DeviceSpec(name="d", profile=profile, unit=1))
    slow = DeviceState(DeviceSpec(name="d", profile=profile, unit=1))
    outcomes = set()
    for read in fast.planner.plan(profile.points).reads:
        # Short by one word, or none at all; padded (coils come in whole bytes); out of 16-bit range.
        for words in ([1] * (read.count - 1), [], [1] * (read.count + 7), [0x10000] * read.count):
            expected = outcome(decode_read_reference, slow, read, words)
            assert outcome(decode_read, fast, read, words) == expected, (read, words)
            outcomes.add(expected[0])
    assert outcomes == kinds


def outcome(decode: Any, state: DeviceState, read: PlannedRead, words: list[int]) -> tuple[object, ...]:
    try:
        readings = decode(state, read, words, 0.0)
    except Exception as exc:  # the reference path's own failure is what must be matched
        return ("raised", type(exc).__name__, str(exc))
    return ("readings", [key(r) for r in readings])


class Enc:
    def __init__(self, rtype: str, bo: str, wo: str) -> None:
        self.type, self.count, self.byte_order, self.word_order = rtype, REGISTER_COUNT[rtype], bo, wo


@given(st.sampled_from(NUMERIC), st.sampled_from(ORDERS), st.sampled_from(ORDERS),
       st.lists(WORD, min_size=4, max_size=12), st.data())
def test_packed_reader_reads_what_decode_raw_reads(rtype: str, bo: str, wo: str, response: list[int],
                                                    data: st.DataObject) -> None:
    enc = Enc(rtype, bo, wo)
    start = data.draw(st.integers(0, len(response) - enc.count))
    unpacker, little = packed_reader(enc)
    packed = response_packer(len(response), little=little).pack(*response)
    (got,) = unpacker.unpack_from(packed, 2 * start)
    expected = decode_raw(enc, response[start:start + enc.count])
    assert type(got) is type(expected)
    assert got == expected or (math.isnan(got) and math.isnan(expected))  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "bulk", "little"), [("eastron_sdm630", True, False),
                                                      ("carlogavazzi_em24", True, True),
                                                      ("abb_b23", False, False),
                                                      ("synthetic_decode", False, False)])
def test_reads_of_plain_numbers_decode_with_one_unpack(name: str, bulk: bool, little: bool) -> None:
    """Which profiles take the one-unpack path (so test_decoder_matches_reference covers it in both
    word orders): plain numbers do; sentinels, scale factors, strings and bits do not."""
    profile = PROFILES[name]
    state = DeviceState(DeviceSpec(name="d", profile=profile, unit=1))
    for read in state.planner.plan(profile.points).reads:
        decoder = ReadDecoder(read, state.sf_names)
        assert (decoder._bulk is not None) == bulk, (name, read)
        if bulk:
            assert decoder._bulk[0].format.startswith("<" if little else ">")  # type: ignore[index]
