"""Bus efficiency on a wire-timed simulated RS-485 line: achieved throughput versus the physical bound.

The simulated home runs in its own process (`drgw simulate --json`) on a pty pair whose relay
delivers bytes no faster than the baud rate allows and keeps the 3.5-character silent interval, so
the bus behaves like a real 9600-baud line. The gateway's bus owner polls 4 meters as fast as the
line allows (every poll class due continuously) for a fixed time.

Bound: every transaction needs its request and response bytes on the wire plus two silent intervals
(one before the request, one before the response; Modbus over Serial Line V1.02, 2.5.1.1). For the
mix of requests the planner actually issued, the bound rate is requests / sum(minimum times).
The ratio achieved/bound is the bus efficiency (goal >= 0.98, issue 18). CPU time per poll cycle is this
process's CPU time (client only; the simulator is another process) over the cycles completed.

For comparison it prints the bound for a naive poller that sends one request per point.

Where the rest of the time goes: the simulator's wire keeps its own log of frames (firmware_shims.wire,
an independent clock in another process), from which this prints, per transaction, the idle wire
before each reply (the device's turnaround) and after each reply (the gateway's turnaround), beside
t3.5; the gateway's own silence (from the moment the relay handed it the reply to the moment the
relay saw its next request: never below t3.5, or the run says so); and how late the relay delivered
frames (the simulator's share of the idle time). Excess idle is the wire idle beyond 2 x t3.5 per
transaction, as a share of the run.

    .venv/bin/python bench/bus_efficiency.py [--seconds 20] [--baud 9600] [--meters 4] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from firmware_shims.home import SimulatedHome
from firmware_shims.wire import CLIENT_SIDE, SERVER_SIDE, Frame, gaps
from gateway.config.profiles import load_profile
from gateway.device.bus import BusOwner, BusSettings
from gateway.device.device import DeviceSpec
from gateway.device.transport import SerialLink
from gateway.perception.profiles import Profile
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


def naive_bound(profile: Profile, char: float, gap: float) -> tuple[int, float]:
    """Requests and wire-time bound of a cycle for a poller that sends one request per point."""
    reads = [modbus.ReadRequest(unit=1, function=modbus.READ_FUNCTION[p.table], address=p.address,
                                count=p.count) for p in profile.points]
    return len(reads), sum(transaction_bound(r, char, gap) for r in reads)


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
    naive_reads, naive_cycle = naive_bound(profile, char, gap)
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
        "naive_requests_per_cycle": naive_reads,
        "cycle_bound_ms": 1000 * plan_cycle, "naive_cycle_bound_ms": 1000 * naive_cycle,
        "t0": t0, "t1": t0 + elapsed,
    }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    at = {f"p{q}": ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (5, 50, 95, 99)}
    return {"min": ordered[0], **at, "max": ordered[-1], "mean": statistics.fmean(ordered)}


def idle_figures(frames: list[Frame], *, t0: float, t1: float, gap: float) -> dict[str, object]:
    """The simulator's view of the idle wire in [t0, t1] (see the module docstring); ms."""
    window = [g for f, g in zip(frames[1:], gaps(frames), strict=True) if t0 <= f.start <= t1]
    ms = [f for f in frames if t0 <= f.start <= t1 and not math.isnan(f.delivered_at)]
    replies = [g for g in window if g.side == SERVER_SIDE]
    requests = [g for g in window if g.side == CLIENT_SIDE]
    return {
        "t35_ms": 1000 * gap,
        "before_reply_ms": percentiles([1000 * g.idle for g in replies]),
        "after_reply_ms": percentiles([1000 * g.idle for g in requests]),
        "gateway_silence_ms": percentiles([1000 * g.silence for g in requests]),
        "relay_late_ms": percentiles([1000 * (f.delivered_at - f.end) for f in ms]),
        "excess_idle_share": sum(max(0.0, g.idle - gap) for g in window) / (t1 - t0),
        # A silence below t3.5 after a frame the relay had handed over breaks the rule; a negative
        # one is a request written before a late reply (after a timeout) had reached the gateway.
        "below_t35": sum(0 <= g.silence < gap for g in requests),
        "over_late_reply": sum(g.silence < 0 for g in requests),
    }


