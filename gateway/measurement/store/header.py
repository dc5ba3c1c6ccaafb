"""Rebuilding the 100-byte SQLite header of a store copy whose header is damaged (for salvage).

SQLite refuses a file whose header is wrong ("file is not a database") although every page behind
it may be intact. The header's fields (https://www.sqlite.org/fileformat2.html#the_database_header)
are either constants for a file this project writes (magic string, payload fractions, schema format
4, UTF-8, no auto-vacuum, no reserved bytes) or can be recomputed or left neutral: the page count
from the file size, an empty freelist (free pages then merely read as unused), a fresh change
counter. The one unknown is the page size: each candidate is tried until the schema reads back.
Only a private copy is ever rewritten, never the damaged original.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MAGIC = b"SQLite format 3\x00"
PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)  # 4096: SQLite's default
SQLITE_VERSION_NUMBER = 3_040_001


def header_is_damaged(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(16) != MAGIC


def rebuilt_header(*, page_size: int, file_size: int, wal: bool) -> bytes:
    h = bytearray(100)
    h[0:16] = MAGIC
    h[16:18] = (1 if page_size == 65536 else page_size).to_bytes(2, "big")  # 1 means 65536
    h[18] = h[19] = 2 if wal else 1  # file format write/read version: 2 = WAL, 1 = legacy
    h[21], h[22], h[23] = 64, 32, 32  # max/min embedded payload fraction, leaf fraction (fixed)
    h[24:28] = (1).to_bytes(4, "big")  # file change counter
    h[28:32] = (file_size // page_size).to_bytes(4, "big")  # database size in pages
    h[40:44] = (1).to_bytes(4, "big")  # schema cookie
    h[44:48] = (4).to_bytes(4, "big")  # schema format number
    h[56:60] = (1).to_bytes(4, "big")  # text encoding: UTF-8
    h[92:96] = (1).to_bytes(4, "big")  # version-valid-for = change counter: the size is valid
    h[96:100] = SQLITE_VERSION_NUMBER.to_bytes(4, "big")
    return bytes(h)


def repair_copy(copy: Path) -> int | None:
    """Give `copy` a rebuilt header; the page size that makes its schema readable, or None."""
    size = copy.stat().st_size
    wal = Path(f"{copy}-wal").exists()
    for page_size in PAGE_SIZES:
        if size < page_size:
            continue
        with copy.open("r+b") as fh:
            fh.write(rebuilt_header(page_size=page_size, file_size=size, wal=wal))
        try:
            conn = sqlite3.connect(copy)
            try:
                names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            continue
        if "measurements" in names:
            return page_size
    return None
