"""Agent logging: one line per record on stdout, with syslog priority prefixes under journald, and a
filter that rate-limits the repeated errors of a flapping meter.

journald: sd-daemon(3) — a line written to a stream connected to the journal that starts with
"<N>", N a syslog priority 0..7 (SD_ERR is "<3>"), is recorded at that priority. systemd.exec(5):
JOURNAL_STREAM holds "<device>:<inode>" of the stream the service manager connected to the journal;
if stdout's fstat() matches it, stdout still goes there (not redirected to a file or a pipe), so the
prefixes are wanted and a timestamp is not (journald stamps each line itself).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

# Python level -> syslog priority (syslog(3) / sd-daemon(3): SD_CRIT 2, SD_ERR 3, SD_WARNING 4,
# SD_INFO 6, SD_DEBUG 7). NOTICE (5) has no Python level.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7


class JournalFormatter(logging.Formatter):
    """Prefixes every line (a traceback too) with the record's syslog priority: "<3>..."."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def journal_stream(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether `stream` is the journal stream systemd gave this process (systemd.exec(5))."""
    value = environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        if stream.isatty():
            return False
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):  # io.UnsupportedOperation is an OSError
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


@dataclass
class _Seen:
    since: float  # when the last occurrence that was let through was logged
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Lets the first record of each (logger, message template, device) through and suppresses its
    repeats for `window_s` seconds; the first one after the window carries "(repeated N times in
    the last M s)", N being the suppressed count. Records with `extra={"state_change": True}` (a
    device answering again) always pass, carry the count suppressed for their device, and reset it,
    so the device's next failure is logged at once. Records below `min_level` are not limited.

    The device comes from `extra={"device": name}`; the template is the unformatted message, so
    "%s: %s" with a varying error text counts as one message. `clock` is monotonic seconds.
    """

    def __init__(self, *, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 min_level: int = logging.WARNING, max_keys: int = 1024) -> None:
        super().__init__()
        if window_s <= 0 or max_keys < 1:
            raise ValueError("RepeatFilter: window_s > 0 and max_keys >= 1")
        self.window_s = window_s
        self.clock = clock
        self.min_level = min_level
        self.max_keys = max_keys
        self._seen: OrderedDict[tuple[str, str, str | None], _Seen] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        device = getattr(record, "device", None)
        now = self.clock()
        if getattr(record, "state_change", False):
            self._reset_device(record, device, now)
            return True
        key = (record.name, str(record.msg), None if device is None else str(device))
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < self.window_s:
            seen.suppressed += 1
            return False
        if seen is not None and seen.suppressed:
            _annotate(record, f"repeated {seen.suppressed} times in the last {now - seen.since:.0f} s")
        self._seen[key] = _Seen(since=now)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:  # f-string messages would otherwise grow it forever
            self._seen.popitem(last=False)
        return True

    def _reset_device(self, record: logging.LogRecord, device: object, now: float) -> None:
        if device is None:
            return
        keys = [k for k in self._seen if k[2] == str(device)]
        suppressed = sum(self._seen[k].suppressed for k in keys)
        oldest = min((self._seen[k].since for k in keys), default=now)
        for k in keys:
            del self._seen[k]
        if suppressed:
            _annotate(record, f"after {suppressed} suppressed repeats of its errors in the last "
                      f"{now - oldest:.0f} s")


def _annotate(record: logging.LogRecord, note: str) -> None:
    # In place: Python 3.11 filters cannot return a replacement record (3.12 can). The handler
    # that owns this filter is the only one the agent has, so no other output sees the change.
    record.msg = f"{record.msg} ({note})"


PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"


def configure(*, level: str | int, stream: TextIO | None = None,
              environ: Mapping[str, str] | None = None, window_s: float = 60.0,
              clock: Callable[[], float] = time.monotonic) -> logging.Handler:
    """Send the root logger to `stream` (stdout) with the journald or the plain format and the
    repeat filter, replacing the stderr handler `drgw` sets up for short commands."""
    stream = sys.stdout if stream is None else stream
    environ = os.environ if environ is None else environ
    handler = logging.StreamHandler(stream)
    if journal_stream(stream, environ):
        handler.setFormatter(JournalFormatter(JOURNAL_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    handler.addFilter(RepeatFilter(window_s=window_s, clock=clock))
    root = logging.getLogger()
    for old in list(root.handlers):
        # Only the console handlers of logging.basicConfig: a test harness's capture stays.
        if type(old) is logging.StreamHandler and old.stream in (sys.stderr, sys.stdout):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
