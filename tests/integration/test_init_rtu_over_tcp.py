"""`drgw init --scan-tcp HOST:PORT --framing rtu`: set up a gateway whose meters sit behind a
serial-to-Ethernet converter in transparent mode (RTU over TCP, docs/config.md "TCP gateways and RTU
over TCP"), as `drgw scan`/`drgw read --framing rtu` already could. The converter is a real pymodbus
TCP server with the RTU framer (tests/integration/test_modbus_field.py's `serve`), holding a CHINT
DTSU666's manual reference vectors at unit 3; the config init writes is read by `drgw run`'s loader.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tomllib
from pathlib import Path

from pymodbus.framer import FramerType

from gateway.config.gateway import load_config
from tests.integration.test_modbus_field import drgw, serve


def init(tmp: Path, *extra: str) -> list[str]:
    return ["init", "--config", str(tmp / "etc" / "drgw.toml"), "--state-dir", str(tmp / "var"),
            "--broker", "mqtt://127.0.0.1:1883", "--non-interactive", "--scan-units", "1-4", *extra]


def init_against_a_converter(tmp: Path, *extra: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    async def main() -> tuple[str, subprocess.CompletedProcess[str]]:
        # A converter passes the silence of an absent unit on (no 0B): answer_absent=False.
        async with serve({3: "chint_dtsu666"}, framer=FramerType.RTU, answer_absent=False) as address:
            return address, await drgw(*init(tmp, "--scan-tcp", address, *extra))

    return asyncio.run(main())


def test_init_scans_rtu_over_tcp_and_the_config_keeps_the_framing(tmp_path: Path) -> None:
    address, out = init_against_a_converter(tmp_path, "--framing", "rtu", "--json")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "etc" / "drgw.toml"
    written = tomllib.loads(path.read_text())
    assert written["bus"] == [{"name": "bus1", "tcp": address, "framing": "rtu"}]
    assert [(d["profile"], d["unit"]) for d in written["device"]] == [("chint_dtsu666", 3)]
    config = load_config(path)  # the loader of `drgw run`
    assert (config.devices.buses[0].tcp, config.devices.buses[0].framing) == (address, "rtu")


def test_without_framing_rtu_the_converter_gives_no_device_and_nothing_is_written(
        tmp_path: Path) -> None:
    # Modbus TCP requests (MBAP header) are not RTU frames: the converter's meter never answers.
    _, out = init_against_a_converter(tmp_path)
    assert out.returncode == 2, out.stderr
    assert "--scan-tcp: no device answered on 127.0.0.1:" in out.stderr
    assert not (tmp_path / "etc" / "drgw.toml").exists()


def test_framing_without_scan_tcp_is_refused_before_anything_else(tmp_path: Path) -> None:
    flags = init(tmp_path, "--scan-serial", "/dev/ttyUSB9", "--framing", "rtu")
    out = subprocess.run([sys.executable, "-m", "gateway.cli", *flags], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out.stderr
    assert "--framing applies to --scan-tcp: a serial line always frames RTU" in out.stderr
    assert "/dev/ttyUSB9" not in out.stderr  # refused before the port was opened
    assert not (tmp_path / "etc").exists() and not (tmp_path / "var").exists()
