"""Every Modbus profile read against reference vectors from its manufacturer's documentation.

tests/data/reference_vectors/<profile>.yaml gives, per point, what the manual (or a cited peer
implementation) says a real device holds: the table, the PDU address, the manual's data format and word
order, a raw value and its resolution, the register words, and the value and unit the gateway must
report. Nothing here uses drgw's codec or firmware_shims: the words are checked with struct by hand,
served by a plain pymodbus server (its own SimDevice datastore) and read through the gateway's device
layer (BusOwner over Modbus TCP) with the profile as shipped. A wrong address, table, type, word order or
scale in a profile reads another number and fails; the negative tests below show it does.
DL/T 645 meters: test_profiles_reference_dlt645.py.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.config.profiles import load_all, load_profile
from gateway.device.bus import BusOwner
from gateway.device.connect import make_link
from gateway.device.device import DeviceSpec
from gateway.perception.profiles import Profile
from gateway.perception.readings import Quality
from gateway.protocol import modbus

VECTORS = Path(__file__).resolve().parents[1] / "data" / "reference_vectors"
# The manual's data formats, as struct codes: big-endian bytes, words high first unless "-lsw".
STRUCT = {"float32": ">f", "int32": ">i", "uint32": ">I", "int32-lsw": ">i", "uint64": ">Q",
          "int64": ">q", "int16": ">h", "uint16": ">H"}
# From the manual's unit to the gateway's standard unit (docs/profiles.md: energy in Wh, power in W).
UNIT_FACTOR = {("kWh", "Wh"): 1000.0, ("kW", "W"): 1000.0, ("kvar", "var"): 1000.0, ("ms", "s"): 0.001}
TABLE_INDEX = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}  # SimDevice's block order
WRITE_FUNCTIONS = (b"\x05", b"\x06", b"\x10")
METER_POINTS = ("voltage_l1_v", "current_l1_a", "power_active_total_w", "energy_import_total_wh",
                "energy_export_total_wh", "frequency_hz", "power_factor_total")


def load_vectors(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data.get("profile") == path.stem, path
    return data


ALL_VECTORS = {path.stem: load_vectors(path) for path in sorted(VECTORS.glob("*.yaml"))}
MODBUS_VECTORS = {name: data for name, data in ALL_VECTORS.items() if "points" in data}


def manual_words(fmt: str, raw: float) -> list[int]:
    """The register words for `raw` in the manual's format, by hand."""
    if fmt == "bit":
        return [int(raw)]
    data = struct.pack(STRUCT[fmt], raw)
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if fmt.endswith("-lsw") else words


def manual_raw(fmt: str, words: list[int]) -> float:
    """The raw value the manual's format gives for these words, by hand."""
    if fmt == "bit":
        return words[0]
    ordered = words[::-1] if fmt.endswith("-lsw") else words
    (value,) = struct.unpack(STRUCT[fmt], b"".join(w.to_bytes(2, "big") for w in ordered))
    return value  # type: ignore[no-any-return]


def in_unit(value: float, unit: str, target: str) -> float:
    return value if unit == target else value * UNIT_FACTOR[(unit, target)]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRun:
    """What the gateway read and wrote against the reference server."""

    readings: Mapping[str, tuple[object, str, Quality]]
    written: Mapping[str, list[int]]  # point -> the raw words the server holds after the write
    requests: list[bytes]  # PDUs the server received, in order


def server_device(unit: int, vectors: Mapping[str, Any]) -> SimDevice:
    """A plain pymodbus device holding exactly the vector words, zeros between them."""
    tables: dict[str, dict[int, int]] = {table: {} for table in TABLE_INDEX}
    for vec in vectors["points"]:
        for i, word in enumerate(vec["words"]):
            tables[vec["table"]][vec["pdu"] + i] = word
    for vec in vectors.get("writes", []):
        for i in range(len(vec["words"])):
            tables[vec["table"]].setdefault(vec["pdu"] + i, 0)
    blocks: list[list[SimData]] = []
    for table in TABLE_INDEX:
        cells = tables[table]
        bits = table in ("coil", "discrete")
        if not cells:  # an empty table: one cell far away, so pymodbus accepts the device
            blocks.append([SimData(0xFFFF, values=[False] if bits else [0],
                                   datatype=DataType.BITS if bits else DataType.REGISTERS)])
            continue
        first, last = min(cells), max(cells)
        values = [cells.get(a, 0) for a in range(first, last + 1)]
        blocks.append([SimData(first, values=[bool(v) for v in values] if bits else values,
                               datatype=DataType.BITS if bits else DataType.REGISTERS)])
    return SimDevice(id=unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]))


