"""gateway.ops.health: snapshots and rates from readings (time passed in), and the I/O readers."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gateway.config.profiles import load_profile
from gateway.device.device import DeviceSpec, DeviceState
from gateway.ops.health import (
    DeviceCounts,
    HealthReadings,
    HealthSampler,
    ProcessReading,
    StoreReading,
    read_devices,
    read_process,
    read_store,
)


def device(name: str, *, requests: int, cycles: int = 0, failed: int = 0, timeouts: int = 0,
           protocol: int = 0, exceptions: int = 0, link: int = 0, failures: int = 0) -> DeviceCounts:
    return DeviceCounts(name=name, requests=requests, cycles=cycles, failed_cycles=failed,
                        timeouts=timeouts, protocol_errors=protocol, exceptions=exceptions,
                        link_errors=link, consecutive_failures=failures)


def readings(now: float, *, cpu: float, devices: tuple[DeviceCounts, ...], queue: int = 0,
             evictions: dict[str, int] | None = None) -> HealthReadings:
    return HealthReadings(
        now=now, process=ProcessReading(cpu_s=cpu, rss_bytes=30 << 20), sample_queue=queue,
        devices=devices,
        store=StoreReading(db_bytes=4096, wal_bytes=512, free_bytes=1 << 30, outbox_rows=3,
                           outbox_bytes=900, evictions=evictions or {}, evicted_measurements=7))


def test_rates_cover_the_interval_since_the_previous_snapshot() -> None:
    sampler = HealthSampler(readings(100.0, cpu=2.0, devices=(
        device("main", requests=0), device("ev", requests=0))))
    snap = sampler.sample(readings(130.0, cpu=2.6, queue=4, devices=(
        device("main", requests=300, cycles=100), device("ev", requests=60, cycles=25, failed=5,
                                                         timeouts=4, link=1, failures=2))))
    assert snap["interval_s"] == 30.0 and snap["uptime_s"] == 30.0
    assert snap["reads_per_s"] == 12.0
    assert snap["devices"]["main"] == {
        "reads": 300, "reads_per_s": 10.0, "cycles": 100, "failed_cycles": 0,
        "errors": {"timeout": 0, "protocol": 0, "exception": 0, "link": 0},
        "errors_in_interval": 0, "online": True, "consecutive_failures": 0}
    assert snap["devices"]["ev"]["errors"] == {"timeout": 4, "protocol": 0, "exception": 0,
                                               "link": 1}
    assert snap["devices"]["ev"]["online"] is False
    assert snap["process"] == {"cpu_pct": 2.0, "cpu_s": 2.6, "rss_bytes": 30 << 20}
    assert snap["sample_queue"] == 4
    assert snap["store"] == {"db_bytes": 4096, "wal_bytes": 512, "free_bytes": 1 << 30}
    assert snap["evictions"] == {"age": 0, "rows_cap": 0, "bytes_cap": 0, "measurements": 7}
    # The next interval starts where this one ended: only the new requests count.
    snap = sampler.sample(readings(140.0, cpu=3.6, devices=(
        device("main", requests=320, cycles=106), device("ev", requests=60, cycles=25, failed=9,
                                                         timeouts=8, link=1, failures=6))))
    assert snap["interval_s"] == 10.0 and snap["uptime_s"] == 40.0
    assert snap["devices"]["main"]["reads_per_s"] == 2.0
    assert snap["devices"]["ev"]["reads_per_s"] == 0.0
    assert snap["devices"]["ev"]["errors_in_interval"] == 4
    assert snap["process"]["cpu_pct"] == 10.0


def test_peeking_does_not_start_a_new_interval() -> None:
    sampler = HealthSampler(readings(0.0, cpu=0.0, devices=(device("m", requests=0),)))
    peek = sampler.sample(readings(5.0, cpu=0.0, devices=(device("m", requests=50),)),
                          advance=False)
    assert peek["devices"]["m"]["reads_per_s"] == 10.0
    snap = sampler.sample(readings(10.0, cpu=0.0, devices=(device("m", requests=50),)))
    assert snap["interval_s"] == 10.0 and snap["devices"]["m"]["reads_per_s"] == 5.0


def test_a_zero_interval_gives_zero_rates_not_a_division_error() -> None:
    first = readings(7.0, cpu=1.0, devices=(device("m", requests=3),))
    snap = HealthSampler(first).sample(first)
    assert snap["reads_per_s"] == 0.0 and snap["process"]["cpu_pct"] == 0.0


def test_evictions_are_always_present_by_reason() -> None:
    r = readings(1.0, cpu=0.0, devices=(), evictions={"rows_cap": 12})
    snap = HealthSampler(readings(0.0, cpu=0.0, devices=())).sample(r)
    assert snap["evictions"] == {"age": 0, "rows_cap": 12, "bytes_cap": 0, "measurements": 7}


def test_read_devices_takes_the_device_layer_counters() -> None:
    state = DeviceState(DeviceSpec(name="main", profile=load_profile("eastron_sdm630"), unit=1))
    state.requests, state.cycles, state.timeouts, state.protocol_errors = 12, 3, 2, 1
    state.exceptions, state.link_errors, state.failed_cycles, state.failures = 4, 5, 6, 2
    (counts,) = read_devices([state])
    assert counts == device("main", requests=12, cycles=3, failed=6, timeouts=2, protocol=1,
                            exceptions=4, link=5, failures=2)


def test_read_process_sees_this_process() -> None:
    before = read_process()
    sum(i * i for i in range(300_000))  # burn a little CPU
    after = read_process()
    assert after.cpu_s >= before.cpu_s > 0
    assert 1 << 20 < after.rss_bytes < 4 << 30


def test_read_store_sizes_the_database_and_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "drgw.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.execute("INSERT INTO t VALUES (?)", [b"x" * 10_000])
    conn.commit()
    r = read_store(path=str(path), outbox=(2, 300),
                   counters={"evicted_age": 1, "evicted_bytes_cap": 2, "evicted_measurements": 9,
                             "measurements_committed": 50})
    assert r.wal_bytes > 10_000  # the insert sits in the WAL until a checkpoint
    assert r.db_bytes == os.stat(path).st_size
    conn.close()  # the last connection checkpoints the WAL into the file
    vfs = os.statvfs(tmp_path)
    assert abs(r.free_bytes - vfs.f_bavail * vfs.f_frsize) < 64 << 20  # others write meanwhile
    assert (r.outbox_rows, r.outbox_bytes) == (2, 300)
    assert r.evictions == {"age": 1, "rows_cap": 0, "bytes_cap": 2}
    assert r.evicted_measurements == 9


def test_read_store_of_a_missing_file_reads_zero(tmp_path: Path) -> None:
    r = read_store(path=str(tmp_path / "nope" / "drgw.db"), outbox=(0, 0), counters={})
    assert (r.db_bytes, r.wal_bytes, r.free_bytes) == (0, 0, 0)
