"""The bus owner's silent interval before a request (Modbus over Serial Line V1.02, 2.5.1.1), over a
scripted link: it runs from the last byte the port heard, whoever sent it, and never from a stamp
that predates the request. On the wire, against the simulator's clock: tests/integration/
test_rtu_silent_interval.py. Only floors are asserted (a request never goes out early), which load
cannot break."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config.profiles import load_profile
from gateway.device.bus import BusOwner, BusSettings
from gateway.device.device import DeviceSpec
from gateway.device.pacing import sleep_until
from gateway.protocol import modbus
from gateway.testing.fake_link import ScriptedLink

METER = load_profile(Path(__file__).resolve().parents[1] / "data" / "profiles" / "meters"
                     / "test_meter.yaml")
GAP = 0.02  # a configured frame gap long enough to see, seconds
REQUEST = modbus.ReadRequest(unit=1, function=4, address=0, count=2)
# The reply the scripted port hands over: unit 1, function 4, 4 bytes, registers 1 and 2 (input).
REPLY = modbus.rtu_frame(1, bytes([4, 4, 0, 1, 0, 2]))


def owner_on(link: ScriptedLink) -> BusOwner:
    return BusOwner(link=link, settings=BusSettings(framing="rtu", frame_gap=GAP),
                    devices=[DeviceSpec(name="m", profile=METER, unit=1)], sink=lambda _: None)


def two_requests(link: ScriptedLink, *, late_byte_after: float | None = None) -> None:
    owner = owner_on(link)

    async def main() -> None:
        await link.open()
        state = owner.devices["m"]
        assert isinstance(await owner.transact(state, REQUEST), modbus.Response)
        if late_byte_after is not None:
            # A byte of a late reply heard this long after ours; the stamp is set ahead of time,
            # as the port would set it then, so that the test needs no clock of its own.
            link.last_heard += late_byte_after
        await owner.transact(state, REQUEST)

    asyncio.run(main())


def test_a_byte_heard_after_the_reply_restarts_the_silent_interval() -> None:
    link = ScriptedLink(answer=REPLY, heard_on_read=True)
    two_requests(link, late_byte_after=0.015)
    reply_heard = link.read_at[0]
    assert link.written_at[1] >= reply_heard + 0.015 + GAP
    assert "discard" in link.calls  # the late bytes cannot answer the next request


def test_a_stamp_older_than_the_request_does_not_shorten_the_gap() -> None:
    # This port never stamps what it hears: the gap runs from when the reply was taken.
    link = ScriptedLink(answer=REPLY, heard_on_read=False)
    two_requests(link)
    assert link.written_at[1] >= link.read_at[0] + GAP


def test_sleep_until_never_returns_early() -> None:
    async def main() -> list[tuple[float, float]]:
        loop = asyncio.get_running_loop()
        seen = []
        # Past, now, under one epoll tick, about t3.5 at 9600 baud, several ticks.
        for ahead in (-0.001, 0.0, 0.0003, 0.00365, 0.0071):
            deadline = loop.time() + ahead
            await sleep_until(deadline)
            seen.append((deadline, loop.time()))
        return seen

    for deadline, returned in asyncio.run(main()):
        assert returned >= deadline
