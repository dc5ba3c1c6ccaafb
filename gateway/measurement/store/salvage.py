"""Salvage: copy every readable record of a damaged store into a new store whose seqs continue after
the highest seq ever issued (`drgw store salvage SRC DST`, gateway/commands/store.py).

- Records keep their original bytes, leaf and signature; a row whose bytes do not agree with its
  columns (a damaged cell that SQLite could still read) is not copied. Records on unreadable pages
  of the measurements table are taken from the outbox batches still queued, when one carries them.
- The new store's chain head is the old high-water mark (`chain_head`, schema 3; the newest record
  before that), so its next seq follows the highest one ever issued even when the pages of the
  newest records are lost. When neither can be read, salvage refuses unless the operator names the
  next seq (`next_seq`): a guess below a published seq would issue that seq twice.
- Seq ranges that could not be recovered are kept in `lost_ranges` (`drgw verify --db` names them).
- Queued outbox rows are copied as they are; records whose outbox row was unreadable are queued
  again (a possible duplicate, which consumers drop by seq, never a loss).
- A damaged file header is rebuilt on a private copy (gateway/measurement/store/header.py).
The new store is written as DST.partial and renamed to DST once complete; SRC is only read.
"""

from __future__ import annotations

import bisect
import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.measurement.eip712 import ZERO32
from gateway.measurement.record import SignedMeasurement
from gateway.measurement.store import header
from gateway.measurement.store.database import Store
from gateway.measurement.store.errors import StoreCorrupt, translate
from gateway.measurement.store.reader import (
    HighWater,
    RawOutboxRow,
    RawRecord,
    StoreReader,
    Unreadable,
)
from gateway.measurement.wire import MeasurementFormatError, decode_batch, from_wire, to_wire

INSERT_CHUNK = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SalvageReport:
    source: str
    target: str
    records: int  # records copied, with their original bytes and signatures
    from_outbox: int  # of which were read from queued outbox batches
    lost: tuple[Unreadable, ...]  # seq ranges not recovered
    outbox_rows: int
    outbox_lost: tuple[Unreadable, ...]  # outbox id ranges that could not be read
    requeued: int  # records queued again because their outbox row was unreadable
    intervals: int  # Merkle roots copied
    high_water: int  # the highest seq ever issued (or the operator's next seq - 1)
    header_rebuilt: bool
    warnings: tuple[str, ...]

    @property
    def next_seq(self) -> int:
        return self.high_water + 1


