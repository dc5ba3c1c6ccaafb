"""Simulated homes for the tests, as scenario TOML (docs/simulation.md): the meters they share."""

from __future__ import annotations


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
