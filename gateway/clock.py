"""Wall clock and whether it is synchronised (NTP), as the measurement record's clock state needs.

The kernel knows: adjtimex(2) with no modes returns TIME_ERROR (5) while the clock is not
synchronised (STA_UNSYNC set). systemd-timesyncd also drops /run/systemd/timesync/synchronized
once it has synchronised. Either says yes; where neither can be asked, the answer is "not synced".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

TIME_ERROR = 5  # adjtimex(2): "the clock is not synchronized"
_TIMESYNCD_FLAG = "/run/systemd/timesync/synchronized"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def clock_synchronised() -> bool:
    if os.path.exists(_TIMESYNCD_FLAG):
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return False
    buf = ctypes.create_string_buffer(512)  # struct timex is 208 bytes on 64-bit Linux; modes = 0
    state = libc.adjtimex(buf)
    return state not in (-1, TIME_ERROR)
