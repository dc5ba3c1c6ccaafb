"""Fleet roster (pure): gateways as their retained status and health messages describe them."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from gateway.network import topics


@dataclass(frozen=True, slots=True)
class GatewayRow:
    gw: str
    online: bool | None = None
    version: str = ""
    config_hash: str = ""
    last_seen_ms: int | None = None
    backlog_rows: int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"gw": self.gw, "online": self.online, "version": self.version,
                "config_hash": self.config_hash, "last_seen_ms": self.last_seen_ms,
                "backlog_rows": self.backlog_rows, "reason": self.reason}


class Roster:
    def __init__(self) -> None:
        self.rows: dict[str, GatewayRow] = {}
        self.ignored = 0

    def feed(self, topic: str, payload: bytes, *, now_ms: int) -> None:
        """Fold one status or health message in; anything unparseable is counted, not fatal."""
        parsed = topics.parse(topic)
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        if parsed is None or not isinstance(body, dict):
            self.ignored += 1
            return
        row = self.rows.get(parsed.gw, GatewayRow(parsed.gw))
        ts = body.get("ts") if isinstance(body.get("ts"), int) else None
        backlog = body.get("backlog")
        rows = backlog.get("rows") if isinstance(backlog, dict) else None
        if parsed.kind is topics.Kind.STATUS:
            online = body.get("online")
            row = replace(row, online=online if isinstance(online, bool) else None,
                          version=str(body.get("version", row.version)),
                          config_hash=str(body.get("config_hash", row.config_hash)),
                          reason=str(body.get("reason", "")))
        elif parsed.kind is topics.Kind.HEALTH:
            ts = ts or now_ms
        else:
            return
        if ts is not None and (row.last_seen_ms is None or ts > row.last_seen_ms):
            row = replace(row, last_seen_ms=ts)
        if isinstance(rows, int):
            row = replace(row, backlog_rows=rows)
        self.rows[parsed.gw] = row

    def table(self) -> list[GatewayRow]:
        return [self.rows[k] for k in sorted(self.rows)]
