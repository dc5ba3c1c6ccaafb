"""Modbus in the field (issue 12, fault 9), against real pymodbus 3.16 servers on loopback TCP.

- RTU over TCP: a serial-to-Ethernet converter in transparent mode carries RTU frames (unit id, CRC, no
  MBAP header) over the socket; pymodbus's TCP server with `framer=FramerType.RTU` is one.
- A TCP-to-RTU gateway answers for a unit that is not there with exception 0B "gateway target device
  failed to respond" (Modbus Application Protocol v1.1b3, 7; pymodbus's server does exactly that for
  a unit it does not hold unless `ignore_missing_devices`): such a unit is no device.
- A meter of another model than its profile is never read as good data: not by `drgw read`, not by
  the bus owner that `drgw run` polls with, and `drgw doctor` says so.

The meters hold the manual-sourced reference vectors (tests/data/reference_vectors, served by
tests/profiles/test_profiles_reference.py's `server_device`): a CHINT DTSU666 keeps its L1 voltage as
an IEEE float of 0.1 V units at 2006H (0x4510 0xB000 = 231.5 V), a DDSU666 as volts at 2000H.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.framer.rtu import FramerRTU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator.simcore import SimCore

from gateway.config.gateway import parse_config
from gateway.config.profiles import load_profile
from gateway.device.bus import BusOwner
from gateway.device.connect import make_link
from gateway.device.device import DeviceError, DeviceSpec
from gateway.errors import ConfigError
from gateway.ops.doctor.check import Level
from gateway.ops.doctor.devices import check_devices
from gateway.perception.identify import Fit
from gateway.perception.readings import Quality, Sample
from gateway.protocol import modbus
from tests.profiles.test_profiles_reference import MODBUS_VECTORS, server_device

HEAD = '[gateway]\nkey = "gw.key"\n\n[operators]\nallow = ["0x' + "ab" * 20 + '"]\n\n'


class Units(ModbusServerContext):
    """The units of a line behind a server, and nothing else: a request to any other unit raises
    NoSuchIdException, which pymodbus 3.16 answers with exception 0B (server/requesthandler.py), or
    with silence when the server has `ignore_missing_devices`. (Its own SimDevice list answers 04 for
    a missing unit.) As firmware_shims.context explains, the base __init__ is not called and
    `old_simulator` makes the server use this context as it is."""

    def __init__(self, units: Mapping[int, str]) -> None:  # no super().__init__(): see above
        self.old_simulator = True
        self.simdevices = []
        self._core = SimCore([server_device(unit, MODBUS_VECTORS[name]) for unit, name in units.items()])

    def device_ids(self) -> list[int]:
        return self._core.device_ids()

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        if device_id not in self._core.devices:
            raise NoSuchIdException(f"no unit {device_id} on this line")
        return await self._core.async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        if device_id not in self._core.devices:
            raise NoSuchIdException(f"no unit {device_id} on this line")
        return await self._core.async_setValues(device_id, func_code, address, [int(v) for v in values])


@contextlib.asynccontextmanager
async def serve(units: Mapping[int, str], *, framer: FramerType = FramerType.SOCKET,
                answer_absent: bool = True,
                tap: Callable[[bool, bytes], bytes] | None = None) -> AsyncIterator[str]:
    """A plain pymodbus server holding each unit's reference vectors; yields its host:port.
    `answer_absent`: a unit it does not hold gets exception 0B, as from a TCP-to-RTU gateway."""
    server = ModbusTcpServer(Units(units), framer=framer, address=("127.0.0.1", 0),
                             ignore_missing_devices=not answer_absent, trace_packet=tap)
    await server.serve_forever(background=True)
    listener: Any = server.transport
    try:
        yield f"127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, while this event loop serves the devices."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return subprocess.CompletedProcess(list(args), proc.returncode or 0, out.decode(), err.decode())


def expected(name: str) -> dict[str, tuple[float, str]]:
    """Each vector point's value and unit as the manual gives it."""
    return {vec["point"]: tuple(vec["expect"]) for vec in MODBUS_VECTORS[name]["points"]}


# ------------------------------------------------------------------------------------ RTU over TCP


