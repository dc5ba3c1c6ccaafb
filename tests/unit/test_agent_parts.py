"""The agent's lifetime (parts stop newest first; a failed part stops the rest, then is raised) and its
one table from errors to command replies. The whole agent runs in tests/e2e/test_agent_run.py."""

from __future__ import annotations

import asyncio

import pytest

from gateway.agent.control import replies, reply_code
from gateway.agent.lifetime import RESTART, StopRequest, Work, lifetime
from gateway.device.bus import BusBusy
from gateway.device.device import DeviceError
from gateway.errors import ConfigError, DrgwError
from gateway.loop.events import EventRejected
from gateway.network.command import Code, CommandRejected
from gateway.protocol import modbus


async def forever(log: list[str], name: str) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        log.append(f"cancelled {name}")


async def fails() -> None:
    await asyncio.sleep(0)
    raise ConfigError("port taken")


async def run(log: list[str], stop: StopRequest, *, last: Work) -> int:
    async with lifetime(stop) as life:
        life.on_stop(lambda: log.append("closed"))
        life.start("a", forever(log, "a"))
        life.on_stop(lambda: log.append("drained"))
        life.start("b", forever(log, "b"))
        life.start("last", last)
        await stop.requested.wait()
    return stop.code


def test_parts_stop_newest_first_with_the_code_asked_for() -> None:
    log: list[str] = []

    async def main() -> int:
        stop = StopRequest()
        asyncio.get_running_loop().call_later(0.05, stop, RESTART)
        return await run(log, stop, last=forever(log, "c"))

    assert asyncio.run(main()) == RESTART
    assert log == ["cancelled c", "cancelled b", "drained", "cancelled a", "closed"]


def test_a_failed_part_stops_the_others_in_order_then_is_raised() -> None:
    log: list[str] = []
    with pytest.raises(ConfigError, match="port taken"):
        asyncio.run(run(log, StopRequest(), last=fails()))
    assert log == ["cancelled b", "drained", "cancelled a", "closed"]


def test_a_part_that_returns_ends_the_agent() -> None:
    log: list[str] = []
    assert asyncio.run(run(log, StopRequest(), last=asyncio.sleep(0))) == 0
    assert log == ["cancelled b", "drained", "cancelled a", "closed"]


def test_a_failed_stop_step_is_raised_as_it_was_after_the_other_steps() -> None:
    log: list[str] = []

    def drain() -> None:
        raise ConfigError("disk full")

    async def main() -> None:
        stop = StopRequest()
        async with lifetime(stop) as life:
            life.on_stop(lambda: log.append("closed"))
            life.on_stop(drain)
            life.start("a", forever(log, "a"))
            await asyncio.sleep(0)
            stop()

    with pytest.raises(ConfigError, match="disk full"):  # not an ExceptionGroup of the TaskGroup
        asyncio.run(main())
    assert log == ["cancelled a", "closed"]


@pytest.mark.parametrize(("error", "code", "message"), [
    (BusBusy("a scan runs"), Code.BUSY, "bus1: a scan runs"),
    (DeviceError("no answer"), Code.FAILED, "bus1: no answer"),
    (modbus.LocalProtocolError("count 200"), Code.FAILED, "bus1: count 200"),
    (ConfigError("no such device"), Code.BAD_ARGS, "rejected: no such device"),
    (EventRejected("window in the past"), Code.BAD_ARGS, "rejected: window in the past"),
    (DrgwError("not writable"), Code.BAD_ARGS, "rejected: not writable"),
])
def test_one_table_maps_errors_to_replies(error: Exception, code: str, message: str) -> None:
    assert reply_code(error) == code
    with pytest.raises(CommandRejected) as caught, replies(place="bus1: ", refusal="rejected: "):
        raise error
    assert (caught.value.code, caught.value.message) == (code, message)


def test_errors_outside_the_table_pass_to_the_dispatcher() -> None:
    assert reply_code(KeyError("x")) is None
    with pytest.raises(KeyError), replies(place="bus1: "):
        raise KeyError("x")
    with pytest.raises(CommandRejected) as caught, replies(place="bus1: "):
        raise CommandRejected(Code.BAD_ARGS, "as it was")
    assert caught.value.message == "as it was"
