"""What the household market commands accept from the user: times, amounts, addresses (no chain).

The anvil test (test_market_household_cli_anvil.py) runs the commands end to end; here the input
rules are pinned case by case, including both branches of `--start HH:MM` (later today, tomorrow),
which the wall-clock-dependent anvil test cannot both reach. Expected values are worked by hand.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import pytest

from gateway.commands.market_input import (
    bid_range,
    parse_address,
    parse_mtok,
    parse_watts,
    tokens,
)
from gateway.errors import ConfigError

# 2024-07-01 20:00 UTC = 22:00 CEST (UTC+2 in July): date -d '2024-07-01T20:00Z' +%s
NOW = 1_719_864_000
# EIP-55's own test vector (https://eips.ethereum.org/EIPS/eip-55)
CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Central European time as a POSIX TZ rule (no tzdata needed): UTC+1, UTC+2 in summer."""
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def span(**given: str | None) -> argparse.Namespace:
    fields: dict[str, str | None] = {"from_": None, "to": None, "start": None, "hours": None}
    fields.update(given)
    return argparse.Namespace(**fields)


@pytest.mark.usefixtures("berlin")
def test_start_is_the_next_such_local_time() -> None:
    # 23:00 CEST on 2024-07-01 (still ahead of 22:00 local) = 21:00 UTC = NOW + 3600
    assert bid_range(span(start="23:00", hours="1.5"), NOW) == (NOW + 3600, NOW + 3600 + 5400)
    # 18:30 CEST has passed today: tomorrow 18:30 CEST = 2024-07-02 16:30 UTC = NOW + 20.5 h
    assert bid_range(span(start="18:30", hours="2"), NOW) == (NOW + 73_800, NOW + 73_800 + 7200)
    # exactly now is not "next": the same time tomorrow
    assert bid_range(span(start="22:00", hours="1"), NOW)[0] == NOW + 86_400


def test_from_and_to_take_iso_or_unix_seconds() -> None:
    # 2024-07-01T22:00+02:00 is NOW; 2024-07-01T20:30 (no offset) is read as UTC = NOW + 1800
    assert bid_range(span(from_="2024-07-01T22:00+02:00", to="2024-07-01T20:30"), 0) == \
        (NOW, NOW + 1800)
    assert bid_range(span(from_=str(NOW), to=str(NOW + 60)), 0) == (NOW, NOW + 60)


@pytest.mark.parametrize(("given", "says"), [
    ({"from_": "1"}, "give --from ISO --to ISO, or --start HH:MM --hours N"),
    ({"from_": "1", "to": "2", "start": "10:00", "hours": "1"}, "give --from"),
    ({}, "give --from"),
    ({"start": "7pm", "hours": "1"}, "--start '7pm': use HH:MM"),
    ({"start": "10:60", "hours": "1"}, "use HH:MM"),
    ({"start": "10:00", "hours": "0"}, "--hours 0: must be above 0"),
    ({"start": "10:00", "hours": "x"}, "--hours 'x': not a number of hours"),
    ({"from_": "yesterday", "to": "1"}, "--from 'yesterday': use ISO 8601"),
])
def test_bad_ranges_name_the_flag(given: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        bid_range(span(**given), NOW)
    assert says in str(caught.value)


def test_amounts_are_exact_milli_tokens() -> None:
    assert parse_mtok("25", "--price") == 25_000
    assert parse_mtok("0.001", "--price") == 1
    assert parse_mtok("1e3", "TOKENS") == 1_000_000
    assert parse_mtok("0", "TOKENS") == 0
    assert parse_mtok("0.1", "TOKENS") + parse_mtok("0.2", "TOKENS") == 300  # no float drift
    for bad, says in (("-0.5", "must be at least 0"), ("1.0001", "at most 3 decimals"),
                      ("nan", "not a number"), ("inf", "not a number"), ("", "not a number")):
        with pytest.raises(ConfigError) as caught:
            parse_mtok(bad, "TOKENS")
        assert says in str(caught.value) and "TOKENS" in str(caught.value)
    with pytest.raises(ConfigError, match="must be above 0"):
        parse_mtok("0", "TOKENS", positive=True)
    assert [tokens(m) for m in (350_000, 1, -100_000, 0)] == \
        ["350.000", "0.001", "-100.000", "0.000"]


def test_power_is_signed_whole_watts() -> None:
    assert parse_watts("-3.5", "--kw") == -3500
    assert parse_watts("0.001", "--kw") == 1
    with pytest.raises(ConfigError, match=r"--kw 1\.0005: at most 3 decimals"):
        parse_watts("1.0005", "--kw")


def test_addresses_are_checksummed_or_lower_case() -> None:
    assert parse_address(CHECKSUMMED, "ADDRESS") == CHECKSUMMED
    assert parse_address(CHECKSUMMED.lower(), "ADDRESS") == CHECKSUMMED
    wrong = CHECKSUMMED.replace("aA", "Aa", 1)  # one letter's case changed: checksum broken
    for bad, says in ((wrong, "checksum (EIP-55) is wrong"),
                      (CHECKSUMMED[:-2], "40 hex digits"), (CHECKSUMMED + "00", "40 hex digits"),
                      (CHECKSUMMED[2:], "40 hex digits"), ("0x" + "g" * 40, "40 hex digits")):
        with pytest.raises(ConfigError) as caught:
            parse_address(bad, "--household")
        assert says in str(caught.value) and "--household" in str(caught.value)
