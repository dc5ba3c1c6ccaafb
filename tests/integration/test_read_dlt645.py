"""`drgw read` on DL/T 645-2007 meters: the real CLI in a subprocess against simulated meters on a pty
line (firmware_shims.dlt645), values compared with what the meter serves, address discovery, refusals."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from firmware_shims.clock import ManualClock
from firmware_shims.faults import NoReply
from firmware_shims.home import SimulatedHome
from gateway.commands.read import line_settings
from gateway.config.profiles import load_profile
from gateway.perception.dlt645_values import BcdFormat

ROOT = Path(__file__).resolve().parents[2]
THREE = "dlt645_three_phase"
SINGLE = "dlt645_single_phase"


LINE = '[[bus]]\nname = "line"\nbaud = 2400\nparity = "E"\n'


def meter(profile: str, address: str, power_w: float, *, name: str = "m") -> str:
    return (f'\n[[device]]\nname = "{name}"\nprofile = "{profile}"\ntransport = "dlt645"\n'
            f'address = "line"\nmeter_address = "{address}"\n'
            f'[device.load]\nkind = "constant"\npower_w = {power_w}\n')


def scenario(profile: str, address: str, power_w: float) -> str:
    return LINE + meter(profile, address, power_w)


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


async def drgw(*args: str) -> Result:
    """The real CLI in a subprocess; the simulated line keeps answering while it runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def with_meter(scenario_file: Callable[[str], Path], text: str,
               body: Callable[[SimulatedHome, str], Awaitable[None]]) -> None:
    async def main() -> None:
        clock = ManualClock()  # values stand still, so the CLI's reading and the shim's agree exactly
        async with SimulatedHome(scenario_file(text), clock=clock) as home:
            clock.advance(3600.0)  # an hour of load on the energy counters
            await body(home, home.devices[0].address)

    asyncio.run(main())


def resolution(profile: str, name: str) -> float:
    point = load_profile(profile).point(name)
    return 10.0 ** -BcdFormat.from_type_name(point.type).decimals * point.scale


def test_read_by_address_prints_what_the_meter_serves(scenario_file: Callable[[str], Path]) -> None:
    async def body(home: SimulatedHome, port: str) -> None:
        out = await drgw("read", "--profile", THREE, "--serial", port, "--address", "000012345678",
                         "--json")
        assert out.returncode == 0, out.stderr
        values = json.loads(out.stdout)
        names = [p.name for p in load_profile(THREE).points]
        assert list(values) == names  # every point, in the profile's order
        shown = home.device("m").values()
        for name, reading in values.items():
            assert set(reading) == {"value", "unit", "quality"} and reading["quality"] == "ok", name
            assert reading["value"] == pytest.approx(float(shown[name]),
                                                     abs=resolution(THREE, name) / 2 + 1e-9), name
        assert values["power_active_total_w"] == {"value": 4600.0, "unit": "W", "quality": "ok"}
        assert 200.0 < values["voltage_l2_v"]["value"] < 260.0
        assert values["energy_import_total_wh"]["value"] >= 4590.0  # an hour at 4.6 kW, in 10 Wh digits
        # The table form: a line per point, with its unit and quality.
        table = await drgw("read", "--profile", THREE, "--serial", port, "--address", "000012345678")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert [line.split()[0] for line in lines] == names
        assert all(line.endswith(" ok") for line in lines)
        assert "4600" in next(line for line in lines if line.startswith("power_active_total_w "))

    with_meter(scenario_file, scenario(THREE, "000012345678", 4600.0), body)


def test_without_an_address_the_line_is_asked(scenario_file: Callable[[str], Path]) -> None:
    # A single-phase meter read with the three-phase profile: its address is found, the mismatch is
    # pointed out, phases B and C come back "no requested data", and the exit code says so.
    async def body(home: SimulatedHome, port: str) -> None:
        out = await drgw("read", "--profile", THREE, "--serial", port, "--json")
        assert out.returncode == 1, out.stderr
        assert f"no --address given: the meter on {port} says it is 210987654321" in out.stderr
        assert f"--profile {SINGLE} fits it better" in out.stderr
        values = json.loads(out.stdout)
        assert values["power_active_total_w"]["value"] == pytest.approx(-1200.0)  # exporting
        assert values["voltage_l1_v"]["quality"] == "ok"
        assert values["voltage_l2_v"]["quality"] == "error"
        assert "no requested data" in values["voltage_l2_v"]["error"]
        right = await drgw("read", "--profile", SINGLE, "--serial", port, "--json")
        assert right.returncode == 0, right.stderr
        assert "fits it better" not in right.stderr
        assert all(r["quality"] == "ok" for r in json.loads(right.stdout).values())

    with_meter(scenario_file, scenario(SINGLE, "210987654321", -1200.0), body)