async def read_back(port: int, unit: int, vec: Mapping[str, Any]) -> list[int]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        count = len(vec["words"])
        if vec["table"] == "coil":
            answer = await client.read_coils(vec["pdu"], count=count, device_id=unit)
            return [int(b) for b in answer.bits[:count]]
        answer = await client.read_holding_registers(vec["pdu"], count=count, device_id=unit)
        return list(answer.registers)
    finally:
        client.close()


async def run_against_reference(profile: Profile, vectors: Mapping[str, Any]) -> DeviceRun:
    """Serve the vectors, read every vector point and do every vector write through the gateway."""
    unit = profile.transport.units[0]
    requests: list[bytes] = []

    def tap(sending: bool, data: bytes) -> bytes:
        if not sending:
            requests.append(data[7:])  # the PDU after the 7-byte MBAP header
        return data

    server = ModbusTcpServer(server_device(unit, vectors), address=("127.0.0.1", 0), trace_packet=tap)
    await server.serve_forever(background=True)
    listener: Any = server.transport  # an asyncio.Server once listening
    port = int(listener.sockets[0].getsockname()[1])
    link, settings = make_link(tcp=f"127.0.0.1:{port}")
    owner = BusOwner(link=link, settings=settings, sink=lambda sample: None,
                     devices=[DeviceSpec(name="dut", profile=profile, unit=unit, timeout=2.0)])
    state = owner.devices["dut"]
    await link.open()
    try:
        points = [profile.point(vec["point"]) for vec in vectors["points"]]
        readings = {r.name: (r.value, r.unit, r.quality) for r in await owner.read_points(state, points)}
        written: dict[str, list[int]] = {}
        for vec in vectors.get("writes", []):
            answer = await owner.transact(state, state.write_request(vec["point"], vec["value"]))
            assert isinstance(answer, modbus.Response), f"{vec['point']}: {answer}"
            written[vec["point"]] = await read_back(port, unit, vec)
    finally:
        await link.close()
        await server.shutdown()  # type: ignore[no-untyped-call]
    return DeviceRun(readings=readings, written=written, requests=requests)


def mismatches(profile: Profile, vectors: Mapping[str, Any], run: DeviceRun) -> list[str]:
    """Every point the gateway did not read as the manual says, with what the profile assumed."""
    out: list[str] = []
    for vec in vectors["points"]:
        value, unit = vec["expect"]
        got, got_unit, quality = run.readings[vec["point"]]
        ok = quality is Quality.OK and got_unit == unit and isinstance(got, int | float)
        if ok and got == pytest.approx(value, rel=1e-6, abs=1e-9):
            continue
        point = profile.point(vec["point"])
        out.append(f"{vec['point']}: gateway read {got!r} {got_unit} ({quality}), the manual says "
                   f"{value!r} {unit} [profile: {point.table} PDU 0x{point.address:04X} {point.type} "
                   f"word order {point.word_order} scale {point.scale:g}; manual: {vec['table']} PDU "
                   f"0x{vec['pdu']:04X} {vec['format']} words {[hex(w) for w in vec['words']]}]")
    for vec in vectors.get("writes", []):
        if run.written[vec["point"]] != vec["words"]:
            out.append(f"{vec['point']} = {vec['value']}: the device holds {run.written[vec['point']]}, "
                       f"the manual says {vec['words']}")
        if vec.get("request_pdu") and bytes.fromhex(vec["request_pdu"]) not in run.requests:
            writes = [r.hex(" ") for r in run.requests if r[:1] in WRITE_FUNCTIONS]
            out.append(f"{vec['point']} = {vec['value']}: no request {vec['request_pdu']} on the wire "
                       f"(writes seen: {writes})")
    return out


