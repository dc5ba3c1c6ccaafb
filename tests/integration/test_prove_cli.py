"""`drgw prove SEQ` on a real store of real signed records and a real DR journal: the proof it prints
folds (by OpenZeppelin MerkleProof's rule, re-implemented here from its spec) into the Report's root,
and each way it can fail says what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from gateway.chain.report import Report
from gateway.cli import main
from gateway.loop import messages
from gateway.loop.journal import Journal
from gateway.measurement import merkle
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain
from gateway.measurement.store import Store

KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
MARKET = "0x" + "ab" * 20
HOUSEHOLD = "0x" + "11" * 20
T0 = 1_800_000_000
# 20 records, one a second from T0 (seq n taken at T0 + n - 1); the window [T0 + 5, T0 + 15) holds the
# records taken at T0 + 5 .. T0 + 14, i.e. seq 6..15: ten leaves
WINDOW = (T0 + 5, T0 + 15)


def oz_fold(leaf: bytes, proof: list[bytes]) -> bytes:
    """OpenZeppelin MerkleProof.processProof: hash with each sibling, the smaller of the pair first
    (Hashes.commutativeKeccak256)."""
    h = leaf
    for sibling in proof:
        h = keccak(min(h, sibling) + max(h, sibling))
    return h


def gateway_store(tmp_path: Path, *, root: bytes | None = None) -> tuple[Path, dict[int, bytes]]:
    """A store with 20 signed records and a journal with window 3's Report over seq 6..15 (its root
    as the agent made it, unless `root` is given); returns the path and every record's leaf."""
    path = tmp_path / "drgw.db"
    chain = MeasurementChain(gateway=KEY.address)
    signed = [chain.next_signed(KEY, measurement_domain(), device="main", time_ms=(T0 + i) * 1000,
                                clock_synced=True, readings=[ScaledReading("p", 1000 + i, "W", 0)])
              for i in range(20)]
    with Store(path) as store:
        store.commit(signed, "drgw/v1/gw/meas")
    leaves = {sm.measurement.seq: sm.leaf for sm in signed}
    in_window = [leaves[s] for s in range(6, 16)]
    report = Report(household=HOUSEHOLD, window=3, seq_from=6, seq_to=15, window_start=WINDOW[0],
                    window_end=WINDOW[1], baseline_method=2, baseline_input_hash=b"\x12" * 32,
                    baseline_wh=500, actual_wh=-100, delivered_wh=600,
                    merkle_root=root or merkle.root(in_window))
    journal = Journal(path)
    event_id = f"chain:{MARKET}:3"
    journal.save_event(event_id=event_id, modification=0, state="completed", start_s=WINDOW[0],
                       end_s=WINDOW[1], body={"event_id": event_id}, now_ms=0)
    journal.save_outcome(event_id, verdict={}, report=messages.report_json(report), report_id=1,
                         chain_state="accepted", now_ms=0)
    journal.close()
    return path, leaves


def drgw(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["prove", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("seq", [6, 9, 15])
def test_the_proof_folds_into_the_reports_root(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               seq: int) -> None:
    path, leaves = gateway_store(tmp_path)
    code, out, _ = drgw(capsys, str(seq), "--store", str(path), "--json")
    assert code == 0
    body = json.loads(out)
    proof = [bytes.fromhex(h[2:]) for h in body["proof"]]
    assert body["leaf"] == "0x" + leaves[seq].hex()  # the record's own struct hash, as signed
    assert 1 <= len(proof) <= 4  # ten leaves: at most ceil(log2(10)) = 4 levels
    root = oz_fold(leaves[seq], proof)
    assert body["root"] == "0x" + root.hex()
    assert (body["seq"], body["device"], body["time_ms"]) == (seq, "main", (T0 + seq - 1) * 1000)
    assert (body["window"], body["household"], body["market"]) == (3, HOUSEHOLD, MARKET)
    assert (body["window_start"], body["window_end"], body["leaf_count"]) == (*WINDOW, 10)
    # a neighbour's leaf does not fold into the root with this proof
    assert oz_fold(leaves[seq + 1 if seq < 15 else seq - 1], proof) != root


def test_text_output_names_the_record_the_root_and_the_window(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, leaves = gateway_store(tmp_path)
    code, out, _ = drgw(capsys, "9", "--store", str(path))
    assert code == 0
    assert "seq        9 (device main, 2027-01-15T08:00:08.000Z)" in out  # T0 + 8 s, UTC
    assert f"leaf       0x{leaves[9].hex()}" in out and "leaf 4 of 10" in out
    assert "window     3 (2027-01-15T08:00:05.000Z .. 2027-01-15T08:00:15.000Z)" in out
    assert f"household  {HOUSEHOLD}" in out


@pytest.mark.parametrize(("seq", "expected"), [
    (99, "seq 99 is not in the store"),
    (3, "seq 3 is in no reported window; the Reports in the journal cover window 3: seq 6..15"),
])
def test_a_seq_outside_every_report_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               seq: int, expected: str) -> None:
    path, _ = gateway_store(tmp_path)
    code, out, err = drgw(capsys, str(seq), "--store", str(path))
    assert code != 0 and out == "" and expected in err and "Traceback" not in err


def test_a_root_that_is_not_the_reports_is_named(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = gateway_store(tmp_path, root=b"\xee" * 32)
    code, _, err = drgw(capsys, "9", "--store", str(path))
    assert code != 0
    assert "root mismatch for window 3" in err and "0x" + "ee" * 32 in err and "seq 6..15" in err


def test_missing_store_and_a_journal_without_reports(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = drgw(capsys, "1", "--store", str(tmp_path / "nowhere.db"))
    assert code != 0 and "no gateway store here" in err
    with Store(tmp_path / "plain.db"):
        pass  # a gateway that never ran the DR loop
    code, _, err = drgw(capsys, "1", "--store", str(tmp_path / "plain.db"))
    assert code != 0 and "the DR journal holds no Report" in err