def test_a_wrong_address_gives_error_readings_and_exit_1(scenario_file: Callable[[str], Path]) -> None:
    async def body(home: SimulatedHome, port: str) -> None:
        out = await drgw("read", "--profile", SINGLE, "--serial", port, "--address", "000000000099",
                         "--timeout", "0.3", "--json")
        assert out.returncode == 1, out.stderr
        values = json.loads(out.stdout)
        assert list(values) == [p.name for p in load_profile(SINGLE).points]
        for reading in values.values():
            assert reading["quality"] == "error" and reading["value"] is None
            assert reading["error"].startswith("meter 000000000099: no answer within")
        assert "check the address" in out.stderr
        assert home.device("m").counters.requests == 0  # the request was for someone else

    with_meter(scenario_file, scenario(SINGLE, "000012345678", 500.0), body)


def test_discovery_stops_with_the_fix_when_it_cannot_tell(scenario_file: Callable[[str], Path]) -> None:
    # Two meters on the line answer read address together (garbled); with both silent nothing does.
    # Either way drgw read stops before reading (exit 3, a DeviceError) and says to give --address;
    # with the address, one meter of the two reads fine.
    two = LINE + meter(THREE, "000000000001", 4600.0) + meter(SINGLE, "000000000002", 800.0, name="n")

    async def body(home: SimulatedHome, port: str) -> None:
        out = await drgw("read", "--profile", THREE, "--serial", port, "--timeout", "0.3")
        assert out.returncode == 3 and out.stdout == ""
        assert "connect one at a time; or give the meter's address with --address" in out.stderr
        one = await drgw("read", "--profile", SINGLE, "--serial", port, "--address", "000000000002",
                         "--json")
        assert one.returncode == 0, one.stderr
        assert json.loads(one.stdout)["power_active_total_w"]["value"] == pytest.approx(800.0)
        for name in ("m", "n"):
            home.device(name).inject(NoReply())
        out = await drgw("read", "--profile", THREE, "--serial", port, "--timeout", "0.3")
        assert out.returncode == 3 and out.stdout == ""
        assert f"{port}: no DL/T 645 meter answered read address at 2400 baud, parity E" in out.stderr
        assert "give the address printed on the meter with --address" in out.stderr

    with_meter(scenario_file, two, body)


@pytest.mark.parametrize(("args", "says"), [
    (["--profile", THREE, "--tcp", "127.0.0.1:1"], "give --serial PORT"),
    (["--profile", THREE, "--serial", "/dev/null", "--unit", "1"], "give --address DIGITS"),
    (["--profile", THREE, "--serial", "/dev/null", "--address", "12345678"],
     "write the 12 decimal digits printed on the meter"),
    (["--profile", "eastron_sdm630", "--tcp", "127.0.0.1:1", "--unit", "1", "--address",
      "000012345678"], "is a Modbus profile: give --unit N"),
    (["--profile", "eastron_sdm630", "--tcp", "127.0.0.1:1"], "is a Modbus profile: give --unit N"),
])
def test_options_that_do_not_fit_the_protocol_are_refused(args: list[str], says: str) -> None:
    out = asyncio.run(drgw("read", *args))
    assert out.returncode == 2
    assert out.stderr.startswith("drgw: error: ") and says in out.stderr
    assert out.stdout == ""


def test_line_defaults_come_from_the_profile_unless_given() -> None:
    profile = load_profile(THREE)
    none = argparse.Namespace(baud=None, parity=None, stopbits=None)
    assert line_settings(profile, none) == (2400, "E", 1)
    given = argparse.Namespace(baud=9600, parity="N", stopbits=2)
    assert line_settings(profile, given) == (9600, "N", 2)
