"""Modbus client protocol with no I/O: requests -> frame bytes, received bytes -> response events.

In the style of h11: `ClientConnection.send(request)` returns the bytes to write; `receive_data(data)`
buffers what the transport read; `next_event()` returns a `Response`, an `ExceptionResponse` or
`NEED_DATA`, and raises `RemoteProtocolError` for a frame that cannot be right (bad CRC, a reply from
another unit, a wrong function code or length). References:
- Modbus Application Protocol Specification V1.1b3 (modbus.org, 2012), sections 6.1-6.12 (PDUs) and 7
  (exception codes);
- Modbus over Serial Line Specification V1.02 (modbus.org, 2006), 2.5.1 (RTU frame, CRC 6.2.2) and
  2.5.1.1 (3.5-character silent interval);
- Modbus Messaging on TCP/IP Implementation Guide V1.0b (modbus.org, 2006), 3.1.3 (MBAP header).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

READ_COILS: Final = 0x01
READ_DISCRETE_INPUTS: Final = 0x02
READ_HOLDING_REGISTERS: Final = 0x03
READ_INPUT_REGISTERS: Final = 0x04
WRITE_SINGLE_COIL: Final = 0x05
WRITE_SINGLE_REGISTER: Final = 0x06
WRITE_MULTIPLE_REGISTERS: Final = 0x10

READ_FUNCTION = {"coil": READ_COILS, "discrete": READ_DISCRETE_INPUTS,
                 "holding": READ_HOLDING_REGISTERS, "input": READ_INPUT_REGISTERS}
BIT_FUNCTIONS = (READ_COILS, READ_DISCRETE_INPUTS)

# Exception codes, Application Protocol 7.
ILLEGAL_FUNCTION: Final = 0x01
ILLEGAL_DATA_ADDRESS: Final = 0x02
ILLEGAL_DATA_VALUE: Final = 0x03
SERVER_DEVICE_FAILURE: Final = 0x04
# Application Protocol 7, exception codes table: 0A "gateway path unavailable" (the gateway could not
# allocate a path to the target: misconfigured or overloaded) and 0B "gateway target device failed to
# respond" (no response from the target). Both come from a TCP-to-RTU gateway, not from the unit
# asked: they mean that nobody answered at that unit, as a timeout does on a serial line.
GATEWAY_PATH_UNAVAILABLE: Final = 0x0A
GATEWAY_TARGET_FAILED: Final = 0x0B
GATEWAY_EXCEPTIONS: Final = (GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED)
EXCEPTION_NAMES = {
    0x01: "illegal function", 0x02: "illegal data address", 0x03: "illegal data value",
    0x04: "server device failure", 0x05: "acknowledge", 0x06: "server device busy",
    0x08: "memory parity error", 0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

RTU_REQUEST_BYTES: Final = 8  # unit + fc + address(2) + count(2) + crc(2) for functions 1-6
RTU_READ_RESPONSE_OVERHEAD: Final = 5  # unit + fc + byte count + crc(2)
RTU_SILENT_CHARS: Final = 3.5  # Serial Line 2.5.1.1


class ProtocolError(Exception):
    """Base of the protocol errors."""


class LocalProtocolError(ProtocolError):
    """We asked for something the protocol cannot express (our bug or bad input)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that cannot be a valid answer to our request."""


@dataclass(frozen=True, slots=True)
class ReadRequest:
    unit: int
    function: int
    address: int
    count: int

    def pdu(self) -> bytes:
        limit = 2000 if self.function in BIT_FUNCTIONS else 125  # Application Protocol 6.1-6.4
        if not 1 <= self.count <= limit:
            raise LocalProtocolError(f"read of {self.count} items; the limit is 1..{limit}")
        if self.address < 0 or self.address + self.count > 0x10000:
            raise LocalProtocolError(f"read {self.address}+{self.count} beyond address 65535")
        return struct.pack(">BHH", self.function, self.address, self.count)

    def response_length_rtu(self) -> int:
        """Bytes of a normal RTU response to this request."""
        data = (self.count + 7) // 8 if self.function in BIT_FUNCTIONS else 2 * self.count
        return RTU_READ_RESPONSE_OVERHEAD + data


@dataclass(frozen=True, slots=True)
class WriteRequest:
    unit: int
    function: int
    address: int
    values: tuple[int, ...]

    def pdu(self) -> bytes:
        if any(not 0 <= v <= 0xFFFF for v in self.values):
            raise LocalProtocolError("register values are 0..65535")
        if self.function == WRITE_SINGLE_COIL:
            # Application Protocol 6.5: ON is 0xFF00, OFF is 0x0000.
            return struct.pack(">BHH", self.function, self.address, 0xFF00 if self.values[0] else 0)
        if self.function == WRITE_SINGLE_REGISTER:
            return struct.pack(">BHH", self.function, self.address, self.values[0])
        if self.function == WRITE_MULTIPLE_REGISTERS:
            n = len(self.values)
            if not 1 <= n <= 123:  # Application Protocol 6.12
                raise LocalProtocolError(f"write of {n} registers; the limit is 1..123")
            return struct.pack(f">BHHB{n}H", self.function, self.address, n, 2 * n, *self.values)
        raise LocalProtocolError(f"function {self.function} is not a write this client supports")


Request = ReadRequest | WriteRequest


@dataclass(frozen=True, slots=True)
class Response:
    unit: int
    function: int
    values: tuple[int, ...]  # registers, or bits (0/1) for functions 1 and 2; echo for writes


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    unit: int
    function: int
    code: int

    @property
    def message(self) -> str:
        return EXCEPTION_NAMES.get(self.code, f"exception code {self.code}")


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
Event = Response | ExceptionResponse | _NeedData


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF); Serial Line 6.2.2."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + struct.pack("<H", crc16(body))  # CRC is sent low byte first


def rtu_request_bytes(request: Request) -> int:
    return 1 + len(request.pdu()) + 2


def char_time(baud: int, parity: str = "N", stopbits: int = 1) -> float:
    """Seconds one character takes on the wire: start + 8 data + parity + stop bits."""
    return (1 + 8 + (0 if parity == "N" else 1) + stopbits) / baud


def silent_interval(baud: int, parity: str = "N", stopbits: int = 1) -> float:
    """The 3.5-character inter-frame gap. Serial Line 2.5.1.1: fixed at 1.75 ms above 19200 baud."""
    if baud > 19200:
        return 0.00175
    return RTU_SILENT_CHARS * char_time(baud, parity, stopbits)


def _parse_pdu(unit: int, function: int, request: Request, payload: bytes) -> Response:
    if isinstance(request, ReadRequest):
        count_byte = payload[0]
        data = payload[1:]
        if count_byte != len(data):
            raise RemoteProtocolError(f"byte count {count_byte} but {len(data)} data bytes")
        if function in BIT_FUNCTIONS:
            bits = [(data[i // 8] >> (i % 8)) & 1 for i in range(min(request.count, 8 * len(data)))]
            if len(bits) != request.count:
                raise RemoteProtocolError(f"asked for {request.count} bits, got {len(bits)}")
            return Response(unit=unit, function=function, values=tuple(bits))
        if len(data) != 2 * request.count:
            raise RemoteProtocolError(f"asked for {request.count} registers, got {len(data) / 2:g}")
        return Response(unit=unit, function=function,
                        values=struct.unpack(f">{request.count}H", data))
    address, value = struct.unpack(">HH", payload[:4])
    if address != request.address:
        raise RemoteProtocolError(f"write echo names address {address}, not {request.address}")
    return Response(unit=unit, function=function, values=(value,))


def _expected_pdu_length(function: int, buffer: bytes, offset: int) -> int | None:
    """Length of the response PDU (function byte included) once enough of it is buffered."""
    if function & 0x80:
        return 2
    if function in (READ_COILS, READ_DISCRETE_INPUTS, READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS):
        if len(buffer) < offset + 2:
            return None
        return 2 + buffer[offset + 1]
    return 5  # writes echo function + address + value/quantity


class RtuClientConnection:
    """Client side of Modbus RTU: one outstanding request at a time, as the serial line requires."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: Request | None = None

    @property
    def pending(self) -> Request | None:
        return self._pending

    def send(self, request: Request) -> bytes:
        if self._pending is not None:
            raise LocalProtocolError("RTU allows one outstanding request; wait for the answer")
        frame = rtu_frame(request.unit, request.pdu())
        self._pending = request
        self._buffer.clear()
        return frame

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def abandon(self) -> None:
        """Forget the outstanding request (timeout) and whatever partial answer arrived."""
        self._pending = None
        self._buffer.clear()

    def next_event(self) -> Event:
        request = self._pending
        if request is None:
            if self._buffer:
                self._buffer.clear()
                raise RemoteProtocolError("bytes arrived with no request outstanding")
            return NEED_DATA
        while len(self._buffer) >= 2 and self._buffer[0] != request.unit:
            if not self._drop_late_answer(request):
                return NEED_DATA
        if len(self._buffer) < 2:
            return NEED_DATA
        unit, function = self._buffer[0], self._buffer[1]
        if function & 0x7F != request.function:
            self.abandon()
            raise RemoteProtocolError(f"reply with function {function:#04x}, "
                                      f"expected {request.function:#04x}")
        pdu_len = _expected_pdu_length(function, bytes(self._buffer), 1)
        if pdu_len is None or len(self._buffer) < 1 + pdu_len + 2:
            return NEED_DATA
        frame = bytes(self._buffer[: 1 + pdu_len + 2])
        (crc,) = struct.unpack("<H", frame[-2:])
        if crc != crc16(frame[:-2]):
            self.abandon()
            raise RemoteProtocolError("bad CRC")
        self._pending = None
        self._buffer.clear()
        if function & 0x80:
            return ExceptionResponse(unit=unit, function=request.function, code=frame[2])
        return _parse_pdu(unit, function, request, frame[2:-2])


    def _drop_late_answer(self, request: Request) -> bool:
        """A frame from another unit: the late answer to a request we timed out on (RTU has no
        transaction id). Drop it whole if it is a valid frame and keep waiting for ours; False
        while it is incomplete. Anything else is garbage on the line."""
        unit, function = self._buffer[0], self._buffer[1]
        pdu_len = _expected_pdu_length(function, bytes(self._buffer), 1)
        if pdu_len is None or len(self._buffer) < 1 + pdu_len + 2:
            return False
        frame = bytes(self._buffer[: 1 + pdu_len + 2])
        (crc,) = struct.unpack("<H", frame[-2:])
        if crc == crc16(frame[:-2]):
            del self._buffer[: len(frame)]
            return True
        self.abandon()
        raise RemoteProtocolError(f"reply from unit {unit}, expected unit {request.unit}")


