"""`drgw verify` checks a measurement log or store; `drgw export` writes a store's records as a log.

A log is JSON lines; each line is either one wire-form record ({"v":1,"gw":...,"seq":...}) as
`drgw export` writes, or one batch ({"v":1,"gw":...,"m":[...]}) as published on drgw/v1/<gw>/meas,
e.g. captured with `mosquitto_sub -t 'drgw/v1/+/meas' > capture.jsonl`. Checks, per gateway:
signatures (recovered signer = the record's gateway, and = --gateway when given), seq continuity
(gaps, duplicates, conflicting records for one seq), the hash chain (prevHash = struct hash of
seq - 1), and with --db every Merkle root kept in the store. Exit 0 only when everything holds.

A store is read read-only and damage-tolerantly (gateway/measurement/store/reader.py): rows on damaged
pages are reported as unreadable seq ranges, and ranges a salvage could not recover as lost, instead
of a traceback; every readable record is still checked (and exported).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import ConfigError
from gateway.measurement import merkle
from gateway.measurement.eip712 import ZERO32, Domain
from gateway.measurement.record import (
    DEFAULT_CHAIN_ID,
    SignedMeasurement,
    measurement_domain,
    recover_signer,
    struct_hash,
)
from gateway.measurement.wire import MeasurementFormatError, decode_batch, from_wire

if TYPE_CHECKING:
    from gateway.measurement.store.reader import StoreReader


@dataclass(frozen=True, slots=True)
class Problem:
    where: str  # "seq 12", "line 3", "interval 2"
    what: str


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("verify", help="check signatures, seq continuity, hash chain and "
                                           "Merkle roots of a measurement log or store")
    parser.add_argument("file", nargs="?", help="JSON-lines log (records or captured batches)")
    parser.add_argument("--db", help="check a gateway store file instead, with its Merkle roots")
    parser.add_argument("--gateway", help="expected signer address (checksum form)")
    parser.add_argument("--chain-id", type=int, default=DEFAULT_CHAIN_ID,
                        help=f"EIP-712 domain chainId (default {DEFAULT_CHAIN_ID})")
    parser.add_argument("--dedup", action="store_true",
                        help="accept identical repeats of a record (MQTT QoS 1 redelivery)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_verify)
    export = sub.add_parser("export", help="write a store's records as a JSON-lines log")
    export.add_argument("--db", required=True, help="gateway store file")
    export.add_argument("--from", dest="seq_from", type=int, default=1)
    export.add_argument("--to", dest="seq_to", type=int, default=(1 << 64) - 1)
    export.add_argument("-o", "--out", required=True, help="output file ('-' for stdout)")
    export.set_defaults(func=run_export)


def read_log(path: Path) -> Iterator[tuple[int, SignedMeasurement | MeasurementFormatError]]:
    """(line number, record or the error that line produced), in file order."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                records = decode_batch(obj) if isinstance(obj, dict) and "m" in obj else [
                    from_wire(obj if isinstance(obj, dict) else line)]
            except MeasurementFormatError as exc:
                yield number, exc
                continue
            except (ValueError, RecursionError) as exc:
                yield number, MeasurementFormatError(f"not JSON: {exc}")
                continue
            for sm in records:
                yield number, sm


