"""Wire timing rule of the simulated RS-485 bus (Modbus over Serial Line v1.02, 2.5.1.1)."""

from __future__ import annotations

import pytest

from firmware_shims.wire import CLIENT_SIDE, SERVER_SIDE, LineSettings, WireSchedule, gaps
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


def test_frame_log_gives_each_writer_its_silence_and_the_idle_wire() -> None:
    line = LineSettings(9600, "N", 1)
    c, t35 = line.char_s, 3.5 * 10 / 9600  # 10 bits a character at 9600 8N1
    wire = WireSchedule(line)
    wire.deliver_at(now=0.0, nbytes=8, side=CLIENT_SIDE)  # request: on the wire 0 .. 8c
    wire.deliver_at(now=0.001, nbytes=9, side=SERVER_SIDE)  # reply held until 8c + t3.5
    wire.frames[-1].delivered_at = 8 * c + t35 + 9 * c + 0.0002  # the relay was 0.2 ms late
    wire.deliver_at(now=0.030, nbytes=8, side=CLIENT_SIDE)  # next request
    wire.deliver_at(now=0.040, nbytes=8, side=CLIENT_SIDE)  # one more, unanswered before it
    _, reply, second, _ = wire.frames
    assert (reply.start, reply.end) == pytest.approx((8 * c + t35, 17 * c + t35))
    before_reply, before_second, before_third = gaps(list(wire.frames))
    # The idle wire is scheduled time; the writer's silence counts from when it heard the line.
    assert before_reply.idle == pytest.approx(t35)
    assert before_second.side == CLIENT_SIDE
    assert before_second.silence == pytest.approx(0.030 - (17 * c + t35 + 0.0002))
    assert before_second.idle == pytest.approx(0.030 - (17 * c + t35))
    # After its own frame a writer knows when its last bit left: the frame's scheduled end.
    assert before_third.silence == pytest.approx(0.040 - second.end)


def test_a_frame_written_before_the_last_one_was_handed_over_has_no_silence() -> None:
    wire = WireSchedule(LineSettings(9600, "N", 1))
    wire.deliver_at(now=0.0, nbytes=8, side=CLIENT_SIDE)
    wire.deliver_at(now=0.001, nbytes=9, side=SERVER_SIDE)  # never delivered (still in flight)
    wire.deliver_at(now=0.002, nbytes=8, side=CLIENT_SIDE)
    assert gaps(list(wire.frames))[-1].silence == float("-inf")
