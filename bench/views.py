"""CPU cost of the views of committed measurements ([mqtt.plain], [mqtt.sparkplug]) per record.

For a record like an SDM630's full poll (30 readings), on one core, no broker: the plain stream's
messages (values and JSON) and the Sparkplug B DDATA payload, as the agent builds them after each
commit. Prints microseconds per record for each (median of --rounds rounds of --records records).

    .venv/bin/python bench/views.py [--records 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from gateway.measurement.record import Measurement, ScaledReading
from gateway.network.plain import messages
from gateway.network.sparkplug_codec import DataType, Metric, encode_payload


def record(seq: int) -> Measurement:
    readings = tuple(ScaledReading(f"point_{i}_w", 230_100 + 7 * i + seq, "W", 0) for i in range(30))
    return Measurement(gateway="0x" + "11" * 20, device="main", seq=seq,
                       time_ms=1_700_000_000_000 + seq, clock_synced=True, readings=readings,
                       prev_hash=b"\0" * 32)


def ddata(m: Measurement) -> bytes:
    metrics = [Metric(name=r.name, timestamp=m.time_ms, value=r.value / 1000, kind=DataType.DOUBLE)
               for r in m.readings]
    return encode_payload(timestamp=m.time_ms, metrics=metrics, seq=m.seq % 256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    recs = [record(s) for s in range(args.records)]
    cases = {"plain values+json": lambda m: list(messages(m, prefix="p/x", values=True, json=True)),
             "sparkplug DDATA": ddata}
    for name, build in cases.items():
        rounds = []
        for _ in range(args.rounds):
            start = time.process_time()
            for m in recs:
                build(m)
            rounds.append((time.process_time() - start) / len(recs) * 1e6)
        print(f"{name:20s} {statistics.median(rounds):7.1f} us CPU per 30-reading record "
              f"(rounds: {', '.join(f'{r:.1f}' for r in rounds)})")


if __name__ == "__main__":
    main()