def test_rtu_over_tcp_reads_a_meter() -> None:
    received: list[bytes] = []

    def tap(sending: bool, data: bytes) -> bytes:
        if not sending:
            received.append(data)
        return data

    async def main() -> subprocess.CompletedProcess[str]:
        async with serve({7: "chint_dtsu666"}, framer=FramerType.RTU, tap=tap) as address:
            return await drgw("read", "--profile", "chint_dtsu666", "--tcp", address,
                              "--framing", "rtu", "--unit", "7", "--json")

    out = asyncio.run(main())
    values = json.loads(out.stdout)
    for point, (value, unit) in expected("chint_dtsu666").items():
        assert values[point]["quality"] == "ok", (point, values[point])
        assert (values[point]["value"], values[point]["unit"]) == (pytest.approx(value), unit)
    # On the wire: RTU frames (Serial Line V1.02, 2.5.1: unit, PDU, CRC low byte first), no MBAP.
    assert received
    for frame in received:
        assert frame[0] == 7 and frame[1] == 0x03, frame.hex(" ")
        assert frame[-2:] == FramerRTU.compute_CRC(frame[:-2]).to_bytes(2, "big"), frame.hex(" ")
    # The first read is the model check's: the L1 voltage at 2006H, two registers.
    assert received[0][:6] == bytes.fromhex("07 03 20 06 00 02")


def test_rtu_over_tcp_reconnects_after_the_converter_drops_the_connection() -> None:
    """A converter that closes the socket after one answer (they do, on an idle timeout or a
    reboot): the next request fails as a lost link, the one after it connects again."""
    connections = 0

    async def converter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        request = await reader.readexactly(8)  # 01 03 2006 0002 CRC: read two holding registers
        body = bytes([request[0], 0x03, 4, 0x45, 0x10, 0xB0, 0x00])  # 231.5 V x 10, as 2006H holds
        writer.write(body + FramerRTU.compute_CRC(body).to_bytes(2, "big"))
        await writer.drain()
        writer.close()

    async def main() -> list[object]:
        server = await asyncio.start_server(converter, "127.0.0.1", 0)
        link, settings = make_link(tcp=f"127.0.0.1:{server.sockets[0].getsockname()[1]}",
                                   framing="rtu")
        owner = BusOwner(link=link, settings=settings, sink=lambda s: None, devices=[
            DeviceSpec(name="m", profile=load_profile("chint_dtsu666"), unit=1, timeout=2.0)])
        state = owner.devices["m"]
        request = modbus.ReadRequest(unit=1, function=modbus.READ_HOLDING_REGISTERS,
                                     address=0x2006, count=2)
        outcomes: list[object] = []
        try:
            for _ in range(3):
                try:
                    outcomes.append(await owner.transact(state, request))
                except DeviceError as exc:
                    outcomes.append(str(exc))
        finally:
            await link.close()
            server.close()
            await server.wait_closed()
        return outcomes

    first, second, third = asyncio.run(main())
    answer = modbus.Response(unit=1, function=0x03, values=(0x4510, 0xB000))
    assert first == answer and third == answer
    assert isinstance(second, str) and second.startswith("rtu-over-tcp://127.0.0.1:")
    assert connections == 2


def test_framing_in_the_config(tmp_path: Path) -> None:
    bus = ('[[bus]]\nname = "b"\n{}\n\n[[device]]\nname = "m"\nprofile = "chint_dtsu666"\nbus = "b"\n'
           'unit = 1\n')
    config = parse_config(HEAD + bus.format('tcp = "10.0.0.7:4196"\nframing = "rtu"'),
                          path=tmp_path / "drgw.toml")
    assert config.devices.buses[0].framing == "rtu"
    assert parse_config(HEAD + bus.format('tcp = "10.0.0.7:502"'),
                        path=tmp_path / "drgw.toml").devices.buses[0].framing == "tcp"
    with pytest.raises(ConfigError, match=r"bus\[0\]: framing: 'mbap' is not valid; use one of tcp, rtu"):
        parse_config(HEAD + bus.format('tcp = "h:1"\nframing = "mbap"'), path=tmp_path / "drgw.toml")
    with pytest.raises(ConfigError, match=r"bus\[0\]: framing: a serial line always frames RTU"):
        parse_config(HEAD + bus.format('serial = "/dev/ttyUSB0"\nframing = "tcp"'),
                     path=tmp_path / "drgw.toml")


