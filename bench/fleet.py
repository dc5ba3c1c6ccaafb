"""The master station under load (issue 15): virtual gateways (real keys, real signed batches in the
wire format, each its own seq, some gaps and forgeries) through one mosquitto into `drgw master run`
worker processes, on SQLite and on PostgreSQL, with 1 and with 2 workers.

Two runs:
- throughput: the records are signed first, then published as fast as the broker takes them while
  the workers verify and store; records/s per worker = its stored records over the span from the
  first to the last record stored (the database's stored_ms), so signing never counts. With
  --prepublish the workers are stopped (SIGSTOP) once subscribed, every payload is published and
  acknowledged by the broker (which queues it for a stopped worker of the share group), then the
  workers are continued (SIGCONT): the generator's CPU is then out of the measured span, and only
  the workers and the broker's delivery share the cores. Each row also gives the records a worker
  stored per second of its own CPU time (utime + stime from /proc), which other load on the
  machine does not lower.
- soak: N gateways at 1 record/s each for S seconds (real time, paced); of the records, 0.1% are
  never published (gaps), 0.1% are published altered (forgeries) and 0.1% twice (duplicates); then
  the run waits until every gap is repaired through `resend` (the virtual gateways answer it) and
  checks 0 lost, 0 forgeries stored, each record stored once.

    .venv/bin/python bench/fleet.py                       # both runs, small sizes (about 3 min)
    .venv/bin/python bench/fleet.py --soak-gateways 1000 --soak-seconds 120   # the issue's goal
    .venv/bin/python bench/fleet.py --skip-soak --prepublish --repeat 3       # throughput medians
    .venv/bin/python bench/fleet.py --skip-soak --skip-throughput --profile    # per-record costs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.master.localpg import LocalPostgres
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key
from gateway.measurement.wire import encode_batch
from gateway.network.localbroker import Broker
from gateway.testing.virtual_fleet import FleetLink, VirtualGateway, make_fleet


class Setup:
    """A broker, a database (sqlite or postgres), an operator key and the master config."""

    def __init__(self, stack: ExitStack, root: Path, backend: str, pg: LocalPostgres | None,
                 name: str, *, verify_threads: int | None = None) -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        self.broker = stack.enter_context(Broker(self.root / "mosquitto"))
        self.operator = GatewayKey.generate()
        write_key(self.root / "operator.key", self.operator)
        if backend == "sqlite":
            self.db: dict[str, Any] = {"sqlite": str(self.root / "master.sqlite")}
            database = f'sqlite = "{self.root / "master.sqlite"}"'
        else:
            assert pg is not None
            self.db = {"url": pg.database(name)}
            database = f'url = "{self.db["url"]}"'
        self.config = self.root / "master.toml"
        self.config.write_text(f'[broker]\nurl = "{self.broker.url}"\n[database]\n{database}\n'
                               '[operator]\nkey = "operator.key"\n[repair]\ngrace_s = 2\n'
                               "first_retry_s = 3\nscan_s = 0.5\n"
                               + (f"[service]\nverify_threads = {verify_threads}\n"
                                  if verify_threads else ""))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if "sqlite" in self.db:
            conn = sqlite3.connect(self.db["sqlite"], timeout=30)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.db["url"]) as pg:
            return list(pg.execute(sql).fetchall())

    def count(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM measurements")[0][0])


@contextmanager
def workers(setup: Setup, n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen([sys.executable, "-m", "gateway.cli", "master", "run",
                               str(setup.config), "--worker", f"w{i}"],
                              stderr=(setup.root / f"w{i}.log").open("wb"))
             for i in range(n)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # subscribed: the worker logs it
            if all(b"subscribed at" in (setup.root / f"w{i}.log").read_bytes() for i in range(n)):
                break
            time.sleep(0.1)
        yield procs
    finally:  # never leave a worker behind, stopped (SIGSTOP) or slow to stop
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                print(f"bench: worker {p.pid} did not stop within 60 s of SIGTERM: killed",
                      file=sys.stderr)
                p.kill()
                p.wait()


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: waited {timeout:g} s for {what}")
        time.sleep(0.2)


# ---- throughput ----

def signed_payloads(n_gateways: int, records: int, batch: int) -> tuple[list[VirtualGateway],
                                                                        list[tuple[str, bytes]]]:
    fleet = make_fleet(n_gateways)
    per = records // n_gateways
    columns = []
    for g in fleet:
        made = g.make(per)
        columns.append([(g.gw, encode_batch(made[i:i + batch])) for i in range(0, per, batch)])
    # round robin: the gateways interleaved, each one's batches in seq order (as live gateways)
    payloads = [p for row in zip(*columns, strict=True) for p in row]
    return fleet, payloads


async def blast(setup: Setup, payloads: list[tuple[str, bytes]]) -> None:
    import aiomqtt

    async with aiomqtt.Client(setup.broker.host, setup.broker.port,
                              max_queued_outgoing_messages=10_000_000) as client:
        for gw, payload in payloads:
            await client.publish(f"drgw/v1/{gw}/meas", payload, qos=1)


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (proc(5): fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(setup: Setup, n_workers: int, payloads: list[tuple[str, bytes]],
               total: int, *, prepublish: bool) -> dict[str, Any]:
    with workers(setup, n_workers) as procs:
        if prepublish:
            for p in procs:
                p.send_signal(signal.SIGSTOP)
        cpu0 = [cpu_s(p.pid) for p in procs]
        try:
            asyncio.run(blast(setup, payloads))
        finally:
            for p in procs:
                p.send_signal(signal.SIGCONT)
        load = os.getloadavg()[0]
        wait(lambda: setup.count() >= total, 900, f"{total} records stored")
        cpu = [round(cpu_s(p.pid) - c, 2) for p, c in zip(procs, cpu0, strict=True)]
    rows = setup.query("SELECT worker, COUNT(*), MIN(stored_ms), MAX(stored_ms) FROM measurements "
                       "GROUP BY worker ORDER BY worker")
    lo_all = min(r[2] for r in rows)
    hi_all = max(r[3] for r in rows)
    return {"workers": n_workers, "records": total, "prepublish": prepublish,
            "per_worker_rps": {w: round(n / max((hi - lo) / 1000, 1e-3)) for w, n, lo, hi in rows},
            "total_rps": round(total / max((hi_all - lo_all) / 1000, 1e-3)),
            "per_cpu_s": {w: round(n / max(c, 1e-3)) for (w, n, _, _), c in zip(rows, cpu,
                                                                               strict=True)},
            "worker_cpu_s": cpu, "span_s": round((hi_all - lo_all) / 1000, 2),
            "load1": round(load, 2)}


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run of repeated throughput rows (by total records/s), with every run's total."""
    ranked = sorted(rows, key=lambda r: r["total_rps"])
    middle = dict(ranked[len(ranked) // 2])
    middle["runs_total_rps"] = [r["total_rps"] for r in rows]
    middle["median_total_rps"] = statistics.median(r["total_rps"] for r in rows)
    return middle


# ---- where the time goes (one worker's work, in this process, no broker) ----

def profile(backends: list[str], pg: LocalPostgres | None, root: Path) -> dict[str, Any]:
    """Microseconds a record in each step of ingest, over 20,000 records of 200 gateways in
    20-record payloads, runs of 200 payloads as a worker stores them; the best of 3 passes."""
    from gateway.master import verify
    from gateway.measurement.record import measurement_domain

    _, payloads = signed_payloads(200, 20_000, 20)
    domain, n = measurement_domain(), len(payloads) * 20
    steps: dict[str, Any] = {}

    def best(name: str, work: Any) -> Any:
        took = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = work()
            took.append(time.perf_counter() - t0)
        steps[name] = round(min(took) / n * 1e6, 1)
        return out

    best("json_loads", lambda: [json.loads(p) for _, p in payloads])
    parsed = best("parse: json, fields, struct hash, digest",
                  lambda: [verify.parse(gw, p, domain) for gw, p in payloads])
    best("recover: libsecp256k1 + keccak of the key", lambda: list(map(verify.recover, parsed)))
    checks = best("finish: verdicts, chain, wire", lambda: [verify.finish(verify.Parsed(
        verify.BatchCheck(x.check.gw), x.records, x.digests, x.signers)) for x in parsed])
    for backend in backends:
        steps[f"store: {backend}"] = _store_us(backend, pg, root, checks, n)
    return {"us_per_record": steps, "load1": round(os.getloadavg()[0], 2)}


def _store_us(backend: str, pg: LocalPostgres | None, root: Path, checks: list[Any],
              n: int) -> float:
    """Microseconds a record to store `checks` in runs of 200, best of 3, a new database each
    pass (opened outside the timed part)."""
    from gateway.master.db_postgres import open_postgres
    from gateway.master.db_sqlite import open_sqlite
    from gateway.master.ledger import Ledger

    took = []
    for _ in range(3):
        sql = (open_sqlite(root / f"profile-{time.monotonic_ns()}.sqlite")
               if backend == "sqlite" or pg is None
               else open_postgres(pg.database(f"profile_{time.monotonic_ns()}")))
        ledger = Ledger(sql, worker="w0")
        t0 = time.perf_counter()
        for i in range(0, len(checks), 200):
            ledger.store(checks[i:i + 200], now_ms=0)
        took.append(time.perf_counter() - t0)
        sql.close()
    return round(min(took) / n * 1e6, 1)


# ---- soak ----

async def soak_publish(setup: Setup, fleet: list[VirtualGateway], rate: float, seconds: float,
                       rng: random.Random) -> dict[str, int]:
    link = FleetLink(fleet, host=setup.broker.host, port=setup.broker.port,
                     operators=[setup.operator.address])
    injected = {"gaps": 0, "forgeries": 0, "duplicates": 0}
    async with link.running():
        for g in fleet:
            await link.birth(g)
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds:
            for g in fleet:
                records = g.make(max(1, int(rate)))
                roll = rng.random()
                if roll < 0.01 / 10:
                    injected["gaps"] += 1
                    continue  # dropped: a gap the master must repair
                if roll < 0.02 / 10:
                    injected["forgeries"] += 1
                    await link.publish(g, [g.tampered(records[0]), *records[1:]])
                    continue
                await link.publish(g, records)
                if roll < 0.03 / 10:
                    injected["duplicates"] += 1
                    await link.publish(g, records)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick / rate * max(1, int(rate)) -
                                    time.monotonic()))
        for g in fleet:  # one more record each, so a drop in the last second is a gap too
            await link.publish(g, g.make(1))
        expected = sum(len(g.made) for g in fleet)
        await asyncio.to_thread(wait, lambda: setup.count() >= expected, 600,
                                "every gap repaired")
        await asyncio.to_thread(wait, lambda: not setup.query(
            "SELECT 1 FROM gaps WHERE state IN ('open', 'repairing')"), 120, "the gaps settled")
    return injected


