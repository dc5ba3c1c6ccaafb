"""DL/T 645 profiles read against frames built from the standard (and real captured frames).

tests/data/reference_vectors/dlt645_*.yaml gives, per read, the data identifier, the standard's BCD
format, the value digits and sign, the request the gateway must send and the meter's answer, and the
value and unit the gateway must report. The frames are rebuilt here by hand from those fields (never
with gateway.protocol.dlt645), so a vector cannot disagree with its own fields; where a frame was
captured from a real meter or printed in a worked example, the rebuilt frame must equal it byte for
byte. A scripted meter on a pty answers exactly those requests; the gateway's DL/T 645 bus owner reads
every point through pyserial with the profile as shipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.profiles import load_profile
from gateway.device.dlt645 import MeterSpec, serial_owner
from gateway.perception.profiles import Profile
from gateway.perception.readings import Quality

VECTORS = Path(__file__).resolve().parents[1] / "data" / "reference_vectors"
DLT645_VECTORS = {path.stem: data for path in sorted(VECTORS.glob("dlt645_*.yaml"))
                  if (data := yaml.safe_load(path.read_text(encoding="utf-8")))}
UNIT_FACTOR = {("kWh", "Wh"): 1000.0, ("kW", "W"): 1000.0, ("kvar", "var"): 1000.0}
READ_DATA, READ_ANSWER = 0x11, 0x91  # DL/T 645-2007 control codes: read data, its normal answer
WAKE_UP = 0xFE  # the preamble bytes a master may send before a frame


def frame(address: str, control: int, data: bytes) -> bytes:
    """68 A0..A5 68 C L DATA+33H CS 16, the address low byte first, CS the byte sum mod 256."""
    body = (bytes([0x68]) + bytes.fromhex(address)[::-1] + bytes([0x68, control, len(data)])
            + bytes((b + 0x33) & 0xFF for b in data))
    return body + bytes([sum(body) & 0xFF, 0x16])


def identifier(di: str) -> bytes:
    return bytes.fromhex(di)[::-1]  # printed DI3 DI2 DI1 DI0, sent DI0 first


def bcd_value(digits: str, negative: bool) -> bytes:
    """BCD digits as printed (most significant first), sent low byte first; the sign in the top bit."""
    data = bytearray(bytes.fromhex(digits))
    if negative:
        data[0] |= 0x80
    return bytes(data[::-1])


def frames_of(address: str, read: Mapping[str, Any]) -> tuple[bytes, bytes]:
    di = identifier(read["di"])
    value = b"".join(bcd_value(d, n) for d, n in zip(read["digits"], read["negative"], strict=True))
    return frame(address, READ_DATA, di), frame(address, READ_ANSWER, di + value)


class ScriptedMeter:
    """A meter on a pty that knows only its script: each request, byte for byte, and its answer."""

    def __init__(self, script: Mapping[bytes, bytes]) -> None:
        self.script = dict(script)
        self.unexpected: list[bytes] = []
        self._buffer = bytearray()
        self._fds: tuple[int, int] = (-1, -1)

    @contextlib.contextmanager
    def line(self) -> Iterator[str]:
        """The path the gateway opens; we keep the slave open too (a master reads EIO without one)."""
        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(master, False)
        self._fds = (master, slave)
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._on_readable)
        try:
            yield os.ttyname(slave)
        finally:
            loop.remove_reader(master)
            os.close(master)
            os.close(slave)

    def _on_readable(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._buffer += os.read(self._fds[0], 4096)
        while self._buffer and self._buffer[0] == WAKE_UP:
            del self._buffer[0]
        if len(self._buffer) < 10 or len(self._buffer) < 12 + self._buffer[9]:
            return
        request = bytes(self._buffer[:12 + self._buffer[9]])
        del self._buffer[:len(request)]
        if request in self.script:
            os.write(self._fds[0], self.script[request])
        else:
            self.unexpected.append(request)


def in_unit(value: float, unit: str, target: str) -> float:
    return value if unit == target else value * UNIT_FACTOR[(unit, target)]


async def read_each(profile: Profile, vectors: Mapping[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """Every vector read, one request (or block request) each, through the gateway's bus owner."""
    address = vectors["meter_address"]
    meter = ScriptedMeter(dict(frames_of(address, read) for read in vectors["reads"]))
    readings: dict[str, Any] = {}
    with meter.line() as port:
        owner = serial_owner(port=port, baud=2400, parity="E", stopbits=1, sink=lambda sample: None,
                             meters=[MeterSpec(name="dut", profile=profile, address=address, timeout=2.0)])
        await owner.link.open()
        try:
            for read in vectors["reads"]:
                points = [profile.point(name) for name in read["points"]]
                for r in await owner.read_points(owner.devices["dut"], points):
                    readings[r.name] = (r.value, r.unit, r.quality, r.error)
        finally:
            await owner.link.close()
    return readings, meter.unexpected


