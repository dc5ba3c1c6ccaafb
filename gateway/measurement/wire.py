"""The wire form of signed measurements: one record or one batch as compact JSON, and strict parsing.

A record is {"v":1,"gw":...,"dev","seq","t","sync","r","prev","sig"}; a batch (one MQTT payload) is
{"v":1,"gw":GATEWAY,"m":[record without v/gw, ...]} (docs/measurements.md has the full contract).
Encoding is written by hand for speed and gives the bytes json.dumps would; decoding trusts nothing: a
malformed or oversized payload raises MeasurementFormatError naming the field, and each record's
struct hash is recomputed (the signature is checked by `record.recover_signer`, not here). Pure.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate
from typing import Any

from gateway.errors import RemoteError
from gateway.measurement.eip712 import address_bytes, checksum_address, keccak256, keccak_new
from gateway.measurement.record import (
    INT256_MAX,
    INT256_MIN,
    Measurement,
    ScaledReading,
    SignedMeasurement,
    json_string,
    reading_frames,
    readings_json,
    record_hash,
    struct_hash,
)

WIRE_VERSION = 1
# Bounds that keep a hostile payload from costing more than a few KB of work per record.
MAX_TEXT = 64
MAX_READINGS = 256
MAX_BATCH = 10_000
_UINT64_MAX = (1 << 64) - 1


class MeasurementFormatError(RemoteError):
    """A wire-form measurement or batch that is malformed: the message names the field."""


# ---- encoding ---------------------------------------------------------------------------------

def _item(sm: SignedMeasurement) -> str:
    """A record's fields after "gw", as JSON object members without the closing brace."""
    m = sm.measurement
    return (f'"dev":{json_string(m.device)},"seq":{m.seq:d},"t":{m.time_ms:d},'
            f'"sync":{"true" if m.clock_synced else "false"},"r":[{readings_json(m)}],'
            f'"prev":"{m.prev_hash.hex()}","sig":"{sm.signature.hex()}"')


def to_wire(sm: SignedMeasurement) -> bytes:
    """Compact JSON of one record: {"v":1,"gw":...,"dev","seq","t","sync","r","prev","sig"}."""
    head = f'{{"v":{WIRE_VERSION:d},"gw":{json_string(sm.measurement.gateway)},'
    return (head + _item(sm) + "}").encode("utf-8")


def encode_batch(signed: Sequence[SignedMeasurement]) -> bytes:
    """One MQTT payload: {"v":1,"gw":GATEWAY,"m":[record without v/gw, ...]} (one gateway)."""
    if not signed:
        raise ValueError("a batch holds at least one measurement")
    gateway = signed[0].measurement.gateway
    if any(sm.measurement.gateway != gateway for sm in signed):
        raise ValueError("a batch holds the measurements of one gateway")
    items = "},{".join([_item(sm) for sm in signed])
    head = f'{{"v":{WIRE_VERSION:d},"gw":{json_string(gateway)},'
    return (head + '"m":[{' + items + "}]}").encode("utf-8")


def batch_from_wire(wires: Sequence[bytes]) -> bytes:
    """`encode_batch` of records already in wire form (as the store keeps them), without
    re-encoding: the same bytes, because to_wire writes "v" and "gw" first and the rest verbatim."""
    if not wires:
        raise ValueError("a batch holds at least one measurement")
    head = wires[0][:_WIRE_HEAD]  # {"v":1,"gw":"0x<40 hex>",
    if any(w[:_WIRE_HEAD] != head for w in wires):
        raise ValueError("a batch holds the measurements of one gateway")
    return (head + b'"m":[{' + b",{".join(w[_WIRE_HEAD:] for w in wires) + b"]}")


_WIRE_HEAD = len(b'{"v":1,"gw":"0x0000000000000000000000000000000000000000",')


# ---- decoding (anything a peer sends) ---------------------------------------------------------

# json's C scanner recurses once per nesting level; a payload of 100k "[" can overflow the C stack
# (a segfault, not a RecursionError, when the recursion limit was raised). Our payloads nest 4 deep,
# so the depth is measured first, with strings blanked out, at C speed.
_MAX_DEPTH = 8
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _nesting(raw: bytes) -> int:
    skeleton = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET).translate(_BRACKET_STEP)
    return max(accumulate(array("b", skeleton)), default=0)


