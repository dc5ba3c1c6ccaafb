"""The baseline's input hash: the canonical encoding of everything a baseline was computed from.

Pure. keccak256 over a packed, big-endian encoding (docs/baselines.md, "Input hash") of the method,
the window, the slot length, the calendar, every parameter, the curve, the days used and every history
slot read, so that anyone holding the same history can recompute the baseline a Report names.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable

from gateway.loop.baseline_history import EPOCH, History, Slot
from gateway.loop.baseline_spec import BaselineSpec
from gateway.measurement.eip712 import keccak256

HASH_TAG = b"drgw-baseline/1"  # a fixed UTC offset (UTC included); bump with any encoding change
ZONE_TAG = b"drgw-baseline/2"  # the same, with a named time zone in place of the offset
CUT_TAG = b"drgw-baseline/3"  # prefix of /1 or /2 for a committed baseline: with its inputs' end


def input_hash(*, spec: BaselineSpec, history: History, window_start_s: int, window_end_s: int,
               days: Iterable[dt.date], read: Iterable[Slot], inputs_end_s: int | None = None) -> bytes:
    """keccak256 of the encoding; `read` is every slot the method looked at (any order).
    `inputs_end_s` (a committed baseline's cut-off, on the slot grid) is prefixed with its own tag,
    so baselines computed without one keep their hash."""
    tag, calendar = _calendar(history)
    cut = [] if inputs_end_s is None else [CUT_TAG, struct.pack(">q", inputs_end_s)]
    parts = [*cut, tag, struct.pack(">Hqqi", spec.method, window_start_s, window_end_s, history.slot_s),
             calendar]
    params = spec.resolved()
    parts.append(struct.pack(">H", len(params)))
    for name, value in params:
        raw = name.encode("ascii")
        parts += [struct.pack(">B", len(raw)), raw, _f64(value)]
    parts.append(struct.pack(">I", len(spec.curve_w)))
    parts += [_f64(v) for v in spec.curve_w]
    used = sorted(days)
    parts.append(struct.pack(">H", len(used)))
    parts += [struct.pack(">i", (day - EPOCH).days) for day in used]
    slots = sorted(read, key=lambda slot: slot.start_s)
    parts.append(struct.pack(">I", len(slots)))
    for slot in slots:
        parts += [struct.pack(">q", slot.start_s), _f64(slot.avg_w), _f64(slot.coverage)]
    return keccak256(b"".join(parts))


def _calendar(history: History) -> tuple[bytes, bytes]:
    """The tag and the calendar field: the fixed offset as int32, or the zone's name (uint8 length, ASCII)."""
    name = history.zone_name
    if name is None:
        return HASH_TAG, struct.pack(">i", history.utc_offset_s)
    raw = name.encode("ascii")
    return ZONE_TAG, struct.pack(">B", len(raw)) + raw


def _f64(value: float) -> bytes:
    return struct.pack(">d", value + 0.0)  # + 0.0 turns -0.0 into 0.0: one encoding per value
