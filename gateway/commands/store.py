"""`drgw store salvage SRC DST`: copy what is readable of a damaged store into a new one.

The work is gateway/measurement/store/salvage.py; this module parses and prints. Stop the agent
first (`systemctl stop drgw`): salvage reads SRC as it is on disk.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from gateway.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("store", help="look after the gateway's SQLite store")
    ssub = parser.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    salvage = ssub.add_parser(
        "salvage", help="copy every readable record of a damaged store into a new store whose "
                        "seqs continue after the highest seq ever issued")
    salvage.add_argument("source", help="the damaged store (only read)")
    salvage.add_argument("target", help="the new store to write (must not exist)")
    salvage.add_argument("--next-seq", type=int, default=None, metavar="N",
                         help="only when the highest seq ever issued cannot be read: the seq to "
                              "continue at, above every seq this gateway ever published")
    salvage.add_argument("--json", action="store_true")
    salvage.set_defaults(func=run_salvage)


def run_salvage(args: argparse.Namespace) -> int:
    from gateway.measurement.store.salvage import salvage

    if args.next_seq is not None and args.next_seq < 1:
        raise ConfigError(f"store salvage: --next-seq must be at least 1, not {args.next_seq}")
    report = salvage(Path(args.source), Path(args.target), next_seq=args.next_seq)
    for warning in report.warnings:
        print(f"WARNING {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**asdict(report), "next_seq": report.next_seq}))
        return 0
    print(f"salvaged {report.records} record(s) from {report.source} into {report.target}"
          + (f" ({report.from_outbox} from queued outbox batches)" if report.from_outbox else "")
          + (" after rebuilding its damaged header" if report.header_rebuilt else ""))
    for lost in report.lost:
        print(f"LOST seq {lost.first}..{lost.last}: {lost.why}")
    for lost in report.outbox_lost:
        print(f"LOST outbox rows {lost.first}..{lost.last}: {lost.why}")
    print(f"outbox: {report.outbox_rows} batch(es) still to send, {report.requeued} record(s) "
          f"queued again; Merkle roots: {report.intervals}")
    print(f"highest seq ever issued: {report.high_water}; the new store continues at seq "
          f"{report.next_seq}")
    print(f"next: check it (`drgw verify --db {report.target}`), keep {report.source} aside, and "
          f"point [store] path at {report.target} before starting the agent")
    return 0
