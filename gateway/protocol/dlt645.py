"""DL/T 645-2007 (China's RS-485 electricity meter protocol) with no I/O: frames and parser events.

In the style of h11: `encode_frame()` and the request helpers return the bytes to write;
`Dlt645Parser.feed(bytes)` buffers what the transport read and `next_event()` returns a `Frame`, a
`Discarded` (the protocol-error event: bytes that cannot be part of a frame were dropped) or
`NEED_DATA`. The parser never raises on peer bytes. docs/dlt645.md describes the protocol.

References (DL/T 645-2007 "Multi-function watt-hour meter communication protocol", clause numbers as in
its table of contents: 4 physical layer, 5 data link layer, 6 data identifiers, 7 application layer,
appendix A data encoding, appendix C status and error words):
- frame 68H A0..A5 68H C L DATA CS 16H; address 6 bytes BCD, low byte first; DATA +33H on the wire;
  CS = sum mod 256 from the first 68H to the end of DATA; 0..4 x FEH wake-up bytes before a frame
  (clause 5);
- control code bits D7 direction, D6 abnormal reply, D5 follow-up frame, D4..D0 function (clause 5);
- data identifiers DI3..DI0, sent DI0 first (clause 6); their value formats (appendix A) are in
  gateway.perception.dlt645_values;
- error information word ERR of an abnormal reply (appendix C).
Clause numbers and the test vectors in tests/unit/test_dlt645_codec.py come from public copies and
worked examples of the standard (docs/dlt645.md lists them); the printed standard was not at hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.errors import RemoteError

START: Final = 0x68
END: Final = 0x16
WAKE: Final = 0xFE
OFFSET: Final = 0x33  # added to every DATA byte on the wire, subtracted on receipt
HEADER_BYTES: Final = 10  # 68 A0..A5 68 C L
FRAME_OVERHEAD: Final = 12  # header + CS + 16
MAX_FRAME: Final = FRAME_OVERHEAD + 255
PREAMBLE: Final = 4  # FE bytes a master sends before each request

# Control code, clause 5: D7 = 1 from the meter, D6 = 1 abnormal reply, D5 = 1 follow-up data.
DIRECTION_BIT: Final = 0x80
ABNORMAL_BIT: Final = 0x40
FOLLOW_UP_BIT: Final = 0x20
FUNCTION_MASK: Final = 0x1F
BROADCAST_TIME: Final = 0x08
READ_DATA: Final = 0x11
READ_FOLLOW_UP: Final = 0x12
READ_ADDRESS: Final = 0x13
WRITE_DATA: Final = 0x14
WRITE_ADDRESS: Final = 0x15
FREEZE: Final = 0x16
CHANGE_BAUD: Final = 0x17
CHANGE_PASSWORD: Final = 0x18

# Addresses are 12 hex characters in reading order (high byte first): BCD digits read as hex are the
# decimal digits. 99..99 is the broadcast address (broadcast time, freeze; meters do not answer);
# AA..AA is the wildcard the read-address command 13H is sent to (clause 5/7). Meters also accept a
# partial wildcard (high bytes AA); we always send full addresses.
BROADCAST: Final = "999999999999"
WILDCARD: Final = "AAAAAAAAAAAA"

# Error information word ERR (appendix C); bit 7 is reserved.
ERROR_BITS: Final = {
    0x01: "other error", 0x02: "no requested data (the meter does not have this data item)",
    0x04: "wrong password or not authorised", 0x08: "the baud rate cannot be changed",
    0x10: "too many annual time zones", 0x20: "too many daily time periods",
    0x40: "too many tariffs",
}
NO_REQUESTED_DATA: Final = 0x02


class LocalProtocolError(ValueError):
    """We asked for something the protocol cannot express (our bug or bad input)."""


class RemoteProtocolError(RemoteError):
    """A meter answered with a frame that cannot be the answer to our request."""


class MeterError(RemoteError):
    """A meter answered with an abnormal reply (control code D6 set) carrying an error word."""

    def __init__(self, *, address: str, what: str, code: int) -> None:
        self.address, self.code = address, code
        super().__init__(f"meter {address} refused {what}: {error_reason(code)} "
                         f"(error word 0x{code:02X})")


def error_reason(code: int) -> str:
    reasons = [text for bit, text in ERROR_BITS.items() if code & bit]
    if code & 0x80:
        reasons.append("reserved bit 7 set")
    return "; ".join(reasons) or "no reason given"


# ------------------------------------------------------------------------------------ addresses


def check_address(text: str, *, allow_wildcard: bool = False) -> str:
    """A meter address as 12 decimal digits (printed on the meter), or the wildcard; raises
    LocalProtocolError with what is wrong."""
    if allow_wildcard and text.upper() == WILDCARD:
        return WILDCARD
    if len(text) != 12 or not text.isascii() or not text.isdigit():
        raise LocalProtocolError(
            f"{text!r} is not a DL/T 645 meter address: write the 12 decimal digits printed on the "
            "meter, with leading zeros, e.g. \"000012345678\"")
    return text


def address_bytes(address: str) -> bytes:
    return bytes.fromhex(address)[::-1]


def address_text(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def di_text(di: int) -> str:
    """`02 01 01 00`: a data identifier as the standard's tables print it (DI3 first)."""
    return " ".join(f"{b:02X}" for b in di.to_bytes(4, "big"))


