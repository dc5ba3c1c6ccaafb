"""A lost port's bookkeeping (gateway.device.reopen.ReopeningLink) over a scripted link: one outage
however often it fails, back-off that grows across a port that opens but fails again, and counts."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.device.reopen import Backoff, PortLost, ReopeningLink
from gateway.device.transport import LinkError
from gateway.testing.fake_link import ScriptedLink

BACKOFF = Backoff(initial_s=0.5, max_s=30.0, jitter=0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_one_warning_and_one_count_however_it_flaps(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.device.reopen")
    inner, clock = ScriptedLink(fail_writes=1), Clock()
    port = ReopeningLink(inner, backoff=BACKOFF, clock=clock, draw=lambda: 0.0)

    async def main() -> None:
        with pytest.raises(PortLost):
            await port.write(b"x")
        assert inner.calls[-1] == "close" and port.lost and port.retry_at == 100.5
        calls = len(inner.calls)
        for _ in range(3):  # refused without touching the port
            with pytest.raises(PortLost, match="write failed"):
                await port.write(b"x")
        assert len(inner.calls) == calls
        inner.fail_opens = 2  # the node is not back yet
        assert not await port.reopen() and port.retry_at == 101.0
        assert not await port.reopen() and port.retry_at == 102.0
        assert await port.reopen()  # opens ...
        inner.fail_writes = 1
        with pytest.raises(PortLost):  # ... but fails before it carried a request: same outage
            await port.write(b"x")
        assert port.retry_at == 104.0
        clock.now = 110.0
        assert await port.reopen()
        await port.write(b"x")
        assert await port.read(0.1) == b"\x01"  # carried a request: the outage is over
        health = port.health()
        assert (health.up, health.outages, health.reconnects, health.attempts) == (True, 1, 2, 0)
        inner.fail_reads = 1
        with pytest.raises(PortLost, match="read failed"):  # a new outage starts afresh
            await port.read(0.1)
        assert port.retry_at == 110.5
        health = port.health()
        assert (health.up, health.outages, health.reason) == (False, 2, str(LinkError(
            "scripted://bus: read failed ([Errno 5] Input/output error)")))

    asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w.split(": port ")[1].split(" ")[0] for w in warnings] == ["lost", "back", "lost"]
