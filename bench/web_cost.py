"""What the local page (`[web]`) costs the agent: RSS and CPU of `drgw run` with the page off, on
and idle (nobody looks), and with one browser watching (Debian's chromium through Playwright, the
page open and live).

Setup, all on loopback: `drgw simulate` serves the demo home (gateway/data/demo_home.toml: an
SDM630 main meter on Modbus TCP, an EV wallbox and a boiler relay on a wire-timed RTU pty bus); a
local mosquitto; `drgw run` polls them (fast 1 s, normal 5 s, slow 30 s, as the demo home's
gateway) and publishes. Each mode starts a fresh agent, lets it warm up (--warmup seconds, after
its first committed measurement and, with the page, the page's first answer), then measures for
--seconds: CPU = (utime + stime) growth from /proc/<pid>/stat over wall time; RSS = VmRSS from
/proc/<pid>/status, sampled every second (median and max). The browser's own CPU and memory are
not the agent's and are not counted. --runs repeats the three modes; medians are printed.

    .venv/bin/python bench/web_cost.py [--seconds 60] [--runs 3] [--warmup 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.demo.run import demo_scenario  # noqa: E402
from gateway.measurement.identity import GatewayKey  # noqa: E402
from gateway.measurement.keyfile import write_key  # noqa: E402
from gateway.network.localbroker import Broker, free_port  # noqa: E402

MODES = ("off", "idle", "watching")
TICKS = os.sysconf("SC_CLK_TCK")
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def config(devices: list[dict[str, Any]], *, broker: str, web_port: int | None) -> str:
    lines = ["[gateway]", 'key = "gw.key"', 'log_level = "WARNING"', "[mqtt]", f'broker = "{broker}"',
             "[store]", 'path = "drgw.db"', "[poll]", "fast = 1.0", "normal = 5.0", "slow = 30.0"]
    buses: dict[str, str] = {}
    for d in devices:
        if d["address"] not in buses:
            buses[d["address"]] = f"bus{len(buses) + 1}"
            where = "tcp" if d["transport"] == "tcp" else "serial"
            lines += ["[[bus]]", f'name = "{buses[d["address"]]}"', f'{where} = "{d["address"]}"']
    for d in devices:
        lines += ["[[device]]", f'name = "{d["name"]}"', f'profile = "{d["profile"]}"',
                  f'bus = "{buses[d["address"]]}"', f'unit = {d["unit"]}', "timeout = 0.5"]
        lines += ['role = "main"'] if d["name"] == "main" else []
    if web_port is not None:
        lines += ["[web]", f"port = {web_port}"]
    return "\n".join(lines) + "\n"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (proc(5): fields 14, 15)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def committed(db: Path) -> bool:
    if not db.exists():
        return False
    with contextlib.suppress(sqlite3.Error), contextlib.closing(
            sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return bool(c.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])
    return False


def answers(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/api/snapshot"
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)
    return False


async def wait(done: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:g} s for {what}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def watching(port: int | None) -> AsyncIterator[None]:
    """One chromium with the page open, live (its first snapshot shown), when port is given."""
    if port is None:
        yield
        return
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_function("document.body.dataset.version !== undefined", timeout=60_000)
        try:
            yield
        finally:
            await browser.close()


async def measure(pid: int, seconds: float) -> dict[str, float]:
    c0, t0, rss = cpu_s(pid), time.monotonic(), []
    while time.monotonic() - t0 < seconds:
        rss.append(rss_kib(pid))
        await asyncio.sleep(1.0)
    cpu = cpu_s(pid) - c0
    return {"cpu_pct": round(100 * cpu / (time.monotonic() - t0), 2),
            "rss_mib": round(statistics.median(rss) / 1024, 1), "rss_max_mib": round(max(rss) / 1024, 1)}


async def one(mode: str, devices: list[dict[str, Any]], broker: str, args: argparse.Namespace,
              folder: Path) -> dict[str, float]:
    folder.mkdir()
    write_key(folder / "gw.key", GatewayKey.generate())
    port = None if mode == "off" else free_port()
    (folder / "drgw.toml").write_text(config(devices, broker=broker, web_port=port))
    with (folder / "agent.log").open("w") as log:
        agent = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run",
                                  str(folder / "drgw.toml")], stdout=log, stderr=log, cwd=folder)
    try:
        await wait(lambda: committed(folder / "drgw.db"), "the first committed measurement")
        if port is not None:
            await wait(lambda: answers(port), "the page")
        async with watching(port if mode == "watching" else None):
            await asyncio.sleep(args.warmup)
            return await measure(agent.pid, args.seconds)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="drgw-web-cost-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "mosquitto")
        broker.start()
        sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate",
                                str(demo_scenario()), "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        try:
            assert sim.stdout is not None
            devices = json.loads(sim.stdout.readline())["devices"]
            for run in range(args.runs):
                for mode in MODES:
                    result = await one(mode, devices, broker.url, args, root / f"{mode}-{run}")
                    runs[mode].append(result)
                    if not args.json:
                        print(f"run {run + 1} {mode:>8}: CPU {result['cpu_pct']:5.2f} %  RSS "
                              f"{result['rss_mib']:5.1f} MiB (max {result['rss_max_mib']:.1f})",
                              flush=True)
        finally:
            sim.terminate()
            sim.wait(10)
            broker.kill()
    medians = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    return {"seconds": args.seconds, "runs": args.runs, "medians": medians, "all": runs,
            "load_avg": os.getloadavg()}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="measured time per mode")
    p.add_argument("--runs", type=int, default=3, help="repetitions of the three modes")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    out = asyncio.run(main(args))
    if args.json:
        print(json.dumps(out))
        return
    print(f"medians of {args.runs} run(s), {args.seconds:g} s each "
          f"(load average at the end: {', '.join(f'{x:.2f}' for x in out['load_avg'])}):")
    off = out["medians"]["off"]
    for mode, m in out["medians"].items():
        print(f"  {mode:>8}: CPU {m['cpu_pct']:5.2f} %  ({m['cpu_pct'] - off['cpu_pct']:+.2f})   "
              f"RSS {m['rss_mib']:5.1f} MiB  ({m['rss_mib'] - off['rss_mib']:+.1f})")


if __name__ == "__main__":
    cli()