# ------------------------------------------------------------------------------------ frames


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked frame; `data` has the +33H removed."""

    address: str
    control: int
    data: bytes

    @property
    def from_meter(self) -> bool:
        return bool(self.control & DIRECTION_BIT)

    @property
    def abnormal(self) -> bool:
        return bool(self.control & ABNORMAL_BIT)

    @property
    def follow_up(self) -> bool:
        return bool(self.control & FOLLOW_UP_BIT)

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK

    @property
    def di(self) -> int | None:
        """The data identifier a read request or normal read reply starts with."""
        return int.from_bytes(self.data[:4], "little") if len(self.data) >= 4 else None


def control_code(function: int, *, reply: bool = False, abnormal: bool = False,
                 follow_up: bool = False) -> int:
    return ((DIRECTION_BIT if reply else 0) | (ABNORMAL_BIT if abnormal else 0)
            | (FOLLOW_UP_BIT if follow_up else 0) | (function & FUNCTION_MASK))


def encode_frame(*, address: str, control: int, data: bytes = b"", preamble: int = PREAMBLE) -> bytes:
    if not 0 <= preamble <= 4:
        raise LocalProtocolError(f"preamble of {preamble} FE bytes; the standard allows 0..4")
    if len(data) > 255:
        raise LocalProtocolError(f"{len(data)} data bytes; a frame carries at most 255")
    try:
        raw_address = address_bytes(address)
    except ValueError:
        raw_address = b""
    if len(raw_address) != 6:
        raise LocalProtocolError(f"address {address!r}: 12 hex digits expected")
    body = (bytes([START]) + raw_address + bytes([START, control & 0xFF, len(data)])
            + bytes((b + OFFSET) & 0xFF for b in data))
    return bytes([WAKE]) * preamble + body + bytes([sum(body) & 0xFF, END])


def read_request(address: str, di: int, *, preamble: int = PREAMBLE) -> bytes:
    """Read data (11H): the data field is DI0..DI3 (clause 7)."""
    return encode_frame(address=address, control=READ_DATA, data=di.to_bytes(4, "little"),
                        preamble=preamble)


def read_address_request(*, preamble: int = PREAMBLE) -> bytes:
    """Read communication address (13H), sent to the wildcard AA..AA with no data (clause 7)."""
    return encode_frame(address=WILDCARD, control=READ_ADDRESS, preamble=preamble)


def read_reply(address: str, di: int, value: bytes, *, preamble: int = 0) -> bytes:
    return encode_frame(address=address, control=control_code(READ_DATA, reply=True),
                        data=di.to_bytes(4, "little") + value, preamble=preamble)


def error_reply(address: str, function: int, code: int, *, preamble: int = 0) -> bytes:
    return encode_frame(address=address, control=control_code(function, reply=True, abnormal=True),
                        data=bytes([code & 0xFF]), preamble=preamble)


def address_reply(address: str, *, preamble: int = 0) -> bytes:
    return encode_frame(address=address, control=control_code(READ_ADDRESS, reply=True),
                        data=address_bytes(address), preamble=preamble)


def read_reply_value(frame: Frame, *, address: str, di: int) -> bytes:
    """The value bytes of a meter's answer to `read_request(address, di)`.

    Raises MeterError for an abnormal reply and RemoteProtocolError for a frame that is not the
    answer (another meter, another function, another data identifier).
    """
    if frame.address != address:
        raise RemoteProtocolError(f"answer from meter {frame.address}, expected {address}")
    if frame.function != READ_DATA or not frame.from_meter:
        raise RemoteProtocolError(f"meter {address}: control code 0x{frame.control:02X} is not a "
                                  "read reply")
    if frame.abnormal:
        code = frame.data[0] if frame.data else 0
        raise MeterError(address=address, what=f"reading {di_text(di)}", code=code)
    if frame.di != di:
        got = "nothing" if frame.di is None else di_text(frame.di)
        raise RemoteProtocolError(f"meter {address} answered data item {got} to a read of "
                                  f"{di_text(di)}")
    return frame.data[4:]


def parse_address_reply(frame: Frame) -> str:
    """The address a meter gave in its answer to read-address (93H); raises RemoteProtocolError."""
    if frame.control != control_code(READ_ADDRESS, reply=True) or len(frame.data) != 6:
        raise RemoteProtocolError(f"control 0x{frame.control:02X} with {len(frame.data)} data bytes "
                                  "is not a read-address reply")
    address = address_text(frame.data)
    if address != frame.address or not address.isdigit():
        raise RemoteProtocolError(f"read-address reply names {address!r} in a frame from "
                                  f"{frame.address!r}")
    return address


# ------------------------------------------------------------------------------------ parser


@dataclass(frozen=True, slots=True)
class Discarded:
    """The protocol-error event: `count` bytes that cannot belong to a valid frame were dropped."""

    count: int
    reason: str


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
Event = Frame | Discarded | _NeedData
MAX_BUFFER: Final = 4 * MAX_FRAME


class Dlt645Parser:
    """Bytes in, frames out; resynchronises on the next 68H .. 68H header after garbage.

    The buffer is bounded: when more than `max_buffer` bytes wait, the oldest are discarded (and
    reported). A frame whose checksum or end byte is wrong costs only its first byte: parsing resumes
    at the next 68H, so a valid frame hidden behind a false header is still found.
    """

    def __init__(self, *, max_buffer: int = MAX_BUFFER) -> None:
        if max_buffer < MAX_FRAME:
            raise LocalProtocolError(f"max_buffer must hold one whole frame ({MAX_FRAME} bytes)")
        self._buffer = bytearray()
        self._max = max_buffer
        self._overflow = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data
        excess = len(self._buffer) - self._max
        if excess > 0:
            del self._buffer[:excess]
            self._overflow += excess

    def clear(self) -> None:
        self._buffer.clear()

    def next_event(self) -> Event:
        if self._overflow:
            count, self._overflow = self._overflow, 0
            return Discarded(count, "receive buffer full: the oldest bytes were dropped")
        buf = self._buffer
        start = buf.find(START)
        if start < 0:
            dropped = self._drop(len(buf), "no frame start (68H)")
            return NEED_DATA if dropped is None else dropped
        if start:
            dropped = self._drop(start, "bytes before a frame start (68H)")
            return self.next_event() if dropped is None else dropped
        problem = _check(buf)
        if problem is None:  # complete and valid
            length = buf[9]
            frame = Frame(address=address_text(bytes(buf[1:7])), control=buf[8],
                          data=bytes((b - OFFSET) & 0xFF for b in buf[10:10 + length]))
            del buf[:FRAME_OVERHEAD + length]
            return frame
        if problem == "incomplete":
            later = _later_frame(buf)
            if later is None:
                return NEED_DATA
            return self._drop(later, "an unfinished frame header before a complete frame") or NEED_DATA
        return self._drop(1, problem) or NEED_DATA  # never None: the dropped byte is 68H

    def _drop(self, count: int, reason: str) -> Discarded | None:
        """Drop `count` bytes; silence for wake-up bytes (FEH), the event otherwise."""
        dropped = self._buffer[:count]
        del self._buffer[:count]
        if not dropped or all(b == WAKE for b in dropped):
            return None
        return Discarded(count, reason)


def _check(buf: bytearray | bytes) -> str | None:
    """None when buf starts with a whole valid frame; "incomplete", or what is wrong with it."""
    if len(buf) < HEADER_BYTES:
        return "incomplete" if len(buf) < 8 or buf[7] == START else "no second 68H after the address"
    if buf[7] != START:
        return "no second 68H after the address"
    total = FRAME_OVERHEAD + buf[9]
    if len(buf) < total:
        return "incomplete"
    if sum(buf[:total - 2]) & 0xFF != buf[total - 2]:
        return "checksum mismatch"
    if buf[total - 1] != END:
        return "no end byte (16H)"
    return None


def _later_frame(buf: bytearray) -> int | None:
    """The offset of a complete valid frame after offset 0, if the buffer holds one."""
    index = buf.find(START, 1)
    while index >= 0:
        if _check(buf[index:]) is None:
            return index
        index = buf.find(START, index + 1)
    return None
