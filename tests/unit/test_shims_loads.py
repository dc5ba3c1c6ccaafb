"""Load models of the simulated home: constant, daily curve, CSV replay, noise."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from firmware_shims.loads import ConstantLoad, CsvReplay, DailyCurve, NoisyLoad, parse_hhmm
from gateway.errors import ConfigError

MIDNIGHT = 1_700_006_400.0  # 2023-11-15T00:00:00Z, a multiple of 86400


def test_constant() -> None:
    assert ConstantLoad(2300.0).power_w(MIDNIGHT, MIDNIGHT) == 2300.0


def test_daily_curve_interpolates_and_wraps_at_midnight() -> None:
    curve = DailyCurve(points=((parse_hhmm("06:00", where="t"), 200.0),
                               (parse_hhmm("08:00", where="t"), 2200.0),
                               (parse_hhmm("22:00", where="t"), 400.0)), utc_offset_s=0.0)
    assert MIDNIGHT % 86400 == 0
    assert curve.power_w(MIDNIGHT + 7 * 3600, 0) == pytest.approx(1200.0)  # half way 06:00-08:00
    assert curve.power_w(MIDNIGHT + 8 * 3600, 0) == pytest.approx(2200.0)
    # 22:00 (400 W) -> 06:00 next day (200 W) over 8 hours: at 02:00 it is half way.
    assert curve.power_w(MIDNIGHT + 2 * 3600, 0) == pytest.approx(300.0)
    # UTC+1: 06:00 UTC is 07:00 local time.
    shifted = DailyCurve(points=curve.points, utc_offset_s=3600.0)
    assert shifted.power_w(MIDNIGHT + 6 * 3600, 0) == pytest.approx(1200.0)


def test_daily_curve_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="HH:MM"):
        parse_hhmm("7h30", where="home.toml: device[0]: load: points[0]")
    with pytest.raises(ConfigError, match="increasing"):
        DailyCurve(points=((3600.0, 1.0), (60.0, 2.0)))


def test_csv_replay_seconds_and_timestamps(tmp_path: Path) -> None:
    seconds = tmp_path / "load.csv"
    seconds.write_text("t,watts\n0,100\n10,200\n20,0\n")
    replay = CsvReplay.from_file(seconds)
    assert replay.power_w(105.0, 100.0) == pytest.approx(150.0)
    assert replay.power_w(125.0, 100.0) == pytest.approx(150.0)  # loops after 20 s
    held = CsvReplay.from_file(seconds, loop=False)
    assert held.power_w(1000.0, 100.0) == 0.0
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("time,house,ev\n2024-06-01T00:00:00,300,0\n2024-06-01T00:01:00,500,7000\n")
    ev = CsvReplay.from_file(stamps, column="ev")
    assert ev.power_w(30.0, 0.0) == pytest.approx(3500.0)


def test_csv_replay_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("t,w\n0,100\n5,lots\n")
    with pytest.raises(ConfigError, match=r"bad.csv: line 3"):
        CsvReplay.from_file(bad)
    with pytest.raises(ConfigError, match="no column 'kw'"):
        CsvReplay.from_file(bad, column="kw")


def test_noise_is_repeatable_and_has_the_asked_spread() -> None:
    noisy = NoisyLoad(base=ConstantLoad(1000.0), pct=5.0, seed=7)
    samples = [noisy.power_w(float(t), 0.0) for t in range(2000)]
    assert samples == [noisy.power_w(float(t), 0.0) for t in range(2000)]
    assert statistics.mean(samples) == pytest.approx(1000.0, rel=0.01)
    assert statistics.stdev(samples) == pytest.approx(50.0, rel=0.1)
    other = NoisyLoad(base=ConstantLoad(1000.0), pct=5.0, seed=8)
    assert other.power_w(3.0, 0.0) != noisy.power_w(3.0, 0.0)
