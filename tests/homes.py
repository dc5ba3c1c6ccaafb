"""Simulated homes for the tests, as scenario TOML (docs/simulation.md): the meters they share."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def sdm630_tcp(power_w: float) -> str:
    """The main meter: an Eastron SDM630 on Modbus TCP (unit 1) with a constant load."""
    return f"""
[[device]]
name = "main"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.load]
kind = "constant"
power_w = {power_w:g}
"""


# A Heidelberg Energy Control wallbox on Modbus TCP whose load the main meter sees.
WALLBOX_TCP = """
[[device]]
name = "ev"
profile = "heidelberg_energycontrol"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
feeds = "main"
"""


@contextlib.contextmanager
def simulated(home: str, folder: Path) -> Iterator[dict[str, str]]:
    """`drgw simulate` of the scenario `home` as a process: yields {device name: address} (its
    first JSON line), and stops it afterwards."""
    path = folder / "home.toml"
    path.write_text(home)
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", str(path), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert sim.stdout is not None
        yield {d["name"]: d["address"] for d in json.loads(sim.stdout.readline())["devices"]}
    finally:
        sim.terminate()
        sim.wait(timeout=10)