# ------------------------------------------------------------------- a TCP-to-RTU gateway's 0A/0B


@pytest.mark.parametrize("framing", ["tcp", "rtu"])
def test_scan_behind_a_gateway_finds_only_the_units_that_are_there(framing: str) -> None:
    """Modbus TCP: the gateway answers 0B for units 1-2 and 4-8. RTU over TCP: a converter passes
    the silence of absent units on. Either way one device is there, and the draft is TOML."""

    async def main() -> subprocess.CompletedProcess[str]:
        async with serve({3: "chint_dtsu666"}, framer=FramerType.RTU if framing == "rtu"
                         else FramerType.SOCKET, answer_absent=framing == "tcp") as address:
            framed = ("--framing", "rtu") if framing == "rtu" else ()  # tcp is the default
            return await drgw("scan", "--tcp", address, *framed, "--units", "1-8", "--json")

    out = asyncio.run(main())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [d["unit"] for d in result["devices"]] == [3]
    # No identification register: the manual's plausible voltage and frequency name it.
    assert result["devices"][0]["profile"] == "chint_dtsu666"
    assert result["devices"][0]["how"] == "plausible"
    draft = tomllib.loads(result["config"])
    assert draft["device"] == [{"name": "chint_dtsu666_3", "profile": "chint_dtsu666",
                                "bus": "bus1", "unit": 3}]
    assert draft["bus"][0].get("framing", "tcp") == framing


def test_the_scan_draft_is_toml_with_a_device_no_profile_fits() -> None:
    """An SDM72D-M (first generation) has no voltage register and no identification register: it
    answers, fits no profile, and goes into the draft as comments with what it answered."""

    async def main() -> subprocess.CompletedProcess[str]:
        async with serve({2: "chint_dtsu666", 4: "eastron_sdm72"}, answer_absent=False) as address:
            return await drgw("scan", "--tcp", address, "--units", "1-4", "--timeout", "0.3")

    out = asyncio.run(main())
    assert out.returncode == 0, out.stderr
    assert "unit   2: chint_dtsu666 (plausible)" in out.stdout
    assert "unit   4: unknown model" in out.stdout
    draft = out.stdout[out.stdout.index("# Draft"):]
    data = tomllib.loads(draft)
    assert [(d["unit"], d["profile"]) for d in data["device"]] == [(2, "chint_dtsu666")]
    assert "# unit 4 answers but matches no profile; it answered:" in draft
    # Its input block starts at 30053 (PDU 0x0034): the reads at 30001 were refused.
    assert "#   input 0x0000: exception 02 (illegal data address)" in draft
    assert "# profile = \"?\"" in draft and "# unit = 4" in draft


def test_polling_an_absent_unit_behind_a_gateway_is_a_timeout() -> None:
    async def main() -> subprocess.CompletedProcess[str]:
        async with serve({3: "chint_dtsu666"}) as address:
            return await drgw("read", "--profile", "chint_dtsu666", "--tcp", address, "--unit", "5",
                              "--json")

    out = asyncio.run(main())
    assert out.returncode == 1
    readings = json.loads(out.stdout)
    assert readings and all(r["quality"] == "error" for r in readings.values())
    error = next(iter(readings.values()))["error"]
    assert error == ("unit 5: no answer: the gateway reports gateway target device failed to "
                     "respond (exception 0B)")
    assert "check the unit id" in out.stderr


# ------------------------------------------------------------------------ the model check


