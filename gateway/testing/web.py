"""A stand-in for the local page's view (gateway.agent.web.server.View): snapshots that say which
change they were built at and how many were built, so a test can see when the page builds one."""

from __future__ import annotations

from typing import Any

from gateway.agent.web.live import LiveState


class CountingView:
    def __init__(self, live: LiveState) -> None:
        self.live = live
        self.built = 0
        self.closed = False

    def snapshot(self) -> dict[str, Any]:
        self.built += 1
        return {"version": self.live.version, "built": self.built}

    def close(self) -> None:
        self.closed = True