def soak(setup: Setup, n_workers: int, n_gateways: int, rate: float,
         seconds: float) -> dict[str, Any]:
    fleet = make_fleet(n_gateways)
    t0 = time.monotonic()
    with workers(setup, n_workers):
        injected = asyncio.run(soak_publish(setup, fleet, rate, seconds, random.Random(7)))
        took = time.monotonic() - t0
    honest = {(g.gw, seq, leaf) for g in fleet for seq, leaf in g.made.items()}
    stored = {(gw, int(seq), bytes(leaf)) for gw, seq, leaf in
              setup.query("SELECT gw, seq, leaf FROM measurements")}
    gaps = setup.query("SELECT state, COUNT(*) FROM gaps GROUP BY state")
    return {"workers": n_workers, "gateways": n_gateways, "rate_per_gw": rate,
            "seconds": seconds, "records": len(honest), "injected": injected,
            "lost_after_repair": len(honest - stored), "forgeries_stored": len(stored - honest),
            "quarantined": int(setup.query("SELECT COUNT(*) FROM quarantine")[0][0]),
            "duplicates_counted": int(setup.query("SELECT SUM(duplicates) FROM gateways")[0][0]),
            "gaps": dict(gaps), "wall_s": round(took, 1)}


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--records", type=int, default=40_000, help="throughput run: records")
    ap.add_argument("--gateways", type=int, default=200, help="throughput run: gateways")
    ap.add_argument("--batch", type=int, default=20, help="throughput run: records per payload")
    ap.add_argument("--soak-gateways", type=int, default=200)
    ap.add_argument("--soak-seconds", type=float, default=20)
    ap.add_argument("--soak-workers", type=int, default=2)
    ap.add_argument("--skip-soak", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--prepublish", action="store_true",
                    help="throughput run: publish while the workers are stopped (see above)")
    ap.add_argument("--repeat", type=int, default=1, help="throughput run: runs per row (median)")
    ap.add_argument("--verify-threads", type=int, default=None,
                    help="[service] verify_threads of the workers (default: one a core)")
    ap.add_argument("--profile", action="store_true",
                    help="print where a record's time goes inside one worker, no broker")
    return ap.parse_args()