def check_records(records: Iterable[SignedMeasurement], *, domain: Domain,
                  gateway: str | None = None, dedup: bool = False,
                  explained: Sequence[tuple[int, int]] = (),
                  ) -> tuple[list[Problem], dict[str, tuple[int, int, int]]]:
    """Problems found, and per gateway (records, first seq, last seq). A gap inside one of the
    `explained` seq ranges (unreadable or lost, reported by the caller) is not reported again."""
    problems: list[Problem] = []
    by_gateway: dict[str, dict[int, SignedMeasurement]] = defaultdict(dict)
    for sm in records:
        m = sm.measurement
        where = f"seq {m.seq}"
        try:
            signer = recover_signer(sm, domain)
        except ValueError as exc:
            problems.append(Problem(where, f"malformed signature: {exc}"))
            continue
        if signer != m.gateway:
            problems.append(Problem(where, f"bad signature: signed by {signer}, record names "
                                           f"{m.gateway} (forged or altered)"))
            continue
        if gateway is not None and m.gateway != gateway:
            problems.append(Problem(where, f"from gateway {m.gateway}, expected {gateway}"))
            continue
        seen = by_gateway[m.gateway].get(m.seq)
        if seen is None:
            by_gateway[m.gateway][m.seq] = sm
        elif seen.signature == sm.signature and seen.measurement == m:
            if not dedup:
                problems.append(Problem(where, "duplicate (use --dedup to accept redeliveries)"))
        else:
            problems.append(Problem(where, "two different records with this seq (equivocation)"))
    summary = {}
    for gw, chain in by_gateway.items():
        seqs = sorted(chain)
        summary[gw] = (len(seqs), seqs[0], seqs[-1])
        problems.extend(_chain_problems(chain, seqs, gw if len(by_gateway) > 1 else "",
                                        explained))
    return problems, summary


def _chain_problems(chain: dict[int, SignedMeasurement], seqs: list[int], label: str,
                    explained: Sequence[tuple[int, int]]) -> Iterator[Problem]:
    prefix = f"{label} " if label else ""
    for seq in seqs:
        m = chain[seq].measurement
        if seq == 1 and m.prev_hash != ZERO32:
            yield Problem(f"{prefix}seq 1", "first record's prevHash is not zero")
        before = chain.get(seq - 1)
        if before is None:
            if seq != seqs[0]:
                low = max(s for s in seqs if s < seq)
                if not _covered(low + 1, seq - 1, explained):
                    yield Problem(f"{prefix}seq {seq}", f"gap: seq {low + 1}..{seq - 1} missing")
        elif m.prev_hash != struct_hash(before.measurement):
            yield Problem(f"{prefix}seq {seq}", f"hash chain broken: prevHash is not the hash of "
                                                f"seq {seq - 1}")


