"""The last `drgw doctor` result, kept beside the gateway's store as `doctor.json` so that the
installer's view of the local page (gateway/agent/web) can show it.

The checks themselves write nothing; `drgw doctor` records their result afterwards, best effort: a
directory it may not write to (doctor run as another user) costs the record, never the run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.ops.doctor.check import Check, Level

log = logging.getLogger(__name__)
NAME = "doctor.json"


def record_path(store: Path) -> Path:
    return store.with_name(NAME)


def save(store: Path, checks: Sequence[Check], *, time_ms: int) -> Path | None:
    """Write the result atomically (a temporary file renamed); the path, or None when it cannot."""
    path = record_path(store)
    body = {"ok": not any(c.level is Level.FAIL for c in checks), "time_ms": time_ms,
            "checks": [c.as_json() for c in checks]}
    tmp = path.with_name(f".{NAME}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o644)  # the service's user reads it; it holds no secret
        tmp.replace(path)
    except OSError as exc:
        log.info("doctor: result not recorded in %s (%s)", path, exc.strerror)
        tmp.unlink(missing_ok=True)
        return None
    return path


def load(store: Path) -> dict[str, Any] | None:
    """The recorded result, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(record_path(store).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
