"""A gateway's status message as the master records it (pure): birth, offline (will or shutdown)
and the health refresh, all on the retained `drgw/v1/<gw>/status` topic (docs/mqtt.md, "status").

A field the message does not carry is None, so the ledger keeps what it knew ("COALESCE"); a field
of the wrong type is ignored, not fatal: a gateway of another release must not stop the master.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusUpdate:
    online: bool | None
    reason: str
    version: str | None
    config_hash: str | None
    seq: int | None
    clock_synced: bool | None
    disk_full: int | None
    backlog_rows: int | None


def parse_status(payload: bytes) -> StatusUpdate | None:
    """The fields of a status payload; None when it is not a JSON object (counted by the caller)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    backlog = body.get("backlog")
    disk_full = _typed(body, "disk_full", bool)
    return StatusUpdate(
        online=_typed(body, "online", bool), reason=str(body.get("reason") or ""),
        version=_typed(body, "version", str), config_hash=_typed(body, "config_hash", str),
        seq=_int(body.get("seq")), clock_synced=_typed(body, "clock_synced", bool),
        disk_full=None if disk_full is None else int(disk_full),
        backlog_rows=_int(backlog.get("rows")) if isinstance(backlog, dict) else None)


def _typed(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    return value if isinstance(value, kind) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
