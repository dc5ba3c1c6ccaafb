"""gateway.ops.logs: the repeat filter (fake clock), journald priority prefixes, stream detection."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ops.logs import (
    JournalFormatter,
    RepeatFilter,
    configure,
    journal_stream,
    syslog_priority,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, name: str = "gateway.device.bus", level: int = logging.WARNING,
           **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def passes(f: RepeatFilter, rec: logging.LogRecord) -> str | None:
    """The formatted message if the filter lets it through, else None."""
    return rec.getMessage() if f.filter(rec) else None


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_first_passes_repeats_are_suppressed_then_counted(clock: Clock) -> None:
    f = RepeatFilter(window_s=60, clock=clock)
    assert passes(f, record("%s: %s", "main", "no answer within 500 ms", device="main")) == \
        "main: no answer within 500 ms"
    for i in range(5):  # another error text, same template and device: still a repeat
        clock.now += 10
        assert passes(f, record("%s: %s", "main", f"bad CRC {i}", device="main")) is None
    clock.now += 11  # 61 s after the one let through
    assert passes(f, record("%s: %s", "main", "no answer within 500 ms", device="main")) == \
        "main: no answer within 500 ms (repeated 5 times in the last 61 s)"
    clock.now += 1  # a new window began with that record
    assert passes(f, record("%s: %s", "main", "x", device="main")) is None


def test_keys_are_logger_template_and_device(clock: Clock) -> None:
    f = RepeatFilter(window_s=60, clock=clock)
    assert passes(f, record("%s: %s", "main", "e", device="main"))
    assert passes(f, record("%s: %s", "ev", "e", device="ev"))  # other device
    assert passes(f, record("%s: timeout", "main", device="main"))  # other template
    assert passes(f, record("%s: %s", "main", "e", name="other.logger", device="main"))
    assert passes(f, record("store: cannot commit %d", 5))  # no device: limited on its own key
    assert passes(f, record("store: cannot commit %d", 6)) is None


def test_a_window_with_no_repeats_carries_no_note(clock: Clock) -> None:
    f = RepeatFilter(window_s=60, clock=clock)
    assert passes(f, record("%s: down", "main", device="main")) == "main: down"
    clock.now += 120
    assert passes(f, record("%s: down", "main", device="main")) == "main: down"


def test_state_change_always_passes_with_the_count_and_resets(clock: Clock) -> None:
    f = RepeatFilter(window_s=60, clock=clock)
    assert passes(f, record("%s: %s", "main", "timeout", device="main"))
    for _ in range(3):
        clock.now += 5
        assert passes(f, record("%s: %s", "main", "timeout", device="main")) is None
    assert passes(f, record("%s: %s", "ev", "timeout", device="ev"))
    assert passes(f, record("%s: %s", "ev", "timeout", device="ev")) is None
    clock.now += 5
    back = record("%s: answering again after %d failed cycle(s)", "main", 4, device="main",
                  state_change=True)
    assert passes(f, back) == ("main: answering again after 4 failed cycle(s) "
                               "(after 3 suppressed repeats of its errors in the last 20 s)")
    # Reset: the next failure of main is logged at once; ev's window is untouched.
    assert passes(f, record("%s: %s", "main", "timeout", device="main")) == "main: timeout"
    assert passes(f, record("%s: %s", "ev", "timeout", device="ev")) is None
    # A state change with nothing suppressed passes unchanged, even twice in a row.
    again = record("%s: answering again", "main", device="main", state_change=True)
    assert passes(f, again) == "main: answering again"
    assert passes(f, record("%s: answering again", "main", device="main", state_change=True))


def test_records_below_warning_are_not_limited(clock: Clock) -> None:
    f = RepeatFilter(window_s=60, clock=clock)
    for _ in range(3):
        assert passes(f, record("%s: polled", "main", level=logging.INFO, device="main"))


def test_the_key_table_is_bounded(clock: Clock) -> None:
    f = RepeatFilter(window_s=60, clock=clock, max_keys=3)
    for i in range(5):
        assert passes(f, record(f"message {i}"))
    assert passes(f, record("message 4")) is None  # still remembered
    assert passes(f, record("message 0"))  # forgotten (oldest): passes again


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        RepeatFilter(window_s=0)


def test_syslog_priorities_follow_sd_daemon() -> None:
    assert [syslog_priority(lv) for lv in (logging.CRITICAL, logging.ERROR, logging.WARNING,
                                           logging.INFO, logging.DEBUG)] == [2, 3, 4, 6, 7]


def test_journal_formatter_prefixes_every_line() -> None:
    fmt = JournalFormatter("%(name)s: %(message)s")
    assert fmt.format(record("store: %s", "disk full", level=logging.ERROR)) == \
        "<3>gateway.device.bus: store: disk full"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = fmt.format(rec).splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def _dev_ino(fd: int) -> str:
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


def test_journal_stream_matches_device_and_inode(tmp_path: Path) -> None:
    with (tmp_path / "out").open("w") as fh, (tmp_path / "other").open("w") as other:
        assert journal_stream(fh, {"JOURNAL_STREAM": _dev_ino(fh.fileno())})
        assert not journal_stream(fh, {"JOURNAL_STREAM": _dev_ino(other.fileno())})  # redirected
        assert not journal_stream(fh, {})
        assert not journal_stream(fh, {"JOURNAL_STREAM": "garbage"})
    assert not journal_stream(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no file descriptor


def test_a_terminal_is_never_the_journal() -> None:
    main, sub = os.openpty()
    try:
        with os.fdopen(sub, "w", closefd=False) as tty:
            assert not journal_stream(tty, {"JOURNAL_STREAM": _dev_ino(sub)})
    finally:
        os.close(main)
        os.close(sub)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_configure_writes_journal_lines_and_limits_repeats(tmp_path: Path, clock: Clock,
                                                           root_logger: logging.Logger) -> None:
    with (tmp_path / "out").open("w") as fh:
        configure(level="INFO", stream=fh, environ={"JOURNAL_STREAM": _dev_ino(fh.fileno())},
                  clock=clock)
        log = logging.getLogger("gateway.device.bus")
        for _ in range(3):
            log.warning("%s: %s", "main", "no answer", extra={"device": "main"})
        log.info("polling %d device(s)", 2)
        log.error("store: disk full")
    assert (tmp_path / "out").read_text().splitlines() == [
        "<4>gateway.device.bus: main: no answer",
        "<6>gateway.device.bus: polling 2 device(s)",
        "<3>gateway.device.bus: store: disk full",
    ]


def test_configure_without_journal_uses_the_plain_format(tmp_path: Path,
                                                         root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure(level="WARNING", stream=out, environ={})
    logging.getLogger("gateway.agent.agent").warning("stopped at seq %d", 7)
    logging.getLogger("gateway.agent.agent").info("not shown")
    line, = out.getvalue().splitlines()
    assert line.endswith(" WARNING gateway.agent.agent: stopped at seq 7") and not line.startswith("<")
