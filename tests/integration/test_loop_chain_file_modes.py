"""Issue 12 fault 10 (b), continued: the chain outbox (signed transactions, Reports) and the DR
journal are SQLite files like the store, so they too are created owner-only (0600), with their
-wal and -shm files, whatever the umask of the shell that started the process (a shell's 022 here;
the systemd unit sets UMask=0077). Real SQLite files in a temporary directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.chain.outbox import ChainOutbox, StoredTx
from gateway.loop.journal import Journal


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


def test_the_chain_outbox_is_created_owner_only_with_its_wal_files(tmp_path: Path,
                                                                   open_umask: None) -> None:
    outbox = ChainOutbox(tmp_path / "chain-outbox.db")
    try:
        outbox.record_tx(StoredTx(chain_id=31337, account="0xaa", nonce=0, tx_hash="0x01",
                                  raw=b"\x02signed", purpose="commit", state="pending"))
        seen = modes(tmp_path)  # while open: -wal and -shm exist
    finally:
        outbox.close()
    assert set(seen) >= {"chain-outbox.db", "chain-outbox.db-wal", "chain-outbox.db-shm"}
    assert seen == dict.fromkeys(seen, 0o600)


def test_the_dr_journal_is_created_owner_only_with_its_wal_files(tmp_path: Path,
                                                                 open_umask: None) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        journal.save_event(event_id="0x01", modification=0, state="announced", start_s=60, end_s=120,
                           body={"event_id": "0x01"}, now_ms=1_000)
        seen = modes(tmp_path)
    finally:
        journal.close()
    assert set(seen) >= {"journal.db", "journal.db-wal", "journal.db-shm"}
    assert seen == dict.fromkeys(seen, 0o600)


def test_an_existing_outbox_or_journal_keeps_the_mode_its_owner_gave_it(tmp_path: Path,
                                                                        open_umask: None) -> None:
    for name in ("chain-outbox.db", "journal.db"):
        (tmp_path / name).touch(mode=0o640)
        (tmp_path / name).chmod(0o640)
    ChainOutbox(tmp_path / "chain-outbox.db").close()
    Journal(tmp_path / "journal.db").close()
    assert {n: m for n, m in modes(tmp_path).items() if n.endswith(".db")} == {
        "chain-outbox.db": 0o640, "journal.db": 0o640}
