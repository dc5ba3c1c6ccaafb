"""Register codecs: 16-bit Modbus words <-> typed values, with byte/word order, scale and offset.

Modbus transfers registers big-endian (Modbus Application Protocol v1.1b3, 4.2: "the most significant
byte is sent first"); how a device spreads a 32/64-bit value over several registers is its own choice,
so word order (and, for a few devices, byte order inside a word) comes from the profile.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Protocol

from gateway.errors import ProfileError

_STRUCT = {"u16": "H", "s16": "h", "u32": "I", "s32": "i", "f32": "f",
           "u64": "Q", "s64": "q", "f64": "d"}
_INTEGER_RANGE = {
    "u16": (0, 0xFFFF), "s16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFF_FFFF),
    "s32": (-0x8000_0000, 0x7FFF_FFFF), "u64": (0, 0xFFFF_FFFF_FFFF_FFFF),
    "s64": (-0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF),
}
INTEGER_TYPES = frozenset(_INTEGER_RANGE)


class Encoding(Protocol):
    """What the codec needs to know of a point or probe."""

    @property
    def type(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def byte_order(self) -> str: ...
    @property
    def word_order(self) -> str: ...


class ScaledEncoding(Encoding, Protocol):
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...


def _words_to_bytes(words: Sequence[int], enc: Encoding) -> bytes:
    ordered = list(words) if enc.word_order == "big" else list(reversed(words))
    fmt = ">" if enc.byte_order == "big" else "<"
    return struct.pack(f"{fmt}{len(ordered)}H", *ordered)


def _bytes_to_words(data: bytes, enc: Encoding) -> list[int]:
    fmt = ">" if enc.byte_order == "big" else "<"
    words = list(struct.unpack(f"{fmt}{len(data) // 2}H", data))
    return words if enc.word_order == "big" else list(reversed(words))


def decode_raw(enc: Encoding, words: Sequence[int]) -> int | float | str:
    """Words as read from the device -> the raw value (before scale)."""
    if len(words) != enc.count:
        raise ValueError(f"{enc.type} needs {enc.count} registers, got {len(words)}")
    if enc.type == "bool":
        return 1 if words[0] else 0
    if enc.type == "string":
        # Strings are byte streams in register order; word order does not apply to them.
        fmt = ">" if enc.byte_order == "big" else "<"
        raw = struct.pack(f"{fmt}{len(words)}H", *words)
        return raw.split(b"\x00", 1)[0].decode("latin-1").strip()
    (value,) = struct.unpack(">" + _STRUCT[enc.type], _words_to_bytes(words, enc))
    return value  # type: ignore[no-any-return]


def packed_reader(enc: Encoding) -> tuple[struct.Struct, bool]:
    """Read a numeric point straight out of a whole response packed into bytes, without slicing words.

    Returns a Struct to `unpack_from` at byte offset 2 x (the point's first word in the response), and
    whether it reads the response packed with little-endian words (`response_packer(n, little=True)`)
    rather than big-endian ones. The value is the one decode_raw gives for the point's words.
    Why: decode_raw lays the words out in word order, each in the point's byte order, and reads the bytes
    big-endian. In big word order those bytes are the response packed in the point's byte order. In little
    word order they are, reversed, the response packed in the other byte order, and reading reversed
    bytes big-endian is reading them little-endian. (A one-word value fits both readings.)
    """
    if enc.type not in _STRUCT:
        raise ValueError(f"packed_reader reads numeric types, not {enc.type!r}")
    big_words = enc.word_order == "big"
    little_buffer = (enc.byte_order == "little") == big_words
    return struct.Struct((">" if big_words else "<") + _STRUCT[enc.type]), little_buffer


def response_packer(count: int, *, little: bool) -> struct.Struct:
    """Packs a response of `count` register words into bytes, each word big- or little-endian, for the
    Structs of packed_reader."""
    return struct.Struct(f"{'<' if little else '>'}{count}H")


def encode_raw(enc: Encoding, value: int | float | str) -> list[int]:
    """The raw value -> words to put on the wire (the inverse of decode_raw)."""
    if enc.type == "bool":
        return [1 if value else 0]
    if enc.type == "string":
        data = str(value).encode("latin-1")[: enc.count * 2].ljust(enc.count * 2, b"\x00")
        fmt = ">" if enc.byte_order == "big" else "<"
        return list(struct.unpack(f"{fmt}{enc.count}H", data))
    code = _STRUCT[enc.type]
    if enc.type in _INTEGER_RANGE:
        lo, hi = _INTEGER_RANGE[enc.type]
        number = value if isinstance(value, int) else round(float(value))
        if not lo <= number <= hi:
            raise ProfileError(f"{value!r} does not fit in {enc.type} ({lo}..{hi})")
        data = struct.pack(">" + code, number)
    else:
        data = struct.pack(">" + code, float(value))
    return _bytes_to_words(data, enc)


def decode_point(point: ScaledEncoding, words: Sequence[int], *, sf: int = 0) -> int | float | str:
    """Words -> the engineering value in the point's unit: raw x scale x 10^sf + offset."""
    raw = decode_raw(point, words)
    if isinstance(raw, str):
        return raw
    if point.type == "bool":
        return raw
    value = raw * point.scale * (10.0 ** sf) + point.offset
    if point.type in _INTEGER_RANGE and point.scale == 1 and sf == 0 and point.offset == 0:
        return int(value)
    return value


def encode_point(point: ScaledEncoding, value: int | float | str, *, sf: int = 0) -> list[int]:
    """The engineering value -> words (what a simulator serves, or what a write sends)."""
    if isinstance(value, str) or point.type in ("string", "bool"):
        return encode_raw(point, value)
    if (point.type in _INTEGER_RANGE and isinstance(value, int) and point.scale == 1
            and point.offset == 0 and sf == 0):
        return encode_raw(point, value)  # exact: 64-bit counters do not survive a float
    raw = (float(value) - point.offset) / (point.scale * (10.0 ** sf))
    if point.type in _INTEGER_RANGE:
        return encode_raw(point, round(raw))
    if not math.isfinite(raw):
        raise ProfileError(f"{value!r} is not a finite number")
    return encode_raw(point, raw)
