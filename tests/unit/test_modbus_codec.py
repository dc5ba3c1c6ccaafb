"""The Modbus client codec: frames, CRC, parsing, and robustness against any bytes a peer sends."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import modbus


def test_crc_matches_the_serial_line_spec_example() -> None:
    # Modbus over Serial Line V1.02, 6.2.2 works the CRC of "02 07": 0x1241, sent 41 12.
    assert modbus.crc16(bytes([0x02, 0x07])) == 0x1241
    assert modbus.rtu_frame(2, bytes([0x07])) == bytes([0x02, 0x07, 0x41, 0x12])


def test_read_request_frame_bytes() -> None:
    conn = modbus.RtuClientConnection()
    frame = conn.send(modbus.ReadRequest(unit=1, function=4, address=0, count=2))
    # Well-known frame: read input registers 0..1 of unit 1 -> 01 04 00 00 00 02 71 CB.
    assert frame == bytes.fromhex("010400000002 71cb".replace(" ", ""))


def _reply(unit: int, pdu: bytes) -> bytes:
    return modbus.rtu_frame(unit, pdu)


def test_rtu_response_arriving_in_pieces() -> None:
    conn = modbus.RtuClientConnection()
    conn.send(modbus.ReadRequest(unit=7, function=3, address=10, count=2))
    frame = _reply(7, bytes([3, 4]) + struct.pack(">HH", 0x1234, 0xABCD))
    for byte in frame[:-1]:
        conn.receive_data(bytes([byte]))
        assert conn.next_event() is modbus.NEED_DATA
    conn.receive_data(frame[-1:])
    event = conn.next_event()
    assert event == modbus.Response(unit=7, function=3, values=(0x1234, 0xABCD))
    assert conn.pending is None


def test_rtu_exception_response() -> None:
    conn = modbus.RtuClientConnection()
    conn.send(modbus.ReadRequest(unit=1, function=4, address=100, count=5))
    conn.receive_data(_reply(1, bytes([0x84, 0x02])))
    event = conn.next_event()
    assert isinstance(event, modbus.ExceptionResponse)
    assert event.code == modbus.ILLEGAL_DATA_ADDRESS
    assert event.message == "illegal data address"


def test_rtu_bad_crc_and_wrong_unit_are_remote_errors() -> None:
    conn = modbus.RtuClientConnection()
    conn.send(modbus.ReadRequest(unit=1, function=3, address=0, count=1))
    frame = bytearray(_reply(1, bytes([3, 2, 0, 5])))
    frame[-1] ^= 0xFF
    conn.receive_data(bytes(frame))
    with pytest.raises(modbus.RemoteProtocolError, match="CRC"):
        conn.next_event()
    conn.send(modbus.ReadRequest(unit=1, function=3, address=0, count=1))
    garbled = bytearray(_reply(2, bytes([3, 2, 0, 5])))
    garbled[-2] ^= 0x55
    conn.receive_data(bytes(garbled))
    with pytest.raises(modbus.RemoteProtocolError, match="unit 2"):
        conn.next_event()


def test_rtu_late_answer_of_another_unit_is_dropped_whole() -> None:
    """RTU has no transaction id: a valid frame from the unit we timed out on, arriving while we
    wait for the next unit, is that unit's late answer. It is skipped, and ours still parses."""
    conn = modbus.RtuClientConnection()
    conn.send(modbus.ReadRequest(unit=1, function=3, address=0, count=1))
    late, ours = _reply(2, bytes([3, 4, 0, 9, 0, 9])), _reply(1, bytes([3, 2, 0, 5]))
    conn.receive_data(late[:3])
    assert conn.next_event() is modbus.NEED_DATA  # incomplete late frame: wait for the rest
    conn.receive_data(late[3:] + ours[:2])
    assert conn.next_event() is modbus.NEED_DATA
    conn.receive_data(ours[2:])
    event = conn.next_event()
    assert isinstance(event, modbus.Response) and event.unit == 1 and event.values == (5,)


def test_write_requests_encode_as_the_spec_says() -> None:
    coil = modbus.WriteRequest(unit=1, function=modbus.WRITE_SINGLE_COIL, address=3, values=(1,))
    assert coil.pdu() == bytes([5, 0, 3, 0xFF, 0])
    many = modbus.WriteRequest(unit=1, function=modbus.WRITE_MULTIPLE_REGISTERS, address=0x10,
                               values=(1, 2))
    assert many.pdu() == bytes([0x10, 0, 0x10, 0, 2, 4, 0, 1, 0, 2])
    with pytest.raises(modbus.LocalProtocolError):
        modbus.ReadRequest(unit=1, function=3, address=0, count=126).pdu()


def test_tcp_drops_late_answers_to_abandoned_requests() -> None:
    conn = modbus.TcpClientConnection()
    first = conn.send(modbus.ReadRequest(unit=1, function=3, address=0, count=1))
    conn.abandon()
    conn.send(modbus.ReadRequest(unit=1, function=3, address=0, count=1))
    late = first[:4] + struct.pack(">HB", 5, 1) + bytes([3, 2, 0, 9])
    fresh_tid = (struct.unpack(">H", first[:2])[0] + 1) & 0xFFFF
    fresh = struct.pack(">HHHB", fresh_tid, 0, 5, 1) + bytes([3, 2, 0, 42])
    conn.receive_data(late + fresh)
    assert conn.next_event() == modbus.Response(unit=1, function=3, values=(42,))


def test_bit_responses_unpack_lsb_first() -> None:
    conn = modbus.RtuClientConnection()
    conn.send(modbus.ReadRequest(unit=1, function=1, address=0, count=10))
    conn.receive_data(_reply(1, bytes([1, 2, 0b0000_0101, 0b10])))
    event = conn.next_event()
    assert isinstance(event, modbus.Response)
    assert event.values == (1, 0, 1, 0, 0, 0, 0, 0, 0, 1)


def test_silent_interval() -> None:
    # 9600 baud 8N1: 10 bits per character, 3.5 characters = 3.646 ms.
    assert modbus.silent_interval(9600) == pytest.approx(3.5 * 10 / 9600)
    assert modbus.silent_interval(115200) == 0.00175  # fixed above 19200 baud


@given(st.binary(max_size=300), st.sampled_from([1, 2, 3, 4, 5, 6, 16]))
def test_rtu_parser_never_crashes_on_garbage(data: bytes, function: int) -> None:
    conn = modbus.RtuClientConnection()
    if function in (5, 6, 16):
        conn.send(modbus.WriteRequest(unit=1, function=function, address=0, values=(1,)))
    else:
        conn.send(modbus.ReadRequest(unit=1, function=function, address=0, count=4))
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except modbus.RemoteProtocolError:
        return
    assert event is modbus.NEED_DATA or isinstance(event, modbus.Response | modbus.ExceptionResponse)


@given(st.binary(max_size=300))
def test_tcp_parser_never_crashes_on_garbage(data: bytes) -> None:
    conn = modbus.TcpClientConnection()
    conn.send(modbus.ReadRequest(unit=1, function=3, address=0, count=4))
    conn.receive_data(data)
    with contextlib.suppress(modbus.RemoteProtocolError):
        conn.next_event()
