"""Remote config changes that roll back by themselves: apply, try, keep or restore the last good one.

`apply(path, text)` keeps the running config as `<path>.last-good` (unless the running one is itself
still on trial: last-good only ever holds a config that ran), writes the new text atomically (temp
file + rename in the same folder) and leaves a `<path>.trial` marker saying "pending".

A trial is a transaction across restarts. The next start finds the marker and calls `begin(path)`,
which turns it into "started"; the verdict is one of:
- the agent comes up healthy: `confirm(path)` removes the marker (the commit);
- the config does not load, the agent fails before it is up (store, port bind, key, device layer),
  or it does not come up healthy in time: `rollback(path, ...)` restores the last good config and
  records why in `<path>.rollback`, which status and health report until the next `apply`;
- the process dies with no verdict (SIGKILL, watchdog, a crash, power lost): the next start finds
  the marker still "started", `begin` says so, and the caller rolls back.
A clean stop before the verdict (SIGTERM, a restart command) calls `interrupt(path)`: the marker
goes back to "pending" and the next start tries the config again.

File operations only; the agent decides what "healthy" means.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.clock import wall_ms

log = logging.getLogger(__name__)

PENDING = "trial\n"  # the marker of a config waiting for its first start
STARTED = "started\n"  # the marker while a process is trying it


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollback:
    """Why the last remote config change was undone: reported in status until the next change."""

    config_hash: str  # the config that was tried (GatewayConfig.config_hash)
    restored_hash: str  # the last good config, running again
    reason: str
    time_ms: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def last_good(path: Path) -> Path:
    return _sibling(path, ".last-good")


def marker(path: Path) -> Path:
    return _sibling(path, ".trial")


def report(path: Path) -> Path:
    return _sibling(path, ".rollback")


def text_hash(text: str) -> str:
    """GatewayConfig.config_hash of a config text, also for a text that does not parse."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_atomically(path: Path, text: str) -> None:
    tmp = _sibling(path, ".tmp")
    # 0600 whatever the umask (the config may hold the broker password); fchmod: a .tmp left
    # by a crash keeps its old mode through O_CREAT
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def apply(path: Path, text: str) -> None:
    if not on_trial(path) or not last_good(path).exists():
        write_atomically(last_good(path), path.read_text(encoding="utf-8"))
    report(path).unlink(missing_ok=True)  # a new change: the last one's outcome is old news
    write_atomically(marker(path), PENDING)
    write_atomically(path, text)


def on_trial(path: Path) -> bool:
    return marker(path).exists()


def begin(path: Path) -> bool:
    """This process starts trying the config on trial. False when a process before it had already
    started it and ended with no verdict (killed, crashed, power lost): roll it back then."""
    try:
        if marker(path).read_text(encoding="utf-8") == STARTED:
            return False
    except OSError:
        return True  # no marker (any more): nothing on trial
    write_atomically(marker(path), STARTED)
    return True


def interrupt(path: Path) -> None:
    """A clean stop before the verdict: the next start tries the config again."""
    if on_trial(path):
        write_atomically(marker(path), PENDING)


def confirm(path: Path) -> None:
    marker(path).unlink(missing_ok=True)


def rollback(path: Path, *, reason: str = "", tried: str | None = None) -> bool:
    """Restore the last good config and record why (`tried`: the hash of the config given up;
    default: the file's text now). Returns False when there is none to restore."""
    good = last_good(path)
    if not good.exists():
        marker(path).unlink(missing_ok=True)
        return False
    if tried is None:
        tried = text_hash(path.read_text(encoding="utf-8")) if path.exists() else ""
    text = good.read_text(encoding="utf-8")
    note = Rollback(config_hash=tried, restored_hash=text_hash(text),
                    reason=reason or "not given", time_ms=wall_ms())
    write_atomically(report(path), json.dumps(note.as_json()) + "\n")
    write_atomically(path, text)
    marker(path).unlink(missing_ok=True)
    return True


def last_rollback(path: Path) -> Rollback | None:
    """The rollback recorded since the last `apply`, if any (None for a missing or unreadable note)."""
    try:
        data = json.loads(report(path).read_text(encoding="utf-8"))
        return Rollback(config_hash=str(data["config_hash"]),
                        restored_hash=str(data["restored_hash"]), reason=str(data["reason"]),
                        time_ms=int(data["time_ms"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable rollback note (%s); ignored", report(path), exc)
        return None


def status(path: Path) -> dict[str, Any]:
    """What the status reply and the retained birth say about remote config changes: whether the
    running config is still on trial, and the last rollback (null when the last change was kept)."""
    note = last_rollback(path)
    return {"config_trial": on_trial(path),
            "config_rollback": None if note is None else note.as_json()}