def salvage(source: Path, target: Path, *, next_seq: int | None = None) -> SalvageReport:
    """Write `target` from what `source` still holds; see the module docstring."""
    if not source.is_file():
        raise ConfigError(f"salvage: {source} does not exist")
    if target.exists():
        raise ConfigError(f"salvage: {target} exists; name a new file (nothing is overwritten)")
    partial = target.with_name(target.name + ".partial")
    leftovers = (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm"))
    for leftover in leftovers:  # of a salvage that was killed half-way
        _remove(leftover)
    try:
        with _readable(source, target) as (reader, rebuilt):
            mark = reader.high_water()
            if mark.seq is None and next_seq is None:
                raise ConfigError(
                    f"salvage: the highest seq ever issued cannot be read from {source} (the pages "
                    f"of its newest records are damaged; the highest seq found is {mark.seen}). "
                    "Give --next-seq N with N above every seq this gateway ever published (the "
                    "aggregator knows the last one it received), or a seq could be issued twice")
            store = Store(partial, check_budget_s=0)
            try:
                report = _Copy(reader, store).run(mark, next_seq, rebuilt=rebuilt, source=source,
                                                  target=target)
            finally:
                store.close()
        partial.replace(target)
    finally:
        for leftover in leftovers:
            _remove(leftover)
    return report


@contextlib.contextmanager
def _readable(source: Path, target: Path) -> Iterator[tuple[StoreReader, bool]]:
    """A reader of `source`; of a private copy with a rebuilt header when its own is damaged."""
    try:
        reader = StoreReader(source)
    except StoreCorrupt:
        reader = None
    if reader is not None:
        with reader:
            yield reader, False
        return
    copy = target.with_name(target.name + ".source-copy")
    try:
        shutil.copyfile(source, copy)
        if Path(f"{source}-wal").exists():
            shutil.copyfile(f"{source}-wal", f"{copy}-wal")
        if header.repair_copy(copy) is None:
            raise ConfigError(f"salvage: {source} cannot be read even with a rebuilt header (its "
                              "schema page is damaged too); keep the file for a specialist")
        with StoreReader(copy) as reader:
            yield reader, True
    finally:
        for leftover in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
            _remove(leftover)


def _chain_head(mark: HighWater, next_seq: int | None, *, highest_copied: int,
                source: Path) -> tuple[int, bytes | None, list[str]]:
    """(seq, leaf or None) the new store's chain starts after, and warnings to show."""
    if next_seq is None:
        assert mark.seq is not None
        return mark.seq, mark.leaf, []
    floor = max(mark.seq or 0, mark.seen, highest_copied)
    if next_seq <= floor:
        raise ConfigError(f"salvage: --next-seq {next_seq} is not above seq {floor}, which "
                          f"{source} shows as issued; a seq is never issued twice")
    return next_seq - 1, None, [
        f"seqs continue at {next_seq} on the operator's word (--next-seq): make sure no seq at "
        "or above it was ever published by this gateway"]


class _Copy:
    """One salvage run into the open (empty) target store."""

    def __init__(self, reader: StoreReader, store: Store) -> None:
        self.reader, self.store, self.conn = reader, store, store.db
        self.warnings: list[str] = []
        self.records = 0
        self.highest = 0  # the highest seq read
        self.missing: list[Unreadable] = []
        self.recovered: dict[int, SignedMeasurement] = {}

    def run(self, mark: HighWater, next_seq: int | None, *, rebuilt: bool, source: Path,
            target: Path) -> SalvageReport:
        self._copy_records()
        head_seq, head_leaf, self.warnings = _chain_head(
            mark, next_seq, highest_copied=self.highest, source=source)
        kept, outbox_lost = self._copy_outbox()
        self._insert_recovered()
        self._copy_counters()
        lost = _subtract(self.missing, set(self.recovered))
        requeued = self._requeue(kept, outbox_lost, head_seq)
        intervals = self._copy_roots()
        self._finish(head_seq, head_leaf, lost, source=source)
        return SalvageReport(
            source=str(source), target=str(target), records=self.records + len(self.recovered),
            from_outbox=len(self.recovered), lost=tuple(lost), outbox_rows=len(kept),
            outbox_lost=tuple(outbox_lost), requeued=requeued, intervals=intervals,
            high_water=head_seq, header_rebuilt=rebuilt, warnings=tuple(self.warnings))

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        """One transaction in the target; its disk refusing is a StoreError, as for the agent."""
        if not rows:
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(sql, rows)
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = translate(exc, path=self.store.path, operation="salvage")
            if error is None:
                raise
            raise error from exc

    def _copy_records(self) -> None:
        span = self.reader.seq_span()
        if span is None:
            return
        chunk: list[tuple[object, ...]] = []
        for item in self.reader.raw_records(*span):
            if isinstance(item, Unreadable):
                self.missing.append(item)
                continue
            damage = _damage(item)
            if damage is not None:
                self.missing.append(Unreadable(item.seq, item.seq, damage))
                continue
            chunk.append((item.seq, item.device, item.time_ms, item.leaf, item.signature, item.wire))
            self.highest = item.seq
            if len(chunk) >= INSERT_CHUNK:
                self._insert_records(chunk)
        self._insert_records(chunk)

    def _insert_records(self, chunk: list[tuple[object, ...]]) -> None:
        self._write("INSERT INTO measurements (seq, device, time_ms, leaf, signature, wire) "
                    "VALUES (?, ?, ?, ?, ?, ?)", chunk)
        self.records += len(chunk)
        chunk.clear()

    def _copy_outbox(self) -> tuple[list[RawOutboxRow], list[Unreadable]]:
        kept: list[RawOutboxRow] = []
        lost: list[Unreadable] = []
        for item in self.reader.outbox_rows():
            if isinstance(item, Unreadable):
                lost.append(item)
                continue
            kept.append(item)
            self._recover_from(item.payload)
        self._write("INSERT INTO outbox (topic, payload, nbytes, seq_first, seq_last, created_ms, "
                    "clock_synced) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(r.topic, r.payload, len(r.payload), r.seq_first, r.seq_last, r.created_ms,
                      r.clock_synced) for r in kept])
        return kept, lost

    def _recover_from(self, payload: bytes) -> None:
        """Records of a queued batch whose own rows were unreadable."""
        if not self.missing:
            return
        try:
            batch = decode_batch(payload)
        except MeasurementFormatError:
            return
        for sm in batch:
            if _within(self.missing, sm.measurement.seq):
                self.recovered[sm.measurement.seq] = sm

    def _insert_recovered(self) -> None:
        self._write("INSERT INTO measurements (seq, device, time_ms, leaf, signature, wire) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(sm.measurement.seq, sm.measurement.device, sm.measurement.time_ms, sm.leaf,
                      sm.signature, to_wire(sm)) for sm in self.recovered.values()])

    def _requeue(self, kept: list[RawOutboxRow], lost: list[Unreadable], head_seq: int) -> int:
        """Queue again the records that were in unreadable outbox rows (bounded by the readable
        rows around them)."""
        queued = 0
        ids = [r.id for r in kept]
        for gap in lost:
            at = bisect.bisect_left(ids, gap.first)
            before, after = (kept[at - 1] if at else None), (kept[at] if at < len(kept) else None)
            if before is None:
                self.warnings.append(
                    f"outbox rows {gap.first}..{gap.last} were unreadable and nothing before them "
                    "tells which records they held: ask the aggregator which seqs it lacks and "
                    "send them again (`drgw fleet cmd GW resend`)")
                continue
            last = after.seq_first - 1 if after is not None else head_seq
            queued += self.store.requeue(before.seq_last + 1, last, before.topic)
        return queued

    def _copy_roots(self) -> int:
        try:
            roots = self.reader.intervals()
        except sqlite3.DatabaseError as exc:
            self.warnings.append(f"the Merkle roots could not be read ({exc}); none copied")
            return 0
        self._write("INSERT INTO merkle_roots (start_ms, end_ms, first_seq, last_seq, root, "
                    "leaf_count) VALUES (?, ?, ?, ?, ?, ?)",
                    [(i.start_ms, i.end_ms, i.first_seq, i.last_seq, i.root, i.leaf_count)
                     for i in roots])
        return len(roots)

    def _copy_counters(self) -> None:
        try:
            counters = self.reader.counters()
        except sqlite3.DatabaseError as exc:
            self.warnings.append(f"the counters could not be read ({exc}); none copied")
            return
        self._write("INSERT INTO counters (name, value) VALUES (?, ?)", list(counters.items()))

    def _finish(self, head_seq: int, head_leaf: bytes | None, lost: list[Unreadable], *,
                source: Path) -> None:
        if head_leaf is None:  # the operator's next seq: link to the record before it if it is here
            row = self.conn.execute("SELECT leaf FROM measurements WHERE seq = ?",
                                    [head_seq]).fetchone()
            head_leaf = bytes(row[0]) if row else ZERO32
        if head_seq:
            self._write("INSERT OR REPLACE INTO chain_head (id, seq, leaf) VALUES (1, ?, ?)",
                        [(head_seq, head_leaf)])
        self._write("INSERT INTO lost_ranges (seq_first, seq_last, reason) VALUES (?, ?, ?)",
                    [(r.first, r.last, f"unreadable in {source}: {r.why}") for r in lost])


