"""`drgw scan` proposes every meter profile with a voltage register: by its identification register,
or by a plausible voltage and frequency at its own registers, listing ambiguous matches as candidates.

Two buses, each scanned through the gateway's scan (gateway.device.probe.scan_link):

- Meters that hold exactly the manual-sourced reference vectors (tests/data/reference_vectors, served
  by a plain pymodbus server over RTU over TCP, zeros between a table's vector words, exception 02
  outside them). The expected candidates of each unit are worked out here by hand from those vectors:
  which other profiles' identification register the unit holds (then it rules them out), and what
  the unit's words at each other profile's voltage, frequency or current register read in that
  manual's format and resolution (tests/profiles/test_profiles_reference.py's `manual_raw`).
- Simulated meters (firmware_shims) showing the voltage and frequency their vectors give, behind a
  Modbus TCP gateway that answers 0B for absent units: a DTSU666, meters with no identification
  register, meters with one, and an SDM72D-M that has no voltage register at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from test_profiles_reference import MODBUS_VECTORS, in_unit, manual_raw, server_device

from firmware_shims.clock import ManualClock
from firmware_shims.context import DeviceContext
from firmware_shims.device import SimulatedDevice
from gateway.config.profiles import load_all, load_profile
from gateway.device.probe import Found, scan_link
from gateway.perception.profiles import Profile

PROFILES = [p for p in load_all() if p.transport.protocol == "modbus"]
METERS = [p for p in PROFILES if p.kind == "meter"]


async def scan(server: ModbusTcpServer, units: Sequence[int], framing: str) -> dict[int, Found]:
    """Scan `units` through `server` (built inside the running loop, as pymodbus needs)."""
    await server.serve_forever(background=True)
    listener: Any = server.transport
    try:
        found = await scan_link(
            link_args={"tcp": f"127.0.0.1:{listener.sockets[0].getsockname()[1]}", "framing": framing},
            units=units, profiles=load_all(), timeout=1.0, baud=None, parity=None,
            progress=lambda done, total, hits: None)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
    return {f.unit: f for f in found}


def test_every_meter_with_a_voltage_register_can_be_proposed() -> None:
    with_voltage = [p for p in METERS if any(q.name == "voltage_l1_v" for q in p.points)]
    assert len(with_voltage) >= 15
    assert all(p.probed for p in with_voltage), [p.name for p in with_voltage if not p.probed]


# ------------------------------------------------------------------ the manuals' words, by hand


class Image:
    """What a reference-vector server holds for one meter: per table, one block from the first to
    the last vector word, zeros between (as test_profiles_reference.server_device builds it)."""

    def __init__(self, vectors: Mapping[str, Any]) -> None:
        self.cells: dict[str, dict[int, int]] = {}
        for vec in vectors["points"]:
            for i, word in enumerate(vec["words"]):
                self.cells.setdefault(vec["table"], {})[vec["pdu"] + i] = word

    def read(self, table: str, address: int, count: int) -> list[int] | None:
        """The words of a read, or None for the exception the server answers outside the block."""
        cells = self.cells.get(table)
        if not cells or address < min(cells) or address + count - 1 > max(cells):
            return None
        return [cells.get(a, 0) for a in range(address, address + count)]


def plausible_by_hand(profile: Profile, image: Image) -> bool:
    """Each of the profile's checks, read at the register its manual gives, in the manual's format."""
    vectors = {vec["point"]: vec for vec in MODBUS_VECTORS[profile.name]["points"]}
    for check in profile.plausible:
        vec = vectors[check.point.name]  # the manual's table, address, format and resolution
        words = image.read(vec["table"], vec["pdu"], len(vec["words"]))
        if words is None:
            return False
        manual_value = manual_raw(vec["format"], words) * vec.get("resolution", 1)
        value = in_unit(manual_value, vec["manual"][1], vec["expect"][1])
        if not check.min <= value <= check.max:
            return False
    return True


def candidates_by_hand(image: Image) -> list[str]:
    out = []
    for profile in METERS:
        if not profile.plausible:
            continue
        probe = profile.probe
        # The images hold no identification register: where one is read inside a block it holds
        # zeros, which no profile expects, and rules that profile out.
        assert probe is None or all(e not in (0, "") for e in probe.expect)
        if probe is not None and image.read(probe.table, probe.address, probe.count) is not None:
            continue
        if plausible_by_hand(profile, image):
            out.append(profile.name)
    return sorted(out)


def test_scan_of_meters_holding_their_manuals_words() -> None:
    names = [p.name for p in METERS]
    units = {i + 1: name for i, name in enumerate(names)}

    async def main() -> dict[int, Found]:
        server = ModbusTcpServer([server_device(u, MODBUS_VECTORS[n]) for u, n in units.items()],
                                 framer=FramerType.RTU, address=("127.0.0.1", 0))
        return await scan(server, list(units), "rtu")

    found = asyncio.run(main())
    assert sorted(found) == list(units)  # every meter answers
    for unit, name in units.items():
        expected = candidates_by_hand(Image(MODBUS_VECTORS[name]))
        assert sorted(found[unit].profiles) == expected, (name, found[unit])
        if any(p.name == name and p.plausible for p in METERS):
            assert name in expected, f"{name}: its manual's own voltage is not plausible"
        assert found[unit].how == "plausible" or not expected
        assert found[unit].profile == (expected[0] if len(expected) == 1 else None)
    # Every one of them told apart, except models that share a register layout.
    proposed = {f.profile for f in found.values() if f.profile}
    assert {"chint_dtsu666", "chint_ddsu666", "inepro_pro380", "orno_we517",
            "schneider_iem3155", "carlogavazzi_em111"} <= proposed


# ------------------------------------------------------------------ simulated meters on a gateway

BUS = ["chint_dtsu666", "chint_ddsu666", "eastron_sdm220", "inepro_pro380", "orno_we517",
       "eastron_sdm630", "carlogavazzi_em24", "schneider_iem3155", "abb_b23", "eastron_sdm72"]


def layout(name: str) -> tuple[Any, ...] | None:
    """Where and how its manual keeps the L1 voltage and the frequency."""
    vectors = {vec["point"]: vec for vec in MODBUS_VECTORS[name]["points"]}
    if "voltage_l1_v" not in vectors or "frequency_hz" not in vectors:
        return None
    return tuple((v["table"], v["pdu"], v["format"], v.get("resolution", 1))
                 for v in (vectors["voltage_l1_v"], vectors["frequency_hz"]))


def expected_on_the_bus(name: str) -> list[str]:
    """A simulated meter serves its identification register: that names it. Without one, every
    profile whose manual keeps voltage and frequency where and as its own manual does fits."""
    profile = load_profile(name)
    if profile.probe is not None:
        value = profile.probe.expect[0]  # what the simulated firmware serves
        return sorted(p.name for p in METERS if p.probe is not None
                      and (p.probe.table, p.probe.address) == (profile.probe.table, profile.probe.address)
                      and value in p.probe.expect)
    if layout(name) is None:
        return []
    return sorted(p.name for p in METERS if p.plausible and layout(p.name) == layout(name))


def test_scan_of_simulated_meters_behind_a_gateway() -> None:
    clock = ManualClock()
    devices = [SimulatedDevice(name=name, profile=load_profile(name), unit=i + 1, clock=clock)
               for i, name in enumerate(BUS)]
    for device in devices:  # the manual's voltage and frequency, as a real meter would show them
        for point, (value, _) in ((v["point"], v["expect"]) for v in MODBUS_VECTORS[device.name]["points"]):
            if point in ("voltage_l1_v", "frequency_hz"):
                device.set_value(point, value)

    async def main() -> dict[int, Found]:
        context = DeviceContext(devices, monotonic=asyncio.get_running_loop().time)
        server = ModbusTcpServer(context, address=("127.0.0.1", 0), ignore_missing_devices=False)
        return await scan(server, list(range(1, len(BUS) + 3)), "tcp")

    found = asyncio.run(main())
    assert sorted(found) == list(range(1, len(BUS) + 1))  # the gateway's 0B units are not devices
    got = {BUS[unit - 1]: sorted(f.profiles) for unit, f in found.items()}
    assert got == {name: expected_on_the_bus(name) for name in BUS}
    assert got["chint_dtsu666"] == ["chint_dtsu666"]  # told apart by its voltage at 0x2006
    assert got["eastron_sdm72"] == []  # answers, fits nothing: listed with what it answered
    assert found[BUS.index("eastron_sdm72") + 1].answered
