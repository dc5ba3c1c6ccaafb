"""What `drgw run` costs in steady state: CPU-s per 1,000 readings, fsyncs/s and bytes written/day.

The agent (a separate process) polls 10 simulated SDM630 meters over Modbus TCP at 1 Hz, every poll
class, and publishes to a local mosquitto. After a warm-up, for --seconds, this reads:
- CPU: utime + stime of the agent from /proc/<pid>/stat (all its threads), per 1,000 readings
  committed in the window (readings counted in the stored records themselves). CPU seconds are
  disturbed less than wall time by other work on a shared machine, but not immune to it (caches,
  frequency scaling, the simulator and broker compete for the same cores): the 1-min load average
  is printed beside every figure.
- fsyncs: counted two ways. (1) the store's own `durable_commits` counter (transactions committed at
  synchronous=FULL: one WAL sync each); (2) independently, every fsync/fdatasync the agent makes,
  traced by `strace -f --seccomp-bpf` (only those two calls stop the process, so tracing costs
  little); this includes the syncs of WAL checkpoints and of any other file. Without strace the
  bench says so and prints the store's count only.
- bytes: write_bytes of /proc/<pid>/io (bytes the process caused to be sent to the block layer,
  https://docs.kernel.org/filesystems/proc.html "/proc/<pid>/io"), scaled to a day, beside the
  store's `bytes_committed` counter (record and outbox bytes handed to SQLite: the logical payload,
  so the ratio of the two is SQLite's write amplification: pages, WAL frames, checkpoints).

    .venv/bin/python bench/agent_cost.py [--runs 3] [--seconds 60] [--meters 10] [--entry cli|direct]

bench/pipeline.py runs the same measurement as its third part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.measurement.wire import from_wire  # noqa: E402
from gateway.network.localbroker import Broker  # noqa: E402

WARM_UP_S = 10.0  # imports, first cycles, broker session, the first checkpoint of a new WAL
SYNC_CALLS = ("fsync(", "fdatasync(")

# `drgw run` without gateway.cli: the run command's own parser, nothing else imported up front.
DIRECT_RUN = ("import argparse, sys\n"
              "from gateway.commands import run\n"
              "parser = argparse.ArgumentParser()\n"
              "run.register(parser.add_subparsers())\n"
              "args = parser.parse_args(sys.argv[1:])\n"
              "sys.exit(args.func(args))\n")


@dataclass(frozen=True, slots=True)
class Snapshot:
    wall: float
    cpu_s: float
    write_bytes: int
    seq: int
    counters: dict[str, int]
    rss_mb: float


@dataclass(frozen=True, slots=True)
class Window:
    """One run's steady-state figures."""

    seconds: float
    cpu_per_1000: float
    cpu_pct: float
    readings_per_s: float
    fsyncs_per_s: float | None  # traced; None without strace
    durable_commits_per_s: float | None  # the store's counter; None when it has none
    bytes_per_day: float
    logical_bytes_per_day: float | None
    rss_mb: float
    load: tuple[float, float]  # 1-min load average at the start and the end
    records: int
    chain_client_loaded: bool


def _proc(pid: int) -> tuple[float, int, float]:
    """(CPU seconds, write_bytes, RSS MB) of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    rss = next((int(line.split()[1]) / 1024 for line in
                Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")), 0.0)
    return cpu, int(io["write_bytes"]), rss


def _store_state(db: Path) -> tuple[int, dict[str, int]]:
    """(newest seq, counters) read from the agent's store by a separate read-only connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        seq = conn.execute("SELECT coalesce(max(seq), 0) FROM measurements").fetchone()[0]
        counters = {str(n): int(v) for n, v in conn.execute("SELECT name, value FROM counters")}
    finally:
        conn.close()
    return int(seq), counters


def _readings_between(db: Path, first: int, last: int) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT wire FROM measurements WHERE seq BETWEEN ? AND ?",
                            [first, last]).fetchall()
    finally:
        conn.close()
    return sum(len(from_wire(bytes(w)).measurement.readings) for (w,) in rows)


