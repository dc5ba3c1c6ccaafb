"""FakeAgent: an in-memory AgentControl for tests and demos of the fleet commands (the real one is
the agent's, in gateway/agent/). Behaves like the contract says, including refusals, and records
every call."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.network.command import Code, CommandRejected

if TYPE_CHECKING:
    from gateway.network.dispatcher import AgentControl


@dataclass(frozen=True, slots=True)
class FakePoint:
    writable: bool = False
    lo: float = float("-inf")
    hi: float = float("inf")


@dataclass
class FakeAgent:
    version: str = "0.0-fake"
    config_text: str = "[gateway]\nname = \"fake\"\n"
    registers: dict[str, dict[int, int]] = field(
        default_factory=lambda: {"meter1": {i: i * 10 for i in range(200)}})
    points: dict[str, dict[str, FakePoint]] = field(default_factory=lambda: {
        "relay1": {"switch": FakePoint(True, 0, 1), "power_w": FakePoint()},
        "ev1": {"current_limit_a": FakePoint(True, 6, 32)}})
    log_level: str = "WARNING"
    restarts: int = 0
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    written: dict[tuple[str, str], float] = field(default_factory=dict)
    delay_s: float = 0.0

    async def _note(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def ping(self) -> Any:
        await self._note("ping")
        return {"pong": True}

    async def status(self) -> Any:
        await self._note("status")
        return {"version": self.version, "devices": sorted(self.registers) + sorted(self.points)}

    async def diagnostics(self) -> Any:
        await self._note("diagnostics")
        return {"log_level": self.log_level, "restarts": self.restarts, "calls": len(self.calls)}

    async def read_register(self, device: str, table: str, address: int, count: int) -> Any:
        await self._note("read_register", device, table, address, count)
        regs = self.registers.get(device)
        if regs is None:
            raise CommandRejected(Code.BAD_ARGS, f"no device {device!r}; devices: "
                                  f"{', '.join(sorted(self.registers))}")
        if table != "holding":
            raise RuntimeError(f"{device}: illegal function for table {table} (exception code 1)")
        return {"device": device, "address": address,
                "words": [regs.get(address + i, 0) for i in range(count)]}

    async def write_point(self, device: str, name: str, value: float) -> Any:
        await self._note("write_point", device, name, value)
        point = self.points.get(device, {}).get(name)
        if point is None:
            raise CommandRejected(Code.BAD_ARGS, f"{device} has no point {name!r}")
        if not point.writable:
            raise CommandRejected(Code.BAD_ARGS, f"{device}.{name} is read-only in its profile")
        if not point.lo <= value <= point.hi:
            raise CommandRejected(Code.BAD_ARGS, f"{device}.{name} = {value} is out of range "
                                  f"{point.lo:g}..{point.hi:g}")
        self.written[(device, name)] = value
        return {"device": device, "name": name, "value": value}

    async def scan(self, args: Mapping[str, Any]) -> Any:
        await self._note("scan", dict(args))
        return {"found": [{"unit": 1, "profile": "test_meter"}]}

    async def resend(self, seq_from: int, seq_to: int) -> Any:
        await self._note("resend", seq_from, seq_to)
        return {"queued": seq_to - seq_from + 1}

    async def config_get(self) -> Any:
        await self._note("config_get")
        return {"text": self.config_text}

    async def config_set(self, text: str, dry_run: bool) -> Any:
        await self._note("config_set", text, dry_run)
        if "[gateway]" not in text:
            raise CommandRejected(Code.BAD_ARGS, "config: missing [gateway] table")
        if not dry_run:
            self.config_text = text
        return {"applied": not dry_run, "dry_run": dry_run}

    async def restart(self) -> Any:
        await self._note("restart")
        self.restarts += 1
        return {"restarting": True}

    async def set_log_level(self, level: str) -> Any:
        await self._note("set_log_level", level)
        self.log_level = level
        return {"level": level}

    async def dr_event(self, args: Mapping[str, Any]) -> Any:
        await self._note("dr_event", dict(args))
        return {"event_id": args["event_id"], "accepted": True}


if TYPE_CHECKING:  # mypy checks that the fake still has the shape of the Protocol it stands in for
    _CONTROL: AgentControl = FakeAgent()
