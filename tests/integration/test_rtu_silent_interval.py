"""The bus owner keeps the RTU silent interval on the wire, as the simulated wire's own clock sees it.

Modbus over Serial Line V1.02, 2.5.1.1: frames are separated by a silent interval of at least 3.5
character times, fixed at 1.750 ms above 19200 baud. At 9600 baud 8N1 a character is 10 bits, so
t3.5 = 3.5 x 10 / 9600 s = 3.6458 ms; at 38400 baud t3.5 is the fixed 1.750 ms (3.5 characters
would be only 0.911 ms). The constants below are that arithmetic, not the gateway's.

The witness is the frame log of the simulator's relay (firmware_shims.wire): for each request, the
time between the relay handing the gateway the previous frame (the gateway cannot have heard it
earlier) and the relay seeing the request's first bytes (the gateway had begun sending by then).
The bus is saturated (every poll class always due) so that every request follows a reply as soon
as the gateway allows, and one configured unit is silent so that the path after a timeout is
covered too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_shims.home import SimulatedHome
from firmware_shims.wire import CLIENT_SIDE, SERVER_SIDE, Frame, gaps
from gateway.config.profiles import load_profile
from gateway.device.bus import BusOwner
from gateway.device.connect import make_link
from gateway.device.device import DeviceSpec
from gateway.perception.readings import Sample
from tests.waits import until

T35_9600_8N1 = 3.5 * 10 / 9600  # 3.6458 ms
T35_ABOVE_19200 = 0.00175
REQUESTS = 80  # requests that follow a reply, per run


def bus(baud: int) -> str:
    text = f'[[bus]]\nname = "rs485"\nbaud = {baud}\nwire_timing = true\n'
    for unit in (1, 2):
        text += (f'\n[[device]]\nname = "m{unit}"\nprofile = "eastron_sdm630"\ntransport = "rtu"\n'
                 f'address = "rs485"\nunit = {unit}\n[device.load]\nkind = "constant"\n'
                 f"power_w = {1000 * unit}\n")
    return text


def request_silences(frames: list[Frame]) -> tuple[list[float], list[float]]:
    """The gateway's silence before each request: (after a reply, after its own unanswered request)."""
    pairs = list(zip(frames, gaps(frames), strict=False))  # (the frame before, the gap after it)
    requests = [(before.side, g.silence) for before, g in pairs if g.side == CLIENT_SIDE]
    return ([s for side, s in requests if side == SERVER_SIDE],
            [s for side, s in requests if side == CLIENT_SIDE])


def poll_saturated(path: Path, baud: int) -> tuple[list[Frame], list[Sample]]:
    """Poll units 1, 2 and 7 with every class always due until REQUESTS requests followed a reply
    and a cycle of unit 7 (configured, but nobody answers for it) timed out. The meters that answer
    get a patient fixed timeout, so that a loaded machine cannot turn their replies into late ones
    (a late reply in flight is a collision the gateway could not hear coming)."""
    profile = load_profile("eastron_sdm630")
    always = {"fast": 0.001, "normal": 0.001, "slow": 0.001}
    specs = [DeviceSpec(name=f"m{u}", profile=profile, unit=u, intervals=always, timeout=t,
                        min_timeout=t, backoff_initial=0.1, backoff_max=0.2)
             for u, t in ((1, 2.0), (2, 2.0), (7, 0.1))]
    samples: list[Sample] = []

    async def main() -> list[Frame]:
        async with SimulatedHome(path) as home:
            link, settings = make_link(serial=home.devices[0].address, baud=baud)
            owner = BusOwner(link=link, settings=settings, devices=specs, sink=samples.append)
            wire = home.buses[0].wire
            task = asyncio.create_task(owner.run())
            try:
                await until(lambda: len(request_silences(wire.frames)[0]) >= REQUESTS
                            and any(s.device == "m7" for s in samples),
                            what=f"{REQUESTS} requests after replies and a cycle of m7")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            return wire.frames

    return asyncio.run(main()), samples


@pytest.mark.parametrize(("baud", "t35"), [(9600, T35_9600_8N1), (38400, T35_ABOVE_19200)])
def test_no_request_follows_the_line_sooner_than_t35(
        scenario_file: Callable[[str], Path], baud: int, t35: float) -> None:
    frames, samples = poll_saturated(scenario_file(bus(baud)), baud)
    after_reply, after_own = request_silences(frames)
    assert len(after_reply) >= REQUESTS
    assert after_own, "no request followed a timed-out one"
    short = [round(s * 1000, 3) for s in after_reply + after_own if s < t35]
    assert not short, f"silences below t3.5 = {t35 * 1000:.3f} ms: {short} ms"
    assert {s.device for s in samples if s.ok} == {"m1", "m2"}  # real transactions were counted