async def serve_simulator(scenario_path: str) -> None:
    """The child process: run the simulated bus, print its port, and on a line on stdin print the
    wire's frame log as JSON and stop."""
    async with SimulatedHome(scenario_path) as home:
        print(json.dumps({"port": home.devices[0].address}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        frames = [[f.side, f.written_at, f.start, f.end, f.nbytes, f.delivered_at]
                  for f in home.buses[0].wire.frames]
        print(json.dumps({"frames": frames}), flush=True)


def run_once(baud: int, meters: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bus.toml"
        path.write_text(scenario(baud, meters))
        sim = subprocess.Popen([sys.executable, __file__, "--serve-simulator", str(path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        try:
            assert sim.stdin is not None and sim.stdout is not None
            port = json.loads(sim.stdout.readline())["port"]
            result: dict[str, object] = dict(asyncio.run(poll(port, baud=baud, meters=meters,
                                                              seconds=seconds)))
            sim.stdin.write("frames\n")
            sim.stdin.flush()
            rows = json.loads(sim.stdout.readline())["frames"]
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    frames = [Frame(side=r[0], written_at=r[1], start=r[2], end=r[3], nbytes=r[4], delivered_at=r[5])
              for r in rows]
    t0, t1 = float(result["t0"]), float(result["t1"])  # type: ignore[arg-type]
    result["idle"] = idle_figures(frames, t0=t0, t1=t1, gap=modbus.silent_interval(baud))
    return result


def report(r: dict, *, baud: int, meters: int) -> None:  # type: ignore[type-arg]
    print(f"bus: {meters} x {PROFILE} at {baud} baud 8N1, wire-timed, {r['elapsed_s']:.1f} s, "
          f"load {r['load']}")
    print(f"  requests/s      {r['requests_per_s']:8.2f}   bound {r['bound_requests_per_s']:8.2f}")
    print(f"  registers/s     {r['registers_per_s']:8.1f}   bound {r['bound_registers_per_s']:8.1f}"
          f"   (useful {r['useful_registers_per_s']:.1f})")
    print(f"  efficiency      {r['efficiency']:8.3f}   (goal >= 0.98)")
    print(f"  poll cycles     {r['cycles']:8d}   failed {r['failed_cycles']}")
    print(f"  requests/cycle  {r['requests_per_cycle']:8.2f}   naive one-per-point "
          f"{r['naive_requests_per_cycle']}")
    print(f"  cycle bound     {r['cycle_bound_ms']:8.1f} ms   naive {r['naive_cycle_bound_ms']:.1f} ms"
          f"   (x{r['naive_cycle_bound_ms'] / r['cycle_bound_ms']:.1f})")
    print(f"  client CPU      {r['cpu_ms_per_cycle']:8.3f} ms/cycle  ({r['cpu_pct_of_core']:.1f}% of a core)")
    idle = r["idle"]
    print(f"  idle wire per transaction, ms (simulator's clock; t3.5 = {idle['t35_ms']:.3f} ms)")
    print("                                    min      p5     p50     p95     p99     max    mean")
    for key, label in (("before_reply_ms", "before each reply (device)"),
                       ("after_reply_ms", "after each reply (gateway)"),
                       ("gateway_silence_ms", "gateway's own silence"),
                       ("relay_late_ms", "relay delivery lateness")):
        q = idle[key]
        cells = "".join(f"{q[k]:8.3f}" for k in ("min", "p5", "p50", "p95", "p99", "max", "mean"))
        print(f"    {label:28s}{cells if q else ''}")
    verdict = "never" if not idle["below_t35"] else f"{idle['below_t35']} times"
    print(f"  excess idle     {100 * idle['excess_idle_share']:7.2f} % of the run beyond 2 x t3.5 "
          f"per transaction; gateway silence below t3.5: {verdict}; requests over a late reply "
          f"still in flight: {idle['over_late_reply']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--meters", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1, help="runs; with several, prints the median")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-simulator", metavar="SCENARIO", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_simulator:
        asyncio.run(serve_simulator(args.serve_simulator))
        return 0
    results = []
    for _ in range(args.runs):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        result = run_once(args.baud, args.meters, args.seconds)
        result["load"] = load
        results.append(result)
        if args.json:
            print(json.dumps(result))
        else:
            report(result, baud=args.baud, meters=args.meters)
    if len(results) > 1 and not args.json:
        ratios = [float(r["efficiency"]) for r in results]  # type: ignore[arg-type]
        print(f"efficiency over {len(ratios)} runs: median {statistics.median(ratios):.3f} "
              f"(runs {', '.join(f'{x:.3f}' for x in ratios)}; loads "
              f"{'; '.join(str(r['load']) for r in results)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
