"""decode_batch's fast path for the usual record (wire._plain_record) against the field-at-a-time
parser it stands in front of (wire._record, whose leaves tests/unit/test_measurement.py holds to
eth-account's EIP-712 hashing): the same record, leaf and wire bytes, or the slow path's error, for
usual records and for every kind of unusual field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.measurement import wire
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import Measurement, ScaledReading, measurement_domain, sign

KEY = GatewayKey.from_secret(bytes.fromhex(
    "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))  # TEST-ONLY key
DOMAIN = measurement_domain()


def usual_item(seq: int = 7) -> dict[str, Any]:
    m = Measurement(gateway=KEY.address, device="meter-1", seq=seq, time_ms=1_700_000_000_000,
                    clock_synced=True, readings=(ScaledReading("power_w", -1234, "W", 0),
                                                 ScaledReading("energy_wh", 10**12, "Wh", 1)),
                    prev_hash=bytes(range(32)))
    batch = json.loads(wire.encode_batch([sign(m, KEY, DOMAIN)]))
    item: dict[str, Any] = batch["m"][0]
    return item


def both(item: Any) -> tuple[Any, Any]:
    """(fast path's result or None, slow path's result or its error text)."""
    fast = wire._plain_record(copy.deepcopy(item), KEY.address)
    try:
        slow: Any = wire._record(copy.deepcopy(item), KEY.address, "batch record 0")
    except wire.MeasurementFormatError as exc:
        slow = str(exc)
    return fast, slow


def test_the_usual_record_takes_the_fast_path_and_gives_the_same_record() -> None:
    fast, slow = both(usual_item())
    assert fast is not None and fast == slow
    assert fast.leaf == slow.leaf
    # the wire JSON written while hashing is what json.dumps writes for the same fields
    expected = json.dumps({"v": 1, "gw": KEY.address, **usual_item()}, separators=(",", ":"),
                          ensure_ascii=False).encode()
    assert wire.to_wire(fast) == wire.to_wire(slow) == expected


UNUSUAL: list[tuple[str, Any, Any]] = [  # (what, field or path, value): each leaves the fast path
    ("seq a bool", "seq", True), ("seq negative", "seq", -1), ("seq past uint64", "seq", 1 << 64),
    ("time a float", "t", 1.5), ("sync an int", "sync", 1), ("device not ASCII", "dev", "zähler"),
    ("device too long", "dev", "d" * (wire.MAX_TEXT + 1)), ("device lone surrogate", "dev", "\ud800"),
    ("readings not a list", "r", {}), ("prev short", "prev", "00" * 31),
    ("prev with spaces", "prev", "00 " * 21 + "0"), ("prev not hex", "prev", "zz" * 32),
    ("sig upper case", "sig", None), ("sig missing", "sig", ...),
    ("reading a tuple-ish dict", ("r", 0), {"name": "x"}), ("reading of 3", ("r", 0), ["a", 1, "W"]),
    ("value a float", ("r", 0, 1), 1.0), ("value a bool", ("r", 0, 1), True),
    ("value past int256", ("r", 0, 1), 1 << 255), ("value at int256 min", ("r", 0, 1), -(1 << 255)),
    ("quality 3", ("r", 0, 3), 3), ("quality a bool", ("r", 0, 3), False),
    ("name not ASCII", ("r", 1, 0), "Leistung_µ"), ("unit too long", ("r", 1, 2), "W" * 65),
    ("unit lone surrogate", ("r", 1, 2), "\udfff"), ("record a list", None, []),
]


@pytest.mark.parametrize(("what", "where", "value"), UNUSUAL, ids=[u[0] for u in UNUSUAL])
def test_an_unusual_field_gives_the_slow_paths_record_or_error(what: str, where: Any,
                                                               value: Any) -> None:
    item: Any = usual_item()
    if where is None:
        item = value
    elif isinstance(where, tuple):
        target = item[where[0]][where[1]]
        if len(where) == 2:
            item[where[0]][where[1]] = value
        else:
            target[where[2]] = value
    elif value is ...:
        del item[where]
    elif value is None:
        item[where] = item[where].upper()
    else:
        item[where] = value
    fast, slow = both(item)
    if fast is not None:  # both paths accept these two
        assert fast == slow and what in ("value at int256 min", "sig upper case")
    else:
        assert isinstance(slow, str) or slow.measurement.device == item.get("dev")


def test_decode_batch_names_the_record_of_a_bad_field_as_before() -> None:
    batch = {"v": 1, "gw": KEY.address, "m": [usual_item(1), usual_item(2)]}
    batch["m"][1]["r"][0][3] = 9
    with pytest.raises(wire.MeasurementFormatError,
                       match=r"batch record 1 \(seq 2\) reading 0: quality must be"):
        wire.decode_batch(json.dumps(batch).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 260), 1 << 260) | st.text(max_size=70)
    | st.floats(allow_nan=False), lambda inner: st.lists(inner, max_size=5), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["seq", "t", "sync", "dev", "r", "prev", "sig", "extra"]), json_values,
       st.integers(0, 1), st.integers(0, 3), json_values)
def test_fuzzed_fields_agree(key: str, value: Any, index: int, slot: int, reading_value: Any) -> None:
    item = usual_item()
    item[key] = value
    if isinstance(item.get("r"), list) and len(item["r"]) > index \
            and isinstance(item["r"][index], list) and len(item["r"][index]) > slot:
        item["r"][index][slot] = reading_value
    fast, slow = both(item)
    assert fast is None or fast == slow
    if fast is not None:
        assert wire.to_wire(fast) == wire.to_wire(slow)