def _snapshot(pid: int, db: Path) -> Snapshot:
    seq, counters = _store_state(db)
    cpu, written, rss = _proc(pid)
    return Snapshot(time.time(), cpu, written, seq, counters, rss)


def _traced_syncs(log: Path, start: float, end: float) -> int:
    """fsync/fdatasync calls in the strace log (-ttt: epoch seconds) between `start` and `end`."""
    count = 0
    for line in log.read_text().splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[2].startswith(SYNC_CALLS) \
                and start <= float(parts[1]) <= end:
            count += 1
    return count


def write_configs(tmp: Path, broker: Broker, meters: int) -> subprocess.Popen[str]:
    """The simulated meters (started) and the agent's drgw.toml; returns the simulator process."""
    home = tmp / "home.toml"
    home.write_text("".join(
        f'[[device]]\nname = "m{i}"\nprofile = "eastron_sdm630"\ntransport = "tcp"\n'
        f'address = "127.0.0.1:0"\nunit = 1\n[device.load]\nkind = "constant"\n'
        f"power_w = {500 + 100 * i}\n\n" for i in range(meters)))
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", str(home), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert sim.stdout is not None
    devices = json.loads(sim.stdout.readline())["devices"]
    subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "new", "--out",
                    str(tmp / "gw.key")], check=True, capture_output=True, cwd=ROOT)
    text = (f'[gateway]\nkey = "gw.key"\nlog_level = "WARNING"\n[mqtt]\nbroker = "{broker.url}"\n'
            "[poll]\nfast = 1.0\nnormal = 1.0\nslow = 1.0\n")
    for i, d in enumerate(devices):
        text += (f'[[bus]]\nname = "b{i}"\ntcp = "{d["address"]}"\n[[device]]\nname = "{d["name"]}"\n'
                 f'profile = "eastron_sdm630"\nbus = "b{i}"\nunit = 1\n')
    (tmp / "drgw.toml").write_text(text)
    return sim


@contextmanager
def running_agent(tmp: Path, entry: str, trace: Path | None) -> Iterator[int]:
    """`drgw run` on tmp/drgw.toml (under strace when `trace` is a log path); yields its pid."""
    start = ["-m", "gateway.cli"] if entry == "cli" else ["-c", DIRECT_RUN]
    command = [sys.executable, *start, "run", str(tmp / "drgw.toml")]
    if trace is not None:  # only fsync/fdatasync stop the agent (seccomp-bpf filter)
        command = ["strace", "-f", "--seccomp-bpf", "-qq", "-ttt", "-e", "signal=none",
                   "-e", "trace=fsync,fdatasync", "-o", str(trace), *command]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    pid = proc.pid
    try:
        if trace is not None:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            deadline = time.monotonic() + 10
            while not children.read_text().split() and time.monotonic() < deadline:
                time.sleep(0.05)
            pid = int(children.read_text().split()[0])
        yield pid
    finally:
        if pid != proc.pid:
            os.kill(pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=30)


def measure(broker: Broker, tmp: Path, seconds: float, *, meters: int = 10,
            entry: str = "cli", trace: bool = True) -> Window:
    tmp.mkdir(parents=True, exist_ok=True)
    sim = write_configs(tmp, broker, meters)
    log = tmp / "syncs.strace" if trace else None
    db = tmp / "drgw.db"
    try:
        with running_agent(tmp, entry, log) as pid:
            time.sleep(WARM_UP_S)
            load0, a = os.getloadavg()[0], _snapshot(pid, db)
            peak = a.rss_mb
            while time.time() - a.wall < seconds:
                time.sleep(1)
                peak = max(peak, _proc(pid)[2])
            b, load1 = _snapshot(pid, db), os.getloadavg()[0]
            mods = Path(f"/proc/{pid}/maps").read_text()
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    wall, day = b.wall - a.wall, 86_400 / (b.wall - a.wall)
    readings = _readings_between(db, a.seq + 1, b.seq)
    delta = {k: b.counters.get(k, 0) - a.counters.get(k, 0) for k in b.counters}
    has_counters = "durable_commits" in b.counters
    cpu = b.cpu_s - a.cpu_s
    return Window(
        seconds=wall, cpu_per_1000=1000 * cpu / max(readings, 1), cpu_pct=100 * cpu / wall,
        readings_per_s=readings / wall,
        fsyncs_per_s=None if log is None else _traced_syncs(log, a.wall, b.wall) / wall,
        durable_commits_per_s=delta.get("durable_commits", 0) / wall if has_counters else None,
        bytes_per_day=(b.write_bytes - a.write_bytes) * day,
        logical_bytes_per_day=delta.get("bytes_committed", 0) * day if has_counters else None,
        rss_mb=max(peak, b.rss_mb), load=(load0, load1), records=b.seq - a.seq,
        chain_client_loaded="eth_tester" in mods or "web3" in mods)


