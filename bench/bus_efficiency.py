"""Bus efficiency on a wire-timed simulated RS-485 line: achieved throughput versus the physical bound.

The simulated home runs in its own process (`drgw simulate --json`) on a pty pair whose relay
delivers bytes no faster than the baud rate allows and keeps the 3.5-character silent interval, so
the bus behaves like a real 9600-baud line. The gateway's bus owner polls 4 meters as fast as the
line allows (every poll class due continuously) for a fixed time.

Bound: every transaction needs its request and response bytes on the wire plus two silent intervals
(one before the request, one before the response; Modbus over Serial Line V1.02, 2.5.1.1). For the
mix of requests the planner actually issued, the bound rate is requests / sum(minimum times).
The ratio achieved/bound is the bus efficiency (goal >= 0.90). CPU time per poll cycle is this
process's CPU time (client only; the simulator is another process) over the cycles completed.

For comparison it prints the bound for a naive poller that sends one request per point.

    .venv/bin/python bench/bus_efficiency.py [--seconds 20] [--baud 9600] [--meters 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.config.profiles import load_profile
from gateway.device.bus import BusOwner, BusSettings
from gateway.device.device import DeviceSpec
from gateway.device.transport import SerialLink
from gateway.perception.readings import Sample
from gateway.protocol import modbus

PROFILE = "eastron_sdm630"


def scenario(baud: int, meters: int) -> str:
    text = f'[[bus]]\nname = "rs485"\nbaud = {baud}\nwire_timing = true\n'
    for unit in range(1, meters + 1):
        text += (f'\n[[device]]\nname = "m{unit}"\nprofile = "{PROFILE}"\ntransport = "rtu"\n'
                 f'address = "rs485"\nunit = {unit}\n[device.load]\nkind = "constant"\n'
                 f"power_w = {1000 * unit}\n")
    return text


def transaction_bound(request: modbus.Request, char: float, gap: float) -> float:
    out = modbus.rtu_request_bytes(request)
    back = request.response_length_rtu() if isinstance(request, modbus.ReadRequest) else 8
    return (out + back) * char + 2 * gap


async def poll(port: str, *, baud: int, meters: int, seconds: float) -> dict[str, float]:
    profile = load_profile(PROFILE)
    char = modbus.char_time(baud)
    gap = modbus.silent_interval(baud)
    link = SerialLink(port, baud=baud)
    settings = BusSettings(framing="rtu", frame_gap=gap, char_time=char)
    intervals = {"fast": 0.001, "normal": 0.001, "slow": 0.001}  # always due: saturate the line
    specs = [DeviceSpec(name=f"m{u}", profile=profile, unit=u, intervals=intervals, timeout=1.0)
             for u in range(1, meters + 1)]
    samples: list[Sample] = []
    owner = BusOwner(link=link, settings=settings, devices=specs, sink=samples.append)

    issued: list[modbus.Request] = []
    original = owner.transact

    async def counting(state, request):  # type: ignore[no-untyped-def]
        issued.append(request)
        return await original(state, request)

    owner.transact = counting  # type: ignore[method-assign]
    await link.open()
    # Warm up: one cycle per meter so the planner has learned what the meters refuse.
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(2.0)
    issued.clear()
    samples.clear()
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    reads = [r for r in issued if isinstance(r, modbus.ReadRequest)]
    bound_time = sum(transaction_bound(r, char, gap) for r in issued)
    registers = sum(r.count for r in reads)
    useful = sum(p.count for s in samples for p in profile.points
                 if any(r.name == p.name and r.value is not None for r in s.readings))
    naive_reads = [modbus.ReadRequest(unit=1, function=modbus.READ_FUNCTION[p.table],
                                      address=p.address, count=p.count) for p in profile.points]
    naive_cycle = sum(transaction_bound(r, char, gap) for r in naive_reads)
    plan_cycle = bound_time / max(1, len(samples))
    return {
        "elapsed_s": elapsed, "requests": len(issued), "cycles": len(samples),
        "failed_cycles": sum(not s.ok for s in samples),
        "requests_per_s": len(issued) / elapsed, "bound_requests_per_s": len(issued) / bound_time,
        "registers_per_s": registers / elapsed, "bound_registers_per_s": registers / bound_time,
        "useful_registers_per_s": useful / elapsed,
        "efficiency": bound_time / elapsed,
        "cpu_ms_per_cycle": 1000 * cpu / max(1, len(samples)),
        "cpu_pct_of_core": 100 * cpu / elapsed,
        "points_per_cycle": len(profile.points),
        "requests_per_cycle": len(issued) / max(1, len(samples)),
        "naive_requests_per_cycle": len(naive_reads),
        "cycle_bound_ms": 1000 * plan_cycle, "naive_cycle_bound_ms": 1000 * naive_cycle,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--meters", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bus.toml"
        path.write_text(scenario(args.baud, args.meters))
        sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", str(path), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=os.environ.copy())
        try:
            assert sim.stdout is not None
            devices = json.loads(sim.stdout.readline())["devices"]
            port = devices[0]["address"]
            result = asyncio.run(poll(port, baud=args.baud, meters=args.meters,
                                      seconds=args.seconds))
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    print(f"bus: {args.meters} x {PROFILE} at {args.baud} baud 8N1, wire-timed, {r['elapsed_s']:.1f} s")
    print(f"  requests/s      {r['requests_per_s']:8.2f}   bound {r['bound_requests_per_s']:8.2f}")
    print(f"  registers/s     {r['registers_per_s']:8.1f}   bound {r['bound_registers_per_s']:8.1f}"
          f"   (useful {r['useful_registers_per_s']:.1f})")
    print(f"  efficiency      {r['efficiency']:8.3f}   (goal >= 0.90)")
    print(f"  poll cycles     {r['cycles']:8d}   failed {r['failed_cycles']}")
    print(f"  requests/cycle  {r['requests_per_cycle']:8.2f}   naive one-per-point "
          f"{r['naive_requests_per_cycle']}")
    print(f"  cycle bound     {r['cycle_bound_ms']:8.1f} ms   naive {r['naive_cycle_bound_ms']:.1f} ms"
          f"   (x{r['naive_cycle_bound_ms'] / r['cycle_bound_ms']:.1f})")
    print(f"  client CPU      {r['cpu_ms_per_cycle']:8.3f} ms/cycle  ({r['cpu_pct_of_core']:.1f}% of a core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
