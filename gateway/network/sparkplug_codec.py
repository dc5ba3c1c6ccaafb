"""Sparkplug B payloads on the protobuf wire, sans I/O: encode what the edge node sends, decode NCMD.

Written from the schema of the Sparkplug 3.0 specification (chapter 6, "Payloads", the
`org.eclipse.tahu.protobuf.Payload` listing; the same schema as Eclipse Tahu's
sparkplug_b/sparkplug_b.proto) and the protobuf wire format (varint = 0, 64-bit = 1,
length-delimited = 2, 32-bit = 5; protobuf.dev "Encoding"). Only the fields drgw uses are written;
the reader skips any field it does not know, as protobuf readers must.

Why our own ~150 lines rather than generated protobuf classes or a Sparkplug library: the libraries
on PyPI (pysparkplug, mqtt-spb-wrapper) pin paho-mqtt < 2 while aiomqtt needs paho 2, and generated
`_pb2` modules tie the gateway to one protoc/runtime pair. The tests decode every message we send
with pysparkplug (Google's protobuf runtime over the Tahu schema), an independent decoder.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum


class DataType(IntEnum):
    """Sparkplug B data types (spec 6.4.16, "Data Types"; Tahu's `enum DataType`); the ones we send."""

    INT64 = 4
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12


# Payload fields (spec 6.4.1): timestamp = 1 (uint64), metrics = 2 (repeated Metric), seq = 3.
_P_TIMESTAMP, _P_METRICS, _P_SEQ = 1, 2, 3
# Metric fields (spec 6.4.4): name = 1, alias = 2, timestamp = 3, datatype = 4, is_null = 7, and the
# `oneof value`: long_value = 11 (uint64), double_value = 13, boolean_value = 14, string_value = 15.
_M_NAME, _M_TIMESTAMP, _M_DATATYPE, _M_IS_NULL = 1, 3, 4, 7
_M_LONG, _M_DOUBLE, _M_BOOLEAN, _M_STRING = 11, 13, 14, 15
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = 1 << 64

Value = int | float | bool | str | None


class SparkplugDecodeError(ValueError):
    """A peer's payload is not a Sparkplug B payload we can read (truncated, wrong wire type)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One metric. `datatype` None leaves it out (DATA messages: spec tck-id-payloads-metric-
    datatype-not-req); `value` None sends `is_null` (no value, e.g. a reading in error)."""

    name: str
    timestamp: int  # ms since the epoch, UTC: when the value was measured
    value: Value
    datatype: DataType | None = None
    kind: DataType | None = None  # the type that picks the value field when datatype is left out


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _uint(field: int, n: int) -> bytes:
    return _key(field, _VARINT) + _varint(n)


def _chunk(field: int, data: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(data)) + data


def _value(kind: DataType, value: int | float | bool | str) -> bytes:
    if kind is DataType.INT64:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"an Int64 metric needs an int, not {value!r}")
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"{value} does not fit an Int64 metric")
        return _uint(_M_LONG, value % _U64)  # signed in uint64: two's complement (spec 6.4.16)
    if kind is DataType.DOUBLE:
        return _key(_M_DOUBLE, _I64) + struct.pack("<d", float(value))
    if kind is DataType.BOOLEAN:
        return _uint(_M_BOOLEAN, int(bool(value)))
    return _chunk(_M_STRING, str(value).encode())


def encode_metric(m: Metric) -> bytes:
    out = _chunk(_M_NAME, m.name.encode()) + _uint(_M_TIMESTAMP, m.timestamp)
    if m.datatype is not None:
        out += _uint(_M_DATATYPE, int(m.datatype))
    if m.value is None:
        return out + _uint(_M_IS_NULL, 1)
    kind = m.datatype or m.kind
    if kind is None:
        raise ValueError(f"metric {m.name!r}: no datatype to choose its value field")
    return out + _value(kind, m.value)


def encode_payload(*, timestamp: int, metrics: Sequence[Metric], seq: int | None) -> bytes:
    """A Payload; `seq` None for NDEATH, which carries none (spec tck-id-topics-ndeath-seq)."""
    out = _uint(_P_TIMESTAMP, timestamp)
    out += b"".join(_chunk(_P_METRICS, encode_metric(m)) for m in metrics)
    if seq is not None:
        out += _uint(_P_SEQ, seq)
    return out


# --- reading (NCMD from a host) ------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise SparkplugDecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one message: ints for varint, bytes for the rest."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
            yield field, value
            continue
        if wire == _LEN:
            size, pos = _read_varint(data, pos)
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
        else:
            raise SparkplugDecodeError(f"field {field}: wire type {wire} is not used by Sparkplug B")
        if pos + size > len(data):
            raise SparkplugDecodeError(f"field {field}: {size} bytes announced, fewer left")
        yield field, data[pos:pos + size]
        pos += size


def decode_metrics(payload: bytes) -> list[tuple[str, Value]]:
    """(name, value) of each metric of a payload: enough to read a host's NCMD (spec 5.x
    "Node Control/Rebirth"). Values: bool, int (long/int field), float, str; None when absent."""
    out: list[tuple[str, Value]] = []
    for field, raw in _fields(payload):
        if field != _P_METRICS or not isinstance(raw, bytes):
            continue
        name, value = "", None  # type: str, Value
        for mfield, mraw in _fields(raw):
            if mfield == _M_NAME and isinstance(mraw, bytes):
                name = mraw.decode(errors="replace")
            elif mfield == _M_BOOLEAN and isinstance(mraw, int):
                value = bool(mraw)
            elif mfield in (10, _M_LONG) and isinstance(mraw, int):
                value = mraw
            elif mfield == _M_DOUBLE and isinstance(mraw, bytes) and len(mraw) == 8:
                value = struct.unpack("<d", mraw)[0]
            elif mfield == _M_STRING and isinstance(mraw, bytes):
                value = mraw.decode(errors="replace")
        out.append((name, value))
    return out
