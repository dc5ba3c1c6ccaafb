"""A scripted Link (the fake of gateway.device.transport.Link): opens, writes and reads that fail
on cue, for the lost-port logic of gateway.device.reopen. The real thing is tested on pty pairs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.device.transport import LinkError


@dataclass
class ScriptedLink:
    """`fail_opens` / `fail_writes` / `fail_reads`: how many of the next calls raise LinkError."""

    description: str = "scripted://bus"
    fail_opens: int = 0
    fail_writes: int = 0
    fail_reads: int = 0
    answer: bytes = b"\x01"
    calls: list[str] = field(default_factory=list)
    last_heard: float = 0.0
    heard_on_read: bool = False  # stamp last_heard when a read returns, as the real links do
    written_at: list[float] = field(default_factory=list)  # loop time of each write
    read_at: list[float] = field(default_factory=list)  # loop time each successful read returned
    _open: bool = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        self.calls.append("open")
        if self.fail_opens:
            self.fail_opens -= 1
            raise LinkError(f"{self.description}: cannot open (No such file or directory)")
        self._open = True

    async def close(self) -> None:
        self.calls.append("close")
        self._open = False

    async def write(self, data: bytes) -> None:
        self.calls.append("write")
        self.written_at.append(asyncio.get_running_loop().time())
        if not self._open:
            await self.open()
        if self.fail_writes:
            self.fail_writes -= 1
            raise LinkError(f"{self.description}: write failed ([Errno 5] Input/output error)")

    async def read(self, timeout: float) -> bytes:
        self.calls.append("read")
        if self.fail_reads:
            self.fail_reads -= 1
            raise LinkError(f"{self.description}: read failed ([Errno 5] Input/output error)")
        now = asyncio.get_running_loop().time()
        self.read_at.append(now)
        if self.heard_on_read:
            self.last_heard = now
        return self.answer

    def discard_input(self) -> None:
        self.calls.append("discard")