def test_read_refuses_a_meter_of_another_model() -> None:
    """A DDSU666 read as a DTSU666: 2006H holds nothing there (0 V). Without the check its zeros
    would come out as good readings."""

    async def main() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        async with serve({1: "chint_ddsu666"}) as address:
            args = ("read", "--profile", "chint_dtsu666", "--tcp", address, "--unit", "1", "--json")
            return await drgw(*args), await drgw(*args, "--no-model-check")

    checked, unchecked = asyncio.run(main())
    assert checked.returncode == 1
    readings = json.loads(checked.stdout)
    assert all(r["quality"] == "error" for r in readings.values())
    assert readings["voltage_l1_v"]["error"] == (
        "chint_dtsu666: wrong model: unit 1 does not answer like a CHINT DTSU666 (profile "
        "chint_dtsu666): holding 0x2006 (voltage_l1_v) reads 0 V, outside 80..300 V")
    assert "`drgw scan` proposes the profiles that fit" in checked.stderr
    assert json.loads(unchecked.stdout)["voltage_l1_v"]["quality"] == "ok"  # what the check stops


def test_the_bus_owner_signs_no_ok_reading_of_a_wrong_model() -> None:
    """The agent's poll path: unit 1 is configured right, unit 2 (also a DDSU666) as a DTSU666, and
    unit 3 the same with check_model = false."""
    dtsu, ddsu = load_profile("chint_dtsu666"), load_profile("chint_ddsu666")
    samples: dict[str, Sample] = {}

    async def main() -> BusOwner:
        async with serve({1: "chint_ddsu666", 2: "chint_ddsu666", 3: "chint_ddsu666"}) as address:
            link, settings = make_link(tcp=address)
            got = asyncio.Event()

            def sink(sample: Sample) -> None:
                samples.setdefault(sample.device, sample)
                if len(samples) == 3:
                    got.set()

            owner = BusOwner(link=link, settings=settings, sink=sink, devices=[
                DeviceSpec(name="right", profile=ddsu, unit=1),
                DeviceSpec(name="wrong", profile=dtsu, unit=2),
                DeviceSpec(name="unchecked", profile=dtsu, unit=3, check_model=False)])
            polling = asyncio.create_task(owner.run())
            try:
                await asyncio.wait_for(got.wait(), 30)
            finally:
                polling.cancel()
                await asyncio.gather(polling, return_exceptions=True)
            return owner

    owner = asyncio.run(main())
    right = {r.name: r for r in samples["right"].readings}
    assert right["voltage_l1_v"].quality is Quality.OK
    assert right["voltage_l1_v"].value == pytest.approx(expected("chint_ddsu666")["voltage_l1_v"][0])
    assert owner.devices["right"].model is not None
    assert owner.devices["right"].model.fit is Fit.PLAUSIBLE
    wrong = samples["wrong"].readings
    assert wrong and all(r.quality is Quality.ERROR for r in wrong)
    assert all("wrong model" in (r.error or "") and "check_model = false" in (r.error or "")
               for r in wrong)
    assert owner.devices["wrong"].model is not None
    assert owner.devices["wrong"].model.fit is Fit.CONTRADICTED
    assert owner.devices["wrong"].failed_cycles >= 1
    # check_model = false: polled as configured (its zeros read as good data, the operator's call).
    assert any(r.quality is Quality.OK for r in samples["unchecked"].readings)


def test_doctor_names_a_wrong_model(tmp_path: Path) -> None:
    devices = """
[[bus]]
name = "conv"
tcp = "{address}"
framing = "rtu"

[[device]]
name = "main"
profile = "chint_ddsu666"
bus = "conv"
unit = 1

[[device]]
name = "heat"
profile = "chint_dtsu666"
bus = "conv"
unit = 2
"""

    async def main() -> dict[str, Any]:
        async with serve({1: "chint_ddsu666", 2: "chint_ddsu666"}, framer=FramerType.RTU) as address:
            config = parse_config(HEAD + devices.format(address=address), path=tmp_path / "drgw.toml")
            return {c.name: c for c in await check_devices(config)}

    checks = asyncio.run(main())
    main_check, heat = checks["device main"], checks["device heat"]
    assert main_check.level is Level.OK, main_check
    assert "(model plausible): voltage_l1_v = " in main_check.detail
    assert heat.level is Level.FAIL, heat
    assert "heat: wrong model: unit 2 does not answer like a CHINT DTSU666" in heat.detail
    assert "`drgw scan` proposes" in heat.fix and "check_model = false" in heat.fix