class TcpClientConnection:
    """Client side of Modbus TCP (MBAP framing); one outstanding request per connection."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: Request | None = None
        self._transaction = 0

    def send(self, request: Request) -> bytes:
        if self._pending is not None:
            raise LocalProtocolError("one outstanding request per connection; wait for the answer")
        self._transaction = (self._transaction + 1) & 0xFFFF
        pdu = request.pdu()
        self._pending = request
        # MBAP: transaction id, protocol id 0, length (unit + PDU), unit id. Implementation Guide 3.1.3.
        return struct.pack(">HHHB", self._transaction, 0, len(pdu) + 1, request.unit) + pdu

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def abandon(self) -> None:
        self._pending = None
        self._buffer.clear()

    def next_event(self) -> Event:
        while True:
            if len(self._buffer) < 7:
                return NEED_DATA
            transaction, protocol, length, unit = struct.unpack(">HHHB", self._buffer[:7])
            if protocol != 0 or not 2 <= length <= 254:
                self.abandon()
                raise RemoteProtocolError(f"bad MBAP header (protocol {protocol}, length {length})")
            if len(self._buffer) < 6 + length:
                return NEED_DATA
            pdu = bytes(self._buffer[7 : 6 + length])
            del self._buffer[: 6 + length]
            request = self._pending
            if request is None or transaction != self._transaction:
                continue  # a late answer to a request we gave up on: drop it, keep reading
            function = pdu[0]
            if function & 0x7F != request.function:
                self.abandon()
                raise RemoteProtocolError(f"reply with function {function:#04x}, "
                                          f"expected {request.function:#04x}")
            self._pending = None
            if function & 0x80:
                return ExceptionResponse(unit=unit, function=request.function, code=pdu[1])
            if _expected_pdu_length(function, pdu, 0) != len(pdu):
                raise RemoteProtocolError("response length does not match its byte count")
            return _parse_pdu(unit, function, request, pdu[1:])
