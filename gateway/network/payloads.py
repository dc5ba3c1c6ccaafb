"""Pure JSON payload builders for the status, health and reply topics (schemas in docs/mqtt.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 1


def dumps(obj: object) -> bytes:
    """Compact, key-sorted UTF-8 JSON: stable bytes for retained messages and signatures."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                      allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """What the agent tells the fleet about itself in the retained birth message."""

    version: str
    config_hash: str
    devices: Sequence[str] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


def birth(info: StatusInfo, *, gw: str, now_ms: int, backlog: tuple[int, int] | None = None,
          since_ms: int | None = None) -> bytes:
    body: dict[str, Any] = {
        **dict(info.extra),
        "v": SCHEMA, "online": True, "gw": gw, "version": info.version,
        "config_hash": info.config_hash, "devices": list(info.devices), "ts": now_ms,
    }
    if since_ms is not None:
        body["since"] = since_ms
    if backlog is not None:
        body["backlog"] = {"rows": backlog[0], "bytes": backlog[1]}
    return dumps(body)


def offline(*, gw: str, reason: str, now_ms: int | None = None) -> bytes:
    """The offline status: reason "lwt" (set as last will, no ts: it is fixed at connect time)
    or "shutdown" (published by a clean stop)."""
    body: dict[str, Any] = {"v": SCHEMA, "online": False, "gw": gw, "reason": reason}
    if now_ms is not None:
        body["ts"] = now_ms
    return dumps(body)


def health(counters: Mapping[str, int | float], *, gw: str, now_ms: int,
           backlog: tuple[int, int] | None = None, detail: Mapping[str, Any] | None = None) -> bytes:
    """`detail`: the structured snapshot of gateway/ops/health.py (rates, devices, process, store),
    merged at the top level; the envelope keys (v, gw, ts, counters, backlog) always win."""
    body: dict[str, Any] = {**dict(detail or {}), "v": SCHEMA, "gw": gw, "ts": now_ms,
                            "counters": dict(counters)}
    if backlog is not None:
        body["backlog"] = {"rows": backlog[0], "bytes": backlog[1]}
    return dumps(body)


def event(body: Mapping[str, Any], *, gw: str, now_ms: int) -> bytes:
    return dumps({"v": SCHEMA, "gw": gw, "ts": now_ms, **dict(body)})
