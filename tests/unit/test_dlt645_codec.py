"""DL/T 645-2007 codec (gateway.protocol.dlt645, dlt645_values): golden frames, BCD formats, and the
parser fuzzed with hypothesis."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import RemoteError
from gateway.perception import dlt645_values as values
from gateway.perception.dlt645_values import BcdFormat
from gateway.protocol import dlt645
from gateway.protocol.dlt645 import (
    NEED_DATA,
    Discarded,
    Dlt645Parser,
    Frame,
    MeterError,
    RemoteProtocolError,
)


def events(parser: Dlt645Parser) -> list[Frame | Discarded]:
    out: list[Frame | Discarded] = []
    while (event := parser.next_event()) is not NEED_DATA:
        assert isinstance(event, Frame | Discarded)
        out.append(event)
    return out


def parse_all(data: bytes, chunks: list[int] | None = None) -> list[Frame | Discarded]:
    parser = Dlt645Parser()
    out: list[Frame | Discarded] = []
    cuts = sorted({c % (len(data) + 1) for c in chunks or []} | {0, len(data)})
    for start, end in itertools.pairwise(cuts):
        parser.feed(data[start:end])
        out += events(parser)
    return out


# ------------------------------------------------------------------------------ golden frames


def test_read_forward_active_energy_of_meter_1_golden_bytes() -> None:
    # By hand: FE FE FE FE wake-up; 68; address 000000000001 low byte first = 01 00 00 00 00 00; 68;
    # control 11 (read data); length 04; DI 00 01 00 00 sent DI0 first = 00 00 01 00, each +33
    # = 33 33 34 33; CS = 68+01+68+11+04+33+33+34+33 = 0x1B3 -> B3; end 16.
    assert dlt645.read_request("000000000001", 0x00010000) == bytes.fromhex(
        "FEFEFEFE 68 010000000000 68 11 04 33333433 B3 16")


def test_published_read_example_and_its_answer() -> None:
    # The worked example of https://m.icode9.com/content-4-712469.html (read forward active energy
    # of meter 000102030425, answer 001206.42 kWh): our bytes must be the same.
    request = bytes.fromhex("68 250403020100 68 11 04 33333433 E1 16")
    assert dlt645.read_request("000102030425", 0x00010000, preamble=0) == request
    answer = bytes.fromhex("68 250403020100 68 91 08 33333433 75394533 8B 16")
    (frame,) = parse_all(answer)
    assert isinstance(frame, Frame)
    assert frame.from_meter and not frame.abnormal and frame.function == dlt645.READ_DATA
    raw = dlt645.read_reply_value(frame, address="000102030425", di=0x00010000)
    assert BcdFormat("XXXXXX.XX").decode(raw) == pytest.approx(1206.42)


def test_read_address_request_golden_bytes_and_reply() -> None:
    # The same page: FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16 (68+6xAA+68+13 = 0x4DF).
    assert dlt645.read_address_request(preamble=3) == bytes.fromhex(
        "FEFEFE 68 AAAAAAAAAAAA 68 13 00 DF 16")
    reply = dlt645.address_reply("000012345678")
    (frame,) = parse_all(reply)
    assert isinstance(frame, Frame)
    assert frame.control == 0x93 and dlt645.parse_address_reply(frame) == "000012345678"


def test_error_reply_is_a_remote_error_with_a_readable_reason() -> None:
    (frame,) = parse_all(dlt645.error_reply("000000000007", dlt645.READ_DATA, 0x02))
    assert isinstance(frame, Frame)
    assert frame.control == 0xD1 and frame.abnormal
    with pytest.raises(MeterError, match=r"meter 000000000007 refused reading 02 01 02 00: no "
                                         r"requested data .*\(error word 0x02\)") as info:
        dlt645.read_reply_value(frame, address="000000000007", di=0x02010200)
    assert isinstance(info.value, RemoteError) and info.value.code == 0x02
    assert dlt645.error_reason(0x05) == "other error; wrong password or not authorised"
    assert dlt645.error_reason(0x80) == "reserved bit 7 set"


def test_answers_that_are_not_ours_are_protocol_errors() -> None:
    reply = parse_all(dlt645.read_reply("000000000002", 0x02010100, b"\x00\x23"))[0]
    assert isinstance(reply, Frame)
    with pytest.raises(RemoteProtocolError, match="answer from meter 000000000002"):
        dlt645.read_reply_value(reply, address="000000000001", di=0x02010100)
    with pytest.raises(RemoteProtocolError, match="answered data item 02 01 01 00 to a read of "
                                                  "02 01 02 00"):
        dlt645.read_reply_value(reply, address="000000000002", di=0x02010200)


def test_control_code_bits() -> None:
    assert dlt645.control_code(dlt645.READ_DATA, reply=True, follow_up=True) == 0xB1
    frame = Frame(address="000000000001", control=0xB1, data=b"")
    assert frame.from_meter and frame.follow_up and not frame.abnormal and frame.di is None


@pytest.mark.parametrize(("text", "message"), [
    ("12345", "12 decimal digits"), ("00000000000A", "12 decimal digits"),
    ("０００００００００００１", "12 decimal digits"), ("AAAAAAAAAAAA", "12 decimal digits")])
def test_bad_addresses_are_refused_with_the_fix(text: str, message: str) -> None:
    with pytest.raises(dlt645.LocalProtocolError, match=message):
        dlt645.check_address(text)
    assert dlt645.check_address("aaaaaaaaaaaa", allow_wildcard=True) == dlt645.WILDCARD


def test_encode_refuses_what_a_frame_cannot_carry() -> None:
    with pytest.raises(dlt645.LocalProtocolError, match="at most 255"):
        dlt645.encode_frame(address="000000000001", control=0x11, data=bytes(256))
    with pytest.raises(dlt645.LocalProtocolError, match=r"0\.\.4"):
        dlt645.encode_frame(address="000000000001", control=0x11, preamble=5)
    with pytest.raises(dlt645.LocalProtocolError, match="12 hex digits"):
        dlt645.encode_frame(address="1", control=0x11)


# ------------------------------------------------------------------------------ values

FORMATS = sorted({item.format for item in values.STANDARD_ITEMS.values()}, key=lambda f: f.type_name)


def test_signed_power_golden_bytes() -> None:
    # -1.5 kW as XX.XXXX: 01.5000 -> digits 015000 -> low byte first 00 50 01, sign bit on the last.
    assert BcdFormat("XX.XXXX", signed=True).encode(-1.5) == bytes.fromhex("005081")
    assert BcdFormat("XX.XXXX", signed=True).decode(bytes.fromhex("005081")) == -1.5
    assert BcdFormat("XXX.X").encode(230.1) == bytes.fromhex("0123")


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.type_name for f in FORMATS])
@given(fraction=st.floats(min_value=-1.0, max_value=1.0, allow_nan=False))
def test_every_standard_format_round_trips(fmt: BcdFormat, fraction: float) -> None:
    value = round(fraction * fmt.largest, fmt.decimals)
    if not fmt.signed:
        value = abs(value)
    raw = fmt.encode(value)
    assert len(raw) == fmt.size
    assert fmt.decode(raw) == pytest.approx(value, abs=10.0**-fmt.decimals / 2)


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.type_name for f in FORMATS])
def test_values_beyond_a_format_are_refused(fmt: BcdFormat) -> None:
    with pytest.raises(dlt645.LocalProtocolError, match="does not fit"):
        fmt.encode(fmt.largest + 10.0**-fmt.decimals)
    if not fmt.signed:
        with pytest.raises(dlt645.LocalProtocolError, match="does not fit"):
            fmt.encode(-1)


def test_non_bcd_and_short_values_are_remote_errors() -> None:
    with pytest.raises(RemoteProtocolError, match="not BCD"):
        BcdFormat("XXX.X").decode(b"\xff\xff")
    with pytest.raises(RemoteProtocolError, match="needs 3 bytes"):
        BcdFormat("XXX.XXX").decode(b"\x00")
    with pytest.raises(dlt645.LocalProtocolError, match="even number"):
        BcdFormat("XX.X")


def test_block_planning_and_splitting() -> None:
    dis = [0x02010100, 0x02010200, 0x02010300, 0x02030000, 0x00010000]
    assert values.plan_reads(dis) == [
        (0x0201FF00, (0x02010100, 0x02010200, 0x02010300)),
        (0x02030000, (0x02030000,)), (0x00010000, (0x00010000,))]
    assert values.plan_reads(dis, refused={0x0201FF00})[:3] == [
        (0x02010100, (0x02010100,)), (0x02010200, (0x02010200,)), (0x02010300, (0x02010300,))]
    formats = {di: item.format for di, item in values.STANDARD_ITEMS.items()}
    members = values.BLOCKS[0x0201FF00]
    parts = values.split_block(members, bytes.fromhex("0123 0223 0323"), formats)
    assert [formats[m].decode(parts[m]) for m in members] == [230.1, 230.2, 230.3]
    with pytest.raises(RemoteProtocolError, match="should be 6 bytes, got 2"):
        values.split_block(members, b"\x01\x23", formats)


# ------------------------------------------------------------------------------ parser fuzzing

addresses = st.text(alphabet="0123456789", min_size=12, max_size=12)
frames = st.builds(
    lambda address, control, data, preamble: dlt645.encode_frame(
        address=address, control=control, data=data, preamble=preamble),
    addresses, st.integers(0, 255), st.binary(max_size=40), st.integers(0, 4))
# Garbage with no 68H cannot start a frame; corrupted frames (checksum off by a non-zero amount) and
# FE runs can. Together they exercise every resynchronisation path deterministically.
noise = st.binary(max_size=30).map(lambda b: b.replace(b"\x68", b"\x67"))
corrupted = st.tuples(frames, st.integers(1, 255)).map(
    lambda pair: pair[0][:-2] + bytes([(pair[0][-2] + pair[1]) & 0xFF]) + pair[0][-1:])
garbage = st.one_of(noise, corrupted, st.integers(1, 8).map(lambda n: b"\xfe" * n))


@given(data=st.binary(max_size=600), chunks=st.lists(st.integers(0, 600), max_size=8))
def test_arbitrary_bytes_never_raise_and_frames_out_are_valid(data: bytes, chunks: list[int]) -> None:
    for event in parse_all(data, chunks):
        if isinstance(event, Frame):  # whatever came out re-encodes to bytes found in the input
            again = dlt645.encode_frame(address=event.address, control=event.control,
                                        data=event.data, preamble=0)
            assert again in data
        else:
            assert event.count > 0 and event.reason


@given(parts=st.lists(st.tuples(garbage, frames), max_size=6), tail=garbage,
       chunks=st.lists(st.integers(0, 2000), max_size=10))
def test_valid_frames_surrounded_by_garbage_are_all_recovered(
        parts: list[tuple[bytes, bytes]], tail: bytes, chunks: list[int]) -> None:
    stream = b"".join(g + f for g, f in parts) + tail
    got = [e for e in parse_all(stream, chunks) if isinstance(e, Frame)]
    expected = [parse_all(f)[0] for _, f in parts]
    assert got == expected


def test_an_unfinished_header_before_a_complete_frame_does_not_hide_it() -> None:
    good = dlt645.read_request("000000000001", 0x02010100, preamble=0)
    false_header = bytes.fromhex("68 010000000000 68 11 C8")  # claims 200 data bytes
    out = parse_all(false_header + good)
    assert isinstance(out[-1], Frame) and out[-1].di == 0x02010100
    assert any(isinstance(e, Discarded) for e in out)


def test_a_frame_split_anywhere_waits_for_its_end() -> None:
    good = dlt645.read_request("000000000001", 0x02010100)
    for cut in range(len(good)):
        parser = Dlt645Parser()
        parser.feed(good[:cut])
        assert events(parser) == []
        parser.feed(good[cut:])
        (frame,) = events(parser)
        assert isinstance(frame, Frame) and frame.address == "000000000001"


def test_the_buffer_is_bounded() -> None:
    parser = Dlt645Parser(max_buffer=dlt645.MAX_FRAME)
    parser.feed(b"\x68" * 5000)  # every byte a possible frame start
    event = parser.next_event()
    assert isinstance(event, Discarded) and "buffer full" in event.reason
    assert event.count == 5000 - dlt645.MAX_FRAME
    with pytest.raises(dlt645.LocalProtocolError, match="one whole frame"):
        Dlt645Parser(max_buffer=10)