def _covered(first: int, last: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether every seq first..last lies in one of `ranges` (sorted or not)."""
    for a, b in sorted(ranges):
        if a > first:
            return False
        if b >= first:
            first = b + 1
        if first > last:
            return True
    return first > last


def _store_records(reader: StoreReader, problems: list[Problem],
                   explained: list[tuple[int, int]]) -> Iterator[SignedMeasurement]:
    """The readable records of a store; unreadable, lost and damaged ones go to `problems`, and
    their seq ranges to `explained`."""
    from gateway.measurement.store.reader import RawRecord

    for lost in reader.lost_ranges():
        problems.append(Problem(f"seq {lost.first}..{lost.last}",
                                f"lost: {lost.why} (recorded by `drgw store salvage`)"))
        explained.append((lost.first, lost.last))
    span = reader.seq_span()
    for item in reader.raw_records(*span) if span else ():
        if not isinstance(item, RawRecord):
            problems.append(Problem(f"seq {item.first}..{item.last}", (
                f"unreadable: the store file is damaged here ({item.why}); `drgw store salvage` "
                "copies every readable record")))
            explained.append((item.first, item.last))
            continue
        try:
            record = from_wire(item.wire)
        except MeasurementFormatError as exc:
            problems.append(Problem(f"seq {item.seq}", f"damaged record: {exc}"))
            explained.append((item.seq, item.seq))
            continue
        yield record


def _merkle_problems(reader: StoreReader,
                     explained: Sequence[tuple[int, int]]) -> Iterator[Problem]:
    try:
        intervals = reader.intervals()
    except sqlite3.DatabaseError as exc:
        yield Problem("Merkle roots", f"unreadable: the store file is damaged here ({exc})")
        return
    for number, interval in enumerate(intervals, 1):
        where = f"interval {number} (seq {interval.first_seq}..{interval.last_seq})"
        try:
            leaves = reader.members(interval)
        except sqlite3.DatabaseError as exc:
            yield Problem(where, f"cannot be checked: some of its records are unreadable ({exc})")
            continue
        damaged = [f"{a}..{b}" for a, b in explained
                   if a <= interval.last_seq and b >= interval.first_seq]
        if len(leaves) != interval.leaf_count and damaged:
            yield Problem(where, f"cannot be checked: records under this root are lost or "
                                 f"unreadable (seq {', '.join(damaged)})")
        elif len(leaves) != interval.leaf_count:
            yield Problem(where, f"holds {len(leaves)} records, root was made over "
                                 f"{interval.leaf_count} (evicted or inserted later)")
        elif merkle.root([leaf for _, leaf in leaves]) != interval.root:
            yield Problem(where, "Merkle root does not match the stored records")


def run_verify(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.db):
        raise ConfigError("verify: give either a log FILE or --db STORE (one of them)")
    domain = measurement_domain(args.chain_id)
    problems: list[Problem] = []
    if args.db:
        from gateway.measurement.store.reader import StoreReader

        if not Path(args.db).is_file():
            raise ConfigError(f"verify: store {args.db} does not exist")
        with StoreReader(args.db) as reader:
            explained: list[tuple[int, int]] = []
            found, summary = check_records(_store_records(reader, problems, explained),
                                           domain=domain, gateway=args.gateway,
                                           dedup=args.dedup, explained=explained)
            problems.extend(found)
            problems.extend(_merkle_problems(reader, explained))
    else:
        path = Path(args.file)
        if not path.is_file():
            raise ConfigError(f"verify: log file {path} does not exist")
        good: list[SignedMeasurement] = []
        for line, item in read_log(path):
            if isinstance(item, MeasurementFormatError):
                problems.append(Problem(f"line {line}", str(item)))
            else:
                good.append(item)
        found, summary = check_records(good, domain=domain, gateway=args.gateway,
                                       dedup=args.dedup)
        problems.extend(found)
    _report(problems, summary, args.json)
    return 0 if not problems and summary else 1


def _report(problems: list[Problem], summary: dict[str, tuple[int, int, int]],
            as_json: bool) -> None:
    ok = not problems and bool(summary)
    if as_json:
        print(json.dumps({"ok": ok, "gateways": {gw: {"records": n, "first_seq": a, "last_seq": b}
                                                 for gw, (n, a, b) in summary.items()},
                          "problems": [{"where": p.where, "problem": p.what} for p in problems]}))
        return
    for p in problems:
        print(f"FAIL {p.where}: {p.what}")
    for gw, (n, a, b) in summary.items():
        print(f"gateway {gw}: {n} records, seq {a}..{b}")
    if not summary:
        print("FAIL no valid records found")
    print("OK" if ok else f"FAILED: {len(problems)} problem(s)")


def run_export(args: argparse.Namespace) -> int:
    """Readable records as they are stored (their original bytes); unreadable ones are named on
    stderr and make the exit status 1."""
    from gateway.measurement.store.reader import RawRecord, StoreReader

    if not Path(args.db).is_file():
        raise ConfigError(f"export: store {args.db} does not exist")
    missing: list[str] = []
    count = 0
    with StoreReader(args.db) as reader:
        span = reader.seq_span() or (0, 0)
        first, last = max(args.seq_from, span[0]), min(args.seq_to, span[1])
        out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
        try:
            for item in reader.raw_records(first, last) if span[1] else ():
                if isinstance(item, RawRecord):
                    try:
                        from_wire(item.wire)
                    except MeasurementFormatError as exc:
                        missing.append(f"seq {item.seq}: damaged record ({exc})")
                        continue
                    out.write(item.wire + b"\n")
                    count += 1
                else:
                    missing.append(f"seq {item.first}..{item.last}: unreadable ({item.why})")
        finally:
            if out is not sys.stdout.buffer:
                out.close()
    print(f"exported {count} records (seq {first}..{last})", file=sys.stderr)
    for line in missing:
        print(f"NOT EXPORTED {line}", file=sys.stderr)
    if missing:
        print(f"the store is damaged: `drgw store salvage {args.db} NEW.db` copies every "
              "readable record into a new store", file=sys.stderr)
    return 1 if missing else 0
