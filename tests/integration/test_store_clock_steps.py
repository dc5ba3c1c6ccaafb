"""Issue 12, fault 4 (the store's part): wall-clock steps must not break Merkle roots or evict data.

- A 20 s backward step used to leave `drgw verify --db` reporting broken intervals on an untouched
  store (records stamped after the step fell into an interval already closed by time window) and
  records outside every root. Intervals are now closed by seq range, and verify applies one rule to
  old and new intervals (docs/measurements.md, "Merkle roots").
- A 40-day forward step (a Pi without an RTC booting before NTP) used to evict the unsent outbox by
  age. A row is now evicted by age only when its time and now both came from a synchronised clock.

The wall clock is injected through the Store's `clock_ms` constructor parameter; records carry the
clock state the pipeline read (their clockSynced field) and the time the sample was taken.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    MeasurementChain,
    ScaledReading,
    SignedMeasurement,
    measurement_domain,
)
from gateway.measurement.store import Store

KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
DOMAIN = measurement_domain()
TOPIC = "drgw/v1/gw/meas"
DAY_MS = 86_400_000
T0 = 1_700_000_000_000  # some wall time, ms


class WallClock:
    """The injected wall clock: what time.time() would say, stepped by the test."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def sampled(store: Store, clock: WallClock, n: int, *, every_ms: int = 1_000,
            synced: bool = True) -> list[SignedMeasurement]:
    """n records sampled every `every_ms` on `clock` (which moves on with them)."""
    seq, leaf = store.last_chain_state()
    chain = MeasurementChain(gateway=KEY.address, last_seq=seq, last_hash=leaf)
    out = []
    for i in range(n):
        clock.now_ms += every_ms
        out.append(chain.next_signed(KEY, DOMAIN, device="meter", time_ms=clock.now_ms,
                                     clock_synced=synced, readings=[ScaledReading("p", i, "W", 0)]))
    return out


def verify(db: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", "--db", str(db)])
    return code, capsys.readouterr().out


def test_intervals_closed_across_a_backward_step_verify_and_hold_every_record_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = WallClock(T0)
    db = tmp_path / "s.db"
    with Store(db, clock_ms=clock) as store:
        for round_ in range(6):  # the agent: commits, and every interval a close
            store.commit(sampled(store, clock, 10), TOPIC)
            if round_ == 2:
                clock.now_ms -= 20_000  # NTP steps the clock back by 20 s
            store.close_next_interval()
        roots = store.intervals()
    assert [(i.first_seq, i.last_seq) for i in roots] == [(10 * k + 1, 10 * k + 10) for k in range(6)]
    assert sum(i.leaf_count for i in roots) == 60  # every record under exactly one root
    code, out = verify(db, capsys)
    assert code == 0, out
    assert out.strip().endswith("OK")


def test_time_window_intervals_of_older_stores_still_verify_after_a_backward_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Intervals closed by time window (stores from before schema 3; `close_interval`). The records
    stamped after the step fall into the window already closed: the old verify rule (every record
    in the window) counted them and failed; the rule with the interval's seq range does not."""
    clock = WallClock(T0)
    db = tmp_path / "old.db"
    with Store(db, clock_ms=clock) as store:
        store.commit(sampled(store, clock, 30), TOPIC)  # T0 + 1..30 s
        assert store.close_interval(T0, T0 + 30_001) is not None
        clock.now_ms -= 20_000  # the step: the next records are stamped inside the closed window
        store.commit(sampled(store, clock, 10), TOPIC)
        rest = store.close_next_interval()  # and the agent now closes by seq: they are not lost
    assert rest is not None and (rest.first_seq, rest.last_seq, rest.leaf_count) == (31, 40, 10)
    code, out = verify(db, capsys)
    assert code == 0, out


def test_a_forty_day_step_before_ntp_evicts_nothing(tmp_path: Path) -> None:
    """A Pi without an RTC: it boots with the clock where it stopped (unsynchronised), queues records
    while the broker is away, then NTP steps the clock 40 days ahead. The age cap is 7 days."""
    clock = WallClock(T0)
    with Store(tmp_path / "s.db", batch_size=5, outbox_max_age_ms=7 * DAY_MS,
               clock_ms=clock) as store:
        store.commit(sampled(store, clock, 20, synced=False), TOPIC)  # before NTP
        clock.now_ms += 40 * DAY_MS  # NTP: the clock steps forward
        store.commit(sampled(store, clock, 5, synced=True), TOPIC)
        store.expire()
        assert store.outbox_depth()[0] == 5 and store.counters()["evicted_age"] == 0
        assert [i.seq_first for i in store.outbox_pending(10)] == [1, 6, 11, 16, 21]


def test_rows_from_a_synchronised_clock_still_age_out(tmp_path: Path) -> None:
    clock = WallClock(T0)
    with Store(tmp_path / "s.db", batch_size=5, outbox_max_age_ms=7 * DAY_MS,
               clock_ms=clock) as store:
        store.commit(sampled(store, clock, 10, synced=True), TOPIC)
        clock.now_ms += 8 * DAY_MS
        store.commit(sampled(store, clock, 5, synced=True), TOPIC)
        counts = store.counters()
        assert counts["evicted_age"] == 2 and counts["evicted_measurements"] == 10
        assert [i.seq_first for i in store.outbox_pending(10)] == [11]
        clock.now_ms -= 20_000  # a backward step evicts nothing more
        store.expire()
        assert store.outbox_depth()[0] == 1


def test_roots_are_contiguous_seq_ranges_bounded_in_size_and_skip_evicted_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = WallClock(T0)
    db = tmp_path / "s.db"
    with Store(db, clock_ms=clock, measurements_max_rows=25) as store:
        store.commit(sampled(store, clock, 40), TOPIC)  # seqs 1..15 are past the retention cap
        roots = []
        while (interval := store.close_next_interval(max_leaves=7)) is not None:
            roots.append((interval.first_seq, interval.last_seq, interval.leaf_count))
        assert store.close_next_interval() is None  # nothing left outside a root
    assert roots == [(16, 22, 7), (23, 29, 7), (30, 36, 7), (37, 40, 4)]
    code, out = verify(db, capsys)
    assert code == 0, out
