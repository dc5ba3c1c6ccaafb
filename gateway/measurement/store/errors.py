"""What can go wrong with the store file, in our words: SQLite's result codes -> reasons and messages.

SQLite's errors are translated once, here, at the edge (the h11 habit): `classify` names the reason
behind a `sqlite3.Error`, and the store raises `StoreError` (the disk refused a write or a read:
the agent keeps running and tries again) or `StoreCorrupt` (the file is damaged: a restart cannot
fix it, so it is a `ConfigError` that names the file and the salvage command).
"""

from __future__ import annotations

import sqlite3

from gateway.errors import ConfigError, DrgwError

# Primary result codes (https://www.sqlite.org/rescode.html); extended codes keep them in the low byte.
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26

DISK_FULL, IO_ERROR, CORRUPT, BUSY = "disk_full", "io_error", "corrupt", "busy"
REASONS: dict[int, str] = {
    SQLITE_FULL: DISK_FULL,  # "database or disk is full": ENOSPC, or PRAGMA max_page_count reached
    SQLITE_IOERR: IO_ERROR, SQLITE_READONLY: IO_ERROR, SQLITE_CANTOPEN: IO_ERROR,
    SQLITE_CORRUPT: CORRUPT, SQLITE_NOTADB: CORRUPT,
    SQLITE_BUSY: BUSY, SQLITE_LOCKED: BUSY,
}


def classify(exc: sqlite3.Error) -> str | None:
    """The reason behind a SQLite error, or None for one that is not about the file or the disk
    (a misuse, a constraint: a bug, which must not be mistaken for a full disk)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    return REASONS.get(int(code) & 0xFF)


class StoreError(DrgwError):
    """The store could not be written or read now: `reason` is one of disk_full, io_error, corrupt,
    busy. Nothing of the failed operation is stored; the caller keeps its data and tries again."""

    def __init__(self, message: str, *, reason: str, operation: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.operation = operation


class StoreCorrupt(ConfigError):
    """The store file is damaged. Refused at start: appending to a damaged chain hides the damage,
    and starting a new store would issue seqs again from 1."""


def corrupt_message(path: str, detail: str) -> str:
    return (f"store {path} is damaged ({detail}). This is not a path or permission problem. Stop "
            f"here, keep a copy of the file, and copy what is readable into a new store: "
            f"`drgw store salvage {path} NEW.db` (its seqs continue after the highest one ever "
            f"issued); then point [store] path at NEW.db")


def translate(exc: sqlite3.Error, *, path: str, operation: str) -> StoreError | None:
    """Our error for `exc`, or None when `exc` is not about the file or the disk."""
    reason = classify(exc)
    if reason is None:
        return None
    what = {DISK_FULL: "the disk is full", IO_ERROR: "I/O error", CORRUPT: "the file is damaged",
            BUSY: "the file is locked by another process"}[reason]
    return StoreError(f"store {path}: {operation} failed: {what} ({exc})", reason=reason,
                      operation=operation)