def throughput_rows(args: argparse.Namespace, stack: ExitStack, root: Path,
                    pg: LocalPostgres | None) -> list[dict[str, Any]]:
    """Each backend with each worker count, `--repeat` times; the median run of each."""
    print(f"signing {args.records} records of {args.gateways} gateways ...", file=sys.stderr)
    _, payloads = signed_payloads(args.gateways, args.records, args.batch)
    total = (args.records // args.gateways) * args.gateways
    out = []
    for backend in args.backends.split(","):
        for n in (int(w) for w in args.workers.split(",")):
            runs = []
            for k in range(args.repeat):
                setup = Setup(stack, root, backend, pg, f"t_{backend}_{n}_{k}",
                              verify_threads=args.verify_threads)
                runs.append({"backend": backend, **throughput(
                    setup, n, payloads, total, prepublish=args.prepublish)})
                print(json.dumps(runs[-1]), file=sys.stderr)
                setup.broker.stop()
            out.append(medians(runs))
    return out


def scaling(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each backend's n-worker median against its 1-worker median: the wall-clock speedup, and the
    CPU efficiency (records per worker CPU-second, all workers together, over the one worker's).
    n x efficiency is the speedup n workers would give with the cores to run each as the one
    worker ran; on a machine where one worker already keeps most cores busy, only the wall-clock
    figure is measured, the other is that arithmetic."""
    def per_cpu(row: dict[str, Any]) -> float:
        return float(row["records"] / max(sum(row["worker_cpu_s"]), 1e-3))

    out = []
    for one in (r for r in rows if r["workers"] == 1):
        for row in (r for r in rows if r["backend"] == one["backend"] and r["workers"] > 1):
            efficiency = per_cpu(row) / per_cpu(one)
            out.append({"backend": row["backend"], "workers": row["workers"],
                        "wall_speedup": round(row["median_total_rps"] / one["median_total_rps"], 2),
                        "cpu_efficiency": round(efficiency, 3),
                        "speedup_given_the_cores": round(row["workers"] * efficiency, 2)})
    return out


def main() -> None:
    args = arguments()
    backends = args.backends.split(",")
    report: dict[str, Any] = {"cpus": os.cpu_count(), "throughput": [], "soak": []}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="drgw-fleet-") as tmp:
        pg = stack.enter_context(LocalPostgres(fsync=True)) if "postgres" in backends else None
        if args.profile:
            report["profile"] = profile(backends, pg, Path(tmp))
            print(json.dumps(report["profile"]), file=sys.stderr)
        if not args.skip_throughput:
            report["throughput"] = throughput_rows(args, stack, Path(tmp), pg)
            report["scaling"] = scaling(report["throughput"])
        if not args.skip_soak:
            for backend in backends:
                setup = Setup(stack, Path(tmp), backend, pg, f"s_{backend}")
                row = {"backend": backend, **soak(setup, args.soak_workers, args.soak_gateways,
                                                   1.0, args.soak_seconds)}
                print(json.dumps(row), file=sys.stderr)
                report["soak"].append(row)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
