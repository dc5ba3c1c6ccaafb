"""Benchmark of the measurement hot path: sign/s (3 and 21 readings), sign+commit/s, bytes/record.

Run: .venv/bin/python bench/sign_store.py [--n 20000] [--synchronous FULL|NORMAL|both]
Uses a throw-away TEST key and a temporary store; prints one line per figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.config.profiles import load_profile
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain
from gateway.measurement.store import Store
from gateway.measurement.wire import to_wire
from gateway.perception.readings import Quality, Reading

# TEST-ONLY key (a well-known example key): never use it for a real gateway.
TEST_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
READINGS = [ScaledReading("power", 1234567, "W", 0), ScaledReading("energy", 98765432, "Wh", 0),
            ScaledReading("voltage", 230100, "V", 0)]


def sign_rate(n: int, readings: Sequence[Reading | ScaledReading] = READINGS) -> float:
    """Records per CPU second through chain.next_signed (scale, hash, sign)."""
    key, domain = GatewayKey.from_secret(TEST_KEY), measurement_domain()
    chain = MeasurementChain(gateway=key.address)
    t0 = time.process_time()
    for i in range(n):
        chain.next_signed(key, domain, device="meter1", time_ms=1_700_000_000_000 + i,
                          clock_synced=True, readings=readings)
    return n / (time.process_time() - t0)


def sdm630_readings() -> list[Reading]:
    """The fast + normal points of an SDM630 as the device layer decodes them (21 readings)."""
    profile = load_profile("eastron_sdm630")
    points = [p for p in profile.points if p.poll in ("fast", "normal")]
    return [Reading(p.name, 230.0 + i / 7 if p.unit == "V" else 1000.0 + i * 1.234, p.unit,
                    Quality.OK, 0.0) for i, p in enumerate(points)]


def sign_store_rate(n: int, batch: int, synchronous: str, folder: Path) -> tuple[float, float]:
    key, domain = GatewayKey.from_secret(TEST_KEY), measurement_domain()
    path = folder / f"bench-{batch}-{synchronous}.db"
    with Store(path, batch_size=batch, synchronous=synchronous) as store:
        seq, leaf = store.last_chain_state()
        chain = MeasurementChain(gateway=key.address, last_seq=seq, last_hash=leaf)
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            signed = [chain.next_signed(key, domain, device="meter1",
                                        time_ms=1_700_000_000_000 + start + i,
                                        clock_synced=True, readings=READINGS)
                      for i in range(min(batch, n - start))]
            store.commit(signed, "drgw/v1/gw/meas", now_ms=1_700_000_000_000)
        rate = n / (time.perf_counter() - t0)
        _, outbox_bytes = store.outbox_depth()
    return rate, outbox_bytes / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--synchronous", default="both", choices=["FULL", "NORMAL", "both"])
    args = parser.parse_args()
    print(f"sign (chain.next_signed, 3 readings): {sign_rate(args.n):,.0f}/CPU s")
    sdm = sdm630_readings()
    print(f"sign (chain.next_signed, {len(sdm)} SDM630 readings): "
          f"{sign_rate(args.n // 2, sdm):,.0f}/CPU s")
    key = GatewayKey.from_secret(TEST_KEY)
    sm = MeasurementChain(gateway=key.address).next_signed(
        key, measurement_domain(), device="meter1", time_ms=1_700_000_000_000,
        clock_synced=True, readings=READINGS)
    print(f"single wire record: {len(to_wire(sm))} bytes")
    modes = ["FULL", "NORMAL"] if args.synchronous == "both" else [args.synchronous]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            for batch in (10, 100):
                rate, per = sign_store_rate(args.n, batch, mode, Path(tmp))
                print(f"sign+commit, batch {batch:>3}, synchronous={mode:<6}: {rate:,.0f}/s, "
                      f"outbox {per:.0f} bytes/measurement")


if __name__ == "__main__":
    main()