def _fmt(value: float | None, spec: str, missing: str) -> str:
    return missing if value is None else format(value, spec)


def report(broker: Broker, tmp: Path, *, runs: int, seconds: float, meters: int = 10,
           entry: str = "cli") -> list[Window]:
    """Measure `runs` fresh agents in turn; print each run and the medians."""
    trace = shutil.which("strace") is not None
    if not trace:
        print("  strace is not installed (apt install strace): fsyncs are the store's own count only")
    windows = []
    for i in range(runs):
        w = measure(broker, tmp / f"agent{i}", seconds, meters=meters, entry=entry, trace=trace)
        windows.append(w)
        logical = None if w.logical_bytes_per_day is None else w.logical_bytes_per_day / 1e6
        print(f"  run {i + 1}: {w.records} records, {w.readings_per_s:.0f} readings/s in "
              f"{w.seconds:.0f} s: {w.cpu_per_1000:.4f} CPU-s/1000 readings ({w.cpu_pct:.2f} % of "
              f"a core); fsyncs/s traced {_fmt(w.fsyncs_per_s, '.2f', 'n/a (no strace)')}, store "
              f"{_fmt(w.durable_commits_per_s, '.2f', 'n/a (no counter)')}; written "
              f"{w.bytes_per_day / 1e6:,.0f} MB/day (store payload "
              f"{_fmt(logical, ',.0f', 'n/a')} MB/day); RSS {w.rss_mb:.1f} MB; "
              f"load {w.load[0]:.2f}->{w.load[1]:.2f}")

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    def med_mb(values: list[float | None]) -> float | None:
        m = med(values)
        return None if m is None else m / 1e6

    print(f"agent ({entry} entry): drgw run, {meters} meters x 1 Hz over TCP, median of {runs} runs "
          f"of {seconds:.0f} s: {med([w.cpu_per_1000 for w in windows]):.4f} CPU-s per 1,000 "
          f"readings (goal 0.033), {med([w.cpu_pct for w in windows]):.2f} % of a core; fsyncs/s "
          f"{_fmt(med([w.fsyncs_per_s for w in windows]), '.2f', 'n/a')} traced, "
          f"{_fmt(med([w.durable_commits_per_s for w in windows]), '.2f', 'n/a')} store (goal 1); "
          f"{_fmt(med_mb([w.bytes_per_day for w in windows]), ',.0f', 'n/a')} MB written/day (store "
          f"payload {_fmt(med_mb([w.logical_bytes_per_day for w in windows]), ',.0f', 'n/a')}); "
          f"RSS {med([w.rss_mb for w in windows]):.1f} MB (goal 45); chain client loaded: "
          f"{'yes' if any(w.chain_client_loaded for w in windows) else 'no'}; load (1-min) "
          + ", ".join(f"{w.load[0]:.2f}-{w.load[1]:.2f}" for w in windows))
    return windows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--meters", type=int, default=10)
    parser.add_argument("--entry", choices=["cli", "direct"], default="cli")
    args = parser.parse_args()
    # On the disk the machine boots from (not a tmpfs): fsync and write_bytes must be real.
    with tempfile.TemporaryDirectory(dir=os.environ.get("DRGW_BENCH_DIR", "/var/tmp")) as tmpdir:
        tmp = Path(tmpdir)
        with Broker(tmp / "mosquitto") as broker:
            report(broker, tmp, runs=args.runs, seconds=args.seconds, meters=args.meters,
                   entry=args.entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
