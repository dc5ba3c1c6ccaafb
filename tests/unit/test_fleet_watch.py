"""StreamChecker (drgw fleet watch): gaps, late fills, duplicates vs reused seqs, broken chains,
forged signatures and out-of-order arrival, on records made by a real MeasurementChain."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.master.watch import Finding, StreamChecker
from gateway.measurement.eip712 import ZERO32
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    MeasurementChain,
    ScaledReading,
    SignedMeasurement,
    measurement_domain,
    sign,
)
from gateway.measurement.wire import encode_batch

# TEST-ONLY keys: never use them for a real gateway.
KEY = GatewayKey.from_secret(
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
OTHER = GatewayKey.from_secret(bytes(31) + b"\x07")
DOMAIN = measurement_domain()
GW = KEY.address.lower()


def records(n: int, *, key: GatewayKey = KEY, start: int = 0, prev: bytes = ZERO32,
            watts: int = 1000) -> list[SignedMeasurement]:
    chain = MeasurementChain(gateway=key.address, last_seq=start, last_hash=prev)
    return [chain.next_signed(key, DOMAIN, device="main", time_ms=1_700_000_000_000 + i,
                              clock_synced=True, readings=[ScaledReading("p", watts + i, "W", 0)])
            for i in range(n)]


def feed(checker: StreamChecker, *signed: SignedMeasurement, gw: str = GW) -> list[Finding]:
    return checker.feed(gw, encode_batch(list(signed)))


def kinds(found: list[Finding]) -> list[tuple[str, int | None, int | None]]:
    return [(f.kind, f.seq_from, f.seq_to) for f in found]


@pytest.fixture
def checker() -> StreamChecker:
    return StreamChecker(DOMAIN)


def test_an_intact_stream_has_no_findings(checker: StreamChecker) -> None:
    recs = records(6)
    assert feed(checker, *recs[:3]) == []
    assert feed(checker, *recs[3:]) == []
    assert checker.summary()[GW] == {"received": 6, "valid": 6, "missing": 0, "duplicates": 0,
                                     "forgeries": 0, "malformed": 0, "last_seq": 6}


def test_a_gap_is_reported_and_a_resend_fills_it(checker: StreamChecker) -> None:
    recs = records(6)
    assert feed(checker, *recs[:2]) == []
    found = feed(checker, recs[4], recs[5])
    assert kinds(found) == [("gap", 3, 4)]
    assert "2 record(s) missing" in found[0].detail
    assert checker.summary()[GW]["missing"] == 2
    # The resend of 3 and 4: late, and each chains to its neighbours on both sides.
    assert kinds(feed(checker, recs[2], recs[3])) == [("late", 3, 3), ("late", 4, 4)]
    summary = checker.summary()[GW]
    assert (summary["missing"], summary["forgeries"], summary["last_seq"]) == (0, 0, 6)


def test_identical_redelivery_is_a_duplicate_not_a_forgery(checker: StreamChecker) -> None:
    recs = records(3)
    feed(checker, *recs)
    found = feed(checker, recs[1])  # a QoS 1 redelivery
    assert kinds(found) == [("duplicate", 2, 2)]
    summary = checker.summary()[GW]
    assert (summary["received"], summary["valid"], summary["duplicates"]) == (4, 3, 1)
    assert summary["forgeries"] == 0


def test_another_record_under_a_used_seq_is_a_forgery(checker: StreamChecker) -> None:
    recs = records(3)
    feed(checker, *recs)
    # Properly signed by the gateway's own key, seq 2 again with other content: equivocation.
    twin = records(1, start=1, prev=recs[0].leaf, watts=5)[0]
    assert twin.measurement.seq == 2 and twin.leaf != recs[1].leaf
    found = feed(checker, twin)
    assert kinds(found) == [("forgery", 2, 2)]
    assert "seen before with other content" in found[0].detail


def test_a_prev_hash_that_does_not_match_breaks_the_chain(checker: StreamChecker) -> None:
    recs = records(2)
    feed(checker, *recs)
    stray = records(1, start=2, prev=b"\x42" * 32)[0]  # seq 3, but not after our seq 2
    found = feed(checker, stray)
    assert kinds(found) == [("forgery", 3, 3)]
    assert "prev hash of seq 3" in found[0].detail and "chain is broken" in found[0].detail


def test_a_late_record_that_the_next_one_does_not_chain_to_is_a_forgery(
        checker: StreamChecker) -> None:
    recs = records(3)
    feed(checker, recs[0], recs[2])  # 2 is missing
    impostor = records(1, start=1, prev=recs[0].leaf, watts=7)[0]  # seq 2, chains to 1 only
    found = feed(checker, impostor)
    assert ("forgery", 2, 3) in kinds(found)
    assert any("seq 3 does not chain to seq 2" in f.detail for f in found)


def test_out_of_order_arrival_of_a_valid_chain_is_only_late(checker: StreamChecker) -> None:
    recs = records(5)
    assert kinds(feed(checker, recs[0], recs[2], recs[1], recs[4], recs[3])) == [
        ("gap", 2, 2), ("late", 2, 2), ("gap", 4, 4), ("late", 4, 4)]
    summary = checker.summary()[GW]
    assert (summary["valid"], summary["missing"], summary["forgeries"]) == (5, 0, 0)


def test_a_record_signed_by_another_key_is_a_forgery(checker: StreamChecker) -> None:
    recs = records(2)
    feed(checker, recs[0])
    # Names our gateway, continues our chain, but signed with someone else's key.
    forged = SignedMeasurement(measurement=recs[1].measurement,
                               signature=OTHER.sign_digest(b"\x00" * 32), leaf=recs[1].leaf)
    found = feed(checker, forged)
    assert kinds(found) == [("forgery", 2, 2)]
    assert f"topic gateway is {GW}" in found[0].detail
    assert checker.summary()[GW]["valid"] == 1


def test_a_record_altered_after_signing_is_a_forgery(checker: StreamChecker) -> None:
    rec = records(1)[0]
    altered = dataclasses.replace(rec.measurement, readings=(ScaledReading("p", 9999, "W", 0),))
    found = feed(checker, SignedMeasurement(measurement=altered, signature=rec.signature,
                                            leaf=rec.leaf))
    assert kinds(found) == [("forgery", 1, 1)]


def test_a_malformed_signature_is_a_forgery(checker: StreamChecker) -> None:
    rec = records(1)[0]
    bad_v = rec.signature[:64] + b"\x05"
    found = feed(checker, SignedMeasurement(measurement=rec.measurement, signature=bad_v,
                                            leaf=rec.leaf))
    assert kinds(found) == [("forgery", 1, 1)] and "bad signature" in found[0].detail


def test_records_of_another_gateway_on_our_topic_are_forgeries(checker: StreamChecker) -> None:
    theirs = records(1, key=OTHER)[0]  # validly signed, but by the gateway the topic is not
    found = feed(checker, theirs)
    assert kinds(found) == [("forgery", 1, 1)]
    assert OTHER.address.lower() in found[0].detail


def test_a_malformed_payload_is_reported_not_raised(checker: StreamChecker) -> None:
    found = checker.feed(GW, b'{"v":1,"gw":"0x12","m":[')
    assert [f.kind for f in found] == ["malformed"]
    assert checker.summary()[GW]["malformed"] == 1


def test_gateway_case_does_not_split_a_stream(checker: StreamChecker) -> None:
    recs = records(2)
    feed(checker, recs[0], gw=KEY.address)  # checksum case, as a topic may carry it
    assert feed(checker, recs[1], gw=KEY.address.upper().replace("0X", "0x")) == []
    assert list(checker.summary()) == [GW]


def test_memory_is_bounded_but_the_stream_goes_on() -> None:
    checker = StreamChecker(DOMAIN, remember=3)
    recs = records(10)
    assert feed(checker, *recs) == []
    stream = checker.streams[GW]
    assert list(stream.leaves) == [8, 9, 10]
    assert checker.summary()[GW]["last_seq"] == 10
    # A redelivery older than the memory is no longer recognised as a duplicate: it is "late".
    assert kinds(feed(checker, recs[0])) == [("late", 1, 1)]


def test_signatures_are_checked_under_the_checkers_domain() -> None:
    checker = StreamChecker(measurement_domain(1337))  # the gateway signs for chain id 1
    found = feed(checker, records(1)[0])
    assert kinds(found) == [("forgery", 1, 1)]


def test_forged_records_do_not_move_the_stream() -> None:
    checker = StreamChecker(DOMAIN)
    recs = records(3)
    feed(checker, recs[0])
    stranger = sign(dataclasses.replace(recs[1].measurement, gateway=OTHER.address), OTHER, DOMAIN)
    feed(checker, stranger)
    # The stranger's seq 2 was not accepted, so the real seq 2 is neither duplicate nor forgery.
    assert feed(checker, recs[1], recs[2]) == []
