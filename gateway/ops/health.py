"""Agent health: raw readings of the process, the store and the device counters -> the snapshot the
agent publishes on `drgw/v1/<gw>/health` (fields in docs/mqtt.md, "health"), with rates over the
interval since the previous snapshot.

`HealthSampler` is pure: the readings, including the monotonic time they were taken at, are its
arguments. The `read_*` functions below it are the I/O edge (os.times, /proc/self/statm, os.stat,
os.statvfs); they never raise for a missing file, so a health message cannot take the agent down.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.device.device import DeviceState

# Store counter names (gateway/measurement/store/database.py) -> the short reason used in health and metrics.
EVICTION_COUNTERS: Mapping[str, str] = {
    "evicted_age": "age", "evicted_rows_cap": "rows_cap", "evicted_bytes_cap": "bytes_cap",
}
ERROR_KINDS = ("timeout", "protocol", "exception", "link")


@dataclass(frozen=True, slots=True)
class DeviceCounts:
    """Cumulative counters of one device since the agent started (gateway/device/device.py)."""

    name: str
    requests: int  # Modbus transactions sent: poll reads, plus the rare write or ad-hoc read
    cycles: int  # poll cycles that produced readings
    failed_cycles: int
    timeouts: int  # no (complete) answer in time
    protocol_errors: int  # a garbled answer: bad CRC, wrong length, unit or function
    exceptions: int  # a well-formed Modbus exception response (the device said no)
    link_errors: int  # the transport failed: TCP refused/reset, serial port gone
    consecutive_failures: int  # failed cycles since the last good one: 0 = online

    def errors(self) -> dict[str, int]:
        return {"timeout": self.timeouts, "protocol": self.protocol_errors,
                "exception": self.exceptions, "link": self.link_errors}


@dataclass(frozen=True, slots=True)
class ProcessReading:
    cpu_s: float  # user + system CPU time of this process
    rss_bytes: int  # resident set size now (the peak where /proc is missing)


@dataclass(frozen=True, slots=True)
class StoreReading:
    db_bytes: int  # the SQLite file
    wal_bytes: int  # its write-ahead log (-wal), 0 when absent
    free_bytes: int  # space available to this process on the store's filesystem
    outbox_rows: int
    outbox_bytes: int
    evictions: Mapping[str, int] = field(default_factory=dict)  # reason -> outbox rows evicted
    evicted_measurements: int = 0  # records inside evicted outbox rows
    failure: str | None = None  # why the store's last write failed: disk_full, io_error, corrupt, busy


@dataclass(frozen=True, slots=True)
class HealthReadings:
    """Everything a snapshot is computed from, taken at monotonic time `now` (seconds)."""

    now: float
    process: ProcessReading
    store: StoreReading
    devices: tuple[DeviceCounts, ...]
    sample_queue: int  # samples read but not yet signed and committed
    samples_dropped: int = 0  # samples the full queue dropped (oldest first) since the start


class HealthSampler:
    """Turns successive readings into snapshots; rates cover the time since the previous one."""

    def __init__(self, first: HealthReadings) -> None:
        self.started = first.now
        self._last = first

    def sample(self, now: HealthReadings, *, advance: bool = True) -> dict[str, Any]:
        """The snapshot for `now`. `advance=False` peeks (e.g. for a diagnostics command) without
        starting a new interval, so the published rates stay rates over the health interval."""
        prev = self._last
        interval = now.now - prev.now
        before = {d.name: d for d in prev.devices}
        devices: dict[str, Any] = {}
        total_reads = 0
        for d in now.devices:
            old = before.get(d.name)
            reads = d.requests - (old.requests if old else 0)
            errors = sum(d.errors().values()) - (sum(old.errors().values()) if old else 0)
            total_reads += reads
            devices[d.name] = {
                "reads": d.requests, "reads_per_s": _rate(reads, interval),
                "cycles": d.cycles, "failed_cycles": d.failed_cycles, "errors": d.errors(),
                "errors_in_interval": errors, "online": d.consecutive_failures == 0 and d.cycles > 0,
                "consecutive_failures": d.consecutive_failures,
            }
        cpu = now.process.cpu_s - prev.process.cpu_s
        s = now.store
        if advance:
            self._last = now
        return {
            "interval_s": round(interval, 3),
            "uptime_s": round(now.now - self.started, 1),
            "reads_per_s": _rate(total_reads, interval),
            "devices": devices,
            "sample_queue": now.sample_queue,
            "samples_dropped": now.samples_dropped,
            "disk_full": s.failure == "disk_full",
            "store_error": s.failure,
            "evictions": {**{r: s.evictions.get(r, 0) for r in EVICTION_COUNTERS.values()},
                          "measurements": s.evicted_measurements},
            "process": {"cpu_pct": round(100.0 * cpu / interval, 2) if interval > 0 else 0.0,
                        "cpu_s": round(now.process.cpu_s, 2), "rss_bytes": now.process.rss_bytes},
            "store": {"db_bytes": s.db_bytes, "wal_bytes": s.wal_bytes, "free_bytes": s.free_bytes},
        }


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 3) if seconds > 0 else 0.0


# ------------------------------------------------------------------------------------ I/O edge


def read_devices(states: Iterable[DeviceState]) -> tuple[DeviceCounts, ...]:
    return tuple(DeviceCounts(
        name=st.spec.name, requests=st.requests, cycles=st.cycles, failed_cycles=st.failed_cycles,
        timeouts=st.timeouts, protocol_errors=st.protocol_errors, exceptions=st.exceptions,
        link_errors=st.link_errors, consecutive_failures=st.failures) for st in states)


def read_process() -> ProcessReading:
    times = os.times()  # children's time is kept apart by the kernel: this is the agent alone
    return ProcessReading(cpu_s=times.user + times.system, rss_bytes=_rss_bytes())


def _rss_bytes() -> int:
    # proc(5): /proc/[pid]/statm field 2 is the resident set in pages.
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        import resource

        # getrusage(2): ru_maxrss is the peak, in KiB on Linux; the best a system without /proc has.
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def read_store(*, path: str, outbox: tuple[int, int], counters: Mapping[str, int],
               failure: str | None = None) -> StoreReading:
    """File sizes and free space of the store at `path`, plus its outbox depth, evictions and the
    reason its last write failed (None when it succeeded)."""
    try:
        vfs = os.statvfs(os.path.dirname(os.path.abspath(path)))
        free = vfs.f_bavail * vfs.f_frsize  # f_bavail: what an unprivileged writer may still use
    except OSError:
        free = 0
    return StoreReading(
        db_bytes=_size(path), wal_bytes=_size(path + "-wal"), free_bytes=free,
        outbox_rows=outbox[0], outbox_bytes=outbox[1],
        evictions={short: counters.get(name, 0) for name, short in EVICTION_COUNTERS.items()},
        evicted_measurements=counters.get("evicted_measurements", 0), failure=failure)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
