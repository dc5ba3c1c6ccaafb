"""A store killed with SIGKILL mid-write: nothing committed is lost, no seq is reused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.measurement import merkle
from gateway.measurement.eip712 import ZERO32
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    MeasurementChain,
    ScaledReading,
    measurement_domain,
    recover_signer,
    struct_hash,
)
from gateway.measurement.store import Store
from gateway.measurement.wire import decode_batch

SECRET = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"  # TEST-ONLY key

WRITER = f"""
import sys
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain
from gateway.measurement.store import Store
key = GatewayKey.from_secret(bytes.fromhex("{SECRET}"))
domain = measurement_domain()
store = Store(sys.argv[1], batch_size=7)
seq, leaf = store.last_chain_state()
chain = MeasurementChain(gateway=key.address, last_seq=seq, last_hash=leaf)
t = 0
while True:
    batch = [chain.next_signed(key, domain, device="m", time_ms=t + i, clock_synced=True,
                               readings=[ScaledReading("p", t + i, "W", 0)]) for i in range(13)]
    t += 13
    store.commit(batch, "drgw/v1/gw/meas")
    print(chain.last_seq, flush=True)
"""


def run_and_kill(path: Path, at_least: int) -> int:
    """Start the writer, SIGKILL it once it reported `at_least` committed seqs; returns the
    highest seq it reported as committed."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    reported = 0
    deadline = time.monotonic() + 60
    while reported < at_least and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        reported = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reported >= at_least, "writer did not get going"
    return reported


def check_intact(path: Path, at_least: int) -> int:
    domain = measurement_domain()
    key = GatewayKey.from_secret(bytes.fromhex(SECRET))
    with Store(path) as store:
        low, high = store.seq_bounds()
        assert low == 1 and high >= at_least, "a commit reported done was lost"
        records = store.measurements_range(1, high)
        assert [sm.measurement.seq for sm in records] == list(range(1, high + 1))
        prev = ZERO32
        for sm in records:
            assert sm.measurement.prev_hash == prev
            prev = struct_hash(sm.measurement)
        assert all(recover_signer(sm, domain) == key.address for sm in records[-20:])
        # the outbox carries exactly the committed records, in order, nothing beyond them
        outboxed = [sm.measurement.seq for item in store.outbox_pending(10**6)
                    for sm in decode_batch(item.payload)]
        assert outboxed == list(range(1, high + 1))
        assert store.last_chain_state() == (high, prev)
        seq, leaf = store.last_chain_state()
        chain = MeasurementChain(gateway=key.address, last_seq=seq, last_hash=leaf)
        nxt = chain.next_signed(key, domain, device="m", time_ms=0, clock_synced=False,
                                readings=[ScaledReading("p", 1, "W", 0)])
        assert nxt.measurement.seq == high + 1
        store.commit([nxt], "drgw/v1/gw/meas")
        assert store.interval_leaves(0, 10**12)[-1] == (high + 1, nxt.leaf)
        assert merkle.root([leaf for _, leaf in store.interval_leaves(0, 10**12)])
        return high + 1


def test_sigkill_mid_write_twice(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    reported = run_and_kill(path, 200)
    after_first = check_intact(path, reported)
    reported = run_and_kill(path, after_first + 200)  # the writer resumes the same chain
    check_intact(path, reported)