def _loads(data: bytes | str, what: str) -> Any:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _nesting(raw) > _MAX_DEPTH:
        raise MeasurementFormatError(f"{what} nests deeper than {_MAX_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digits
        raise MeasurementFormatError(f"{what} is not JSON: {exc}") from None


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise MeasurementFormatError(f"{where}: field {key!r} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MeasurementFormatError(f"{where}: field {key!r} has the wrong type "
                                     f"({type(value).__name__})")
    return value


def _text(value: Any, where: str, what: str = "", i: int | None = None) -> str:
    """A short valid string. An error names `where`, then reading `i`'s `what` or `what`: the place
    is written out only on failure (this runs for every reading the master ingests)."""
    if isinstance(value, str) and len(value) <= MAX_TEXT:
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: not hashable as UTF-8
            problem = "string is not valid Unicode"
    else:
        problem = f"expected a string of at most {MAX_TEXT} characters"
    place = where if not what else f"{where} reading {i} {what}" if i is not None \
        else f"{where} {what}"
    raise MeasurementFormatError(f"{place}: {problem}")


def _uint(obj: dict[str, Any], key: str, where: str, maximum: int = _UINT64_MAX) -> int:
    value: int = _field(obj, key, int, where)
    if not 0 <= value <= maximum:
        raise MeasurementFormatError(f"{where}: field {key!r} is out of range 0..{maximum}")
    return value


def _hex(obj: dict[str, Any], key: str, size: int, where: str) -> bytes:
    text = _field(obj, key, str, where)
    try:
        raw = bytes.fromhex(text) if len(text) == 2 * size else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise MeasurementFormatError(f"{where}: field {key!r} must be {2 * size} hex digits")
    return raw


@lru_cache(maxsize=65_536)
def _checksummed(text: str) -> str | None:
    """The EIP-55 form of an address text, None if it is not one: a pure memo, because a master
    sees every payload of the same gateways and the checksum costs ~8 us (a keccak and a loop)."""
    try:
        return checksum_address(address_bytes(text))
    except ValueError:
        return None


def _gateway(obj: dict[str, Any], where: str) -> str:
    text = _field(obj, "gw", str, where)
    gateway = _checksummed(text) if len(text) == 42 else None
    if gateway is None:
        raise MeasurementFormatError(f"{where}: field 'gw' is not an address")
    if gateway != text:
        raise MeasurementFormatError(f"{where}: field 'gw' must be the EIP-55 checksum address "
                                     f"{gateway}")
    return gateway


def _reading(value: Any, record: str, i: int) -> ScaledReading:
    """Reading `i` of `record` (the place an error names, written out only on failure)."""
    if not isinstance(value, list) or len(value) != 4:
        raise MeasurementFormatError(f"{record} reading {i}: a reading is [name, value, unit, "
                                     "quality]")
    name, scaled, unit, quality = value
    if not isinstance(scaled, int) or isinstance(scaled, bool) or not (
            INT256_MIN <= scaled <= INT256_MAX):
        raise MeasurementFormatError(f"{record} reading {i}: value must be an int256 "
                                     "(value x 10^3)")
    if not isinstance(quality, int) or isinstance(quality, bool) or quality not in (0, 1, 2):
        raise MeasurementFormatError(f"{record} reading {i}: quality must be 0 (ok), 1 (stale) or "
                                     "2 (error)")
    return ScaledReading(_text(name, record, "name", i), scaled, _text(unit, record, "unit", i),
                         quality)


def _record(obj: Any, gateway: str, where: str) -> SignedMeasurement:
    if not isinstance(obj, dict):
        raise MeasurementFormatError(f"{where}: a record is a JSON object")
    seq = _uint(obj, "seq", where)
    where = f"{where} (seq {seq})"
    raw = _field(obj, "r", list, where)
    if len(raw) > MAX_READINGS:
        raise MeasurementFormatError(f"{where}: more than {MAX_READINGS} readings")
    m = Measurement(
        gateway=gateway, device=_text(_field(obj, "dev", str, where), where, "field 'dev'"),
        seq=seq, time_ms=_uint(obj, "t", where), clock_synced=_field(obj, "sync", bool, where),
        readings=tuple(_reading(r, where, i) for i, r in enumerate(raw)),
        prev_hash=_hex(obj, "prev", 32, where))
    return SignedMeasurement(measurement=m, signature=_hex(obj, "sig", 65, where),
                             leaf=struct_hash(m))


def _plain_record(obj: Any, gateway: str) -> SignedMeasurement | None:
    """`_record` for the usual record, or None for anything unusual, which `_record` then parses
    and words: every type is checked by its exact class, every string must be ASCII (so valid
    UTF-8; `_record` takes the other valid ones), and the readings' wire JSON is written while
    they are hashed, as the signing side does (record._scale_and_hash), so storing the record
    need not write it again. This is the master's ingest hot path: about half the cost of the
    checks one field at a time. tests/unit/test_wire_fast_path.py holds both paths to the same
    results."""
    if obj.__class__ is not dict:
        return None
    get = obj.get
    seq, time_ms, synced, device = get("seq"), get("t"), get("sync"), get("dev")
    raw, prev_text, sig_text = get("r"), get("prev"), get("sig")
    if (seq.__class__ is not int or time_ms.__class__ is not int or synced.__class__ is not bool
            or device.__class__ is not str or raw.__class__ is not list
            or prev_text.__class__ is not str or sig_text.__class__ is not str
            or not 0 <= seq <= _UINT64_MAX or not 0 <= time_ms <= _UINT64_MAX
            or len(device) > MAX_TEXT or not device.isascii() or len(raw) > MAX_READINGS
            or len(prev_text) != 64 or len(sig_text) != 130):
        return None
    try:
        prev, sig = bytes.fromhex(prev_text), bytes.fromhex(sig_text)
    except ValueError:
        return None
    if len(prev) != 32 or len(sig) != 65:  # fromhex skips whitespace
        return None
    readings: list[ScaledReading] = []
    items: list[bytes] = []
    wire: list[str] = []
    make = tuple.__new__
    for r in raw:
        if r.__class__ is not list or len(r) != 4:
            return None
        name, value, unit, quality = r
        if (value.__class__ is not int or quality.__class__ is not int or not 0 <= quality <= 2
                or name.__class__ is not str or unit.__class__ is not str
                or len(name) > MAX_TEXT or len(unit) > MAX_TEXT
                or not name.isascii() or not unit.isascii()):
            return None
        head, tail, json_head, json_tail = reading_frames(name, unit, quality)
        try:
            items.append(keccak_new(head + value.to_bytes(32, "big", signed=True) + tail).digest())
        except OverflowError:  # outside int256
            return None
        wire.append(f"{json_head}{value:d}{json_tail}")
        readings.append(make(ScaledReading, (name, value, unit, quality)))
    scaled = tuple(readings)
    m = Measurement(gateway=gateway, device=device, seq=seq, time_ms=time_ms,
                    clock_synced=synced, readings=scaled, prev_hash=prev,
                    readings_json=(scaled, ",".join(wire)))
    return SignedMeasurement(measurement=m, signature=sig,
                             leaf=record_hash(m, keccak256(b"".join(items))))


def _version(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MeasurementFormatError(f"{what} must be a JSON object")
    if type(obj.get("v")) is not int or obj["v"] != WIRE_VERSION:
        raise MeasurementFormatError(f"{what}: field 'v' must be {WIRE_VERSION} (this gateway "
                                     f"reads wire version {WIRE_VERSION} only)")
    return obj


def from_wire(data: bytes | str | dict[str, Any]) -> SignedMeasurement:
    """Parse one wire-form record. Raises MeasurementFormatError (naming the field) on bad input;
    the signature is not checked here (see `recover_signer`)."""
    obj = _version(data if isinstance(data, dict) else _loads(data, "record"), "record")
    return _record(obj, _gateway(obj, "record"), "record")


def decode_batch(data: bytes | str | dict[str, Any]) -> list[SignedMeasurement]:
    """Parse one batch payload. Raises MeasurementFormatError (naming the field) on bad input."""
    obj = _version(data if isinstance(data, dict) else _loads(data, "batch"), "batch")
    gateway = _gateway(obj, "batch")
    items = _field(obj, "m", list, "batch")
    if not 0 < len(items) <= MAX_BATCH:
        raise MeasurementFormatError(f"batch: field 'm' must hold 1..{MAX_BATCH} records")
    out = []
    for i, item in enumerate(items):
        sm = _plain_record(item, gateway)
        out.append(sm if sm is not None else _record(item, gateway, f"batch record {i}"))
    return out
