"""One snapshot of the local page: the household's part and the installer's part, as JSON-ready
values, built from the running agent's parts (read-only) only when a page asks for it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway import __version__
from gateway.agent.readout import Readout
from gateway.agent.web import household, installer
from gateway.agent.web.live import LiveState
from gateway.config.gateway import GatewayConfig
from gateway.ops.doctor import record

if TYPE_CHECKING:
    from gateway.loop.bidder import Bidder
    from gateway.loop.runner import DrLoop


@dataclass(frozen=True, slots=True, kw_only=True)
class Sources:
    """The running agent's parts the page reads."""

    config: GatewayConfig
    gateway: str  # the gateway's address
    readout: Readout
    live: LiveState
    dr: DrLoop | None
    bidder: Bidder | None


class HomeView:
    """Builds snapshots; the DR and market parts (journal reads) only when their messages said
    something changed, the rest (memory and counters) every time."""

    def __init__(self, sources: Sources) -> None:
        self.s = sources
        dr = sources.config.dr
        self.energy = household.TodayEnergy(sources.config.store.path,
                                            zone=None if dr is None else ZoneInfo(dr.time_zone))
        self._journals: tuple[int, dict[str, Any]] | None = None

    def close(self) -> None:
        self.energy.close()

    def snapshot(self) -> dict[str, Any]:
        s, now = self.s, time.time()
        health = s.readout.peek()
        names = [(d.name, d.role, d.profile.name) for d in s.config.devices.devices]
        return {
            "now_ms": int(now * 1000), "version": s.live.version, "gateway": s.gateway,
            "software": __version__, "config_hash": s.config.config_hash,
            "household": {"devices": household.devices(names, s.live, self.energy, now_s=now),
                          "chain": s.config.chain is not None, **self._journal_parts()},
            "installer": {"devices": installer.devices(s.config, s.readout, s.live, health),
                          "buses": installer.buses(s.config, s.readout),
                          "agent": installer.agent(s.readout, health),
                          "doctor": record.load(s.config.store.path)},
        }

    def _journal_parts(self) -> dict[str, Any]:
        s = self.s
        if self._journals is None or self._journals[0] != s.live.dr_version:
            parts: dict[str, Any] = {
                "dr": {"configured": False} if s.dr is None else household.dr_section(
                    s.dr.journal, s.live),
                "market": {"configured": False} if s.bidder is None else
                household.market_section(s.bidder)}
            self._journals = (s.live.dr_version, parts)
        parts = self._journals[1]
        current = parts["dr"].get("current")
        if current is not None:  # the live figures change with every sample, not with messages
            current["live"] = s.live.dr_live.get(current["event_id"])
        return parts
