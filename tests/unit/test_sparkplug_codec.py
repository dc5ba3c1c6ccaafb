"""The Sparkplug B codec against an independent decoder: pysparkplug (Google's protobuf runtime over
the Eclipse Tahu schema) reads back every payload we write, and writes the NCMD we read."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.network.sparkplug_codec import (
    DataType,
    Metric,
    SparkplugDecodeError,
    decode_metrics,
    encode_payload,
)

pysparkplug = pytest.importorskip("pysparkplug")  # scripts/setup --test installs it (--no-deps)

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
times = st.integers(min_value=0, max_value=(1 << 64) - 1)
int64s = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
doubles = st.floats(allow_nan=False)


@st.composite
def metrics(draw: st.DrawFn) -> Metric:
    kind = draw(st.sampled_from([DataType.INT64, DataType.DOUBLE, DataType.BOOLEAN,
                                 DataType.STRING]))
    value = draw({DataType.INT64: int64s, DataType.DOUBLE: doubles, DataType.BOOLEAN: st.booleans(),
                  DataType.STRING: st.text(max_size=20)}[kind] | st.none())
    return Metric(name=draw(names), timestamp=draw(times), value=value, datatype=kind)


@given(timestamp=times, seq=st.integers(0, 255), ms=st.lists(metrics(), max_size=8))
def test_a_birth_reads_back_with_pysparkplug(timestamp: int, seq: int, ms: list[Metric]) -> None:
    decoded = pysparkplug.DBirth.decode(encode_payload(timestamp=timestamp, metrics=ms, seq=seq))
    assert decoded.timestamp == timestamp and decoded.seq == seq
    assert len(decoded.metrics) == len(ms)
    for ours, theirs in zip(ms, decoded.metrics, strict=True):
        assert theirs.name == ours.name and theirs.timestamp == ours.timestamp
        assert int(theirs.datatype) == int(ours.datatype or 0)
        assert theirs.is_null == (ours.value is None)
        if ours.value is not None:
            assert theirs.value == ours.value or (math.isinf(ours.value) and theirs.value == ours.value)


@given(ms=st.lists(metrics(), min_size=1, max_size=8, unique_by=lambda m: m.name))
def test_data_without_datatypes_reads_back_against_its_birth(ms: list[Metric]) -> None:
    birth = pysparkplug.DBirth.decode(encode_payload(timestamp=1, metrics=ms, seq=1))
    data = [Metric(name=m.name, timestamp=m.timestamp, value=m.value, kind=m.datatype) for m in ms]
    decoded = pysparkplug.DData.decode(encode_payload(timestamp=2, metrics=data, seq=2), birth=birth)
    assert [(m.name, m.value) for m in decoded.metrics] == [(m.name, m.value) for m in ms]


def test_ndeath_has_no_seq_and_the_bdseq_int64() -> None:
    raw = encode_payload(timestamp=5, seq=None, metrics=[
        Metric(name="bdSeq", timestamp=5, value=255, datatype=DataType.INT64)])
    death = pysparkplug.NDeath.decode(raw)
    assert death.bd_seq_metric.value == 255
    assert death.bd_seq_metric.datatype == pysparkplug.DataType.INT64


def test_a_rebirth_ncmd_written_by_pysparkplug_is_read() -> None:
    ncmd = pysparkplug.NCmd(timestamp=1, metrics=(pysparkplug.Metric(
        timestamp=1, name="Node Control/Rebirth", datatype=pysparkplug.DataType.BOOLEAN,
        value=True),))
    assert decode_metrics(ncmd.encode(include_dtypes=True)) == [("Node Control/Rebirth", True)]


def test_a_truncated_payload_is_a_decode_error() -> None:
    raw = encode_payload(timestamp=1, seq=0, metrics=[
        Metric(name="x", timestamp=1, value=1.5, datatype=DataType.DOUBLE)])
    with pytest.raises(SparkplugDecodeError):
        decode_metrics(raw[:-3])