def _damage(row: RawRecord) -> str | None:
    """Why a readable row cannot be trusted, or None: its bytes must decode and agree with its
    columns (seq, device, time, leaf = the recomputed struct hash, signature)."""
    try:
        sm = from_wire(row.wire)
    except MeasurementFormatError as exc:
        return f"record bytes damaged ({exc})"
    m = sm.measurement
    if (m.seq, m.device, m.time_ms, sm.leaf, sm.signature) != (
            row.seq, row.device, row.time_ms, row.leaf, row.signature):
        return "record bytes disagree with the row's columns (damaged)"
    return None


def _within(ranges: list[Unreadable], seq: int) -> bool:
    at = bisect.bisect_right([r.first for r in ranges], seq) - 1
    return at >= 0 and ranges[at].first <= seq <= ranges[at].last


def _subtract(ranges: list[Unreadable], found: set[int]) -> list[Unreadable]:
    """`ranges` without the seqs in `found`."""
    out: list[Unreadable] = []
    for r in ranges:
        start = r.first
        for seq in sorted(s for s in found if r.first <= s <= r.last):
            if seq > start:
                out.append(Unreadable(start, seq - 1, r.why))
            start = seq + 1
        if start <= r.last:
            out.append(Unreadable(start, r.last, r.why))
    return out


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
