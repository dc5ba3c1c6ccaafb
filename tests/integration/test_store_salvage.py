"""Issue 12, fault 6: a corrupt store is refused at start with a message about corruption, verify and
export report unreadable ranges instead of a traceback, and `drgw store salvage` copies every
readable record into a new store whose seqs continue after the highest seq ever issued.

The damage is real: bytes of a real store file are overwritten at a page offset (a leaf page of the
measurements table, found with SQLite's dbstat virtual table) or over the 100-byte file header.
What is readable is decided independently of our reader: plain sqlite3 lookups of single rows, and
the records' bytes as they were stored before the damage.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain
from gateway.measurement.store import Store
from gateway.measurement.store.migrations import migrate
from gateway.measurement.wire import from_wire, to_wire

KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
DOMAIN = measurement_domain()
TOPIC = "drgw/v1/gw/meas"
N = 3000


def build(path: Path, *, acked_batches: int) -> dict[int, bytes]:
    """A store of N records in batches of 50 with Merkle roots, the oldest `acked_batches` outbox
    rows acked; returns every record's stored bytes, read with plain sqlite3."""
    with Store(path, batch_size=50) as store:
        chain = MeasurementChain(gateway=KEY.address)
        for part in range(N // 500):
            store.commit([chain.next_signed(KEY, DOMAIN, device="meter", time_ms=1_000 * i,
                                            clock_synced=True,
                                            readings=[ScaledReading("p", i, "W", 0)])
                          for i in range(500 * part, 500 * part + 500)], TOPIC)
            store.close_interval(500_000 * part, 500_000 * (part + 1))  # by time, as drgw did
        store.outbox_ack([row.id for row in store.outbox_pending(acked_batches)])
    conn = sqlite3.connect(path)
    stored = {int(s): bytes(w) for s, w in conn.execute("SELECT seq, wire FROM measurements")}
    conn.close()
    return stored


def leaf_pages(path: Path, name: str = "measurements") -> list[tuple[int, str]]:
    """(page number, b-tree path) of a table's or index's leaf pages, in key order."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT pageno, path FROM dbstat WHERE name = ? AND "
                            "pagetype = 'leaf' ORDER BY path", [name]).fetchall()
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat virtual table")
    finally:
        conn.close()
    assert size == 4096
    return [(int(p), str(t)) for p, t in rows]


def damage_page(path: Path, page: int) -> None:
    with path.open("r+b") as fh:
        fh.seek((page - 1) * 4096)
        fh.write(b"\xa5" * 4096)  # 0xA5 is no b-tree page type: the page cannot be parsed


def readable(path: Path) -> dict[int, bytes]:
    """The records plain sqlite3 can still read one by one (the oracle), and those in readable
    outbox batches."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    found: dict[int, bytes] = {}
    for seq in range(1, N + 1):
        try:
            row = conn.execute("SELECT wire FROM measurements WHERE seq = ?", [seq]).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            found[seq] = bytes(row[0])
    for (payload,) in conn.execute("SELECT payload FROM outbox"):
        batch = json.loads(payload)
        for item in batch["m"]:
            found.setdefault(item["seq"], b"")  # in the outbox only: bytes compared below
    conn.close()
    return found


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@dataclass(frozen=True)
class Damaged:
    src: Path
    original: dict[int, bytes]  # every record's bytes as stored before the damage
    expected: dict[int, bytes]  # what plain sqlite3 can still read afterwards


@pytest.fixture
def damaged(tmp_path: Path) -> Damaged:
    src = tmp_path / "drgw.db"
    original = build(src, acked_batches=50)  # seqs 1..2500 delivered, 2501..3000 still queued
    pages = leaf_pages(src)
    damage_page(src, pages[len(pages) // 2][0])  # a leaf in the middle: acked records
    damage_page(src, pages[-3][0])  # a leaf near the end: records still in the outbox
    expected = readable(src)
    assert 0 < N - len(expected) < 100, "the damage should cost a few dozen records"
    return Damaged(src, original, expected)


def test_a_damaged_page_is_refused_at_start_with_a_message_about_damage(damaged: Damaged) -> None:
    with pytest.raises(ConfigError) as refused:  # exit 2: systemd does not restart into it
        Store(damaged.src)
    message = str(refused.value)
    assert str(damaged.src) in message and "damaged" in message
    assert "drgw store salvage" in message


def test_verify_and_export_report_unreadable_ranges_instead_of_a_traceback(
        damaged: Damaged, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "verify", "--db", str(damaged.src))
    assert code == 1 and "Traceback" not in out + err
    assert "unreadable: the store file is damaged here" in out
    code, out, err = cli(capsys, "export", "--db", str(damaged.src), "-o", str(tmp_path / "x.jsonl"))
    assert code == 1 and "NOT EXPORTED seq" in err
    exported = (tmp_path / "x.jsonl").read_bytes().splitlines()
    assert sorted(exported) == sorted(w for w in damaged.expected.values() if w)


def test_salvage_copies_every_readable_record_and_continues_after_the_high_water_mark(
        damaged: Damaged, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "new.db"
    code, out, err = cli(capsys, "store", "salvage", str(damaged.src), str(dst))
    assert code == 0, err
    assert "the new store continues at seq 3001" in out
    conn = sqlite3.connect(dst)
    salvaged = {int(s): bytes(w) for s, w in conn.execute("SELECT seq, wire FROM measurements")}
    conn.close()
    assert set(salvaged) == set(damaged.expected)  # every readable record, and only those
    assert all(salvaged[s] == damaged.original[s] for s in salvaged)  # original bytes, signatures
    code, out, err = cli(capsys, "verify", "--db", str(dst))
    failures = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert failures and all(": lost: unreadable in" in f or "cannot be checked" in f
                            for f in failures), out
    with Store(dst) as store:  # the agent on the salvaged store: the chain goes on
        seq, leaf = store.last_chain_state()
        assert (seq, leaf) == (N, from_wire(damaged.original[N]).leaf)
        chain = MeasurementChain(gateway=KEY.address, last_seq=seq, last_hash=leaf)
        store.commit([chain.next_signed(KEY, DOMAIN, device="meter", time_ms=10**7,
                                        clock_synced=True, readings=[])], TOPIC)
        assert store.last_chain_state()[0] == N + 1


def test_the_high_water_mark_survives_the_loss_of_the_newest_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "drgw.db", tmp_path / "new.db"
    build(src, acked_batches=60)  # everything delivered: the outbox holds no copy
    damage_page(src, leaf_pages(src)[-1][0])  # the newest records
    assert N not in readable(src)
    with pytest.raises(ConfigError, match="is damaged"):  # also where no integrity check ran:
        Store(src, check_budget_s=0)  # the chain head is read at open
    code, out, err = cli(capsys, "store", "salvage", str(src), str(dst))
    assert code == 0, err
    assert "LOST seq" in out and f"..{N}:" in out
    with Store(dst) as store:
        assert store.last_chain_state()[0] == N  # seq N was issued: the next one is N + 1


def v2_store(path: Path) -> None:
    """A store as drgw wrote it before schema 3 (no chain_head row)."""
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, path=str(path), target=2)
    chain = MeasurementChain(gateway=KEY.address)
    signed = [chain.next_signed(KEY, DOMAIN, device="meter", time_ms=i, clock_synced=True,
                                readings=[ScaledReading("p", i, "W", 0)]) for i in range(N)]
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
                     [(sm.measurement.seq, "meter", sm.measurement.time_ms, sm.leaf, sm.signature,
                       to_wire(sm)) for sm in signed])
    conn.execute("COMMIT")
    conn.close()


def test_an_older_store_without_its_newest_pages_takes_the_mark_from_its_time_index(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "old.db"
    v2_store(src)
    damage_page(src, leaf_pages(src)[-1][0])
    code, out, err = cli(capsys, "store", "salvage", str(src), str(tmp_path / "new.db"))
    assert code == 0, err
    assert f"continues at seq {N + 1}" in out


def test_an_unreadable_high_water_mark_needs_the_operators_next_seq(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "old.db"
    v2_store(src)
    damage_page(src, leaf_pages(src)[-1][0])
    damage_page(src, leaf_pages(src, "measurements_time")[-1][0])
    code, out, err = cli(capsys, "store", "salvage", str(src), str(tmp_path / "a.db"))
    assert code == 2 and "--next-seq" in err and "issued twice" in err
    assert not (tmp_path / "a.db").exists()
    code, out, err = cli(capsys, "store", "salvage", str(src), str(tmp_path / "b.db"),
                         "--next-seq", "100")
    assert code == 2 and "never issued twice" in err  # 100 is below seqs the store shows
    code, out, err = cli(capsys, "store", "salvage", str(src), str(tmp_path / "c.db"),
                         "--next-seq", "5000")
    assert code == 0 and "WARNING" in err and "continues at seq 5000" in out
    with Store(tmp_path / "c.db") as store:
        assert store.last_chain_state()[0] == 4999


def test_a_damaged_header_is_called_damage_and_salvage_rebuilds_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "drgw.db", tmp_path / "new.db"
    original = build(src, acked_batches=0)
    with src.open("r+b") as fh:
        fh.write(b"\xa5" * 100)
    with pytest.raises(ConfigError, match=r"damaged.*not a path or permission problem"):
        Store(src)
    code, out, err = cli(capsys, "store", "salvage", str(src), str(dst))
    assert code == 0 and "rebuilding its damaged header" in out, err
    code, out, err = cli(capsys, "verify", "--db", str(dst))
    assert code == 0 and f"{N} records, seq 1..{N}" in out, out
    conn = sqlite3.connect(dst)
    salvaged = {int(s): bytes(w) for s, w in conn.execute("SELECT seq, wire FROM measurements")}
    conn.close()
    assert salvaged == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drgw.db", "new.db"]  # no copies left


def test_records_of_unreadable_outbox_rows_are_queued_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing acked yet; two outbox rows on a damaged page: their records are still in the
    measurements table, so the new store queues them again (a possible duplicate, never a loss)."""
    src, dst = tmp_path / "drgw.db", tmp_path / "new.db"
    build(src, acked_batches=0)
    pages = leaf_pages(src, "outbox")
    damage_page(src, pages[len(pages) // 2][0])
    code, out, err = cli(capsys, "store", "salvage", str(src), str(dst), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["outbox_lost"] and report["requeued"] > 0 and not report["lost"]
    conn = sqlite3.connect(dst)
    queued = set()
    for (payload,) in conn.execute("SELECT payload FROM outbox"):
        queued |= {item["seq"] for item in json.loads(payload)["m"]}
    conn.close()
    assert queued == set(range(1, N + 1))  # every record still to be delivered is queued