# ------------------------------------------------------------------------------ the vectors themselves


def test_every_shipped_profile_has_reference_vectors() -> None:
    for profile in load_all():
        if profile.name.startswith("test_"):
            continue
        assert profile.name in ALL_VECTORS, f"{profile.name} has no tests/data/reference_vectors file"
        vectors = ALL_VECTORS[profile.name]
        if profile.kind == "appliance":
            assert vectors["points"] and vectors.get("writes"), profile.name
            continue
        if "reads" in vectors:  # DL/T 645: one read may cover several points (a block)
            covered = {name for read in vectors["reads"] for name in read["points"]}
        else:
            covered = {vec["point"] for vec in vectors["points"]}
        wanted = {p.name for p in profile.points} & set(METER_POINTS)
        assert wanted <= covered, f"{profile.name}: no vector for {sorted(wanted - covered)}"


@pytest.mark.parametrize("name", sorted(MODBUS_VECTORS))
def test_vectors_are_what_their_manual_says(name: str) -> None:
    """Each vector's numbers follow from each other by hand: words <-> raw in the manual's format,
    raw x resolution = the manual's value, and the manual's unit converted = the expected value."""
    vectors = MODBUS_VECTORS[name]
    assert set(vectors["sources"]) and all(vec["cite"] for vec in vectors["points"]), name
    for vec in vectors["points"] + vectors.get("writes", []):
        fmt, raw, words = vec["format"], vec["raw"], vec["words"]
        assert manual_raw(fmt, words) == pytest.approx(raw, rel=1e-6), vec
        if fmt != "float32":  # float words may be a real meter's capture, one bit off the nearest float
            assert words == manual_words(fmt, raw), vec
        if "manual" in vec:
            manual_value, manual_unit = vec["manual"]
            assert raw * vec.get("resolution", 1) == pytest.approx(manual_value, rel=1e-9), vec
            value, unit = vec["expect"]
            assert in_unit(manual_value, manual_unit, unit) == pytest.approx(value, rel=1e-9), vec


# ------------------------------------------------------------------------------ the gateway against them


@pytest.mark.parametrize("name", sorted(MODBUS_VECTORS))
def test_profile_reads_the_manuals_words(name: str) -> None:
    profile = load_profile(name)
    vectors = MODBUS_VECTORS[name]
    run = asyncio.run(run_against_reference(profile, vectors))
    assert mismatches(profile, vectors, run) == []


def broken_copy(tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> Profile:
    """The shipped profile with one deliberate mistake, loaded from a temporary file."""
    data = yaml.safe_load(load_profile(name).path.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_profile(path)


def set_transport(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["transport"][key] = value
    return edit


def set_register(point: str, key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        (entry,) = [r for r in data["registers"] + data.get("writable", []) if r["name"] == point]
        entry[key] = value
    return edit


BROKEN = (  # (profile, the mistake, the points it must be caught on)
    ("eastron_sdm630", set_transport("word_order", "little"), None),
    ("carlogavazzi_em24", set_transport("word_order", "big"), None),
    ("abb_b23", set_transport("word_order", "little"), None),
    ("eastron_sdm630", set_register("energy_import_total_wh", "scale", 1), ["energy_import_total_wh"]),
    ("carlogavazzi_em24", set_register("voltage_l1_v", "scale", 0.01), ["voltage_l1_v"]),
    ("schneider_iem3155", set_transport("address_base", 0), None),
    ("heidelberg_energycontrol", set_register("ev_current_limit_a", "scale", 1),
     ["ev_current_limit_a"]),
)


@pytest.mark.parametrize(("name", "edit", "caught"), BROKEN,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BROKEN)])
def test_a_deliberately_broken_profile_fails_against_the_manual(
        tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None], caught: list[str] | None) -> None:
    profile = broken_copy(tmp_path, name, edit)
    vectors = MODBUS_VECTORS[name]
    found = mismatches(profile, vectors, asyncio.run(run_against_reference(profile, vectors)))
    assert found, f"{name}: the broken profile still reads every vector right"
    if caught is not None:
        assert sorted({line.split(":")[0].split(" =")[0] for line in found}) == caught, found
