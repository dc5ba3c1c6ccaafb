"""The simulated DL/T 645 meter firmware, without a line: what it answers to each request."""

from __future__ import annotations

import pytest

from firmware_shims.clock import ManualClock
from firmware_shims.device import DeviceSettings, SimulatedDevice
from firmware_shims.dlt645 import SimulatedMeter, address_matches, collide
from firmware_shims.faults import ExceptionReply
from firmware_shims.loads import ConstantLoad
from gateway.config.profiles import load_all, load_profile
from gateway.perception import dlt645_values as values
from gateway.protocol import dlt645

DLT645 = [p for p in load_all() if p.transport.protocol == "dlt645"]


def meter(profile: str = "dlt645_three_phase", *, power_w: float = 1840.0,
          phases: int | None = None) -> tuple[SimulatedMeter, ManualClock]:
    clock = ManualClock()
    device = SimulatedDevice(name="m", profile=load_profile(profile), unit=0, clock=clock,
                             load=ConstantLoad(power_w), settings=DeviceSettings(phases=phases))
    return SimulatedMeter(device, "000000000001"), clock


def ask(m: SimulatedMeter, di: int, *, address: str = "000000000001") -> dlt645.Frame:
    request = dlt645.Dlt645Parser()
    request.feed(dlt645.read_request(address, di))
    frame = request.next_event()
    assert isinstance(frame, dlt645.Frame)
    reply = m.answer(frame)
    assert reply is not None
    parser = dlt645.Dlt645Parser()
    parser.feed(reply)
    answer = parser.next_event()
    assert isinstance(answer, dlt645.Frame)
    return answer


@pytest.mark.parametrize("profile", DLT645, ids=[p.name for p in DLT645])
def test_every_point_reads_what_the_model_shows(profile: object) -> None:
    m, clock = meter(profile.name)  # type: ignore[attr-defined]
    clock.advance(3600.0)
    shown = m.device.values()
    for point in m.device.profile.points:
        raw = dlt645.read_reply_value(ask(m, point.address), address=m.address, di=point.address)
        value = values.BcdFormat.from_type_name(point.type).decode(raw) * point.scale
        resolution = 10.0 ** -values.BcdFormat.from_type_name(point.type).decimals * point.scale
        assert value == pytest.approx(float(shown[point.name]), abs=resolution / 2 + 1e-9), point.name
    power = m.device.profile.point("power_active_total_w")
    raw = dlt645.read_reply_value(ask(m, power.address), address=m.address, di=power.address)
    assert values.BcdFormat.from_type_name(power.type).decode(raw) * power.scale == 1840.0


def test_blocks_missing_items_and_faults() -> None:
    m, _ = meter()
    block = ask(m, 0x0203FF00)
    total, a, b, c = (values.BcdFormat("XX.XXXX", signed=True).decode(block.data[4 + 3 * i:7 + 3 * i])
                      for i in range(4))
    assert total == pytest.approx(1.84)
    assert a + b + c == pytest.approx(1.84, abs=3 * 0.00005)  # each phase rounded to 0.1 W
    single, _ = meter("dlt645_single_phase", phases=1)
    refused = ask(single, 0x02010200)  # a single-phase meter has no phase B voltage
    assert refused.abnormal and refused.data == bytes([dlt645.NO_REQUESTED_DATA])
    assert ask(single, 0x04000401).abnormal  # an item this firmware does not model at all
    exporting, _ = meter(power_w=-3000.0)
    raw = ask(exporting, 0x02030000).data[4:]
    assert raw == bytes.fromhex("000083")  # -3.0000 kW: sign bit on the most significant byte
    m.device.inject(ExceptionReply(4), now_monotonic=0.0)
    assert ask(m, 0x02010100).data == b"\x04"


def test_counters_past_their_digits_saturate() -> None:
    m, _ = meter()
    m.device.set_value("energy_import_total_wh", 2e9)  # 2 000 000 kWh > 999999.99
    raw = dlt645.read_reply_value(ask(m, 0x00010000), address=m.address, di=0x00010000)
    assert raw == bytes.fromhex("99999999")


def test_addressing_and_collisions() -> None:
    assert address_matches("000000000001", "000000000001")
    assert address_matches("AAAAAAAAAAAA", "123456789012")
    assert address_matches("AAAAAAAA9012", "123456789012")  # high bytes wildcarded
    assert not address_matches("000000000002", "000000000001")
    a, b = dlt645.address_reply("000000000001"), dlt645.address_reply("000000000002")
    garbled = collide([a, b])
    parser = dlt645.Dlt645Parser()
    parser.feed(garbled)
    assert not any(isinstance(e, dlt645.Frame) for e in iter(parser.next_event, dlt645.NEED_DATA))