def mismatches(profile: Profile, vectors: Mapping[str, Any]) -> list[str]:
    readings, unexpected = asyncio.run(read_each(profile, vectors))
    out = [f"unexpected request {r.hex(' ')}" for r in unexpected]
    for read in vectors["reads"]:
        for name, (value, unit) in zip(read["points"], read["expect"], strict=True):
            got, got_unit, quality, error = readings[name]
            if quality is Quality.OK and got_unit == unit and got == pytest.approx(value, rel=1e-9):
                continue
            point = profile.point(name)
            out.append(f"{name}: gateway read {got!r} {got_unit} ({quality} {error}), the standard says "
                       f"{value!r} {unit} [profile: DI {point.address:08X} {point.type} scale "
                       f"{point.scale:g}; vector: DI {read['di']} {read['format']}]")
    return out


@pytest.mark.parametrize("name", sorted(DLT645_VECTORS))
def test_frames_are_what_the_standard_and_the_captures_say(name: str) -> None:
    vectors = DLT645_VECTORS[name]
    for read in vectors["reads"]:
        request, reply = frames_of(vectors["meter_address"], read)
        assert request == bytes.fromhex(read["request"]), read["cite"]
        assert reply == bytes.fromhex(read["reply"]), read["cite"]
        decimals = len(read["format"].split(".")[1]) if "." in read["format"] else 0
        for digits, negative, (manual, manual_unit), (value, unit) in zip(
                read["digits"], read["negative"], read["manual"], read["expect"], strict=True):
            assert len(digits) == len(read["format"].replace(".", "")), read
            assert (-1 if negative else 1) * int(digits) / 10**decimals == pytest.approx(manual), read
            assert in_unit(manual, manual_unit, unit) == pytest.approx(value, rel=1e-9), read


@pytest.mark.parametrize("name", sorted(DLT645_VECTORS))
def test_profile_reads_the_standards_frames(name: str) -> None:
    assert mismatches(load_profile(name), DLT645_VECTORS[name]) == []


def broken_copy(tmp_path: Path, name: str, point: str, key: str, value: object) -> Profile:
    data = yaml.safe_load(load_profile(name).path.read_text(encoding="utf-8"))
    (entry,) = [r for r in data["registers"] if r["name"] == point]
    entry[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_profile(path)


BROKEN: tuple[tuple[str, str, str, object], ...] = (  # (profile, point, key, wrong value)
    ("dlt645_single_phase", "energy_import_total_wh", "scale", 1),  # kWh left as kWh
    ("dlt645_three_phase", "power_active_total_w", "format", "XXXX.XX"),  # decimals misplaced
    ("dlt645_three_phase", "power_active_l3_w", "signed", False),  # the direction bit ignored
)


@pytest.mark.parametrize(("name", "point", "key", "value"), BROKEN,
                         ids=[f"{b[0]}-{b[1]}-{b[2]}" for b in BROKEN])
def test_a_deliberately_broken_dlt645_profile_fails(tmp_path: Path, name: str, point: str, key: str,
                                                    value: object) -> None:
    found = mismatches(broken_copy(tmp_path, name, point, key, value), DLT645_VECTORS[name])
    assert [line.split(":")[0] for line in found] == [point], found


def test_every_dlt645_vector_file_is_checked() -> None:
    assert set(DLT645_VECTORS) == {"dlt645_single_phase", "dlt645_three_phase"}

