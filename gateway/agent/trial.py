"""Remote config changes that roll back by themselves: apply, try, keep or restore the last good one.

`apply(path, text)` keeps the running config as `<path>.last-good`, writes the new text atomically
(temp file + rename in the same folder) and leaves a `<path>.trial` marker. The next start finds
the marker: when the agent comes up healthy it calls `confirm(path)`, which removes the marker;
when it cannot load or does not come up in time it calls `rollback(path)`, which restores the last
good config. Pure file operations; the agent decides what "healthy" means.
"""

from __future__ import annotations

import os
from pathlib import Path


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def last_good(path: Path) -> Path:
    return _sibling(path, ".last-good")


def marker(path: Path) -> Path:
    return _sibling(path, ".trial")


def write_atomically(path: Path, text: str) -> None:
    tmp = _sibling(path, ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
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
    write_atomically(last_good(path), path.read_text(encoding="utf-8"))
    write_atomically(marker(path), "trial\n")
    write_atomically(path, text)


def on_trial(path: Path) -> bool:
    return marker(path).exists()


def confirm(path: Path) -> None:
    marker(path).unlink(missing_ok=True)


def rollback(path: Path) -> bool:
    """Restore the last good config. Returns False when there is none to restore."""
    good = last_good(path)
    if not good.exists():
        marker(path).unlink(missing_ok=True)
        return False
    write_atomically(path, good.read_text(encoding="utf-8"))
    marker(path).unlink(missing_ok=True)
    return True
