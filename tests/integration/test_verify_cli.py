"""`drgw verify`, `drgw export` and `drgw keys` on real files: what passes, and what each failure says."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.commands import keys, verify
from gateway.errors import DrgwError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, SignedMeasurement, measurement_domain
from gateway.measurement.store import Store
from gateway.measurement.wire import encode_batch, to_wire

KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
DOMAIN = measurement_domain()


def drgw(*argv: str) -> int:
    """Parse and run like `drgw` does (gateway.cli.main), with just these command modules."""
    parser = argparse.ArgumentParser(prog="drgw")
    sub = parser.add_subparsers()
    verify.register(sub)
    keys.register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DrgwError as exc:
        print(f"drgw: error: {exc}")
        return exc.exit_code


def records(n: int) -> list[SignedMeasurement]:
    chain = MeasurementChain(gateway=KEY.address)
    return [chain.next_signed(KEY, DOMAIN, device="m", time_ms=i, clock_synced=True,
                              readings=[ScaledReading("p", i, "W", 0)]) for i in range(n)]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_good_log_of_records_and_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rs = records(10)
    log = write_lines(tmp_path / "log.jsonl", [to_wire(sm) for sm in rs[:4]]
                      + [encode_batch(rs[4:7]), encode_batch(rs[7:])])
    assert drgw("verify", str(log), "--gateway", KEY.address) == 0
    assert "OK" in capsys.readouterr().out
    assert drgw("verify", str(log), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["gateways"][KEY.address]["last_seq"] == 10


@pytest.mark.parametrize(("edit", "expected"), [
    ("gap", "seq 5: gap: seq 4..4 missing"),
    ("dup", "seq 3: duplicate"),
    ("forged", "seq 6: bad signature"),
    ("garbage", "line 2: "),
    ("wrong-gateway", "expected 0x"),
])
def test_each_failure_is_reported_with_its_seq(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               edit: str, expected: str) -> None:
    lines = [to_wire(sm) for sm in records(8)]
    extra: list[str] = []
    if edit == "gap":
        del lines[3]
    elif edit == "dup":
        lines.append(lines[2])
    elif edit == "forged":
        obj = json.loads(lines[5])
        obj["r"][0][1] = 999_000
        lines[5] = json.dumps(obj).encode()
    elif edit == "garbage":
        lines.insert(1, b'{"v":1,"gw":"nope"')
    elif edit == "wrong-gateway":
        extra = ["--gateway", GatewayKey.generate().address]
    log = write_lines(tmp_path / "log.jsonl", lines)
    assert drgw("verify", str(log), *extra) == 1
    out = capsys.readouterr().out
    assert expected in out and "FAILED" in out


def test_dedup_accepts_redelivery_but_not_equivocation(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rs = records(3)
    redelivered = write_lines(tmp_path / "a.jsonl", [encode_batch(rs), encode_batch(rs[1:])])
    assert drgw("verify", str(redelivered), "--dedup") == 0
    # a second, different, validly signed record with seq 2: the chain forked
    fork = MeasurementChain(gateway=KEY.address, last_seq=1, last_hash=rs[0].leaf).next_signed(
        KEY, DOMAIN, device="m", time_ms=99, clock_synced=True, readings=[])
    forked = write_lines(tmp_path / "b.jsonl", [encode_batch(rs), to_wire(fork)])
    assert drgw("verify", str(forked), "--dedup") == 1
    assert "seq 2: two different records" in capsys.readouterr().out


def test_broken_hash_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rs = records(3)
    other = MeasurementChain(gateway=KEY.address, last_seq=2, last_hash=b"\x22" * 32).next_signed(
        KEY, DOMAIN, device="m", time_ms=5, clock_synced=True, readings=[])
    log = write_lines(tmp_path / "c.jsonl", [to_wire(rs[0]), to_wire(rs[1]), to_wire(other)])
    assert drgw("verify", str(log)) == 1
    assert "seq 3: hash chain broken" in capsys.readouterr().out


def test_store_with_merkle_roots_and_export(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "gw.db"
    with Store(db) as store:
        store.commit(records(30), "t", now_ms=0)
        store.close_interval(0, 15)
        store.close_interval(15, 30)
    assert drgw("verify", "--db", str(db)) == 0
    out = tmp_path / "export.jsonl"
    assert drgw("export", "--db", str(db), "--from", "5", "--to", "12", "-o", str(out)) == 0
    assert len(out.read_bytes().splitlines()) == 8
    assert drgw("verify", str(out)) == 0
    conn = sqlite3.connect(db)  # tamper with a kept root
    conn.execute("UPDATE merkle_roots SET root = ? WHERE id = 2", [b"\x00" * 32])
    conn.commit()
    conn.close()
    capsys.readouterr()
    assert drgw("verify", "--db", str(db)) == 1
    assert "interval 2 (seq 16..30): Merkle root does not match" in capsys.readouterr().out


def test_missing_inputs_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert drgw("verify", str(tmp_path / "none.jsonl")) == 2
    assert drgw("verify") == 2
    assert "either a log FILE or --db" in capsys.readouterr().out


def test_keys_new_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.key"
    assert drgw("keys", "new", "--out", str(path), "--json") == 0
    made = json.loads(capsys.readouterr().out)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert drgw("keys", "show", "--key", str(path), "--json") == 0
    assert json.loads(capsys.readouterr().out)["address"] == made["address"]
    assert drgw("keys", "new", "--out", str(path)) == 2  # never overwrites
    assert "never overwritten" in capsys.readouterr().out
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    store = tmp_path / "gw.json"
    assert drgw("keys", "new", "--keystore", "--password-file", str(password),
                "--out", str(store), "--json") == 0
    made = json.loads(capsys.readouterr().out)
    assert drgw("keys", "show", "--key", str(store), "--password-file", str(password),
                "--json") == 0
    assert json.loads(capsys.readouterr().out)["address"] == made["address"]
    path.chmod(0o644)
    assert drgw("keys", "show", "--key", str(path)) == 2
    assert f"chmod 600 {path}" in capsys.readouterr().out
