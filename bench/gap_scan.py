"""What one gap scan costs a worker's database as the measurements table grows (issue 15).

A table of N records of 200 gateways (real signed records, stored through the ledger), one scan to
settle it, then one new 20-record payload a gateway (as arrives between two scans at 1 record/s
and a 20 s batch), then the timed scan. Beside it, the whole-table self-join that the scan's link
audit ran before December 2026, timed alone: its cost grows with the table, the scan's with what
arrived since the last one.

    .venv/bin/python bench/gap_scan.py                          # 300,000 records, SQLite
    .venv/bin/python bench/gap_scan.py --records 1000000 --backends sqlite,postgres

Wall-clock milliseconds (PostgreSQL does its work in the server process), best of 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import signed_payloads

from gateway.master import verify
from gateway.master.gaps import GapBook
from gateway.master.ledger import Ledger
from gateway.master.settings import RepairPolicy
from gateway.measurement.record import measurement_domain

GATEWAYS, BATCH = 200, 20
WHOLE_TABLE_AUDIT = ("SELECT b.gw, b.seq FROM measurements a JOIN measurements b ON b.gw = a.gw "
                     "AND b.seq = a.seq + 1 WHERE b.prev <> a.leaf")


def measure(backend: str, records: int, stack: ExitStack, root: Path) -> dict[str, Any]:
    from gateway.master.db_postgres import open_postgres
    from gateway.master.db_sqlite import open_sqlite

    _, payloads = signed_payloads(GATEWAYS, records, BATCH)
    domain = measurement_domain()
    checks = [verify.check_batch(gw, p, domain) for gw, p in payloads]
    if backend == "sqlite":
        sql = open_sqlite(root / "scan.sqlite")
    else:
        from gateway.master.localpg import LocalPostgres

        pg = stack.enter_context(LocalPostgres())
        sql = open_postgres(pg.database("gap_scan"))
    ledger = Ledger(sql, worker="w0")
    book = GapBook(ledger, RepairPolicy())
    last = len(checks) - 3 * GATEWAYS  # the last three payloads of each gateway: one a pass
    for i in range(0, last, GATEWAYS):
        ledger.store(checks[i:i + GATEWAYS], now_ms=0)
    book.scan(now_ms=0)
    scans, audits = [], []
    for k in range(3):
        ledger.store(checks[last + k * GATEWAYS:last + (k + 1) * GATEWAYS], now_ms=0)
        t0 = time.perf_counter()
        alerts = book.scan(now_ms=1)
        scans.append(time.perf_counter() - t0)
        assert not alerts, alerts  # the records chain and have no holes
        t0 = time.perf_counter()
        sql.run(WHOLE_TABLE_AUDIT)
        audits.append(time.perf_counter() - t0)
    sql.close()
    return {"backend": backend, "records": records, "new_records_a_scan": GATEWAYS * BATCH,
            "scan_ms": round(min(scans) * 1000, 1),
            "old_whole_table_audit_ms": round(min(audits) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--backends", default="sqlite")
    args = parser.parse_args()
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="drgw-scan-") as tmp:
        for backend in args.backends.split(","):
            root = Path(tmp) / backend
            root.mkdir()
            rows.append(measure(backend, args.records, stack, root))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
