"""Micro-benchmark of register decoding: microseconds per decode of an SDM630's 21 fast + normal readings.

Compares decode_read (the read's compiled ReadDecoder) with decode_read_reference (point by point
through codec.decode_point, the path decode_read took before it was compiled), on the same words as
bench/pipeline.py's decode stage, and checks that both give the same readings first.

Run: .venv/bin/python bench/decode.py [--n 20000] [--repeat 5]
Prints the best of --repeat runs of --n cycles each (CPU time, the figure a busy machine disturbs least).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from gateway.config.profiles import load_profile
from gateway.device.device import DeviceSpec, DeviceState
from gateway.perception.codec import encode_point
from gateway.perception.decoders import decode_read, decode_read_reference
from gateway.perception.planner import PlannedRead
from gateway.perception.readings import Reading

Decode = Callable[[DeviceState, PlannedRead, Sequence[int], float], list[Reading]]


def sdm630_cycle() -> tuple[DeviceState, list[tuple[PlannedRead, list[int]]]]:
    """The planned reads of an SDM630's fast + normal points and their words (as bench/pipeline.py)."""
    profile = load_profile("eastron_sdm630")
    state = DeviceState(DeviceSpec(name="main", profile=profile, unit=1))
    points = [p for p in profile.points if p.poll in ("fast", "normal")]
    cycle = []
    for read in state.planner.plan(points).reads:
        words = [0] * read.count
        for i, point in enumerate(read.points):
            value = 230.0 + i if point.unit == "V" else 1000.0 + 10 * i
            start = point.address - read.address
            words[start:start + point.count] = encode_point(point, value)
        cycle.append((read, words))
    return state, cycle


def us_per_cycle(decode: Decode, state: DeviceState, cycle: list[tuple[PlannedRead, list[int]]],
                 n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for i in range(n):
            for read, words in cycle:
                decode(state, read, words, float(i))
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    state, cycle = sdm630_cycle()
    fast = [r for read, words in cycle for r in decode_read(state, read, words, 0.0)]
    slow = [r for read, words in cycle for r in decode_read_reference(state, read, words, 0.0)]
    if fast != slow:
        raise SystemExit("decode_read and decode_read_reference disagree: run tests/unit/test_decode_fast.py")
    print(f"SDM630: {len(fast)} readings in {len(cycle)} reads per decode; "
          f"best of {args.repeat} x {args.n:,}")
    before = us_per_cycle(decode_read_reference, state, cycle, args.n, args.repeat)
    after = us_per_cycle(decode_read, state, cycle, args.n, args.repeat)
    print(f"  reference (codec.decode_point per point): {before:6.1f} us per decode")
    print(f"  compiled  (ReadDecoder):                  {after:6.1f} us per decode "
          f"(goal <= 25), {before / after:.1f}x")


if __name__ == "__main__":
    main()
