"""Wire timing rule of the simulated RS-485 bus (Modbus over Serial Line v1.02, 2.5.1.1)."""

from __future__ import annotations

import pytest

from firmware_shims.wire import CLIENT_SIDE, SERVER_SIDE, LineSettings, WireSchedule
from gateway.errors import ConfigError


def test_character_time_counts_start_parity_and_stop_bits() -> None:
    assert LineSettings(9600, "N", 1).char_s == pytest.approx(10 / 9600)
    assert LineSettings(9600, "E", 1).char_s == pytest.approx(11 / 9600)
    assert LineSettings(9600, "N", 2).char_s == pytest.approx(11 / 9600)
    assert LineSettings(9600, "N", 1).gap_s == pytest.approx(3.5 * 10 / 9600)
    assert LineSettings(38400, "N", 1).gap_s == pytest.approx(0.00175)  # fixed above 19200 baud
    with pytest.raises(ConfigError, match="baud 9601"):
        LineSettings(9601)


def test_round_trip_takes_request_gap_and_reply_time() -> None:
    line = LineSettings(9600, "N", 1)
    wire = WireSchedule(line)
    c = line.char_s
    request_end = wire.deliver_at(now=0.0, nbytes=8, side=CLIENT_SIDE)
    assert request_end == pytest.approx(8 * c)
    # The server answers at once; its reply still waits for the silent interval.
    reply_end = wire.deliver_at(now=request_end, nbytes=9, side=SERVER_SIDE)
    assert reply_end == pytest.approx(8 * c + 3.5 * c + 9 * c)
    # A chunk the same side writes while still sending continues its frame back to back.
    more = wire.deliver_at(now=reply_end - c, nbytes=2, side=SERVER_SIDE)
    assert more == pytest.approx(reply_end + 2 * c)
    # After a long pause a frame starts when it is written.
    assert wire.deliver_at(now=10.0, nbytes=8, side=CLIENT_SIDE) == pytest.approx(10.0 + 8 * c)
